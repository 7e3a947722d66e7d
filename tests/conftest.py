"""Shared test setup: no plugin autoloading, an isolated LIPKIT_HOME per test, sample media."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# CI runs the same examples every time (a failure there is reproducible, never a coin toss);
# locally hypothesis explores new examples on each run. HYPOTHESIS_PROFILE overrides.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

# As pytest and llm do: under test, third-party plugins load only when a test asks for them.
sys._called_from_test = True  # type: ignore[attr-defined]

MEDIA = Path(__file__).parent / "media"


@pytest.fixture(autouse=True)
def _isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    home = tmp_path_factory.mktemp("lipkit-home")
    monkeypatch.setenv("LIPKIT_HOME", str(home))
    for name in ("LIPKIT_CONFIG", "LIPKIT_BACKEND", "LIPKIT_DEVICE", "LIPKIT_PRESET"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def lipkit_home(_isolated_home: Path) -> Path:
    return _isolated_home


@pytest.fixture(scope="session")
def sample_face() -> Path:
    return MEDIA / "face.mp4"


@pytest.fixture(scope="session")
def sample_speech() -> Path:
    return MEDIA / "speech.wav"


@pytest.fixture(scope="session")
def sample_portrait() -> Path:
    return MEDIA / "portrait.png"


@pytest.fixture(scope="session")
def sample_face_with_audio() -> Path:
    return MEDIA / "face_with_audio.mp4"
