"""The memory side of a plan: which memory policy plans it, and the request it is asked for.

The policy is the user's (``memory.policy``) or the highest-ranked installed one; the request
is the job's frames on the chosen device together with the ``memory`` settings.
"""

from __future__ import annotations

from lipkit.config import MemorySettings
from lipkit.interfaces import MemoryPolicy
from lipkit.plans import MemoryRequest
from lipkit.plugins import require
from lipkit.specs import DeviceInfo, GeneratorSpec


def choose_memory_policy(
    policies: dict[str, MemoryPolicy], wanted: str
) -> tuple[MemoryPolicy, str]:
    """The memory policy named ``wanted`` (or the best for ``auto``) and the reason."""
    if wanted == "auto":
        chosen = max(policies.values(), key=lambda p: (p.spec.rank, p.spec.name))
        return chosen, f"highest-ranked installed policy ({len(policies)} installed)"
    return require(policies, "memory policy", wanted), "chosen by the user"


def memory_request(
    mem: MemorySettings,
    device: DeviceInfo,
    spec: GeneratorSpec,
    frame: tuple[int, int],
    num_frames: int,
    user_batch_size: int | None,
    frames_in_memory: bool,
) -> MemoryRequest:
    """What the memory policy plans for: ``num_frames`` frames (``frame``: the input's width and
    height; a whole-frame generator's own size wins) on ``device``, under the settings ``mem``.
    """
    return MemoryRequest(
        device=device,
        generator=spec,
        frame_width=spec.frame_size[0] if spec.frame_size else frame[0],
        frame_height=spec.frame_size[1] if spec.frame_size else frame[1],
        num_frames=num_frames,
        mode=mem.mode,
        budget_bytes=mem.budget,
        vram_fraction=mem.vram_fraction,
        batch_size=user_batch_size or mem.batch_size,
        chunk_frames=mem.chunk_frames,
        precision=mem.precision,
        allow_cpu_fallback=mem.cpu_fallback,
        frames_in_memory=frames_in_memory,
    )
