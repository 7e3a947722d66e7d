"""Scoring one face track with StableSyncNet in blocks: crops and audio in, offsets out.

The input protocol is LatentSync's (``SyncNetDataset`` with ``syncnet_16_pixel_attn.yaml``,
``eval_syncnet_acc.py``):

- **Frames.** 256x256 RGB, ``x / 255`` then normalised to -1..1 (``(x - 0.5) / 0.5``); 16
  consecutive frames stacked on the channels (frame-major: channel ``3 f + c``) and only the
  lower half kept (rows 128..255): ``[48, 128, 256]``.
- **Audio.** The Wav2Lip log-mel spectrogram of the 16 kHz float speech (80 bands, hop 200: 80
  columns per second, ``1 + samples // 200`` in all; :mod:`lipkit.audio.mel`) with zero centre
  padding, as librosa 0.10 (LatentSync's pin) pads. Window ``i`` (video frames ``[i, i + 16)``)
  takes the 52 columns from ``int(80.0 * (i / 25.0))``, the dataset's ``crop_audio_window``.
- **Windows.** Every ``i`` whose 16 frames exist and whose 52 columns lie inside the
  spectrogram (the dataset drops a window whose mel is short). A track needs 16 frames and
  10,200 samples (0.64 s) of audio.

Memory is flat in the track's length: crops are held only until their windows are embedded,
``batch`` windows per forward pass; the spectrogram is computed per batch from the samples it
covers; :class:`~lipkit_syncnet.stable_protocol.CosineOffsets` keeps distance rows, not
embeddings. Reading the crops stops once the audio limits the windows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from lipkit.audio.mel import HOP_LENGTH, PadMode, num_mel_frames, spectrogram_columns
from lipkit.errors import InputError
from lipkit.media.track import AudioTrack
from lipkit_syncnet.protocol import OffsetResult
from lipkit_syncnet.stable_model import CROP_SIZE, MEL_WINDOW, NUM_FRAMES, StableSyncNet
from lipkit_syncnet.stable_protocol import CosineOffsets

FPS = 25
SAMPLE_RATE = 16000
MEL_RATE = 80.0
PAD_MODE: PadMode = "constant"
MIN_SAMPLES = (MEL_WINDOW - 1) * HOP_LENGTH
"""Samples for one window's 52 columns (``1 + n // 200 >= 52``): 10,200."""

Progress = Callable[[float, float], None]


def mel_start(window: int) -> int:
    """First spectrogram column of window ``window``: the dataset's ``int(80. * (i / 25.))``."""
    return int(MEL_RATE * (window / float(FPS)))


def audio_windows(num_samples: int) -> int:
    """How many windows the audio covers: the ``i`` with ``mel_start(i) + 52 <= columns``."""
    room = num_mel_frames(num_samples) - MEL_WINDOW
    if room < 0:
        return 0
    count = int(room * FPS / MEL_RATE) + 1  # close; settled with the exact expression
    while mel_start(count) <= room:
        count += 1
    while count > 0 and mel_start(count - 1) > room:
        count -= 1
    return count


def _check_block(block: np.ndarray) -> np.ndarray:
    array = np.asarray(block)
    if array.ndim == 3:
        array = array[None]
    if array.dtype != np.uint8 or array.shape[1:] != (CROP_SIZE, CROP_SIZE, 3):
        raise ValueError(
            f"StableSyncNet scores uint8 [n, {CROP_SIZE}, {CROP_SIZE}, 3] RGB crops, got "
            f"{array.dtype} {array.shape}"
        )
    return array


