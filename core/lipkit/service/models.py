"""Pydantic models of the job service: its configuration, requests, responses and job records."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lipkit.specs import LengthPolicy

JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]

# backend parameters that name files on the server: a client must not choose those
_SERVER_PATH_SUFFIXES = ("checkpoint", "_config", "_path", "_dir", "_file")


class ServiceConfig(BaseModel):
    """How the service runs. ``lipkit serve`` flags map one to one onto these fields."""

    model_config = ConfigDict(extra="forbid")

    state_dir: Path = Field(description="jobs database, job inputs, work dirs, local results")
    api_key: str | None = Field(default=None, description="required X-API-Key header; None = open")
    devices: list[str] = Field(default_factory=lambda: ["auto"], min_length=1)
    workers_per_device: int = Field(default=1, ge=1, le=64)
    queue_size: int = Field(default=16, ge=1, description="queued jobs beyond this get 503")
    max_upload_bytes: int = Field(default=200 * 2**20, gt=0, description="per input file")
    max_audio_seconds: float = Field(default=600.0, gt=0)
    max_face_seconds: float = Field(default=600.0, gt=0, description="face video length")
    max_face_pixels: int = Field(default=3840 * 2160, gt=0, description="width x height")
    url_max_bytes: int = Field(default=200 * 2**20, gt=0)
    url_timeout: float = Field(default=60.0, gt=0, description="seconds for a whole download")
    allow_private_urls: bool = Field(
        default=False, description="let URL inputs reach loopback and private addresses"
    )
    storage: Literal["local", "s3"] = "local"
    url_expires: int = Field(default=3600, gt=0, description="presigned URL lifetime, seconds")

    @field_validator("devices")
    @classmethod
    def _strip(cls, value: list[str]) -> list[str]:
        cleaned = [d.strip() for d in value if d.strip()]
        if not cleaned:
            raise ValueError("give at least one device")
        return cleaned


class JobOptions(BaseModel):
    """What a client may choose for a job besides its inputs."""

    model_config = ConfigDict(extra="forbid")

    backend: str | None = Field(default=None, description="generator name, or auto")
    params: dict[str, Any] = Field(default_factory=dict, description="backend parameters")
    width: int | None = Field(default=None, ge=16, le=8192, description="for backends taking it")
    height: int | None = Field(default=None, ge=16, le=8192, description="for backends taking it")
    seed: int | None = Field(default=None, ge=0)
    length_policy: LengthPolicy | None = None

    @field_validator("params")
    @classmethod
    def _no_server_paths(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if key.endswith(_SERVER_PATH_SUFFIXES):
                raise ValueError(f"parameter {key!r} names a file on the server: not allowed")
        return value

    def backend_params(self) -> dict[str, Any]:
        params = dict(self.params)
        if self.width is not None:
            params["width"] = self.width
        if self.height is not None:
            params["height"] = self.height
        return params


class JobRequest(JobOptions):
    """A JSON job submission: inputs by URL."""

    face_url: str = Field(description="http(s) URL of the face video or image")
    audio_url: str | None = Field(default=None, description="http(s) URL of the speech")


class JobForm(BaseModel):
    """A multipart job submission (documents the form for the OpenAPI schema)."""

    face: bytes | None = Field(default=None, description="face video or image (file)")
    audio: bytes | None = Field(default=None, description="speech (file)")
    face_url: str | None = None
    audio_url: str | None = None
    backend: str | None = None
    params: str | None = Field(default=None, description="backend parameters as a JSON object")
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    length_policy: LengthPolicy | None = None


class ErrorInfo(BaseModel):
    type: str = Field(description="the lipkit error class, e.g. InputError")
    message: str
    hint: str | None = None


class JobRecord(BaseModel):
    """A job as the store keeps it."""

    id: str
    status: JobStatus
    created_at: float
    updated_at: float
    options: JobOptions
    face_path: Path
    audio_path: Path | None = None
    device: str | None = None
    progress: float = 0.0
    phase: str | None = None
    frames_done: int | None = None
    frames_total: int | None = None
    frames_per_second: float | None = None
    eta_seconds: float | None = None
    error: ErrorInfo | None = None
    result_key: str | None = None
    num_frames: int | None = None
    duration: float | None = None
    resumed_segments: int = 0
    cancel_requested: bool = False
    attempts: int = 0


class JobInfo(BaseModel):
    """GET /jobs/{id}."""

    id: str
    status: JobStatus
    progress: float = Field(ge=0.0, le=1.0)
    phase: str | None = Field(
        default=None, description="what the job is doing: faces, load, render or finalize"
    )
    frames_done: int | None = Field(default=None, description="frames done in this phase")
    frames_total: int | None = Field(default=None, description="frames in this phase")
    frames_per_second: float | None = Field(default=None, description="this phase's rate")
    eta_seconds: float | None = Field(
        default=None, description="seconds until the job is done, at the current rate"
    )
    backend: str | None = None
    created_at: float
    updated_at: float
    error: ErrorInfo | None = None
    result_url: str | None = Field(default=None, description="where the mp4 is, once done")
    num_frames: int | None = None
    duration: float | None = None
    resumed_segments: int = 0
    cancel_requested: bool = False


class JobAccepted(BaseModel):
    """POST /jobs: 202."""

    id: str
    status: JobStatus
    url: str = Field(description="poll this for the job's status")


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    workers: int
    queued: int
    running: int
    storage: str
