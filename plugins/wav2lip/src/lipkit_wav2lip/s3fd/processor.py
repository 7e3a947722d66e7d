"""The S3FD face processor: the detector Wav2Lip was trained with, as a lipkit face processor.

Weights: face-alignment's ``s3fd.pth`` (:data:`WEIGHTS`), read from
``settings.detector_checkpoint`` (the core fills it with the file's place in the model home;
``--detector-checkpoint`` overrides it) safely and strictly through :mod:`lipkit.checkpoints`:
``.pth`` files are read with ``weights_only=True``, ``.safetensors`` files work too, a
``{"state_dict": ...}`` wrapper and ``module.`` prefixes are accepted, and a file whose keys or
shapes differ from the network's is refused with :class:`~lipkit.errors.ModelError`.

Device: the job's device, unless ``settings.detector_device == "cpu"`` or this torch cannot use
that device, then the CPU. float32 everywhere unless the processor was made with
``fp16=True``, which runs the network in float16 on CUDA only (the L2 norms and the softmax
stay in float32).

Detection (:meth:`S3FDFaceSession.detect`): :func:`lipkit_wav2lip.s3fd.detect.detect` on the
frames as given (the core has already shrunk them to ``settings.detect_size``), at most
``settings.detect_batch`` frames per network call; each frame's face is its highest-scoring
detection, as in Wav2Lip, with the box clipped to the frame. Alignment
(:meth:`S3FDFaceSession.align`): the box stretched onto the square crop, as Wav2Lip resizes
its (padded) box to 96x96; the core adds the pads and the smoothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from lipkit.checkpoints import check_state_dict, expected_shapes, load_state_dict
from lipkit.errors import ModelError
from lipkit.interfaces import Detection, FaceProcessor, FaceSession, as_frame_batch
from lipkit.logs import get_logger
from lipkit.specs import DeviceInfo, FaceProcessorSpec, WeightFile
from lipkit_wav2lip.s3fd.detect import detect
from lipkit_wav2lip.s3fd.net import S3FD

if TYPE_CHECKING:
    from lipkit.config import FaceSettings

log = get_logger(__name__)

WHAT = "S3FD face detector checkpoint"

WEIGHTS = WeightFile(
    name="s3fd",
    filename="s3fd.pth",
    param="detector_checkpoint",
    url="https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
    description="S3FD face detector from face-alignment (a bare state dict, 22.5M parameters, "
    "about 90 MB): the detector Wav2Lip's face boxes come from",
)
"""face-alignment's published S3FD weights (save the download as ``s3fd.pth``)."""


def _usable(device: torch.device) -> bool:
    """Whether this torch build can run on ``device`` now."""
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        return torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        return bool(mps is not None and mps.is_available())
    return False


def detector_device(settings: FaceSettings, device: DeviceInfo) -> torch.device:
    """Where the network runs: the CPU if asked for or if ``device`` is unusable, else it."""
    if settings.detector_device == "cpu" or device.kind == "cpu":
        return torch.device("cpu")
    try:
        target = torch.device(device.id)
    except (RuntimeError, ValueError):
        target = None
    if target is None or not _usable(target):
        log.debug("s3fd: device not usable by this torch, using the CPU", device=device.id)
        return torch.device("cpu")
    return target


def load_net(path: Path | None) -> S3FD:
    """An S3FD network (float32, CPU, eval mode) with the weights of the checkpoint at ``path``.

    Raises ModelError, saying where to put ``s3fd.pth`` and how to get it, when ``path`` is None
    or not a file; and the :mod:`lipkit.checkpoints` errors for an unsafe, truncated or
    mismatched file.
    """
    get = f"download {WEIGHTS.url} and save it as {WEIGHTS.filename}"
    if path is None:
        raise ModelError(
            f"the 's3fd' face processor needs its weights ({WEIGHTS.filename}), and no path was "
            "given",
            hint=f"{get} in the folder 's3fd' of the model home ($LIPKIT_HOME/models/s3fd/; "
            "`lipkit models list` shows the model home), or pass --detector-checkpoint PATH; "
            "or pick another face processor with --face-detector",
        )
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(
            f"{WHAT} not found at {path}",
            hint=f"{get} at that path, or pass --detector-checkpoint PATH (also "
            "LIPKIT_FACE__DETECTOR_CHECKPOINT); or pick another face processor with "
            "--face-detector",
        )
    state = load_state_dict(path, what=WHAT)
    net = S3FD()
    check_state_dict(
        state,
        expected_shapes(net),
        what=f"{WHAT} ({WEIGHTS.filename})",
        path=path,
        hint=f"the 's3fd' face processor needs face-alignment's S3FD weights: {get}",
    )
    net.load_state_dict(state, strict=True)
    return net.eval()


