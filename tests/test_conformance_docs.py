"""The spec pages describe the code as it is: every declaration field, the helpers a plugin
uses (``require_weight``, ``ModelError(..., hint=)``), the mel window, and links that resolve."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel

from lipkit.builtins.mel import MelAudioEncoder, MelParams
from lipkit.errors import LipkitError, ModelError
from lipkit.specs import (
    AudioEncoderSpec,
    AudioStageSpec,
    DeviceInfo,
    EncoderSpec,
    FaceProcessorSpec,
    GeneratorSpec,
    MemoryPolicySpec,
    ScorerSpec,
    WeightFile,
)
from lipkit.weights import require_weight

SPEC = Path(__file__).resolve().parents[1] / "spec"
PAGES = {
    "devices.md": DeviceInfo,
    "memory.md": MemoryPolicySpec,
    "audio.md": AudioEncoderSpec,
    "face.md": FaceProcessorSpec,
    "generators.md": GeneratorSpec,
    "encoders.md": EncoderSpec,
    "audio-stages.md": AudioStageSpec,
    "scoring.md": ScorerSpec,
}
COMMON = ("name", "description", "devices", "weights")  # every spec; spec/README.md says so
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def page(name: str) -> str:
    return (SPEC / name).read_text()


def code_words(text: str) -> set[str]:
    """Identifiers written in backticks (``num_blocks``, the ``name`` in ``name, x``)."""
    prose = re.sub(r"^```.*$", "", text, flags=re.MULTILINE)  # fences would shift the pairs
    spans = re.findall(r"`([^`]+)`", prose)
    return {word for span in spans for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", span)}


@pytest.mark.parametrize(("name", "model"), sorted(PAGES.items()), ids=sorted(PAGES))
def test_every_declaration_field_is_documented(name: str, model: type[BaseModel]) -> None:
    fields = set(model.model_fields)
    documented = code_words(page(name)) | (set(COMMON) & code_words(page("README.md")))
    assert not fields - documented, f"{name} does not describe {sorted(fields - documented)}"


def test_weight_file_fields_are_documented() -> None:
    missing = set(WeightFile.model_fields) - code_words(page("generators.md"))
    assert not missing, f"generators.md does not describe WeightFile's {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(PAGES))
def test_each_page_links_the_contract_in_code(name: str) -> None:
    targets = set(LINK.findall(page(name)))
    assert any(t.startswith("../core/lipkit/interfaces/") for t in targets)  # its family's module
    assert "../core/lipkit/specs.py" in targets


@pytest.mark.parametrize("name", ["README.md", *sorted(PAGES)])
def test_relative_links_resolve(name: str) -> None:
    for target in LINK.findall(page(name)):
        if "://" not in target:
            assert (SPEC / target).exists(), f"{name} links {target}, which does not exist"


def test_require_weight_is_documented_with_its_signature_and_error(tmp_path: Path) -> None:
    text = page("generators.md")
    (documented,) = re.findall(r"require_weight\(([^)]*)\) -> Path", text)
    names = [p.strip() for p in documented.split(",")]
    assert names == list(inspect.signature(require_weight).parameters)
    weight = WeightFile(name="w", filename="w.safetensors", hf_repo="org/w", param="weights")
    spec = GeneratorSpec(name="doc-gen", audio_encoder="mel", crop_size=96, weights=(weight,))
    with pytest.raises(ModelError) as caught:
        require_weight(spec, "w", None, tmp_path)
    message = caught.value.message
    assert message.startswith("checkpoint 'w.safetensors' for backend 'doc-gen' not found at")
    assert "checkpoint 'FILENAME' for backend 'BACKEND' not found at PATH" in text
    assert "lipkit models pull w" in str(caught.value.hint) and "--param weights=PATH" in str(
        caught.value.hint
    )
    with pytest.raises(KeyError):
        require_weight(spec, "not-declared", None, tmp_path)


def test_the_hint_keyword_is_documented_as_it_works() -> None:
    hint = inspect.signature(LipkitError.__init__).parameters["hint"]
    assert hint.kind is inspect.Parameter.KEYWORD_ONLY and hint.default is None
    assert "`ModelError(message, *, hint=None)`" in page("generators.md")
    assert "hint=" in page("README.md")
    error = ModelError("bad file", hint="pull it again")
    assert str(error) == "bad file\n  hint: pull it again"
    assert "line `  hint: ...`" in page("generators.md")


def test_the_mel_window_shape_is_documented_and_real() -> None:
    assert "**`(80, 16)`**" in page("audio.md") and "`float32 [len(frames), 80, 16]`" in page(
        "audio.md"
    )
    encoder = MelAudioEncoder()
    assert encoder.spec.frame_shape == (80, 16)
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    cpu = DeviceInfo(id="cpu", kind="cpu", name="cpu", total_memory=1, free_memory=1)
    feats = encoder.encode(audio, fps=25.0, num_frames=25, params=MelParams(), device=cpu)
    windows = feats.window(np.array([0, 12, 24], dtype=np.int64))
    assert windows.shape == (3, 80, 16) and windows.dtype == np.float32
    assert windows.min() >= -4 and windows.max() <= 4


def test_the_allow_list_is_documented_as_entry_point_names() -> None:
    text = " ".join(page("README.md").split())
    assert "allow-list of **entry-point names**" in text
    assert "matches no installed entry point is logged as a warning" in text
