"""Issue 13: a truncated file is read with a warning at its nominal rate; a variable-rate video is
read at a rate chosen on purpose (its nominal rate, or --fps), and the plan says which and why."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import lipkit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from media_fixtures import (
    _out,
    decode_passthrough,
    ffmpeg,
    make_audio,
    make_trimmed_video,
    make_vfr_video,
    make_video,
)

from lipkit.errors import InputError
from lipkit.media.probe import MediaInfo, probe_media
from lipkit.media.rates import choose_output_rate
from lipkit.media.transform import FrameTransform
from lipkit.media.video import FrameReader

MEDIA = Path(__file__).parent / "media"
FACE = MEDIA / "face.mp4"  # 150 frames at 25 fps, B-frames, index (moov) at the start


def cut(source: Path, path: Path, fraction: float) -> Path:
    """The first ``fraction`` of ``source``'s bytes: a download that stopped part-way."""
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def make_dropped_frames_video(path: Path) -> Path:
    """A 30 fps clip (3 s) with frames 10-20 of every second dropped: variable frame rate."""
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=30", "-t", "3",
        "-vf", r"select='not(between(mod(n\,30)\,10\,20))'", "-fps_mode", "vfr",
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", _out(path),
    )  # fmt: skip
    return path


# --------------------------------------------------------------------------- truncated input


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(fraction=st.floats(0.3, 0.99))
def test_a_truncated_mp4_keeps_its_nominal_rate_and_warns(tmp_path: Path, fraction: float) -> None:
    clip = cut(FACE, tmp_path / "cut.mp4", fraction)
    info = probe_media(clip)
    assert info.fps == 25.0  # not the 24.36 an average over the missing frames' holes gives
    assert 1 < info.num_frames < 150
    assert len(info.warnings) == 1 and "cut.mp4 ends early" in info.warnings[0]
    assert "truncated" in info.warnings[0] and "25 fps" in info.warnings[0]
    with FrameReader(info) as reader:
        assert len(reader.read(0, 1000)) == info.num_frames


def test_a_truncated_matroska_file_warns(tmp_path: Path) -> None:
    whole = make_video(tmp_path / "whole.mkv", frames=100, audio_seconds=4.0)
    info = probe_media(cut(whole, tmp_path / "cut.mkv", 0.5))
    assert info.fps == 25.0 and info.num_frames < 100
    assert info.warnings and "ends early" in info.warnings[0]


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.97])
def test_a_truncated_mp4_without_its_index_is_refused_as_truncated(
    tmp_path: Path, fraction: float
) -> None:
    whole = make_video(tmp_path / "whole.mp4", frames=100)  # no faststart: the index is last
    with pytest.raises(InputError, match="truncated or still being written") as caught:
        probe_media(cut(whole, tmp_path / "cut.mp4", fraction))
    assert caught.value.exit_code == 3


def test_complete_files_do_not_warn(tmp_path: Path) -> None:
    source = make_video(tmp_path / "src.mp4", frames=60, gop=30)
    clips = [
        FACE,
        MEDIA / "face_with_audio.mp4",
        source,
        make_trimmed_video(tmp_path / "trimmed.mp4", source, 0.5),
        make_video(tmp_path / "long-audio.mp4", frames=25, audio_seconds=3.0),
        make_video(tmp_path / "short-audio.mkv", frames=75, audio_seconds=0.5),
        make_video(tmp_path / "late.ts", fps="30000/1001", frames=30, ts_offset=3.3),
        make_video(tmp_path / "late.mp4", frames=30, ts_offset=3.3),
        make_vfr_video(tmp_path / "vfr.mp4"),
    ]
    for clip in clips:
        assert probe_media(clip).warnings == (), clip


# --------------------------------------------------------------------------- variable frame rate


def test_a_variable_rate_video_is_read_at_its_nominal_rate_keeping_every_frame(
    tmp_path: Path,
) -> None:
    clip = make_dropped_frames_video(tmp_path / "vfr.mp4")
    source = decode_passthrough(clip)
    info = probe_media(clip)
    assert info.fps == 30.0  # its nominal rate, not the 18.9 fps average
    assert info.variable_rate and "variable frame rate" in info.rate_reason
    assert info.rate_reason.startswith("30 fps, the stream's nominal rate")
    with FrameReader(info) as reader:
        frames = reader.read(0, 1000)
    assert len(frames) == info.num_frames == 90  # 3 s at 30 fps: the gaps are filled
    distinct = {frame.tobytes() for frame in frames}
    assert distinct == {frame.tobytes() for frame in source}  # every source frame, none lost


def test_constant_rate_videos_say_so(tmp_path: Path) -> None:
    info = probe_media(FACE)
    assert not info.variable_rate
    assert info.rate_reason == "25 fps, the video's constant rate"
    mkv = probe_media(make_video(tmp_path / "ntsc.mkv", fps="30000/1001", frames=30))
    assert not mkv.variable_rate and "rounded" in mkv.rate_reason


