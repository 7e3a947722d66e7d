"""The lip-sync scorer contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lipkit.errors import InputError
from lipkit.interfaces import SyncScore, SyncScorer
from lipkit.media.track import AudioTrack
from lipkit.specs import DeviceInfo, ScorerSpec
from lipkit_conformance._common import (
    CONTRACT,
    build_params,
    check_forbids_unknown,
    check_spec,
    face_photo,
)

RATE = 16000


def talking_crops(frames: int, size: int, seed: int = 0) -> np.ndarray:
    """``uint8 [frames, size, size, 3]``: the kit's face photo, its lower half brightened and
    darkened over time (a mouth that moves), resized to ``size``."""
    from PIL import Image

    face = np.asarray(Image.fromarray(face_photo()).resize((size, size)), dtype=np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((frames, size, size, 3), np.uint8)
    for i in range(frames):
        frame = face.copy()
        frame[size // 2 :] *= 0.7 + 0.3 * np.sin(i / 3.0) + 0.02 * rng.standard_normal()
        out[i] = np.clip(frame, 0, 255).astype(np.uint8)
    return out


def speech_for(frames: int, fps: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(frames / fps * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t))
            + 0.01 * rng.standard_normal(t.size)).astype(np.float32)  # fmt: skip


@CONTRACT
class SyncScorerContract:
    """Override ``scorer``; optionally ``scorer_params`` (a dict) and ``model_home``."""

    @pytest.fixture
    def scorer(self) -> SyncScorer:
        """Your SyncScorer."""
        raise NotImplementedError("return your SyncScorer")

    @pytest.fixture
    def scorer_params(self) -> dict[str, Any]:
        return {}

    @pytest.fixture
    def model_home(self, tmp_path: Path) -> Path:
        return tmp_path / "models"

    def _score(
        self,
        scorer: SyncScorer,
        params: dict[str, Any],
        home: Path,
        device: DeviceInfo,
        crops: np.ndarray,
        block: int = 16,
    ) -> SyncScore:
        speech = AudioTrack.from_array(speech_for(len(crops), scorer.spec.fps))
        blocks = (crops[i : i + block] for i in range(0, len(crops), block))
        return scorer.score(
            blocks,
            speech,
            params=build_params(scorer.params_model, params),
            model_home=home,
            device=device,
        )

    def test_spec(self, scorer: SyncScorer) -> None:
        """A valid ScorerSpec; parameters reject unknown names."""
        check_spec(scorer.spec, ScorerSpec)
        check_forbids_unknown(scorer.params_model)

    def test_a_score_of_a_talking_face(
        self,
        scorer: SyncScorer,
        scorer_params: dict[str, Any],
        model_home: Path,
        cpu_device: DeviceInfo,
    ) -> None:
        """A SyncScore: one mean distance per offset searched, LSE-D their minimum, LSE-C the
        median minus it (so >= 0), the offset where the minimum is, in range; the same for the
        same input, whatever the block size the crops come in."""
        spec = scorer.spec
        crops = talking_crops(3 * spec.window_frames + 2 * spec.max_offset, spec.crop_size)
        first = self._score(scorer, scorer_params, model_home, cpu_device, crops)
        again = self._score(scorer, scorer_params, model_home, cpu_device, crops, block=7)
        assert len(first.distances) == 2 * spec.max_offset + 1
        assert first.lse_d == pytest.approx(min(first.distances), rel=1e-6)
        assert first.lse_c == pytest.approx(float(np.median(first.distances)) - first.lse_d)
        assert first.lse_c >= 0 and -spec.max_offset <= first.offset <= spec.max_offset
        assert first.offset == spec.max_offset - int(np.argmin(first.distances))
        assert first.frames > 0
        assert again.offset == first.offset
        np.testing.assert_allclose(again.distances, first.distances, rtol=1e-5, atol=1e-6)

    def test_a_track_shorter_than_a_window_is_an_input_error(
        self,
        scorer: SyncScorer,
        scorer_params: dict[str, Any],
        model_home: Path,
        cpu_device: DeviceInfo,
    ) -> None:
        """Fewer frames than one window raise InputError."""
        crops = talking_crops(scorer.spec.window_frames - 1, scorer.spec.crop_size)
        with pytest.raises(InputError):
            self._score(scorer, scorer_params, model_home, cpu_device, crops)
