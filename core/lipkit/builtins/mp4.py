"""The builtin ``mp4`` encoder: H.264/AAC MP4 (or MOV) files, written in resumable segments."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from lipkit.hookspecs import hookimpl
from lipkit.interfaces import FinalizeRequest, FrameSink, OutputEncoder, StreamInfo
from lipkit.media.mp4 import Mp4SegmentWriter, finalize_mp4
from lipkit.specs import EncoderSpec


class Mp4Encoder(OutputEncoder):
    """Encode segments with libx264 and join them with the speech as AAC into one file."""

    spec: ClassVar[EncoderSpec] = EncoderSpec(
        name="mp4",
        kind="file",
        suffixes=(".mp4", ".m4v", ".mov"),
        description="H.264 (yuv420p) + AAC in MP4/MOV with the bundled ffmpeg; "
        "segments are joined without re-encoding",
    )

    def open_segment(self, path: Path | None, stream: StreamInfo, settings: Any) -> FrameSink:
        """Start the segment file ``path``; ``settings`` is an OutputSettings (None = defaults)."""
        if path is None:
            raise ValueError("the mp4 encoder writes segment files: give a segment path")
        return Mp4SegmentWriter(Path(path), stream, settings)

    def finalize(self, request: FinalizeRequest) -> Path:
        """Join the segments, mux the audio and write ``request.output``; return its path."""
        return finalize_mp4(request)


@hookimpl
def lipkit_output_encoders() -> list[OutputEncoder]:
    """Offer the builtin ``mp4`` encoder."""
    return [Mp4Encoder()]
