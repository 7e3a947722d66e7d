"""The audio front-end a plan uses: crop, vocal separation, loudness, voice activity.

Each stage is on or off for a reason the plan shows (``Plan.audio_chain``): the crop when
``audio.start``/``audio.end`` are set; separation when ``audio.separate_vocals`` is (the
``music-video`` preset sets it), by the separator named or the best installed one; loudness at
``audio.loudness`` LUFS, or with ``auto`` at what the backend's audio encoder declares (its
reference's normalisation: InfiniteTalk's wav2vec2 -23 LUFS, none for the others); voice
activity when ``audio.silence`` is ``keep`` or ``closed``. A stage that is asked for and cannot
run is an error naming what to install or set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from lipkit.config import LipkitSettings, format_validation_error
from lipkit.config_audio import AudioSettings, SilenceMode
from lipkit.errors import ConfigError, InputError, ModelError, PluginError
from lipkit.interfaces import VocalSeparator, VoiceActivityDetector
from lipkit.plans import AudioStep
from lipkit.plugins import Registry
from lipkit.specs import AudioEncoderSpec, GeneratorSpec

SEPARATOR_PACKAGE = "lipkit-demucs"
DETECTOR_PACKAGE = "lipkit-silero-vad"


@dataclass(frozen=True)
class AudioChain:
    """The live objects of the audio front-end, for the pipeline."""

    start: float  # seconds into the audio file
    seconds: float  # the cropped length
    cropped: bool = False  # start or end set: decode just that range
    separator: VocalSeparator | None = None
    separator_params: BaseModel | None = None
    separator_home: Path | None = None
    loudness_lufs: float | None = None
    detector: VoiceActivityDetector | None = None
    detector_params: BaseModel | None = None
    silence: SilenceMode = "model"


AUDIO_PARAMS = {
    "audio_start": "start",
    "audio_end": "end",
    "separate_vocals": "separate_vocals",
    "separator": "separator",
    "loudness": "loudness",
    "silence": "silence",
    "voice_detector": "voice_detector",
}
"""Job params (``-p KEY=VALUE``, a request's ``params``) that are audio settings, not the
backend's: ``-p separate_vocals=true`` is ``audio.separate_vocals``."""

AUDIO_FLAGS = {
    "audio-start": "audio_start",
    "audio-end": "audio_end",
    "separate-vocals": "separate_vocals",
    "no-separate-vocals": "separate_vocals",
    "separator": "separator",
    "loudness": "loudness",
    "silence": "silence",
    "voice-detector": "voice_detector",
}
"""The CLI flags of the audio settings and their job-param keys (:data:`AUDIO_PARAMS`), for the
hosts that rewrite a hint's flags into their own words (a request's ``params``, a node input)."""
PARAMS_HINT = (
    "audio params: audio_start, audio_end (seconds or M:SS), separate_vocals (true or false), "
    "loudness (LUFS, auto or off), silence (model, keep or closed)"
)


def take_audio_params(params: dict[str, Any], settings: LipkitSettings) -> LipkitSettings:
    """``settings`` with the audio settings named in ``params`` (:data:`AUDIO_PARAMS`) moved
    into ``settings.audio``; those keys are removed from ``params``."""
    keys = [k for k in params if k in AUDIO_PARAMS]
    if not keys:
        return settings
    given = {AUDIO_PARAMS[k]: params.pop(k) for k in keys}
    values = {**settings.audio.model_dump(exclude_unset=True), **given}
    try:
        audio = AudioSettings(**values)
    except ValidationError as exc:
        raise ConfigError(
            format_validation_error(exc, "audio settings"), hint=PARAMS_HINT
        ) from None
    return settings.model_copy(update={"audio": audio})


def crop_audio(seconds: float, audio: AudioSettings, notices: list[str]) -> tuple[float, float]:
    """``(start, length)`` of the audio the job uses, from a track of ``seconds``."""
    start = audio.start or 0.0
    if start >= seconds:
        raise InputError(
            f"the audio start ({start:g} s) is at or past the end of the audio ({seconds:.2f} s)",
            hint="give --audio-start a time before the end of the audio, or none",
        )
    end = seconds if audio.end is None else audio.end
    if end > seconds:
        notices.append(
            f"the audio end ({end:g} s) is past the audio's end: it runs to {seconds:.2f} s"
        )
        end = seconds
    return start, end - start


def _model(model: type[BaseModel], values: dict[str, Any], what: str) -> BaseModel:
    try:
        return model(**values)
    except ValidationError as exc:
        valid = ", ".join(sorted(model.model_fields)) or "none"
        raise ConfigError(format_validation_error(exc, what), hint=f"valid: {valid}") from None


def _pick(
    found: dict[str, Any], name: str, family: str, package: str, off: str, setting: str
) -> Any:
    """The implementation named ``name`` (or the best-ranked for ``auto``); ``off`` says how
    to turn the stage off."""
    if name != "auto":
        if name not in found:
            have = ", ".join(sorted(found)) or "none installed"
            raise PluginError(
                f"no {family} named {name!r} ({have})",
                hint=f"install {package}, or set {setting} to auto",
            )
        return found[name]
    if not found:
        raise PluginError(f"no {family} is installed", hint=f"pip install {package}, or set {off}")
    return max(found.values(), key=lambda impl: (impl.spec.rank, impl.spec.name))


def _preset_separates(settings: LipkitSettings) -> bool:
    """The job's preset is one that turns vocal separation on (music-video)."""
    from lipkit.presets import PRESETS

    preset = PRESETS.get(settings.preset or "", {})
    return bool(preset.get("audio", {}).get("separate_vocals"))


def _separation(
    registry: Registry, settings: LipkitSettings, chain: dict[str, Any], notices: list[str]
) -> AudioStep:
    audio = settings.audio
    if not audio.separate_vocals:
        return AudioStep(stage="separate", on=False, reason="audio.separate_vocals is off")
    if not registry.vocal_separators and _preset_separates(settings):
        notices.append(
            f"the {settings.preset} preset separates the vocals, but no vocal separator is "
            f"installed (pip install {SEPARATOR_PACKAGE}): the model hears the whole mix"
        )
        return AudioStep(
            stage="separate",
            on=False,
            reason=f"the {settings.preset} preset asks for it; no separator is installed",
        )
    sep: VocalSeparator = _pick(
        registry.vocal_separators,
        audio.separator,
        "vocal separator",
        SEPARATOR_PACKAGE,
        "--no-separate-vocals",
        "--separator",
    )
    name = sep.spec.name
    params = _model(sep.params_model, audio.separator_params, f"parameters of separator {name!r}")
    home = settings.models_dir / name
    missing = sep.missing_weights(params, home)
    if missing:
        raise ModelError(
            f"vocal separator {name!r} is missing weights: {', '.join(missing)}",
            hint=f"put them in {home} (`lipkit models` lists where to get each), or turn vocal "
            "separation off (--no-separate-vocals)",
        )
    chain.update(separator=sep, separator_params=params, separator_home=home)
    owner = registry.owner("separator", name)
    why = "the music-video preset" if settings.preset == "music-video" else "audio.separate_vocals"
    return AudioStep(
        stage="separate",
        on=True,
        implementation=name,
        plugin=owner.name,
        version=owner.version,
        reason=f"{why}: the encoder hears the vocals, the output keeps the mix; "
        + sep.describe(params, home),
    )


def _loudness(audio: AudioSettings, encoder: AudioEncoderSpec, chain: dict[str, Any]) -> AudioStep:
    if audio.loudness == "off":
        return AudioStep(stage="loudness", on=False, reason="audio.loudness is off")
    if audio.loudness == "auto":
        target = encoder.loudness_lufs
        if target is None:
            return AudioStep(
                stage="loudness",
                on=False,
                reason=f"the {encoder.name} encoder's reference does not normalise loudness "
                "(audio.loudness=auto)",
            )
        why = f"the {encoder.name} encoder's reference normalises to {target:g} LUFS"
    else:
        target, why = float(audio.loudness), "audio.loudness"
    chain["loudness_lufs"] = target
    return AudioStep(
        stage="loudness",
        on=True,
        implementation=f"BS.1770 to {target:g} LUFS",
        plugin="lipkit",
        reason=why,
    )


def _voice(
    registry: Registry, audio: AudioSettings, spec: GeneratorSpec, chain: dict[str, Any]
) -> AudioStep:
    if audio.silence == "model":
        return AudioStep(
            stage="voice", on=False, reason="audio.silence=model: the model decides on silence"
        )
    if audio.silence == "keep" and spec.frame_size is not None:
        raise ConfigError(
            f"silence=keep needs a backend that pastes a face crop; {spec.name} renders whole "
            "frames",
            hint="set --silence to closed (or model) for this backend",
        )
    found: VoiceActivityDetector = _pick(
        registry.voice_detectors,
        audio.voice_detector,
        "voice-activity detector",
        DETECTOR_PACKAGE,
        "--silence to model",
        "--voice-detector",
    )
    name = found.spec.name
    params = _model(found.params_model, audio.voice_params, f"parameters of detector {name!r}")
    chain.update(detector=found, detector_params=params, silence=audio.silence)
    owner = registry.owner("voice", name)
    what = "the source mouth" if audio.silence == "keep" else "a closed mouth (silence heard)"
    return AudioStep(
        stage="voice",
        on=True,
        implementation=name,
        plugin=owner.name,
        version=owner.version,
        reason=f"audio.silence={audio.silence}: frames without speech get {what}",
    )


def choose_audio_chain(
    registry: Registry,
    settings: LipkitSettings,
    encoder: AudioEncoderSpec,
    generator: GeneratorSpec,
    crop: tuple[float, float],
    file_seconds: float,
    notices: list[str] | None = None,
) -> tuple[AudioChain, list[AudioStep]]:
    """The audio front-end for a job and its rows for the plan."""
    start, seconds = crop
    if start > 0 or seconds < file_seconds:
        crop_step = AudioStep(
            stage="crop",
            on=True,
            implementation=f"{start:.2f}-{start + seconds:.2f} s",
            plugin="lipkit",
            reason=f"audio.start/audio.end: {seconds:.2f} s of the {file_seconds:.2f} s audio; "
            "the output follows the cropped audio",
        )
    else:
        crop_step = AudioStep(stage="crop", on=False, reason="the whole audio (no start or end)")
    chain: dict[str, Any] = {"cropped": crop_step.on}
    steps = [
        crop_step,
        _separation(registry, settings, chain, notices if notices is not None else []),
        _loudness(settings.audio, encoder, chain),
        _voice(registry, settings.audio, generator, chain),
    ]
    return AudioChain(start=start, seconds=seconds, **chain), steps
