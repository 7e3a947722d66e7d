"""Avatars for live use: a face video (or still) decoded, tracked and cropped once, on disk.

``lipkit avatar prepare FACE -o NAME`` (:func:`prepare_avatar`) runs the job's own face stages
(the resolver's face processor, the analysis pass and the backend's crop) over the idle video
and stores, in ``$LIPKIT_HOME/avatars/NAME`` (or a folder given as a path):

- ``avatar.json``: :class:`AvatarInfo` (backend, frame rate, size, crop size, ...);
- ``frames.u8``: the frames, raw RGB, read one at a time (never mapped whole: memory stays
  flat however long the avatar plays);
- ``crops.npy``, ``matrices.npy``, ``faces.npy``: each frame's aligned crop, its 2x3 matrix
  and whether it has a face; ``mask.npy``: the backend's blend mask;
- ``face.png`` and ``probe.wav``: the first frame and 1 s of silence, so a live session can be
  resolved (device, precision, params) exactly as a job on this face would be.

Live work per frame is then only audio features, the generator and the paste. Frame ``k`` of a
live stream shows frame :func:`pingpong_index` ``(k)`` of the avatar: the idle video plays
forwards and backwards forever, so a loop never jumps.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lipkit.config import LipkitSettings
from lipkit.errors import ConfigError, InputError
from lipkit.logs import get_logger

log = get_logger(__name__)

AVATAR_FORMAT = 1
MAX_SECONDS = 60.0
"""The longest idle video :func:`prepare_avatar` takes unless ``seconds`` says otherwise."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_READ_BATCH = 16


class AvatarInfo(BaseModel):
    """What ``avatar.json`` holds: how the avatar was made and what a live session needs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: int = AVATAR_FORMAT
    name: str
    backend: str = Field(description="the generator it was cropped for (its crop size, framing)")
    source: str = Field(description="file name of the face input")
    still: bool
    fps: float = Field(gt=0, description="frames per second of the idle video (a still: --fps)")
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    num_frames: int = Field(gt=0, description="frames stored (a still: 1)")
    face_frames: int = Field(ge=1, description="frames with a face")
    crop_size: int = Field(gt=0)
    mouth_region: tuple[float, float, float, float]
    face_processor: str
    generator_params: dict[str, Any] = Field(default_factory=dict)
    created: str = ""
    lipkit_version: str = ""


def pingpong_index(k: int, num_frames: int) -> int:
    """The avatar frame shown at live frame ``k``: 0, 1, .., n-1, n-2, .., 1, 0, 1, ..."""
    if num_frames <= 1:
        return 0
    period = 2 * num_frames - 2
    phase = k % period
    return phase if phase < num_frames else period - phase


def avatar_dir(name: str | os.PathLike[str], settings: LipkitSettings) -> Path:
    """Where avatar ``name`` lives: a bare name under ``$LIPKIT_HOME/avatars``, else a path."""
    text = os.fspath(name)
    if _NAME.match(text) and text not in (".", ".."):
        return settings.home / "avatars" / text
    if not text or "\0" in text:
        raise ConfigError(
            f"not an avatar name or folder: {text!r}", hint="give a name such as 'anna'"
        )
    return Path(text)


class Avatar:
    """A prepared avatar, opened for reading (frames one at a time; crops and matrices held)."""

    def __init__(self, path: Path, info: AvatarInfo) -> None:
        self.path = path
        self.info = info
        self.crops = np.load(path / "crops.npy", mmap_mode="r", allow_pickle=False)
        self.matrices = np.load(path / "matrices.npy", allow_pickle=False)
        self.faces = np.load(path / "faces.npy", allow_pickle=False)
        self.mask = np.load(path / "mask.npy", allow_pickle=False)
        self._frame_bytes = info.width * info.height * 3
        self._frames = open(path / "frames.u8", "rb", buffering=0)  # noqa: SIM115 - close()
        self._check_sizes()

    def _check_sizes(self) -> None:
        n, size = self.info.num_frames, self.info.crop_size
        expected = {
            "crops.npy": (self.crops.shape, (n, size, size, 3)),
            "matrices.npy": (self.matrices.shape, (n, 2, 3)),
            "faces.npy": (self.faces.shape, (n,)),
            "mask.npy": (self.mask.shape, (size, size)),
        }
        frames_size = os.fstat(self._frames.fileno()).st_size
        wrong = [name for name, (got, want) in expected.items() if tuple(got) != want]
        if frames_size != n * self._frame_bytes:
            wrong.append("frames.u8")
        if wrong:
            self.close()
            raise InputError(
                f"avatar {self.path} is damaged ({', '.join(wrong)} do not match avatar.json)",
                hint="prepare it again: lipkit avatar prepare FACE -o NAME --force",
            )

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of its frames."""
        return self.info.width, self.info.height

    def index(self, k: int) -> int:
        """The stored frame live frame ``k`` shows (:func:`pingpong_index`)."""
        return pingpong_index(k, self.info.num_frames)

    def frame(self, index: int) -> np.ndarray:
        """Stored frame ``index`` as a new ``uint8 [H, W, 3]`` array."""
        buffer = bytearray(self._frame_bytes)
        got = os.preadv(self._frames.fileno(), [buffer], index * self._frame_bytes)
        if got != self._frame_bytes:
            raise InputError(f"avatar {self.path}: frame {index} is truncated")
        return np.frombuffer(buffer, np.uint8).reshape(self.info.height, self.info.width, 3)

    def close(self) -> None:
        self._frames.close()

    def __enter__(self) -> Avatar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_avatar(name: str | os.PathLike[str], settings: LipkitSettings | None = None) -> Avatar:
    """Open a prepared avatar by name (``$LIPKIT_HOME/avatars``) or folder."""
    settings = settings or LipkitSettings()
    path = avatar_dir(name, settings)
    meta = path / "avatar.json"
    if not meta.is_file():
        raise InputError(
            f"no avatar {os.fspath(name)!r} (looked in {path})",
            hint="make it first: lipkit avatar prepare FACE -o NAME",
        )
    try:
        info = AvatarInfo.model_validate_json(meta.read_text(encoding="utf-8"))
    except (ValidationError, ValueError) as exc:
        raise InputError(
            f"avatar {path} has an unreadable avatar.json: {str(exc).splitlines()[0]}",
            hint="prepare it again: lipkit avatar prepare FACE -o NAME --force",
        ) from None
    try:
        return Avatar(path, info)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(
            f"avatar {path} is incomplete: {exc}",
            hint="prepare it again: lipkit avatar prepare FACE -o NAME --force",
        ) from None
