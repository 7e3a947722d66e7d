"""The ``demucs`` vocal separator: two streaming passes over the cropped audio.

1. mean and standard deviation of the mono reference (demucs's whole-track normalisation);
2. the normalised mix through the bag's vocals models in overlapping segments
   (:mod:`lipkit_demucs.engine`), de-normalised, the two channels averaged, and resampled to
   16 kHz into a :class:`~lipkit.media.audio.TrackBuilder` that spills to the work folder.

Only a few segments are held at a time, so memory does not grow with the audio's length.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from pydantic import BaseModel

from lipkit.errors import ModelError
from lipkit.interfaces import AudioSource, StageProgress, VocalSeparator, as_params
from lipkit.logs import get_logger
from lipkit.media.audio import TrackBuilder, stream_audio
from lipkit.media.track import AudioTrack
from lipkit.specs import AudioStageSpec, DeviceInfo
from lipkit_demucs import catalog
from lipkit_demucs.params import DemucsParams

if TYPE_CHECKING:
    import torch

    from lipkit_demucs.engine import BagMember

log = get_logger(__name__)
MODEL_RATE = 44100
"""The rate of every published Demucs model (checked against the loaded ones)."""


class DemucsSeparator(VocalSeparator):
    """Demucs (htdemucs by default): the vocals stem of the published checkpoints."""

    spec: ClassVar[AudioStageSpec] = AudioStageSpec(
        name="demucs",
        description="Demucs music source separation (htdemucs): the encoder hears the vocals",
        sample_rate=MODEL_RATE,
        channels=2,
        rank=10,
        realtime_factor=0.5,
        weights=catalog.declared_weights(),
    )
    params_model: ClassVar[type[BaseModel]] = DemucsParams

    def missing_weights(self, params: BaseModel, model_home: Path) -> list[str]:
        """The checkpoints of the chosen model that are not in ``model_home``."""
        p = as_params(params, DemucsParams)
        return catalog.resolve(p.model, model_home).missing()

    def describe(self, params: BaseModel, model_home: Path) -> str:
        p = as_params(params, DemucsParams)
        plan = catalog.resolve(p.model, model_home)
        segment = "the model's segment" if p.segment is None else f"{p.segment:g} s segments"
        return (
            f"demucs {plan.name} ({len(plan.signatures)} model(s) in the bag, {segment}, "
            f"overlap {p.overlap:g}, shifts {p.shifts})"
        )

    def separate(
        self,
        source: AudioSource,
        *,
        params: BaseModel,
        model_home: Path,
        device: DeviceInfo,
        progress: StageProgress | None = None,
    ) -> AudioTrack:
        from lipkit.torch_device import torch_device

        p = as_params(params, DemucsParams)
        members = load_bag(p, model_home)
        torch_dev = torch_device(device.id)
        rate = _bag_rate(members)
        total, mean, std = mix_statistics(source, rate)
        builder = TrackBuilder(rate, source.work_dir)
        try:
            done = 0
            for vocals in separate_blocks(members, source, rate, total, p, torch_dev, mean, std):
                builder.add(vocals.mean(axis=0))
                done += vocals.shape[-1]
                if progress is not None:
                    progress(source.seconds * min(done / max(total, 1), 1.0), source.seconds)
            track = builder.finish()
        except BaseException:
            builder.discard()
            raise
        log.debug("vocals separated", model=p.model, samples=track.num_samples)
        return track


def load_bag(params: DemucsParams, model_home: Path) -> list[BagMember]:
    """The bag's models (only those the vocals need are loaded) with their vocals weights."""
    from lipkit_demucs.checkpoint import load_model
    from lipkit_demucs.engine import BagMember, vocals_index

    plan = catalog.resolve(params.model, model_home)
    missing = plan.missing()
    if missing:
        raise ModelError(
            f"Demucs model {plan.name!r} is missing {', '.join(missing)}",
            hint=catalog.how_to_get(plan),
        )
    members = []
    for index, path in enumerate(plan.paths):
        assert path is not None
        row = None if plan.weights is None else plan.weights[index]
        if row is not None and row[_VOCALS_COLUMN if len(row) > _VOCALS_COLUMN else -1] == 0:
            members.append(BagMember(None, 0.0))  # adds nothing to the vocals: not loaded
            continue
        model = load_model(path)
        _apply_bag_segment(model, plan.segment)
        members.append(BagMember(model, 1.0 if row is None else row[vocals_index(model)]))
    return members


_VOCALS_COLUMN = 3
"""Where the vocals weight is before a model is loaded: every published model's sources start
drums, bass, other, vocals (checked against the model's own list once it is loaded)."""


def _apply_bag_segment(model: object, segment: float | None) -> None:
    """A bag's segment replaces its models' (a transformer model's only if shorter), as
    demucs's BagOfModels does."""
    from demucs.htdemucs import HTDemucs

    if segment is None:
        return
    current = model.segment  # type: ignore[attr-defined]
    if not isinstance(model, HTDemucs) or segment <= current:
        model.segment = segment  # type: ignore[attr-defined]


def _bag_rate(members: list[BagMember]) -> int:
    loaded = [m.model for m in members if m.model is not None]
    from lipkit_demucs.engine import attr

    rates = {int(attr(m, "samplerate")) for m in loaded}
    channels = {int(attr(m, "audio_channels")) for m in loaded}
    if len(rates) != 1 or channels != {2}:
        raise ModelError(f"the bag's models disagree or are not stereo: {rates} Hz, {channels}")
    return rates.pop()


def mix_statistics(source: AudioSource, rate: int) -> tuple[int, float, float]:
    """First pass: sample count, mean and standard deviation of the mono reference."""
    from lipkit_demucs.stats import MixStats

    stats = MixStats()
    for block in _blocks(source, rate):
        stats.add(block)
    return stats.count, stats.mean, stats.std


def _blocks(source: AudioSource, rate: int) -> Iterator[np.ndarray]:
    return stream_audio(
        source.path, sample_rate=rate, channels=2, start=source.start, seconds=source.seconds
    )


def separate_blocks(
    members: list[BagMember],
    source: AudioSource,
    rate: int,
    total: int,
    params: DemucsParams,
    device: torch.device,
    mean: float,
    std: float,
) -> Iterator[np.ndarray]:
    """Second pass: the de-normalised stereo vocals, ``float32 [2, n]`` blocks in order."""
    import torch

    from lipkit_demucs.engine import Settings, normalise, stream_vocals
    from lipkit_demucs.stats import STD_EPSILON

    mean_t = torch.tensor(mean, dtype=torch.float32)
    std_t = torch.tensor(std, dtype=torch.float32) + STD_EPSILON
    settings = Settings(params.segment, params.overlap, params.shifts, params.seed)
    normalised = (normalise(b, mean_t, std_t) for b in _blocks(source, rate))
    for vocals in stream_vocals(members, normalised, total, settings, device):
        if vocals.shape[-1]:
            yield (vocals * std_t + mean_t).numpy()
