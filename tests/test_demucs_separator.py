"""The ``demucs`` separator through lipkit: the registry lists it, the published names resolve
to files in the model folder, and ``separate`` gives what demucs's whole-track separation
gives, streamed, as a 16 kHz mono track."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from demucs.apply import apply_model
from demucs_helpers import save_safetensors, save_th, song, tiny_htdemucs, write_wav
from lipkit_conformance import VocalSeparatorContract
from lipkit_demucs import DemucsParams, DemucsSeparator
from lipkit_demucs.checkpoint import load_model
from lipkit_demucs.separator import load_bag
from lipkit_demucs.stats import MixStats

from lipkit.errors import ConfigError, ModelError
from lipkit.interfaces import AudioSource, VocalSeparator
from lipkit.media.audio import TrackBuilder, stream_audio
from lipkit.plugins import load_registry
from lipkit.specs import DeviceInfo

CPU = DeviceInfo(id="cpu", kind="cpu", name="cpu", total_memory=0, free_memory=0)
HTDEMUCS_SIG = "955717e8"
FT_SIGS = ["f7e0c4bc", "d12395a8", "92cfc3b6", "04573f0d"]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A model folder with a tiny htdemucs under its published signature."""
    folder = tmp_path / "models" / "demucs"
    save_th(tiny_htdemucs(), folder, HTDEMUCS_SIG)
    return folder


def test_the_registry_lists_the_separator() -> None:
    registry = load_registry(allow=["demucs"])
    assert isinstance(registry.vocal_separators["demucs"], DemucsSeparator)


def test_missing_weights_name_the_published_files(tmp_path: Path) -> None:
    sep = DemucsSeparator()
    missing = sep.missing_weights(DemucsParams(), tmp_path)
    assert missing == [
        "955717e8-8726e21a.th (https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/"
        "955717e8-8726e21a.th)"
    ]
    ft = sep.missing_weights(DemucsParams(model="htdemucs_ft"), tmp_path)
    assert [m.split(" ")[0] for m in ft] == [
        "f7e0c4bc-ba3fe64a.th",
        "d12395a8-e57c48e6.th",
        "92cfc3b6-ef3bcb9c.th",
        "04573f0d-f3cf25b2.th",
    ]
    assert len(sep.missing_weights(DemucsParams(model="mdx_extra"), tmp_path)) == 4
    assert sep.missing_weights(DemucsParams(model=str(tmp_path / "x.th")), tmp_path) == ["x"]
    with pytest.raises(ConfigError, match="unknown Demucs model"):
        sep.missing_weights(DemucsParams(model="nonsense"), tmp_path)
    with pytest.raises(ModelError, match="missing"):
        load_bag(DemucsParams(), tmp_path)


def test_describe_and_params(home: Path) -> None:
    sep = DemucsSeparator()
    assert sep.missing_weights(DemucsParams(), home) == []
    line = sep.describe(DemucsParams(shifts=1), home)
    assert "htdemucs" in line and "shifts 1" in line and "\n" not in line
    with pytest.raises(ValueError):
        DemucsParams(unknown=1)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        DemucsParams(overlap=1.0)


def reference_vocals(path: Path, model: Any, source: AudioSource) -> np.ndarray:
    """demucs's separation of the whole crop in memory (normalised with the same statistics),
    then mono and 16 kHz as the separator does."""
    blocks = list(stream_audio(path, sample_rate=44100, channels=2, start=1.0, seconds=3.0))
    wav = torch.from_numpy(np.concatenate(blocks).T.copy())
    stats = MixStats()
    for block in blocks:
        stats.add(block)
    mean = torch.tensor(stats.mean, dtype=torch.float32)
    std = torch.tensor(stats.std, dtype=torch.float32) + 1e-8
    out = apply_model(model, ((wav - mean) / std)[None], split=True, overlap=0.25, shifts=0)
    vocals = (out[0, 3] * std + mean).numpy()
    builder = TrackBuilder(44100, source.work_dir)
    builder.add(vocals.mean(axis=0))
    return builder.finish().read_all()


def test_separate_equals_whole_track_demucs(home: Path, tmp_path: Path) -> None:
    path = write_wav(tmp_path / "song.wav", song(5.0))
    source = AudioSource(path, 1.0, 3.0, tmp_path / "work")
    calls: list[tuple[float, float]] = []
    track = DemucsSeparator().separate(
        source,
        params=DemucsParams(),
        model_home=home,
        device=CPU,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert track.sample_rate == 16000 and abs(track.num_samples - 48000) <= 1
    model = load_model(next(home.glob(f"{HTDEMUCS_SIG}-*.th")))
    expected = reference_vocals(path, model, source)
    assert np.array_equal(track.read_all(), expected)
    assert calls[-1] == (pytest.approx(3.0), 3.0)


def test_a_bag_in_hugging_face_format_loads_only_the_vocals_model(tmp_path: Path) -> None:
    """htdemucs_ft as the Hub export: the bag yaml plus one safetensors per model."""
    folder = tmp_path / "demucs"
    for i, sig in enumerate(FT_SIGS):
        save_safetensors(tiny_htdemucs(seed=i), folder / f"{sig}.safetensors")
    (folder / "htdemucs_ft.yaml").write_text(
        "models: " + str(FT_SIGS) + "\nweights: [[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]\n"
    )
    members = load_bag(DemucsParams(model="htdemucs_ft"), folder)
    assert [m.model is not None for m in members] == [False, False, False, True]
    assert [m.weight for m in members] == [0.0, 0.0, 0.0, 1.0]
    path = write_wav(tmp_path / "song.wav", song(2.0))
    track = DemucsSeparator().separate(
        AudioSource(path, 0.0, 2.0, tmp_path / "work"),
        params=DemucsParams(model="htdemucs_ft"),
        model_home=folder,
        device=CPU,
    )
    assert abs(track.num_samples - 32000) <= 1 and track.finite


def test_a_checkpoint_path_and_a_too_long_segment(home: Path, tmp_path: Path) -> None:
    ckpt = next(home.glob("*.th"))
    path = write_wav(tmp_path / "song.wav", song(1.0))
    source = AudioSource(path, 0.0, 1.0, tmp_path / "work")
    track = DemucsSeparator().separate(
        source, params=DemucsParams(model=str(ckpt)), model_home=tmp_path, device=CPU
    )
    assert abs(track.num_samples - 16000) <= 1
    with pytest.raises(ConfigError, match="longer than"):
        DemucsSeparator().separate(
            source, params=DemucsParams(segment=5.0), model_home=home, device=CPU
        )


class TestDemucsContract(VocalSeparatorContract):
    @pytest.fixture
    def separator(self) -> VocalSeparator:
        return load_registry(allow=["demucs"]).vocal_separators["demucs"]

    @pytest.fixture
    def model_home(self, tmp_path: Path) -> Path:
        folder = tmp_path / "models" / "demucs"
        save_th(tiny_htdemucs(), folder, HTDEMUCS_SIG)
        return folder

    @pytest.fixture
    def separator_params(self) -> dict[str, Any]:
        return {}
