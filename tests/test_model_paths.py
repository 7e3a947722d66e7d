"""Weights in a host's model folders (``model_paths``): found after the model home, handed to
the backend and the face processor through their weight parameters, and chosen by auto."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")

from wav2lip_helpers import random_state_dict, save_published  # noqa: E402

import lipkit  # noqa: E402
from lipkit.plugins import load_registry  # noqa: E402


@pytest.fixture(scope="module")
def host_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A host's model root: ``wav2lip/wav2lip_gan.pth`` under it."""
    root = tmp_path_factory.mktemp("host-models")
    (root / "wav2lip").mkdir()
    save_published(
        random_state_dict(seed=2), root / "wav2lip" / "wav2lip_gan.pth", module_prefix=True
    )
    return root


def test_auto_picks_the_backend_whose_weights_are_in_a_model_path(
    host_models: Path, sample_face: Path, sample_speech: Path
) -> None:
    registry = load_registry(allow=["wav2lip"])
    without = lipkit.plan(sample_face, sample_speech, backend="auto", registry=registry)
    assert without.choice("generator").implementation == "preview"  # nothing in the model home
    plan = lipkit.plan(
        sample_face, sample_speech, backend="auto", registry=registry, model_paths=[host_models]
    )
    assert plan.choice("generator").implementation == "wav2lip"
    assert Path(plan.generator_params["checkpoint"]) == host_models / "wav2lip" / "wav2lip_gan.pth"


def test_a_file_directly_in_a_model_path_and_the_given_path_wins(
    host_models: Path, tmp_path: Path, sample_face: Path, sample_speech: Path
) -> None:
    registry = load_registry(allow=["wav2lip"])
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "wav2lip_gan.pth").symlink_to(host_models / "wav2lip" / "wav2lip_gan.pth")
    plan = lipkit.plan(
        sample_face, sample_speech, backend="wav2lip", registry=registry, model_paths=[flat]
    )
    assert Path(plan.generator_params["checkpoint"]) == flat / "wav2lip_gan.pth"
    mine = tmp_path / "mine.pth"
    mine.symlink_to(host_models / "wav2lip" / "wav2lip_gan.pth")
    given = lipkit.plan(
        sample_face, sample_speech, backend="wav2lip", registry=registry,
        model_paths=[flat], checkpoint=str(mine),
    )  # fmt: skip
    assert Path(given.generator_params["checkpoint"]) == mine


def test_the_model_home_comes_first(
    host_models: Path, lipkit_home: Path, sample_face: Path, sample_speech: Path
) -> None:
    registry = load_registry(allow=["wav2lip"])
    home = lipkit_home / "models" / "wav2lip"
    home.mkdir(parents=True)
    (home / "wav2lip_gan.pth").symlink_to(host_models / "wav2lip" / "wav2lip_gan.pth")
    plan = lipkit.plan(
        sample_face, sample_speech, backend="wav2lip", registry=registry, model_paths=[host_models]
    )
    assert plan.generator_params.get("checkpoint") is None  # read from the model home


def test_a_face_processor_weight_in_a_model_path(
    tmp_path: Path, sample_face: Path, sample_speech: Path
) -> None:
    registry = load_registry(allow=["wav2lip"])
    s3fd = pytest.importorskip("lipkit_wav2lip.s3fd.processor")
    root = tmp_path / "models"
    (root / "s3fd").mkdir(parents=True)
    weights = root / "s3fd" / s3fd.WEIGHTS.filename
    weights.write_bytes(b"not read by the plan")
    plan = lipkit.plan(
        sample_face, sample_speech, backend="preview", registry=registry, model_paths=[root]
    )
    assert plan.choice("face").implementation == "s3fd"
