"""The builtin mp4 and frames encoders: segments, finalize, determinism, failure hygiene."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pluggy
import pytest
from media_fixtures import make_audio

from lipkit import hookspecs
from lipkit.builtins import frames as frames_module
from lipkit.builtins import mp4 as mp4_module
from lipkit.builtins.frames import FramesEncoder
from lipkit.builtins.mp4 import Mp4Encoder
from lipkit.config import OutputSettings
from lipkit.errors import MediaError
from lipkit.interfaces import FinalizeRequest, StreamInfo
from lipkit.media.audio import load_audio
from lipkit.media.mp4 import PARTIAL_SUFFIX, Mp4SegmentWriter, finalize_mp4
from lipkit.media.probe import probe_audio, probe_media
from lipkit.media.video import FrameReader

FAST = OutputSettings(x264_preset="veryfast", crf=18)


def flat_frames(count: int, width: int, height: int, value: int) -> np.ndarray:
    """``count`` frames of one grey level (compress well and survive H.264 almost exactly)."""
    return np.full((count, height, width, 3), value, dtype=np.uint8)


def ramp_frames(count: int, width: int, height: int) -> np.ndarray:
    """Frames whose grey level rises by 8 per frame: each frame identifiable after decoding."""
    levels = (16 + 8 * np.arange(count)) % 240
    return np.broadcast_to(levels[:, None, None, None], (count, height, width, 3)).astype(np.uint8)


def write_segments(
    folder: Path, stream: StreamInfo, counts: list[int], settings: OutputSettings = FAST
) -> tuple[list[Path], np.ndarray]:
    frames = ramp_frames(sum(counts), stream.width, stream.height)
    paths, start = [], 0
    for i, count in enumerate(counts):
        writer = Mp4Encoder().open_segment(folder / f"seg {i:03d}.mp4", stream, settings)
        part = frames[start : start + count]
        writer.write(part[: count // 2])
        writer.write(part[count // 2 :])
        paths.append(writer.close())
        start += count
    return paths, frames


def levels(frames: np.ndarray) -> np.ndarray:
    return frames.reshape(len(frames), -1).mean(axis=1)


# --------------------------------------------------------------------------- segments


def test_segment_decodes_to_what_was_written(tmp_path: Path) -> None:
    stream = StreamInfo(64, 48, 25.0)
    (path,), frames = write_segments(tmp_path, stream, [12])
    assert path == tmp_path / "seg 000.mp4"
    assert not list(tmp_path.glob(f"*{PARTIAL_SUFFIX}"))
    info = probe_media(path)
    assert (info.width, info.height, info.fps, info.num_frames) == (64, 48, 25.0, 12)
    assert info.video_codec == "h264" and not info.has_audio
    decoded = FrameReader(info).read(0, 100)
    np.testing.assert_allclose(levels(decoded), levels(frames), atol=1.5)


def test_colours_round_trip(tmp_path: Path) -> None:
    stream = StreamInfo(64, 48, 30.0)
    colours = [(200, 30, 40), (20, 180, 60), (40, 60, 220), (128, 128, 128)]
    frames = np.stack([np.full((48, 64, 3), c, dtype=np.uint8) for c in colours])
    writer = Mp4SegmentWriter(tmp_path / "c.mp4", stream, FAST)
    writer.write(frames)
    decoded = FrameReader(probe_media(writer.close())).read(0, 10).astype(int)
    # BT.709 tagged on the way in is read back as BT.709: colours stay put
    np.testing.assert_allclose(decoded.mean(axis=(1, 2)), np.array(colours), atol=4)


def test_odd_size_is_padded_by_one_pixel(tmp_path: Path) -> None:
    stream = StreamInfo(63, 47, 25.0)
    frames = flat_frames(5, 63, 47, 180)
    writer = Mp4SegmentWriter(tmp_path / "odd.mp4", stream, FAST)
    writer.write(frames)
    info = probe_media(writer.close())
    assert (info.width, info.height, info.num_frames) == (64, 48, 5)
    decoded = FrameReader(info).read(0, 5).astype(int)
    assert np.abs(decoded[:, :40, :56] - 180).max() <= 3  # the picture, away from the pad edge
    assert decoded[:, :, -1].mean() < 60 and decoded[:, -1, :].mean() < 60  # black pad


def test_ntsc_rate_is_kept(tmp_path: Path) -> None:
    stream = StreamInfo(64, 48, 30000 / 1001)
    writer = Mp4SegmentWriter(tmp_path / "ntsc.mp4", stream, FAST)
    writer.write(flat_frames(9, 64, 48, 90))
    assert probe_media(writer.close()).fps == 30000 / 1001


def test_abort_leaves_nothing(tmp_path: Path) -> None:
    writer = Mp4SegmentWriter(tmp_path / "gone.mp4", StreamInfo(64, 48, 25.0), FAST)
    writer.write(flat_frames(40, 64, 48, 50))
    writer.abort()
    writer.abort()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="aborted"):
        writer.close()
    with pytest.raises(ValueError, match="aborted"):
        writer.write(flat_frames(1, 64, 48, 50))


def test_ffmpeg_dying_is_a_media_error(tmp_path: Path) -> None:
    writer = Mp4SegmentWriter(tmp_path / "dead.mp4", StreamInfo(64, 48, 25.0), FAST)
    writer.write(flat_frames(2, 64, 48, 50))
    writer._process.proc.kill()  # the encoder dies (out of memory, disk full, ...)
    writer._process.proc.wait()
    with pytest.raises(MediaError):
        for _ in range(64):  # the pipe buffer may take a few writes to fill
            writer.write(flat_frames(8, 64, 48, 50))
        writer.close()
    assert list(tmp_path.iterdir()) == []


def test_wrong_frames_are_rejected(tmp_path: Path) -> None:
    writer = Mp4SegmentWriter(tmp_path / "x.mp4", StreamInfo(64, 48, 25.0), FAST)
    with pytest.raises(ValueError):
        writer.write(flat_frames(2, 48, 64, 0))
    with pytest.raises(ValueError):
        writer.write(np.zeros((2, 48, 64, 3), dtype=np.float32))
    with pytest.raises(ValueError):
        writer.close()  # no frames
    assert list(tmp_path.iterdir()) == []


def test_unclosed_writer_is_cleaned_up(tmp_path: Path) -> None:
    writer = Mp4SegmentWriter(tmp_path / "lost.mp4", StreamInfo(64, 48, 25.0), FAST)
    writer.write(flat_frames(2, 64, 48, 50))
    process = writer._process.proc
    del writer
    assert process.poll() is not None
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- finalize


def test_finalize_joins_segments_and_muxes_audio(tmp_path: Path) -> None:
    stream = StreamInfo(64, 48, 25.0)
    segments, frames = write_segments(tmp_path / "work", stream, [7, 10, 8])
    speech = make_audio(tmp_path / "speech.wav", seconds=2.0, tones=(440.0,))
    output = tmp_path / "new folder" / "result.mp4"
    request = FinalizeRequest(segments, stream, 25, output, speech, 0.9, FAST)
    assert Mp4Encoder().finalize(request) == output
    info = probe_media(output)
    assert (info.num_frames, info.fps, info.width, info.height) == (25, 25.0, 64, 48)
    assert info.has_audio
    assert probe_audio(output).seconds == pytest.approx(0.9, abs=0.03)  # cut to audio_seconds
    assert probe_audio(output).sample_rate == 44100
    decoded = FrameReader(info).read(0, 100)
    np.testing.assert_allclose(levels(decoded), levels(frames), atol=1.5)
    audio = load_audio(output)
    spectrum = np.abs(np.fft.rfft(audio[:8000]))
    assert abs(np.argmax(spectrum) * 2 - 440) <= 4
    assert sorted(p.name for p in output.parent.iterdir()) == ["result.mp4"]
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == [s.name for s in segments]


def test_finalize_cuts_to_num_frames_and_video_length(tmp_path: Path) -> None:
    stream = StreamInfo(64, 48, 25.0)
    segments, _ = write_segments(tmp_path, stream, [10, 10], settings=OutputSettings(crf=18))
    speech = make_audio(tmp_path / "speech.wav", seconds=3.0)
    output = tmp_path / "out.mp4"
    finalize_mp4(FinalizeRequest(segments, stream, 20, output, speech, 3.0, FAST))
    info = probe_media(output)
    assert info.num_frames == 20
    assert probe_audio(output).seconds == pytest.approx(0.8, abs=0.03)  # 20 frames at 25 fps


def test_finalize_without_audio(tmp_path: Path) -> None:
    stream = StreamInfo(63, 47, 12.5)
    segments, _ = write_segments(tmp_path, stream, [4, 3])
    output = tmp_path / "silent.mov"
    finalize_mp4(FinalizeRequest(segments, stream, 7, output, None, 0.0, FAST))
    info = probe_media(output)
    assert not info.has_audio
    assert (info.num_frames, info.fps, info.width, info.height) == (7, 12.5, 64, 48)
    assert output.read_bytes()[4:8] == b"ftyp" and b"qt  " in output.read_bytes()[:32]


def test_finalize_is_byte_identical_for_equal_inputs(tmp_path: Path) -> None:
    stream = StreamInfo(64, 48, 25.0)
    segments, _ = write_segments(tmp_path / "a", stream, [6, 6])
    again, _ = write_segments(tmp_path / "b", stream, [6, 6])
    assert [s.read_bytes() for s in segments] == [s.read_bytes() for s in again]
    speech = make_audio(tmp_path / "speech.m4a", seconds=1.0)
    first = finalize_mp4(
        FinalizeRequest(segments, stream, 12, tmp_path / "1.mp4", speech, 0.5, FAST)
    )
    time.sleep(1.1)  # a creation time stamped into the file would now differ
    second = finalize_mp4(FinalizeRequest(again, stream, 12, tmp_path / "2.mp4", speech, 0.5, FAST))
    assert first.read_bytes() == second.read_bytes()


def test_failure_leaves_nothing_at_the_output(tmp_path: Path) -> None:
    stream = StreamInfo(64, 48, 25.0)
    segments, _ = write_segments(tmp_path / "work", stream, [5])
    bad_audio = tmp_path / "notes.wav"
    bad_audio.write_text("not audio at all\n" * 50)
    output = tmp_path / "out" / "result.mp4"
    with pytest.raises(MediaError):
        finalize_mp4(FinalizeRequest(segments, stream, 5, output, bad_audio, 1.0, FAST))
    assert not output.exists()
    assert list(output.parent.iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == [s.name for s in segments]
    with pytest.raises(MediaError, match="missing"):
        finalize_mp4(FinalizeRequest([tmp_path / "nope.mp4"], stream, 5, output, None, 0.0, FAST))
    assert not output.exists()


def test_awkward_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    stream = StreamInfo(64, 48, 25.0)
    writer = Mp4SegmentWriter(Path("-seg 'one'.mp4"), stream, FAST)
    writer.write(flat_frames(3, 64, 48, 70))
    segment = writer.close()
    make_audio(tmp_path / '-say "hi".wav', seconds=0.5)
    output = Path("-out dir") / "it's done.mp4"
    finalize_mp4(FinalizeRequest([segment], stream, 3, output, Path('-say "hi".wav'), 0.5, FAST))
    info = probe_media(output)
    assert info.num_frames == 3 and info.has_audio


# --------------------------------------------------------------------------- frames encoder


def test_frames_encoder_joins_segments_exactly() -> None:
    encoder = FramesEncoder()
    stream = StreamInfo(8, 6, 25.0)
    frames = ramp_frames(11, 8, 6)
    segments = []
    for chunk in (frames[:4], frames[4:9], frames[9:]):
        sink = encoder.open_segment(None, stream, None)
        buffer = chunk.copy()
        sink.write(buffer[:2])
        sink.write(buffer[2:])
        buffer[:] = 0  # the caller reuses its buffer: the sink kept a copy
        segments.append(sink.close())
    assert [len(s) for s in segments] == [4, 5, 2]
    result = encoder.finalize(
        FinalizeRequest(segments, stream, 11, None, None, 0.0, OutputSettings())
    )
    assert result.dtype == np.uint8 and result.shape == (11, 6, 8, 3)
    np.testing.assert_array_equal(result, frames)
    shorter = encoder.finalize(
        FinalizeRequest(segments, stream, 10, None, None, 0.0, OutputSettings())
    )
    np.testing.assert_array_equal(shorter, frames[:10])
    with pytest.raises(ValueError):
        encoder.finalize(FinalizeRequest(segments, stream, 12, None, None, 0.0, OutputSettings()))


def test_frames_sink_checks_shapes() -> None:
    sink = FramesEncoder().open_segment(None, StreamInfo(8, 6, 25.0), None)
    with pytest.raises(ValueError):
        sink.write(np.zeros((1, 8, 6, 3), dtype=np.uint8))
    assert sink.close().shape == (0, 6, 8, 3)


# --------------------------------------------------------------------------- registration


def test_encoders_register_through_the_hook() -> None:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    manager.register(mp4_module)
    manager.register(frames_module)
    offered = [enc for result in manager.hook.lipkit_output_encoders() for enc in result]
    specs = {enc.spec.name: enc.spec for enc in offered}
    assert set(specs) == {"mp4", "frames"}
    assert specs["mp4"].kind == "file" and specs["mp4"].suffixes == (".mp4", ".m4v", ".mov")
    assert specs["frames"].kind == "frames"
