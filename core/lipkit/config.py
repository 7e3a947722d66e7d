"""Settings, layered lowest to highest: defaults < lipkit.toml < LIPKIT_* environment < CLI flags.

Backend parameters are kept as plain dicts here (``params``) and validated by the chosen backend's
own ``params_model`` in the resolver, so a typo is reported with the backend's list of valid names.
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, TypeVar

import platformdirs
import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from lipkit.config_audio import AudioSettings
from lipkit.config_live import LiveSettings
from lipkit.errors import ConfigError
from lipkit.face.select import PATTERN as FACE_SELECT_PATTERN
from lipkit.specs import LengthPolicy

CONFIG_FILE_NAME = "lipkit.toml"
LENGTH_POLICY_ALIASES = {"repetitive": "loop", "sequential": "freeze"}
"""Names the Wav2Lip ComfyUI nodes use for length policies."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FaceSettings(_Section):
    """How faces are found, tracked and blended back."""

    detector: str = Field(default="auto", description="face processor name, or auto")
    select: str = Field(
        default="auto",
        pattern=FACE_SELECT_PATTERN,
        description="which face when there are several: auto, largest, index:N (from the left), "
        "point:X,Y, box:X1,Y1,X2,Y2, speaker",
    )
    pads: tuple[int, int, int, int] = Field(
        default=(0, 10, 0, 0), description="pixels added to the box: top, bottom, left, right"
    )
    smoothing: int = Field(default=5, ge=1, le=101, description="centred box-smoothing window")
    detect_every: int = Field(default=5, ge=1, le=100, description="detect on every Nth frame")
    max_gap: int = Field(
        default=12, ge=0, description="frames a face may go undetected and still be tracked"
    )
    detect_size: int = Field(
        default=480, ge=64, description="longest side frames are scaled to for detection"
    )
    min_face: float = Field(
        default=0.08, gt=0, lt=1, description="smallest face, as a fraction of the shorter side"
    )
    blend_radius: int = Field(default=6, ge=0, le=64, description="feather radius; 0 = hard")
    box: tuple[int, int, int, int] | None = Field(
        default=None, description="fixed face box x1 y1 x2 y2: skip detection"
    )
    detect_batch: int | None = Field(
        default=None, ge=1, le=1024, description="frames per detector call; None = the plan's"
    )
    detector_device: Literal["auto", "cpu"] = Field(
        default="auto",
        description="run face detection on the job's device (auto) or always on the CPU, "
        "leaving the accelerator's memory to the generator",
    )
    detector_precision: Literal["auto", "fp32", "fp16"] = Field(
        default="auto",
        description="face detector precision; auto = the memory plan's (fp16 on GPUs that have "
        "it, for detectors that support it)",
    )
    detector_checkpoint: Path | None = Field(
        default=None,
        description="weights of a face processor that has them (e.g. s3fd.pth); "
        "default: its file in the model home",
    )


class InputSettings(_Section):
    """Transforms of every face-input frame (Wav2Lip's input controls), applied in this order.

    The frame is scaled to ``width // resize_factor`` x ``height // resize_factor``, rotated
    ``rotate`` degrees clockwise, then cropped to rows ``y1:y2`` and columns ``x1:x2`` of the
    resized and rotated frame (-1 for y2 or x2: to the edge). ``static`` uses only the first
    frame of a video, like a still image.
    """

    resize_factor: int = Field(default=1, ge=1, description="divide width and height by this")
    rotate: Literal[0, 90, 180, 270] = Field(default=0, description="degrees clockwise")
    crop: tuple[int, int, int, int] | None = Field(
        default=None, description="y1 y2 x1 x2 in pixels of the resized, rotated frame; -1 = edge"
    )
    static: bool = Field(default=False, description="use only the first frame of a video")

    @field_validator("rotate", mode="before")
    @classmethod
    def _rotate_from_text(cls, value: Any) -> Any:
        # LIPKIT_INPUT__ROTATE=90 arrives as text; a Literal of ints takes no strings
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value

    @field_validator("crop")
    @classmethod
    def _check_crop(cls, value: tuple[int, int, int, int] | None) -> Any:
        if value is not None:
            y1, y2, x1, x2 = value
            if y1 < 0 or x1 < 0 or y2 < -1 or x2 < -1:
                raise ValueError("y1 and x1 must be >= 0, y2 and x2 >= 0 or -1 (to the edge)")
        return value


class OutputSettings(_Section):
    """How the result is encoded."""

    crf: int = Field(default=19, ge=0, le=51)
    x264_preset: Literal[
        "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower"
    ] = "medium"
    video_encoder: Literal["auto", "libx264", "h264_nvenc"] = Field(
        default="auto",
        description="H.264 encoder; auto = h264_nvenc when generation runs on an NVIDIA GPU "
        "and ffmpeg's NVENC opens there, else libx264 (NVENC takes the CRF as -cq)",
    )
    audio_bitrate: str = Field(default="128k", pattern=r"^\d+k$")
    segment_seconds: float = Field(
        default=10.0, gt=0, description="resume granularity: a killed job redoes at most this"
    )


class MemorySettings(_Section):
    """Memory policy knobs; the policy decides everything left at its default."""

    policy: str = "auto"
    mode: Literal["conservative", "balanced", "aggressive"] = "balanced"
    budget: int | None = Field(default=None, ge=0, description="bytes; accepts '8GB' too")
    vram_fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    batch_size: int | None = Field(default=None, ge=1)
    chunk_frames: int | None = Field(default=None, ge=1)
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    calibrate: bool = Field(
        default=True,
        description="measure the generator's memory per item with a probe batch after loading "
        "and let the policy refit the batch (policies that support it)",
    )
    cpu_fallback: bool = Field(
        default=False,
        description="after an out-of-memory error at batch 1, move generation to the CPU "
        "instead of stopping",
    )

    @field_validator("budget", mode="before")
    @classmethod
    def _parse_size(cls, value: Any) -> Any:
        return parse_size(value) if isinstance(value, str) else value


