from __future__ import annotations

from pathlib import Path

import pytest

from lipkit.config import load_settings, parse_size
from lipkit.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults() -> None:
    s = load_settings(use_default_config=False)
    assert s.backend == "auto"
    assert s.face.pads == (0, 10, 0, 0)
    assert s.output.crf == 19 and s.output.audio_bitrate == "128k"


def test_layers_defaults_file_env_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write(
        tmp_path / "lipkit.toml",
        'backend = "preview"\nfps = 30\n[face]\nsmoothing = 7\nblend_radius = 3\n'
        "[output]\ncrf = 22\n[backends.preview]\nstrength = 0.5\n",
    )
    s = load_settings(config_file=cfg)
    assert (s.backend, s.fps, s.face.smoothing, s.output.crf) == ("preview", 30, 7, 22)
    assert s.backends["preview"] == {"strength": 0.5}
    # environment beats the file, also inside a section, without dropping the file's siblings
    monkeypatch.setenv("LIPKIT_FACE__SMOOTHING", "9")
    monkeypatch.setenv("LIPKIT_FPS", "24")
    s = load_settings(config_file=cfg)
    assert (s.fps, s.face.smoothing, s.face.blend_radius) == (24, 9, 3)
    # flags the user set beat everything
    s = load_settings({"face": {"smoothing": 11}, "fps": 50}, config_file=cfg)
    assert (s.fps, s.face.smoothing, s.face.blend_radius, s.output.crf) == (50, 11, 3, 22)


def test_default_config_file_is_found_in_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "lipkit.toml", "seed = 42\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings().seed == 42
    monkeypatch.setenv("LIPKIT_CONFIG", str(write(tmp_path / "other.toml", "seed = 7\n")))
    assert load_settings().seed == 7


def test_preset_sits_below_the_file(tmp_path: Path) -> None:
    s = load_settings({"preset": "film"}, use_default_config=False)
    assert s.output.crf == 16 and s.face.smoothing == 9
    cfg = write(tmp_path / "l.toml", 'preset = "film"\n[output]\ncrf = 18\n')
    s = load_settings(config_file=cfg)
    assert s.output.crf == 18 and s.output.x264_preset == "slow"


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"preset": "nope"}, "unknown preset 'nope'"),
        ({"face": {"smoothing": 0}}, "face.smoothing"),
        ({"output": {"crf": 99}}, "output.crf"),
        ({"colour": 1}, "colour: unknown setting"),
        ({"length_policy": "bounce"}, "length_policy"),
    ],
)
def test_invalid_settings_are_config_errors(overrides: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(overrides, use_default_config=False)
    assert needle in str(err.value)


def test_bad_config_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(config_file=tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(config_file=write(tmp_path / "bad.toml", "backend = \n"))


@pytest.mark.parametrize(
    ("text", "value"),
    [("8GB", 8 * 2**30), ("512 MiB", 512 * 2**20), ("1.5g", int(1.5 * 2**30)), ("1000", 1000)],
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value
    assert (
        load_settings({"memory": {"budget": text}}, use_default_config=False).memory.budget == value
    )


def test_api_overrides_merge_into_a_settings_object(sample_face: Path, sample_speech: Path) -> None:
    from lipkit.api import prepare

    base = load_settings({"face": {"smoothing": 9, "blend_radius": 2}}, use_default_config=False)
    _, merged, _ = prepare(
        sample_face, sample_speech, None, settings=base, face_settings={"smoothing": 3}
    )
    assert (merged.face.smoothing, merged.face.blend_radius) == (3, 2)
    with pytest.raises(ConfigError, match="face.smoothing"):
        prepare(sample_face, sample_speech, None, settings=base, face_settings={"smoothing": 0})
