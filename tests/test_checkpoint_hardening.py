"""Damaged and wrong checkpoint files: refused with a ModelError (exit 4) naming the file.

- Weights with NaN or infinity (they load and paste a black mouth) are refused by the shared
  reader (:func:`lipkit.checkpoints.check_finite`), for every backend's load path: Wav2Lip, S3FD,
  LatentSync's UNet, VAE and Whisper, InfiniteTalk's weight files.
- A file that is no checkpoint at all (text, empty, a zip that is not PyTorch's, JSON, a plain
  pickle) is "not a <model> checkpoint", never an internal error, through every checkpoint
  parameter of the CLI.

The checkpoints are small random models saved in the published formats and read by the real
loaders.
"""

from __future__ import annotations

import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io.wavfile
import torch
from cli_helpers import lipkit
from hypothesis import given, settings
from hypothesis import strategies as st
from latentsync_helpers import TINY_DIMS, random_checkpoint, tiny_params
from safetensors.torch import load_file, save_file
from wav2lip_helpers import save_published

import lipkit as api
from lipkit import checkpoints
from lipkit.checkpoints import check_finite, load_state_dict
from lipkit.errors import ModelError
from lipkit.media.audio import load_audio
from lipkit.plugins import load_registry


def poison(state: dict[str, torch.Tensor]) -> tuple[str, str]:
    """Put one NaN and one +inf into the first two floating weight tensors; their keys."""
    keys = [k for k, v in state.items() if v.is_floating_point() and v.numel() > 1][:2]
    state[keys[0]] = state[keys[0]].clone()
    state[keys[0]].view(-1)[1] = float("nan")
    state[keys[1]] = state[keys[1]].clone()
    state[keys[1]].view(-1)[0] = float("inf")
    return keys[0], keys[1]


# --------------------------------------------------------------------------- the check itself

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


@settings(max_examples=60, deadline=None)
@given(
    dtype=st.sampled_from(DTYPES),
    size=st.integers(1, 300),
    data=st.data(),
    value=st.sampled_from([float("nan"), float("inf"), float("-inf")]),
    chunk=st.integers(1, 64),
)
def test_any_non_finite_value_anywhere_is_found_and_counted(
    dtype: torch.dtype, size: int, data: st.DataObject, value: float, chunk: int
) -> None:
    where = data.draw(st.integers(0, size - 1))
    bad = torch.randn(size).to(dtype)
    bad[where] = value
    state = {"fine.weight": torch.randn(3, 4).to(dtype), "bad.weight": bad.reshape(-1, 1)}
    old = checkpoints._CHUNK
    checkpoints._CHUNK = chunk  # exercise the chunked counting on small tensors
    try:
        with pytest.raises(ModelError) as info:
            check_finite(state, what="Test checkpoint", path="/models/x.pth")
    finally:
        checkpoints._CHUNK = old
    text = str(info.value)
    nan, inf = (1, 0) if value != value else (0, 1)
    assert "/models/x.pth" in text and "1 of 2 tensors" in text and "'bad.weight'" in text
    assert f"{nan} NaN and {inf} infinite of {size} values" in text
    assert "download it again" in text


def test_finite_weights_and_integer_buffers_pass() -> None:
    big = torch.full((65_000,), 65504.0, dtype=torch.float16)  # the largest finite half
    check_finite(
        {"w": torch.randn(5, 5), "half": big, "steps": torch.tensor(7), "empty": torch.empty(0)},
        what="Test checkpoint",
        path="x.pth",
    )


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_the_shared_reader_refuses_them_in_both_formats(tmp_path: Path, suffix: str) -> None:
    state = {f"layer{i}.weight": torch.randn(4, 4) for i in range(5)}
    first, _ = poison(state)
    path = tmp_path / f"model{suffix}"
    if suffix == ".pth":
        torch.save({"state_dict": state}, path)
    else:
        save_file(state, str(path))
    with pytest.raises(ModelError, match="2 of 5 tensors hold NaN or infinite") as info:
        load_state_dict(path, what="Test checkpoint")
    assert str(path) in str(info.value) and repr(first) in str(info.value)