def parse_size(text: str) -> int:
    """'8GB', '512 MiB', '1.5G', '1000000' -> bytes."""
    match = re.fullmatch(r"\s*([\d.]+)\s*([kmgt]?)(i?b?)\s*", text.lower())
    if not match:
        raise ValueError(f"not a size: {text!r} (use e.g. 8GB, 512MB)")
    number, unit, _ = match.groups()
    power = " kmgt".index(unit) if unit else 0
    return int(float(number) * 1024**power)


def default_home() -> Path:
    return Path(platformdirs.user_cache_dir("lipkit"))


class LipkitSettings(BaseSettings):
    """Every setting of a job. Nested sections read env vars like LIPKIT_FACE__PADS."""

    model_config = SettingsConfigDict(
        env_prefix="LIPKIT_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
    )

    backend: str = Field(default="auto", description="generator name, or auto")
    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:1, mps")
    preset: str | None = None
    fps: float = Field(
        default=25.0,
        gt=0,
        le=240,
        description="frame rate for a still image or a variable-rate video",
    )
    length_policy: LengthPolicy | None = Field(
        default=None, description="when audio and face lengths differ; None = backend's choice"
    )
    seed: int | None = Field(
        default=None, ge=0, description="random seed of the generator; None = the backend's default"
    )
    audio_from_face: bool = False
    home: Path = Field(default_factory=default_home, description="LIPKIT_HOME: models, cache, jobs")
    model_paths: list[Path] = Field(
        default_factory=list,
        description="more folders searched for weight files after the model home, each holding "
        "<implementation>/<file> or <file> (a host's model folders: ComfyUI's models/lipkit)",
    )
    work_dir: Path | None = None
    keep_work: bool = False
    resume: bool = True
    max_image_pixels: int = Field(default=64_000_000, gt=0)
    face: FaceSettings = Field(default_factory=FaceSettings)
    input: InputSettings = Field(default_factory=InputSettings)
    output: OutputSettings = Field(default_factory=OutputSettings)
    audio: AudioSettings = Field(default_factory=AudioSettings)
    live: LiveSettings = Field(default_factory=LiveSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    backends: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-backend parameters: [backends.NAME] in lipkit.toml"
    )

    @field_validator("length_policy", mode="before")
    @classmethod
    def _policy_alias(cls, value: Any) -> Any:
        return LENGTH_POLICY_ALIASES.get(value, value) if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # CLI flags / API arguments > LIPKIT_* environment > config file (over a preset) > defaults
        return (init_settings, env_settings, _FileSource(settings_cls))

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def jobs_dir(self) -> Path:
        return self.home / "jobs"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"


_FILE_VALUES: ContextVar[dict[str, Any] | None] = ContextVar("lipkit_file_values", default=None)


class _FileSource(PydanticBaseSettingsSource):
    """The config file's values (already merged over a preset's), below the environment."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return (_FILE_VALUES.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_VALUES.get() or {})


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_config_file(path: Path) -> dict[str, Any]:
    """The values of a config file (``--config``, ``LIPKIT_CONFIG`` or ./lipkit.toml);
    ConfigError naming the file when it is missing, unreadable, not UTF-8 or not TOML."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (undecodable byte at offset {exc.start}): "
            "a config file must be UTF-8 TOML",
            hint="give a lipkit.toml saved as UTF-8 text (TOML: `key = value` lines under "
            "[face], [memory], ... sections, as in README.md), or point --config / LIPKIT_CONFIG "
            "at another file",
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    return data


def find_config_file() -> Path | None:
    """LIPKIT_CONFIG, else ./lipkit.toml if present."""
    env = os.environ.get("LIPKIT_CONFIG")
    if env:
        return Path(env)
    local = Path.cwd() / CONFIG_FILE_NAME
    return local if local.is_file() else None


def load_settings(
    overrides: dict[str, Any] | None = None,
    *,
    config_file: Path | None = None,
    use_default_config: bool = True,
) -> LipkitSettings:
    """Build settings from defaults < preset < config file < environment < ``overrides``.

    ``overrides`` holds only what the caller actually set (CLI flags given, API keyword
    arguments). A preset named anywhere fills in below the config file's own values.
    """
    from lipkit.presets import preset_values

    overrides = overrides or {}
    path = config_file or (find_config_file() if use_default_config else None)
    file_values = read_config_file(path) if path else {}
    preset = overrides.get("preset") or os.environ.get("LIPKIT_PRESET") or file_values.get("preset")
    layered = deep_merge(preset_values(preset) if preset else {}, file_values)
    token = _FILE_VALUES.set(layered)
    try:
        return LipkitSettings(**overrides)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "settings")) from None
    finally:
        _FILE_VALUES.reset(token)


def format_validation_error(exc: ValidationError, what: str) -> str:
    lines = [f"invalid {what}:"]
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"]) or "(root)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        lines.append(f"  {loc}: {msg} (got {err.get('input')!r})")
    return "\n".join(lines)


ModelT = TypeVar("ModelT", bound=BaseModel)


def read_json_model(path: Path, model: type[ModelT], what: str, hint: str) -> ModelT:
    """``model`` validated from the JSON file ``path`` (a backend's ``--param ..._config``);
    ConfigError naming ``what`` when the file cannot be read or does not validate."""
    path = Path(path).expanduser()
    try:
        return model.model_validate_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"{what} {path} is not valid: {exc}", hint=hint) from None
