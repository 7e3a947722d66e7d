"""The audio front-end of a job: crop, vocal separation, loudness, voice activity.

It turns the job's audio file into the track the audio encoder hears (:class:`HeardAudio`),
one streaming pass per stage, each result a new :class:`~lipkit.media.track.AudioTrack` that
spills to the work root when long, so memory stays flat in the audio's length:

- crop: the decode starts at ``chain.start`` and lasts ``chain.seconds`` (exact to the sample);
- separate: the separator reads the cropped file at its own rate and returns the vocals;
- loudness: BS.1770 integrated loudness measured, then the track scaled to the target;
- voice: the detector's speech intervals give each output frame a silent flag, and with
  ``silence=closed`` the track is silenced outside them, so the model hears silence there.

The mix (the cropped original) is kept for frames-in-memory outputs; a file output muxes the
original file's audio over the same range.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lipkit.audio.loudness import measure_track, normalising_gain, scaled_track
from lipkit.interfaces import AudioSource
from lipkit.logs import get_logger
from lipkit.media.audio import TrackBuilder, open_audio
from lipkit.media.track import AudioTrack
from lipkit.pipeline.stages import StageTimes
from lipkit.resolve_audio import AudioChain
from lipkit.specs import DeviceInfo

log = get_logger(__name__)

Report = Callable[[int, int], None]  # (seconds done, seconds total) of the audio phase
_BLOCK = 160_000


@dataclass
class HeardAudio:
    """The cropped mix, the track the encoder hears, and the frames without speech."""

    mix: AudioTrack
    heard: AudioTrack
    silent: np.ndarray | None = None  # bool [num_frames]: no speech there (voice stage on)
    speech: list[tuple[float, float]] | None = None
    gain: float = 1.0
    owned: list[AudioTrack] = field(default_factory=list)

    def close(self) -> None:
        """Release every track (their spill files go)."""
        for track in [self.mix, *self.owned]:
            track.close()


def run_audio_chain(
    chain: AudioChain,
    audio_path: Path,
    *,
    work_root: Path,
    device: DeviceInfo,
    num_frames: int,
    fps: float,
    stats: StageTimes,
    report: Report,
) -> HeardAudio:
    """Run ``chain`` on ``audio_path`` for an output of ``num_frames`` at ``fps``."""
    with stats.timed("audio", num_frames):
        mix = open_audio(
            audio_path,
            spill_dir=work_root,
            start=chain.start,
            max_seconds=chain.seconds if chain.cropped else None,
        )
    heard = HeardAudio(mix=mix, heard=mix)
    try:
        if chain.separator is not None:
            _separate(chain, heard, audio_path, work_root, device, stats, report)
        if chain.loudness_lufs is not None:
            _normalise(chain.loudness_lufs, heard, work_root, stats)
        if chain.detector is not None:
            _find_speech(chain, heard, device, num_frames, fps, stats, report)
            if chain.silence == "closed":
                _silence_outside_speech(heard, work_root)
    except BaseException:
        heard.close()
        raise
    return heard


def _replace(heard: HeardAudio, track: AudioTrack) -> None:
    heard.heard = track
    heard.owned.append(track)


def _separate(
    chain: AudioChain,
    heard: HeardAudio,
    audio_path: Path,
    work_root: Path,
    device: DeviceInfo,
    stats: StageTimes,
    report: Report,
) -> None:
    assert chain.separator is not None and chain.separator_params is not None
    source = AudioSource(audio_path, chain.start, chain.seconds, work_root)
    with stats.timed("separate", round(chain.seconds)):
        vocals = chain.separator.separate(
            source,
            params=chain.separator_params,
            model_home=chain.separator_home or work_root,
            device=device,
            progress=lambda done, total: report(int(done), round(total)),
        )
    log.info("vocals separated", separator=chain.separator.spec.name, seconds=vocals.seconds)
    _replace(heard, vocals)


def _normalise(target: float, heard: HeardAudio, work_root: Path, stats: StageTimes) -> None:
    with stats.timed("loudness", round(heard.heard.seconds)):
        loudness = measure_track(heard.heard)
        gain = normalising_gain(loudness, target)
        log.info("loudness measured", lufs=loudness, target=target, gain=round(gain, 4))
        if gain != 1.0:
            heard.gain = gain
            _replace(heard, scaled_track(heard.heard, gain, work_root))


def _find_speech(
    chain: AudioChain,
    heard: HeardAudio,
    device: DeviceInfo,
    num_frames: int,
    fps: float,
    stats: StageTimes,
    report: Report,
) -> None:
    assert chain.detector is not None and chain.detector_params is not None
    with stats.timed("voice", num_frames):
        speech = chain.detector.speech(
            heard.heard,
            params=chain.detector_params,
            device=device,
            progress=lambda done, total: report(int(done), round(total)),
        )
    heard.speech = speech
    heard.silent = silent_frames(speech, num_frames, fps)
    log.info("speech found", intervals=len(speech), silent_frames=int(heard.silent.sum()))


def silent_frames(speech: list[tuple[float, float]], num_frames: int, fps: float) -> np.ndarray:
    """``bool [num_frames]``: True for a frame whose time span meets no speech interval."""
    starts = np.arange(num_frames) / fps
    ends = (np.arange(num_frames) + 1) / fps
    silent = np.ones(num_frames, bool)
    for begin, end in speech:
        silent &= ~((starts < end) & (ends > begin))
    return silent


def _silence_outside_speech(heard: HeardAudio, work_root: Path) -> None:
    """The heard track with every sample outside the speech intervals set to zero."""
    track, speech = heard.heard, heard.speech or []
    rate = track.sample_rate
    edges = [(round(b * rate), round(e * rate)) for b, e in speech]
    builder = TrackBuilder(rate, work_root, rate, clip=False)
    try:
        for first in range(0, track.num_samples, _BLOCK):
            block = track.read(first, first + _BLOCK)
            keep = np.zeros(block.size, bool)
            for begin, end in edges:
                keep[max(begin - first, 0) : max(end - first, 0)] = True
            block[~keep] = 0.0
            builder.add(block)
        _replace(heard, builder.finish())
    except BaseException:
        builder.discard()
        raise