def _video_info(**update: object) -> MediaInfo:
    base = MediaInfo(
        path=Path("v.mp4"), is_still=False, width=64, height=48, fps=30.0, num_frames=91,
        duration=91 / 30, has_video=True, has_audio=False, variable_rate=True,
        rate_reason="30 fps, the stream's nominal rate",
    )  # fmt: skip
    return base.model_copy(update=update)


@pytest.mark.parametrize(
    ("info", "fps", "given_", "expected_fps", "frames", "words"),
    [
        (_video_info(), 25.0, False, 30.0, 91, "nominal rate"),
        (_video_info(), 24.0, True, 24.0, 73, "--fps: the video has a variable frame rate"),
        (_video_info(variable_rate=False, rate_reason="30 fps, the video's constant rate"),
         24.0, True, 30.0, 91, "--fps 24 applies to stills and variable-rate videos only"),
        (_video_info(is_still=True, fps=0.0, num_frames=1), 25.0, False, 25.0, 1,
         "the default for a still image"),
        (_video_info(is_still=True, fps=0.0, num_frames=1), 12.0, True, 12.0, 1, "12 fps, --fps"),
        (_video_info(is_still=True, fps=0.0, num_frames=1,
                     transform=FrameTransform(source_size=(64, 48), static=True,
                                              source_fps=50.0)),
         25.0, False, 50.0, 1, "--static"),
    ],
)  # fmt: skip
def test_the_output_rate_is_chosen_and_explained(
    info: MediaInfo, fps: float, given_: bool, expected_fps: float, frames: int, words: str
) -> None:
    read, chosen, reason = choose_output_rate(info, fps, given_)
    assert chosen == expected_fps
    assert read.num_frames == frames
    assert reason.startswith(f"{expected_fps:g} fps") and words in reason
    if not info.is_still:
        assert read.fps == chosen


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def speech(tmp_path: Path) -> Path:
    return make_audio(tmp_path / "speech.wav", seconds=2.0, rate=16000)


def test_plan_shows_the_early_end_and_the_rate(tmp_path: Path, speech: Path) -> None:
    clip = cut(FACE, tmp_path / "cut.mp4", 0.53)
    text = lipkit("plan", clip, speech, "--backend", "preview", timeout=120)
    assert text.returncode == 0, text.stderr
    assert "WARNING: cut.mp4 ends early" in text.stdout
    assert "frame rate: 25 fps, the stream's nominal rate" in text.stdout
    assert "ends early" in text.stderr  # the log's warning
    data = lipkit("plan", clip, speech, "--backend", "preview", "--json", timeout=120)
    plan = json.loads(data.stdout)
    assert plan["fps"] == 25.0 and plan["fps_reason"].startswith("25 fps")
    assert len(plan["warnings"]) == 1 and "ends early" in plan["warnings"][0]


def test_plan_of_a_complete_video_has_no_warning(speech: Path) -> None:
    data = lipkit("plan", FACE, speech, "--backend", "preview", "--json", timeout=120)
    plan = json.loads(data.stdout)
    assert plan["warnings"] == []
    assert plan["fps_reason"] == "25 fps, the video's constant rate"


def test_run_of_a_truncated_mp4_writes_25_fps(tmp_path: Path, speech: Path) -> None:
    clip = cut(FACE, tmp_path / "cut.mp4", 0.53)
    out = tmp_path / "out.mp4"
    done = lipkit("run", clip, speech, "-o", out, "--backend", "preview", timeout=300)
    assert done.returncode == 0, done.stderr
    assert "ends early" in done.stderr
    result = probe_media(out)
    assert result.fps == 25.0 and not result.variable_rate
    assert result.num_frames == 50  # 2 s of speech at 25 fps


@pytest.mark.parametrize(("flags", "fps"), [((), 30.0), (("--fps", "24"), 24.0)])
def test_run_of_a_variable_rate_video_uses_the_rate_the_plan_names(
    tmp_path: Path, speech: Path, flags: tuple[str, ...], fps: float
) -> None:
    clip = make_dropped_frames_video(tmp_path / "vfr.mp4")
    out = tmp_path / "out.mp4"
    common = ("--backend", "preview", "--face-box", "0", "0", "64", "48", *flags)
    plan = json.loads(lipkit("plan", clip, speech, "--json", *common, timeout=120).stdout)
    assert plan["fps"] == fps
    reason = plan["fps_reason"]
    assert reason.startswith(f"{fps:g} fps, " + ("--fps" if flags else "the stream's nominal"))
    done = lipkit("run", clip, speech, "-o", out, *common, timeout=300)
    assert done.returncode == 0, done.stderr
    result = probe_media(out)
    assert result.fps == fps and not result.variable_rate
    assert result.num_frames == round(2.0 * fps)
    assert np.isclose(result.duration, 2.0, atol=1 / fps)