class S3FDFaceSession(FaceSession):
    """A loaded S3FD network on its device (see the module doc)."""

    def __init__(self, net: S3FD, settings: FaceSettings) -> None:
        self.net: S3FD | None = net
        self.settings = settings

    @property
    def device(self) -> torch.device:
        """The device the network runs on."""
        return next(self._net().parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The network's floating-point type."""
        return next(self._net().parameters()).dtype

    def _net(self) -> S3FD:
        if self.net is None:
            raise RuntimeError("this S3FD session is closed")
        return self.net

    def detect(self, frames: np.ndarray) -> list[Detection | None]:
        """The highest-scoring face of each ``uint8 [B, H, W, 3]`` RGB frame, or None."""
        return [faces[0] if faces else None for faces in self.detect_all(frames)]

    def detect_all(self, frames: np.ndarray) -> list[list[Detection]]:
        """Every face of each frame (after S3FD's keep threshold and NMS), for face.select."""
        frames = as_frame_batch(frames)
        step = self.settings.detect_batch or max(1, len(frames))
        found: list[np.ndarray] = []
        for start in range(0, len(frames), step):
            found.extend(detect(self._net(), frames[start : start + step]))
        height, width = frames.shape[1:3]
        return [_faces(rows, width, height) for rows in found]

    def align(self, detection: Detection, crop_size: int) -> np.ndarray:
        """2x3 matrix stretching the detection's box onto the square crop (no margin)."""
        from lipkit.face.warp import box_affine

        return box_affine(detection.box, crop_size)

    def close(self) -> None:
        """Drop the network (and the CUDA cache it used)."""
        on_cuda = self.net is not None and self.device.type == "cuda"
        self.net = None
        if on_cuda:
            torch.cuda.empty_cache()


def _faces(rows: np.ndarray, width: int, height: int) -> list[Detection]:
    """A frame's detections (rows sorted by score) clipped to the frame, best first; boxes
    that are empty once clipped (entirely outside the frame) are skipped."""
    faces = []
    for row in rows:
        box = np.clip(row[:4], 0.0, [width, height, width, height]).astype(np.float32)
        if box[2] > box[0] and box[3] > box[1]:
            faces.append(Detection(box=box, score=float(row[4])))
    return faces


class S3FDFaceProcessor(FaceProcessor):
    """S3FD (face-alignment's weights), the detector the Wav2Lip reference uses: boxes only."""

    spec: ClassVar[FaceProcessorSpec] = FaceProcessorSpec(
        name="s3fd",
        description="S3FD face detector (face-alignment's s3fd.pth), as the Wav2Lip reference "
        "uses; preferred over haar when its weights are present",
        landmarks=False,
        alignment="box",
        devices=("cuda", "rocm", "mps", "cpu"),
        weights=(WEIGHTS,),
        rank=10,
    )

    def __init__(self, *, fp16: bool = False) -> None:
        self.fp16 = fp16

    def open(self, settings: Any, device: DeviceInfo) -> FaceSession:
        """Load ``settings.detector_checkpoint`` onto the detector's device (see the module doc)."""
        net = load_net(settings.detector_checkpoint)
        target = detector_device(settings, device)
        half = self.fp16 or settings.detector_precision == "fp16"
        dtype = torch.float16 if half and target.type == "cuda" else torch.float32
        net.to(device=target, dtype=dtype)
        log.debug(
            "opened s3fd face processor",
            checkpoint=str(settings.detector_checkpoint),
            device=str(target),
            dtype=str(dtype).removeprefix("torch."),
        )
        return S3FDFaceSession(net, settings)
