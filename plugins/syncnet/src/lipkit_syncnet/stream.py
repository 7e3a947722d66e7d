"""Scoring one face track in blocks: crops and audio in, :class:`OffsetResult` out.

As the reference's ``evaluate``: ``min_length = min(frames, floor(samples / 640))`` (640
samples = one frame at 25 fps) and windows ``i = 0 .. min_length - 6`` (its
``range(0, min_length - 5)``: ``min_length - 5`` windows, so the last full five frames are not
used, and a track needs six frames and 0.24 s of audio). Window ``i`` is video frames
``[i, i + 5)`` as BGR float 0..255 (no normalisation; our crops arrive RGB uint8, so the
channels are reversed) and MFCC frames ``[4 i, 4 i + 20)``.

Memory is flat in the track's length: crops are held only until their windows are embedded
(``batch`` windows per forward pass), the MFCC is computed per batch from the samples it
covers, and :class:`~lipkit_syncnet.protocol.OffsetDistances` keeps distance rows, not
embeddings. Reading the crops stops once the audio limits the windows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from lipkit.errors import InputError
from lipkit.media.track import AudioTrack
from lipkit_syncnet.mfcc import FRAME_STEP, SAMPLE_RATE, mfcc_range, pcm16
from lipkit_syncnet.model import CROP_SIZE, MFCC_WINDOW, WINDOW_FRAMES, SyncNet
from lipkit_syncnet.protocol import OffsetDistances, OffsetResult

FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
MFCC_PER_FRAME = SAMPLES_PER_FRAME // FRAME_STEP  # 4

Progress = Callable[[float, float], None]


def audio_frames(audio: AudioTrack) -> int:
    """Video frames the audio covers, as the reference counts them: ``floor(samples / 640)``."""
    return audio.num_samples // SAMPLES_PER_FRAME


def _check_block(block: np.ndarray) -> np.ndarray:
    array = np.asarray(block)
    if array.ndim == 3:
        array = array[None]
    if array.dtype != np.uint8 or array.shape[1:] != (CROP_SIZE, CROP_SIZE, 3):
        raise ValueError(
            f"SyncNet scores uint8 [n, {CROP_SIZE}, {CROP_SIZE}, 3] RGB crops, got "
            f"{array.dtype} {array.shape}"
        )
    return array


class _Windows:
    """Lip and MFCC windows for window indices ``[first, stop)``, from held frames."""

    def __init__(self, audio: AudioTrack, device: torch.device) -> None:
        self.audio = audio
        self.device = device
        self.frames = np.zeros((0, CROP_SIZE, CROP_SIZE, 3), np.uint8)
        self.base = 0  # index of self.frames[0]

    def hold(self, block: np.ndarray) -> None:
        self.frames = block if self.frames.size == 0 else np.concatenate((self.frames, block))

    def release(self, before: int) -> None:
        """Forget frames before index ``before`` (no window from ``before`` on needs them)."""
        drop = before - self.base
        if drop > 0:
            self.frames = self.frames[drop:]
            self.base = before

    def lips(self, first: int, stop: int) -> torch.Tensor:
        """``[n, 3, 5, 224, 224]`` BGR float 0..255."""
        clip = self.frames[first - self.base : stop - self.base + WINDOW_FRAMES - 1]
        video = torch.from_numpy(np.ascontiguousarray(clip)).to(self.device)
        video = video.flip(-1).permute(3, 0, 1, 2).float()  # [3, frames, H, W], BGR
        return torch.stack([video[:, k : k + WINDOW_FRAMES] for k in range(stop - first)])

    def mfcc(self, first: int, stop: int) -> torch.Tensor:
        """``[n, 1, 13, 20]`` MFCC windows."""
        track = self.audio
        rows = mfcc_range(
            lambda a, b: pcm16(track.read(a, b)),
            track.num_samples,
            MFCC_PER_FRAME * first,
            MFCC_PER_FRAME * (stop - 1) + MFCC_WINDOW,
        )
        spans = [
            rows[MFCC_PER_FRAME * k : MFCC_PER_FRAME * k + MFCC_WINDOW].T
            for k in range(stop - first)
        ]
        assert all(s.shape[1] == MFCC_WINDOW for s in spans), "audio shorter than its windows"
        cc = torch.from_numpy(np.stack(spans)[:, None].astype(np.float32))
        return cc.to(self.device)


def embed_windows(
    model: SyncNet,
    crops: Iterable[np.ndarray],
    audio: AudioTrack,
    *,
    batch: int,
    device: torch.device,
    progress: Progress | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The (lip, audio) embeddings of every window in order, ``batch`` windows at a time."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    limit = audio_frames(audio)
    windows = _Windows(audio, device)
    seen = 0  # frames read
    done = 0  # windows embedded
    total_seconds = max(limit - WINDOW_FRAMES, 0) / FPS

    def run(first: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            lips = model.embed_lips(windows.lips(first, stop))
            sound = model.embed_audio(windows.mfcc(first, stop))
        windows.release(stop)
        if progress is not None:
            progress(stop / FPS, total_seconds)
        return lips, sound

    for block in crops:
        windows.hold(_check_block(block))
        seen += len(block)
        ready = min(seen, limit) - WINDOW_FRAMES  # window i needs frame i + 5 to exist
        while ready - done >= batch:
            yield run(done, done + batch)
            done += batch
        if seen >= limit:
            break  # the audio ends first: later frames are never scored
    last = min(seen, limit) - WINDOW_FRAMES
    while done < last:
        stop = min(done + batch, last)
        yield run(done, stop)
        done = stop
    if done == 0:
        raise InputError(
            f"too short to score: SyncNet needs at least {WINDOW_FRAMES + 1} frames "
            f"({(WINDOW_FRAMES + 1) / FPS:.2f} s) of both face and audio; the track has "
            f"{seen} frame(s) and {audio.seconds:.2f} s of audio",
            hint="score a longer clip (the face must be tracked for at least 6 frames)",
        )


def score_track(
    model: SyncNet,
    crops: Iterable[np.ndarray],
    audio: AudioTrack,
    *,
    batch: int,
    vshift: int,
    device: torch.device,
    progress: Progress | None = None,
) -> OffsetResult:
    """The reference's ``evaluate`` on one track, in blocks."""
    if audio.sample_rate != SAMPLE_RATE:
        raise ValueError(f"SyncNet scores 16 kHz audio, got {audio.sample_rate} Hz")
    if not audio.finite:
        raise InputError("the audio has NaN or infinite samples", hint="check the audio file")
    distances = OffsetDistances(vshift)
    for lips, sound in embed_windows(
        model, crops, audio, batch=batch, device=device, progress=progress
    ):
        distances.add(lips, sound)
    return distances.finish()