# --------------------------------------------------------------------------- every backend


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Good small checkpoints of every backend, and a poisoned copy of each."""
    from lipkit_wav2lip.model import Wav2Lip
    from lipkit_wav2lip.s3fd import S3FD

    root = tmp_path_factory.mktemp("ckpt-hardening")
    torch.manual_seed(0)
    wav2lip = Wav2Lip().state_dict()
    good = {"wav2lip": save_published(wav2lip, root / "wav2lip.pth", module_prefix=True)}
    first, _ = poison(wav2lip)
    bad = {
        "wav2lip": (save_published(wav2lip, root / "nan_wav2lip.pth", module_prefix=True), first)
    }
    s3fd = S3FD().state_dict()
    torch.save(s3fd, good.setdefault("s3fd", root / "s3fd.pth"))
    first, _ = poison(s3fd)
    torch.save(s3fd, root / "nan_s3fd.pth")
    bad["s3fd"] = (root / "nan_s3fd.pth", first)
    latentsync = tiny_params(root / "latentsync")
    bad["unet_checkpoint"] = _poisoned_unet(latentsync["unet_checkpoint"], root)
    bad["vae"] = _poisoned_vae(latentsync["vae"], root)
    whisper = random_checkpoint({**TINY_DIMS, "n_vocab": 8}, seed=3)
    first, _ = poison(whisper["model_state_dict"])
    torch.save(whisper, root / "nan_tiny.pt")
    bad["whisper_checkpoint"] = (root / "nan_tiny.pt", first)
    return {"good": good, "bad": bad, "latentsync": latentsync, "root": root}


@pytest.fixture(scope="module")
def short_speech(tmp_path_factory: pytest.TempPathFactory, sample_speech: Path) -> Path:
    """0.4 s of the sample speech: the CLI runs stop at loading, so keep the rest short."""
    audio = load_audio(sample_speech)[:6400]
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    scipy.io.wavfile.write(path, 16000, (audio * 32767).astype(np.int16))
    return path


def _poisoned_unet(path: Path, root: Path) -> tuple[Path, str]:
    data = torch.load(path, weights_only=True)
    first, _ = poison(data["state_dict"])
    torch.save(data, root / "nan_unet.pt")
    return root / "nan_unet.pt", first


def _poisoned_vae(folder: Path, root: Path) -> tuple[Path, str]:
    copy = root / "nan_vae"
    shutil.copytree(folder, copy)
    weights = next(copy.glob("*.safetensors"))
    state = dict(load_file(str(weights)))
    first, _ = poison(state)
    save_file(state, str(weights))
    return copy, first


def _job(models: dict[str, Any], target: str, path: Path) -> tuple[str, dict[str, Any]]:
    """(backend, parameters) of a job that reads ``path`` as the checkpoint ``target``."""
    good = models["good"]
    if target == "wav2lip":
        return "wav2lip", {"checkpoint": path}
    if target == "s3fd":
        return "wav2lip", {"checkpoint": good["wav2lip"], "detector_checkpoint": path}
    return "latentsync", {**models["latentsync"], "inference_steps": 1, target: path}


def _cli_args(backend: str, params: dict[str, Any]) -> list[str]:
    args = ["--backend", backend]
    for name, value in params.items():
        if name == "detector_checkpoint":
            args += ["--face-detector", "s3fd", "--detector-checkpoint", str(value)]
        else:
            args += ["--param", f"{name}={value}"]
    return args


TARGETS = ["wav2lip", "s3fd", "unet_checkpoint", "vae", "whisper_checkpoint"]


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_non_finite_weights_exit_4_naming_file_and_tensor(
    target: str, models: dict[str, Any], tmp_path: Path, sample_portrait: Path, short_speech: Path
) -> None:
    path, first = models["bad"][target]
    backend, params = _job(models, target, path)
    out = tmp_path / "out.mp4"
    proc = lipkit("run", sample_portrait, short_speech, "-o", out, *_cli_args(backend, params))
    assert proc.returncode == 4, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert str(path) in proc.stderr and repr(first) in proc.stderr
    assert "NaN or infinite" in proc.stderr and "download it again" in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("target", ["wav2lip", "s3fd", "whisper_checkpoint"])
def test_non_finite_weights_raise_model_error_from_the_python_api(
    target: str, models: dict[str, Any], sample_portrait: Path, short_speech: Path
) -> None:
    path, first = models["bad"][target]
    backend, params = _job(models, target, path)
    detector = params.pop("detector_checkpoint", None)
    face: dict[str, Any] = {"face_settings": {"detector_checkpoint": detector}} if detector else {}
    registry = load_registry(allow=[backend])
    with pytest.raises(ModelError, match="NaN or infinite") as info:
        api.sync(
            sample_portrait, short_speech, None, backend=backend, registry=registry,
            **params, **face,
        )  # fmt: skip
    assert str(path) in str(info.value) and repr(first) in str(info.value)


def test_good_checkpoints_still_load(models: dict[str, Any]) -> None:
    from lipkit_wav2lip.checkpoint import load_wav2lip

    load_wav2lip(models["good"]["wav2lip"])


def test_infinitetalk_weight_files_go_through_the_check(tmp_path: Path) -> None:
    from lipkit_infinitetalk.checkpoint import read_weights

    state = {"blocks.0.audio_cross_attn.q.weight": torch.randn(8, 8), "x.bias": torch.ones(8)}
    first, _ = poison(state)
    save_file(state, str(tmp_path / "infinitetalk.safetensors"))
    with pytest.raises(ModelError, match="NaN or infinite") as info:
        read_weights(tmp_path / "infinitetalk.safetensors", what="InfiniteTalk checkpoint")
    assert repr(first) in str(info.value)


# --------------------------------------------------------------------------- not a checkpoint


def _not_checkpoints(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "text": root / "notes.pth",
        "empty": root / "empty.pth",
        "zip": root / "archive.pth",
        "json": root / "config.json",
        "pickle": root / "list.pth",
    }
    files["text"].write_text("hello world: these are my notes\n")
    files["empty"].write_bytes(b"")
    with zipfile.ZipFile(files["zip"], "w") as archive:
        archive.writestr("readme.txt", "not weights")
    files["json"].write_text('{"_class_name": "AutoencoderKL", "in_channels": 3}\n')
    files["pickle"].write_bytes(pickle.dumps([1, 2, 3]))
    return files


KINDS = ["text", "empty", "zip", "json", "pickle"]
REASONS = {
    "text": "text file",
    "empty": "empty",
    "zip": "zip archive",
    "json": "JSON",
    "pickle": "plain Python pickle",
}


@pytest.mark.parametrize("kind", KINDS)
def test_a_file_that_is_no_checkpoint_raises_model_error(kind: str, tmp_path: Path) -> None:
    path = _not_checkpoints(tmp_path)[kind]
    with pytest.raises(ModelError, match=REASONS[kind]) as info:
        load_state_dict(path, what="Wav2Lip checkpoint")
    assert str(path) in str(info.value)
    if kind != "empty":
        assert "is not a Wav2Lip checkpoint" in str(info.value)


# every kind through one backend's CLI, one kind through each other checkpoint parameter: the
# reader is shared (each kind is also checked through the API above), the call sites are not
CLI_CASES = [(kind, TARGETS[0]) for kind in KINDS] + [("text", t) for t in TARGETS[1:]]


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "target"), CLI_CASES)
def test_no_checkpoint_through_the_cli_exits_4(
    kind: str,
    target: str,
    models: dict[str, Any],
    tmp_path: Path,
    sample_portrait: Path,
    short_speech: Path,
) -> None:
    path = _not_checkpoints(tmp_path / "files")[kind]
    backend, params = _job(models, target, path)
    out = tmp_path / "out.mp4"
    proc = lipkit("run", sample_portrait, short_speech, "-o", out, *_cli_args(backend, params))
    assert proc.returncode == 4, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert str(path) in proc.stderr and not out.exists()
