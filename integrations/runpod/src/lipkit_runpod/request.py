"""A job's ``input`` as the serverless InfiniteTalk workers take it, checked field by field.

The fields (every one but ``audio_url`` and one of ``image_url`` / ``video_url`` optional)::

    image_url | video_url   http(s) URL of the face: a still image or a video
    audio_url               http(s) URL of the speech (any file ffmpeg reads)
    width, height           output frame size (see :func:`lipkit_runpod.job.size_overrides`)
    backend, params         lipkit.sync(backend=..., params=...); params that name files on
                            the server are refused, as ``lipkit serve`` refuses them
    audio_start, audio_end  seconds (12.5) or M:SS ("0:09"): settings audio.start / audio.end
    separate_vocals         settings audio.separate_vocals
    seed, length_policy     as in ``lipkit serve``

A bad field is a :class:`lipkit.errors.InputError` whose message starts with the field's name.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError, field_validator, model_validator

from lipkit.config_audio import parse_time
from lipkit.errors import InputError
from lipkit.service.models import JobOptions


class WorkerInput(JobOptions):
    """The ``input`` object of a RunPod job."""

    image_url: str | None = None
    video_url: str | None = None
    audio_url: str
    audio_start: float | None = None
    audio_end: float | None = None
    separate_vocals: bool | None = None

    @field_validator("audio_start", "audio_end", mode="before")
    @classmethod
    def _time(cls, value: Any) -> Any:
        return None if value is None or value == "" else parse_time(value)

    @model_validator(mode="after")
    def _check(self) -> WorkerInput:
        if (self.image_url is None) == (self.video_url is None):
            raise ValueError("give the face as image_url or video_url (exactly one of them)")
        start, end = self.audio_start, self.audio_end
        if start is not None and end is not None and end <= start:
            raise ValueError(f"audio_end ({end:g} s) must come after audio_start ({start:g} s)")
        return self

    @property
    def face_field(self) -> str:
        return "image_url" if self.image_url is not None else "video_url"

    @property
    def face_url(self) -> str:
        url = self.image_url if self.image_url is not None else self.video_url
        assert url is not None  # the model validator makes sure of it
        return url

    def options(self) -> JobOptions:
        """What ``lipkit serve`` calls the job's options; the frame size is applied apart."""
        return JobOptions(
            backend=self.backend,
            params=self.params,
            seed=self.seed,
            length_policy=self.length_policy,
        )

    def audio_settings(self) -> dict[str, Any]:
        """The ``audio`` settings this job sets (only those given)."""
        audio: dict[str, Any] = {}
        if self.audio_start is not None:
            audio["start"] = self.audio_start
        if self.audio_end is not None:
            audio["end"] = self.audio_end
        if self.separate_vocals is not None:  # false too: it may turn a preset's off
            audio["separate_vocals"] = self.separate_vocals
        return audio


FIELDS = tuple(WorkerInput.model_fields)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = f"unknown field (the fields are {', '.join(FIELDS)})"
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def parse_input(raw: Any) -> WorkerInput:
    """The job's ``input``, checked; :class:`InputError` in the words of its fields."""
    if not isinstance(raw, dict):
        raise InputError("input: must be a JSON object with image_url or video_url and audio_url")
    try:
        return WorkerInput.model_validate(raw)
    except ValidationError as exc:
        raise InputError(_describe(exc)) from None
