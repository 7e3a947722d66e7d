"""The third-party example plugin: discovered through its entry point, conformant, and usable."""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_helpers import lipkit as run_cli
from lipkit_conformance import GeneratorContract
from lipkit_example.plugin import TintGenerator, write_tint

import lipkit
from lipkit.errors import ModelError
from lipkit.interfaces import GenerationBatch, GeneratorContext
from lipkit.plugins import load_registry
from lipkit.specs import DeviceInfo

TINT = (40.0, -10.0, -20.0)


def test_entry_point_is_installed() -> None:
    names = {ep.name: ep.value for ep in entry_points(group="lipkit")}
    assert names.get("example") == "lipkit_example.plugin"


class TestTintConformance(GeneratorContract):
    @pytest.fixture
    def generator(self) -> Any:
        return TintGenerator()

    @pytest.fixture
    def model_home(self, tmp_path: Path) -> Path:
        write_tint(tmp_path / "tint.safetensors", TINT)
        return tmp_path


def _load(params: dict[str, Any], home: Path, cpu_device: DeviceInfo) -> Any:
    gen = TintGenerator()
    ctx = GeneratorContext(cpu_device, "fp32", gen.params_model(**params), home, 4, 0)
    return gen.load(ctx)


def test_load_errors_name_the_file_and_what_is_wrong(
    tmp_path: Path, cpu_device: DeviceInfo
) -> None:
    with pytest.raises(ModelError) as missing:
        _load({}, tmp_path, cpu_device)
    assert "tint.safetensors" in str(missing.value)
    assert "lipkit models pull example-tint" in str(missing.value)
    from safetensors.numpy import save_file

    wrong = tmp_path / "wrong.safetensors"
    save_file({"tint": np.zeros(4, np.float32), "bias": np.zeros(2, np.float32)}, str(wrong))
    with pytest.raises(ModelError) as bad:
        _load({"weights": wrong}, tmp_path, cpu_device)
    assert "'tint': [4]" in str(bad.value) and "'bias': [2]" in str(bad.value)


def test_generate_tints_only_the_mouth_region(tmp_path: Path, cpu_device: DeviceInfo) -> None:
    path = write_tint(tmp_path / "t.safetensors", TINT)
    session = _load({"weights": path, "strength": 0.5}, tmp_path, cpu_device)
    crops = np.full((2, 96, 96, 3), 100, np.uint8)
    loud = np.full((2, 80, 16), 4.0, np.float32)  # mel level at its maximum: full tint
    loud[1] = -4.0  # silence: no tint
    out = session.generate(GenerationBatch(np.arange(2, dtype=np.int64), crops, loud))
    x0, y0, x1, y1 = (round(f * 96) for f in TintGenerator.spec.mouth_region)
    expected = np.clip(np.rint(100 + 0.5 * np.array(TINT)), 0, 255)
    assert (out[0, y0:y1, x0:x1] == expected).all()
    outside = np.ones((96, 96), bool)
    outside[y0:y1, x0:x1] = False
    assert (out[0][outside] == 100).all() and (out[1] == 100).all()


def test_cli_lists_it_and_the_builtins_with_all() -> None:
    proc = run_cli("plugins")  # a real process: autoload applies
    assert proc.returncode == 0, proc.stderr
    assert "example" in proc.stdout and "lipkit-example-plugin" in proc.stdout
    assert "example-tint" in proc.stdout and "haar" not in proc.stdout
    every = run_cli("plugins", "--all", "--json")
    names = {p["name"] for p in json.loads(every.stdout)}
    assert {"example", "preview", "haar", "mel", "mp4", "device", "auto"} <= names


def test_allow_list_hides_it() -> None:
    proc = run_cli("plugins", env={"LIPKIT_LOAD_PLUGINS": ""})
    assert "example" not in proc.stdout


def test_wrong_and_missing_weights(tmp_path: Path, sample_face: Path, sample_speech: Path) -> None:
    reg = load_registry(allow=["example"])
    with pytest.raises(ModelError) as err:
        lipkit.sync(
            sample_face, sample_speech, tmp_path / "o.mp4", backend="example-tint", registry=reg
        )
    assert "tint.safetensors" in str(err.value) and "lipkit models pull example-tint" in str(
        err.value
    )
    bad = tmp_path / "bad.safetensors"
    from safetensors.numpy import save_file

    save_file({"colour": np.zeros(4, np.float32)}, str(bad))
    with pytest.raises(ModelError, match="expected only 'tint'"):
        lipkit.sync(
            sample_face, sample_speech, None, backend="example-tint", registry=reg, weights=str(bad)
        )
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError, match="not a safetensors file"):
        lipkit.sync(
            sample_face,
            sample_speech,
            None,
            backend="example-tint",
            registry=reg,
            weights=str(junk),
        )
    assert not (tmp_path / "o.mp4").exists()


def test_auto_prefers_a_backend_whose_weights_are_present(
    lipkit_home: Path, sample_face: Path, sample_speech: Path
) -> None:
    reg = load_registry(allow=["example"])
    plan = lipkit.plan(sample_face, sample_speech, registry=reg)
    assert plan.choice("generator").implementation == "preview"
    assert any("example-tint: weights not found" in n for n in plan.notices)
    write_tint(lipkit_home / "models" / "example-tint" / "tint.safetensors", TINT)
    plan = lipkit.plan(sample_face, sample_speech, registry=reg)
    assert plan.choice("generator").implementation == "example-tint"
    assert plan.choice("generator").plugin == "example" and not plan.notices


def hub_cache(root: Path, repo: str, filename: str, payload: bytes) -> Path:
    """A Hugging Face cache laid out as huggingface_hub writes it."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    folder = root / f"models--{repo.replace('/', '--')}"
    blob = hashlib.sha256(payload).hexdigest()
    (folder / "blobs").mkdir(parents=True)
    (folder / "blobs" / blob).write_bytes(payload)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    snap = folder / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / filename).symlink_to(folder / "blobs" / blob)
    return root


def test_models_list_and_pull_offline(
    tmp_path: Path, lipkit_home: Path, sample_face: Path, sample_speech: Path
) -> None:
    listed = run_cli("models", "--json")
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["example-tint"]["present"] is False
    assert rows["example-tint"]["hf_repo"] == "lipkit-examples/example-tint"

    payload_file = write_tint(tmp_path / "src.safetensors", TINT)
    cache = hub_cache(
        tmp_path / "hf",
        "lipkit-examples/example-tint",
        "tint.safetensors",
        payload_file.read_bytes(),
    )
    offline = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    pulled = run_cli("models", "pull", "example-tint", env=offline)
    assert pulled.returncode == 0, pulled.stderr
    target = lipkit_home / "models" / "example-tint" / "tint.safetensors"
    assert target.read_bytes() == payload_file.read_bytes()
    assert "present" in run_cli("models").stdout

    empty = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty")}
    missing = run_cli("models", "pull", "example-tint", env=empty)
    assert missing.returncode == 4 and "not in the Hugging Face cache" in missing.stderr
    unknown = run_cli("models", "pull", "nope")
    assert unknown.returncode == 4 and "example-tint" in unknown.stderr

    out = tmp_path / "tinted.mp4"
    run = run_cli("run", sample_face, sample_speech, "-o", out, "--length-policy", "trim")
    assert run.returncode == 0, run.stderr
    assert "example-tint" in run.stdout
