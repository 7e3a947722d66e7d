"""The output-encoder contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lipkit.config import OutputSettings
from lipkit.errors import LipkitError
from lipkit.interfaces import FinalizeRequest, OutputEncoder, StreamInfo
from lipkit.specs import EncoderSpec
from lipkit_conformance._common import CONTRACT, check_spec, count_video_frames


@CONTRACT
class EncoderContract:
    """Override ``encoder``: an OutputEncoder."""

    SEGMENTS = (10, 7)
    STREAM = StreamInfo(64, 48, 25.0)

    @pytest.fixture
    def encoder(self) -> OutputEncoder:
        """Your OutputEncoder."""
        raise NotImplementedError("return your OutputEncoder")

    @staticmethod
    def frames(n: int, seed: int = 0) -> np.ndarray:
        """``n`` copies of one random 64x48 frame (cheap to encode, easy to compare)."""
        rng = np.random.default_rng(seed)
        base = rng.integers(0, 256, (1, 48, 64, 3), dtype=np.uint8)
        return np.repeat(base, n, axis=0)

    def _segment_path(self, encoder: OutputEncoder, folder: Path, index: int) -> Path | None:
        if encoder.spec.kind != "file":
            return None
        return folder / f"seg{index}{encoder.spec.suffixes[0]}"

    def _write(self, encoder: OutputEncoder, folder: Path, out: Path | None) -> Any:
        settings = OutputSettings(video_encoder="libx264")  # as the resolver hands it
        segments = []
        for index, count in enumerate(self.SEGMENTS):
            sink = encoder.open_segment(
                self._segment_path(encoder, folder, index), self.STREAM, settings
            )
            sink.write(self.frames(count, index))
            segments.append(sink.close())
        total = sum(self.SEGMENTS)
        request = FinalizeRequest(segments, self.STREAM, total, out, None, total / 25, settings)
        return encoder.finalize(request)

    def test_spec(self, encoder: OutputEncoder) -> None:
        """A valid EncoderSpec; file encoders declare their suffixes."""
        check_spec(encoder.spec, EncoderSpec)
        if encoder.spec.kind == "file":
            assert encoder.spec.suffixes and all(s.startswith(".") for s in encoder.spec.suffixes)

    def test_closed_segments_are_complete(self, encoder: OutputEncoder, tmp_path: Path) -> None:
        """After ``close`` a file segment decodes on its own with every frame written."""
        if encoder.spec.kind != "file":
            pytest.skip("frames encoders keep segments in memory")
        for index, count in enumerate(self.SEGMENTS):
            path = self._segment_path(encoder, tmp_path, index)
            assert path is not None
            sink = encoder.open_segment(path, self.STREAM, OutputSettings())
            sink.write(self.frames(count, index))
            sink.close()
            assert path.is_file() and count_video_frames(path) == count

    def test_segments_join_into_the_result(self, encoder: OutputEncoder, tmp_path: Path) -> None:
        """``finalize`` gives every frame, in order; equal inputs give byte-identical files."""
        if encoder.spec.kind == "frames":
            result = self._write(encoder, tmp_path, None)
            expected = np.concatenate([self.frames(n, i) for i, n in enumerate(self.SEGMENTS)])
            assert np.array_equal(result, expected)
            return
        out = tmp_path / f"out{encoder.spec.suffixes[0]}"
        self._write(encoder, tmp_path, out)
        assert count_video_frames(out) == sum(self.SEGMENTS)
        first = out.read_bytes()
        out.unlink()
        again = tmp_path / "again"
        again.mkdir()
        self._write(encoder, again, out)
        assert out.read_bytes() == first, "equal segments and settings: byte-identical output"

    def test_bad_frames_are_rejected(self, encoder: OutputEncoder, tmp_path: Path) -> None:
        """Frames of the wrong size are refused (ValueError or a lipkit error), not encoded."""
        path = self._segment_path(encoder, tmp_path, 0)
        sink = encoder.open_segment(path, self.STREAM, OutputSettings())
        with pytest.raises((ValueError, LipkitError)):
            sink.write(np.zeros((2, 10, 10, 3), np.uint8))
        sink.abort()
