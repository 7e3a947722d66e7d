"""Building blocks a memory policy fits its plan with (the builtin ``auto`` and ``measured`` do).

Each function appends the reason for what it chose to ``reasons``, as the plan shows it.
Decoded frames: the pipeline keeps at most :data:`CHUNKS_IN_FLIGHT` chunks of frames alive (the
reader's queue, the one being worked on, the writer's queue), so a chunk is sized to stay near
:data:`CHUNK_BYTES` and within a quarter of the host budget.
"""

from __future__ import annotations

from collections.abc import Callable

from lipkit.plans import MemoryRequest, format_bytes
from lipkit.specs import MIB

CHUNKS_IN_FLIGHT = 6
"""Chunks of decoded frames alive at once: the reader's queue, the one in work, the writer's."""
CHUNK_BYTES = 64 * MIB
"""A chunk's target size: 64 frames at 360p, 24 at 720p, 10 at 1080p."""
MIN_CHUNK_FRAMES = 8


def device_budget(request: MemoryRequest, share: float, reasons: list[str]) -> int:
    """Bytes of the device a plan may use, with the reason appended to ``reasons``.

    ``memory.budget`` when the user set one, else ``memory.vram_fraction`` of the device's
    total memory, else ``share`` (the policy's headroom for ``memory.mode``) of its free memory.
    """
    device = request.device
    if request.budget_bytes:
        budget = int(request.budget_bytes)
        reasons.append(f"budget {format_bytes(budget)} set by the user")
    elif request.vram_fraction > 0:
        budget = int(device.total_memory * request.vram_fraction)
        total = format_bytes(device.total_memory)
        reasons.append(f"budget {request.vram_fraction:.0%} of {total}")
    else:
        budget = int(device.free_memory * share)
        free = format_bytes(device.free_memory)
        reasons.append(
            f"budget {format_bytes(budget)}: {share:.0%} of the {free} free ({request.mode})"
        )
    return budget


def round_down(value: int, step: int) -> int:
    """``value`` down to a multiple of ``step``, at least ``step`` (batches of whole units)."""
    return max(step, value // step * step)


def generation_batch(
    request: MemoryRequest,
    available: int,
    per_item: int,
    reasons: list[str],
    explain: Callable[[int, int], str],
) -> int:
    """The user's ``memory.batch_size``, else as many items of ``per_item`` bytes as fit in
    ``available``, up to the backend's default batch, in whole ``chunk_multiple`` units.

    ``explain(batch, fit)`` words the reason for a fitted batch (``fit``: how many would fit).
    """
    if request.batch_size:
        reasons.append(f"generation batch {request.batch_size} set by the user")
        return int(request.batch_size)
    gen = request.generator
    fit = available // per_item
    batch = round_down(int(min(gen.default_batch, fit)), gen.chunk_multiple)
    reasons.append(explain(batch, fit))
    return batch


def decoded_chunk(
    request: MemoryRequest,
    host_budget: int,
    reasons: list[str],
    *,
    most: int,
    least: int = 0,
    explain: Callable[[int, int], str],
) -> int:
    """Frames decoded at once: the user's ``memory.chunk_frames``, else about
    :data:`CHUNK_BYTES` of frames (at least ``least``, at most ``most``) with no more than a
    quarter of ``host_budget`` in flight, in whole ``chunk_multiple`` units.

    ``explain(chunk, in_flight_bytes)`` words the reason for a fitted chunk.
    """
    if request.chunk_frames:
        reasons.append(f"chunk {request.chunk_frames} frames set by the user")
        return int(request.chunk_frames)
    frame_bytes = max(1, request.frame_width * request.frame_height * 3)
    by_host = max(1, host_budget // 4 // (frame_bytes * CHUNKS_IN_FLIGHT))
    wanted = max(MIN_CHUNK_FRAMES, CHUNK_BYTES // frame_bytes, least)
    chunk = round_down(int(min(most, wanted, by_host)), request.generator.chunk_multiple)
    reasons.append(explain(chunk, chunk * frame_bytes * CHUNKS_IN_FLIGHT))
    return chunk