def lower_halves(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """Every 16-frame window of uint8 RGB ``frames`` as the visual input ``[n, 48, 128, 256]``."""
    video = torch.from_numpy(np.ascontiguousarray(frames[:, CROP_SIZE // 2 :])).to(device)
    video = (video.permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5  # [frames, 3, 128, 256]
    count = len(frames) - NUM_FRAMES + 1
    return torch.stack([video[k : k + NUM_FRAMES].flatten(0, 1) for k in range(count)])


def mel_windows(audio: AudioTrack, first: int, stop: int) -> np.ndarray:
    """``float32 [n, 1, 80, 52]``: the mel windows of windows ``[first, stop)``."""
    lo = mel_start(first)
    columns = spectrogram_columns(audio, lo, mel_start(stop - 1) + MEL_WINDOW, pad_mode=PAD_MODE)
    spans = [
        columns[:, mel_start(i) - lo : mel_start(i) - lo + MEL_WINDOW] for i in range(first, stop)
    ]
    assert all(s.shape[1] == MEL_WINDOW for s in spans), "audio shorter than its windows"
    return np.stack(spans)[:, None]


class _Frames:
    """The crops not yet used by every window, from index ``base``."""

    def __init__(self) -> None:
        self.frames = np.zeros((0, CROP_SIZE, CROP_SIZE, 3), np.uint8)
        self.base = 0

    def hold(self, block: np.ndarray) -> None:
        self.frames = block if self.frames.size == 0 else np.concatenate((self.frames, block))

    def span(self, first: int, stop: int) -> np.ndarray:
        """The frames of windows ``[first, stop)``."""
        return self.frames[first - self.base : stop - self.base + NUM_FRAMES - 1]

    def release(self, before: int) -> None:
        drop = before - self.base
        if drop > 0:
            self.frames = self.frames[drop:]
            self.base = before


def embed_windows(
    model: StableSyncNet,
    crops: Iterable[np.ndarray],
    audio: AudioTrack,
    *,
    batch: int,
    device: torch.device,
    progress: Progress | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The (lip, audio) unit embeddings of every window in order, ``batch`` windows at a time."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    by_audio = audio_windows(audio.num_samples)
    held = _Frames()
    seen = done = 0
    total_seconds = by_audio / FPS

    def run(first: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        mel = torch.from_numpy(mel_windows(audio, first, stop)).to(device)
        with torch.inference_mode():
            lips = model.embed_lips(lower_halves(held.span(first, stop), device))
            sound = model.embed_audio(mel)
        held.release(stop)
        if progress is not None:
            progress(stop / FPS, total_seconds)
        return lips, sound

    for block in crops:
        array = _check_block(block)
        held.hold(array)
        seen += len(array)
        ready = min(seen - NUM_FRAMES + 1, by_audio)
        while ready - done >= batch:
            yield run(done, done + batch)
            done += batch
        if ready >= by_audio:
            break  # the audio ends first: later frames are never scored
    last = max(min(seen - NUM_FRAMES + 1, by_audio), 0)
    while done < last:
        stop = min(done + batch, last)
        yield run(done, stop)
        done = stop
    if done == 0:
        raise InputError(
            f"too short to score: StableSyncNet needs at least {NUM_FRAMES} frames "
            f"({NUM_FRAMES / FPS:.2f} s) of face and {MIN_SAMPLES / SAMPLE_RATE:.2f} s of audio; "
            f"the track has {seen} frame(s) and {audio.seconds:.2f} s of audio",
            hint="score a longer clip (the face must be tracked for at least 16 frames)",
        )


def score_track(
    model: StableSyncNet,
    crops: Iterable[np.ndarray],
    audio: AudioTrack,
    *,
    batch: int,
    vshift: int,
    device: torch.device,
    progress: Progress | None = None,
) -> OffsetResult:
    """Every window's distances at ``-vshift .. +vshift`` and their summary, in blocks."""
    if audio.sample_rate != SAMPLE_RATE:
        raise ValueError(f"StableSyncNet scores 16 kHz audio, got {audio.sample_rate} Hz")
    if not audio.finite:
        raise InputError("the audio has NaN or infinite samples", hint="check the audio file")
    offsets = CosineOffsets(vshift)
    for lips, sound in embed_windows(
        model, crops, audio, batch=batch, device=device, progress=progress
    ):
        offsets.add(lips, sound)
    return offsets.finish()
