"""A lip-sync scorer test double (no tests here), documented as such: ``EnergyScorer`` compares
how bright the lower half of the face crops is (a mouth opening shows its dark inside, a
moving jaw changes the shading) with how loud the speech is, window by window, with the same
offset search and LSE figures as SyncNet. It is not SyncNet: it lets the core's scoring, the
contract and face selection be tested without SyncNet weights."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel

from lipkit.errors import InputError
from lipkit.interfaces import SyncScore, SyncScorer
from lipkit.media.track import AudioTrack
from lipkit.specs import DeviceInfo, ScorerSpec

SAMPLES_PER_FRAME = 640  # 16 kHz at 25 fps


def _z(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std() + 1e-6)


class EnergyScorer(SyncScorer):
    spec: ClassVar[ScorerSpec] = ScorerSpec(
        name="energy", description="test double: mouth brightness vs speech loudness", rank=-1
    )

    def __init__(self) -> None:
        self.crops_seen: list[np.ndarray] = []  # the first crop of each block, and shapes
        self.frames_seen = 0
        self.samples_seen = 0

    def score(
        self,
        crops: Iterable[np.ndarray],
        audio: AudioTrack,
        *,
        params: BaseModel,
        model_home: Path,
        device: DeviceInfo,
        progress: Any = None,
    ) -> SyncScore:
        spec = self.spec
        mouth = []
        for block in crops:
            assert block.dtype == np.uint8 and block.shape[1:] == (spec.crop_size,) * 2 + (3,)
            self.crops_seen.append(block[0].copy())
            self.frames_seen += len(block)
            mouth.extend(block[:, spec.crop_size // 2 :].mean(axis=(1, 2, 3)).tolist())
        self.samples_seen = audio.num_samples
        frames = min(len(mouth), audio.num_samples // SAMPLES_PER_FRAME)
        windows = frames - spec.window_frames
        if windows <= 0:
            raise InputError(f"{frames} frames: fewer than one {spec.window_frames}-frame window")
        loud = np.array(
            [
                float(np.sqrt(np.mean(audio.read(i * 640, (i + 1) * 640) ** 2)))
                for i in range(frames)
            ]
        )
        # louder speech, wider mouth, darker lower half: the mouth's darkness against loudness
        video = np.stack([_z(-np.array(mouth[i : i + 5])) for i in range(windows)])
        sound = np.stack([_z(loud[i : i + 5]) for i in range(windows)])
        shift = spec.max_offset
        padded = np.pad(sound, ((shift, shift), (0, 0)))
        dists = np.stack(
            [
                np.linalg.norm(video[i] - padded[i : i + 2 * shift + 1], axis=1)
                for i in range(windows)
            ]
        )
        mean = dists.mean(axis=0)
        best = int(np.argmin(mean))
        return SyncScore(
            lse_d=float(mean[best]),
            lse_c=float(np.median(mean) - mean[best]),
            offset=shift - best,
            frames=windows,
            distances=mean.tolist(),
        )
