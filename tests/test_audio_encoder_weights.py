"""An audio encoder's declared checkpoint is looked up in the model home by the resolver."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict

import lipkit
from lipkit import hookimpl
from lipkit.builtins.mel import MelAudioEncoder
from lipkit.builtins.preview import PreviewGenerator
from lipkit.errors import ModelError
from lipkit.interfaces import AudioEncoder, AudioFeatures
from lipkit.media.track import AudioTrack
from lipkit.plugins import load_registry
from lipkit.specs import AudioEncoderSpec, DeviceInfo, GeneratorSpec, WeightFile


class WeightedParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    encoder_weights: Path | None = None


class Weighted(AudioEncoder):
    spec: ClassVar[AudioEncoderSpec] = MelAudioEncoder.spec.model_copy(
        update={
            "name": "weighted-mel",
            "weights": (
                WeightFile(
                    name="enc", filename="enc.bin", param="encoder_weights", url="https://x"
                ),
            ),
        }
    )
    params_model: ClassVar[type[BaseModel]] = WeightedParams
    seen: ClassVar[list[Path | None]] = []

    def encode(
        self,
        audio: np.ndarray | AudioTrack,
        *,
        fps: float,
        num_frames: int,
        params: Any,
        device: DeviceInfo,
    ) -> AudioFeatures:
        Weighted.seen.append(params.encoder_weights)
        return MelAudioEncoder().encode(
            audio, fps=fps, num_frames=num_frames, params=MelAudioEncoder.params_model(),
            device=device,
        )  # fmt: skip


class UsesIt(PreviewGenerator):
    spec: ClassVar[GeneratorSpec] = PreviewGenerator.spec.model_copy(
        update={"name": "uses-weighted", "audio_encoder": "weighted-mel", "is_preview": False}
    )


def registry() -> Any:
    hooks = SimpleNamespace(
        lipkit_audio_encoders=hookimpl(lambda: [Weighted()]),
        lipkit_generators=hookimpl(lambda: [UsesIt()]),
    )
    return load_registry(extra=[hooks])


def test_the_model_home_file_is_filled_in_and_a_missing_one_is_a_model_error(
    sample_portrait: Path, sample_speech: Path, lipkit_home: Path, tmp_path: Path
) -> None:
    run: dict[str, Any] = dict(backend="uses-weighted", registry=registry(), fps=5)
    with pytest.raises(ModelError) as info:
        lipkit.plan(sample_portrait, sample_speech, **run)
    assert "enc.bin" in str(info.value) and "encoder_weights=PATH" in str(info.value)
    home_file = lipkit_home / "models" / "weighted-mel" / "enc.bin"
    home_file.parent.mkdir(parents=True)
    home_file.write_bytes(b"w")
    plan = lipkit.plan(sample_portrait, sample_speech, **run)
    assert plan.generator_params["encoder_weights"] == str(home_file)
    own = tmp_path / "mine.bin"
    own.write_bytes(b"w")
    lipkit.sync(sample_portrait, sample_speech, None, encoder_weights=own, **run)
    assert Weighted.seen[-1] == own
