"""probe_media / probe_audio on real files made with the bundled ffmpeg and Pillow."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from media_fixtures import (
    decode_passthrough,
    make_audio,
    make_image,
    make_trimmed_video,
    make_vfr_video,
    make_video,
    make_zero_frame_video,
    pattern,
    vfr_times,
)

from lipkit.errors import InputError
from lipkit.media.probe import (
    MediaInfo,
    normalised_frame_count,
    probe_audio,
    probe_media,
    video_timing,
)
from lipkit.media.rates import nominal_rate
from lipkit.media.video import FrameReader

# --------------------------------------------------------------------------- videos


@pytest.mark.parametrize(
    ("fps", "expected"),
    [("25", 25.0), ("30000/1001", 30000 / 1001), ("24", 24.0), ("12.5", 12.5)],
)
def test_video_rate_size_and_exact_frame_count(tmp_path: Path, fps: str, expected: float) -> None:
    clip = make_video(tmp_path / "clip.mp4", fps=fps, frames=17, size=(64, 48))
    info = probe_media(clip)
    assert not info.is_still and info.has_video and not info.has_audio
    assert (info.width, info.height) == (64, 48)
    assert info.fps == expected  # exact rational, not the rounded value ffmpeg prints
    assert info.num_frames == 17
    assert info.duration == pytest.approx(17 / expected)
    assert info.video_codec == "h264"
    assert info.audio_seconds == 0.0


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frames=st.integers(2, 40), fps=st.sampled_from(["10", "25", "30", "50"]))
def test_frame_count_matches_every_decoded_frame(tmp_path: Path, frames: int, fps: str) -> None:
    clip = make_video(tmp_path / f"c{frames}_{fps}.mp4", fps=fps, frames=frames)
    info = probe_media(clip)
    assert info.num_frames == frames == len(decode_passthrough(clip))


def test_audio_track_is_reported(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "talk.mp4", frames=25, audio_seconds=0.6)
    info = probe_media(clip)
    assert info.has_audio
    assert info.audio_seconds == pytest.approx(0.6, abs=0.03)


def test_odd_size_video(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "odd.mp4", size=(63, 47), pix_fmt="yuv444p", frames=5)
    info = probe_media(clip)
    assert (info.width, info.height, info.num_frames) == (63, 47, 5)


@pytest.mark.parametrize(("rotation", "size"), [(90, (48, 64)), (-90, (48, 64)), (180, (64, 48))])
def test_rotation_metadata_swaps_the_reported_size(
    tmp_path: Path, rotation: int, size: tuple[int, int]
) -> None:
    clip = make_video(tmp_path / "rot.mp4", frames=5, rotation=rotation)
    info = probe_media(clip)
    assert (info.width, info.height) == size
    frames = FrameReader(info).read(0, 5)
    assert frames.shape == (5, size[1], size[0], 3)


def test_variable_frame_rate_nominal_rate_and_count_agree_with_decode(tmp_path: Path) -> None:
    clip = make_vfr_video(tmp_path / "vfr.mp4")
    times = vfr_times()
    info = probe_media(clip)
    # the usual frame interval (the 25 fps part), not the 17.35 fps average (issue 13)
    assert info.fps == 25.0 and info.variable_rate
    with FrameReader(info) as reader:
        decoded = reader.read(0, 10_000)
    assert len(decoded) == info.num_frames
    assert info.num_frames == round(float(times[-1]) * info.fps) + 1


@pytest.mark.parametrize(
    ("name", "offset"), [("clip.ts", None), ("late.mp4", 3.3), ("c.mkv", None)]
)
def test_containers_and_start_offsets(tmp_path: Path, name: str, offset: float | None) -> None:
    clip = make_video(tmp_path / name, fps="30000/1001", frames=30, ts_offset=offset)
    info = probe_media(clip)
    assert info.fps == 30000 / 1001  # mkv stores milliseconds: the uneven steps snap back
    assert info.num_frames == 30 == len(decode_passthrough(clip))
    if offset:
        assert info.start_time == pytest.approx(offset, abs=0.01)


def test_edit_list_hidden_frames_are_not_counted(tmp_path: Path) -> None:
    source = make_video(tmp_path / "src.mp4", frames=60, gop=30)
    trimmed = make_trimmed_video(tmp_path / "trimmed.mp4", source, 0.5)
    info = probe_media(trimmed)
    assert info.num_frames == len(decode_passthrough(trimmed)) < 60


def test_single_frame_video_is_a_still(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "one.mp4", frames=1)
    info = probe_media(clip)
    assert info.is_still and info.num_frames == 1 and info.fps == 0.0
    assert info.decoder == "ffmpeg"
    frame = FrameReader(info).read(0, 1)
    assert frame.shape == (1, 48, 64, 3)


# --------------------------------------------------------------------------- stills


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".bmp", ".tiff"])
def test_still_images(tmp_path: Path, suffix: str) -> None:
    image = make_image(tmp_path / f"face{suffix}", pattern(40, 30))
    info = probe_media(image)
    assert info.is_still and info.decoder == "image"
    assert (info.width, info.height, info.num_frames, info.fps) == (40, 30, 1, 0.0)
    assert not info.has_audio


@pytest.mark.parametrize(("orientation", "size"), [(1, (40, 30)), (3, (40, 30)), (6, (30, 40))])
def test_exif_orientation_is_applied(
    tmp_path: Path, orientation: int, size: tuple[int, int]
) -> None:
    image = make_image(tmp_path / "phone.jpg", pattern(40, 30), exif_orientation=orientation)
    info = probe_media(image)
    assert (info.width, info.height) == size
    assert FrameReader(info).read(0, 1).shape == (1, size[1], size[0], 3)


def test_image_over_the_pixel_limit(tmp_path: Path) -> None:
    image = make_image(tmp_path / "big.png", pattern(40, 30))
    assert probe_media(image, max_image_pixels=1200).width == 40
    with pytest.raises(InputError) as err:
        probe_media(image, max_image_pixels=1199)
    assert "max_image_pixels" in str(err.value) and "1,199" in str(err.value)


def test_video_over_the_pixel_limit(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "clip.mp4", frames=2)
    with pytest.raises(InputError, match="max_image_pixels"):
        probe_media(clip, max_image_pixels=64 * 48 - 1)


# --------------------------------------------------------------------------- bad inputs


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        probe_media(tmp_path / "nope.mp4")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="directory"):
        probe_media(tmp_path)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "clip.mp4", frames=2)
    clip.chmod(0)
    try:
        with pytest.raises(InputError, match="permission"):
            probe_media(clip)
    finally:
        clip.chmod(0o644)


def test_unreadable_file_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same check where root can read anything: opening the file is refused."""
    clip = make_video(tmp_path / "clip.mp4", frames=2)
    real_open = Path.open

    def refuse(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == clip:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(InputError, match="permission denied") as err:
        probe_media(clip)
    assert "chmod" in str(err.value)


@pytest.mark.parametrize("name", ["notes.mp4", "notes.txt", "fake.png"])
def test_not_media(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("this is not a video\n" * 20)
    with pytest.raises(InputError, match="not a media file"):
        probe_media(path)


def test_audio_only_file_is_not_a_face(tmp_path: Path) -> None:
    speech = make_audio(tmp_path / "speech.wav")
    with pytest.raises(InputError, match="no video"):
        probe_media(speech)
    info = probe_media(speech, require_video=False)
    assert not info.has_video and info.has_audio
    assert info.audio_seconds == pytest.approx(1.0, abs=1e-3)


def test_zero_frames(tmp_path: Path) -> None:
    empty = make_zero_frame_video(tmp_path / "empty.mp4")
    with pytest.raises(InputError, match="no frames"):
        probe_media(empty)


@pytest.mark.parametrize(
    "name", ["with space.mp4", 'quote\'s "here".mp4', "-dash.mp4", "a:b%d.mp4"]
)
def test_awkward_file_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    clip = make_video(tmp_path / name, frames=3, audio_seconds=0.2)
    monkeypatch.chdir(tmp_path)
    info = probe_media(name)  # relative: a leading dash must not be read as an option
    assert info.num_frames == 3 and info.has_audio
    assert len(FrameReader(info).read(0, 10)) == 3
    assert probe_audio(name).seconds > 0.1
    assert clip.exists()


# --------------------------------------------------------------------------- audio


@pytest.mark.parametrize(
    ("suffix", "rate", "tones"),
    [(".wav", 44100, (440.0,)), (".wav", 22050, (300.0, 500.0)), (".m4a", 48000, (440.0,)),
     (".mp3", 16000, (200.0,)), (".flac", 8000, (300.0, 600.0))],
)  # fmt: skip
def test_probe_audio(tmp_path: Path, suffix: str, rate: int, tones: tuple[float, ...]) -> None:
    path = make_audio(tmp_path / f"speech{suffix}", seconds=0.75, rate=rate, tones=tones)
    info = probe_audio(path)
    assert info.has_audio
    assert info.sample_rate == rate
    assert info.channels == len(tones)
    tolerance = 1 / rate if suffix in (".wav", ".flac") else 0.08  # lossy codecs pad a frame
    assert info.seconds == pytest.approx(0.75, abs=tolerance)


def test_probe_audio_of_a_video_track(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "talk.mp4", frames=10, audio_seconds=0.3)
    assert probe_audio(clip).seconds == pytest.approx(0.3, abs=0.03)


def test_probe_audio_errors(tmp_path: Path) -> None:
    silent = make_video(tmp_path / "silent.mp4", frames=3)
    with pytest.raises(InputError, match="no audio stream"):
        probe_audio(silent)
    with pytest.raises(InputError, match="not found"):
        probe_audio(tmp_path / "missing.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"\x00\x01" * 100)
    with pytest.raises(InputError, match="not a media file"):
        probe_audio(junk)


# --------------------------------------------------------------------------- timing rules


@given(
    count=st.integers(2, 500),
    step=st.integers(1, 5000),
    tb_den=st.sampled_from([1000, 12800, 90000, 10240, 30000]),
    first=st.integers(0, 10_000),
)
def test_even_timestamps_give_their_exact_rate(
    count: int, step: int, tb_den: int, first: int
) -> None:
    pts = [first + i * step for i in range(count)]
    rate, frames, start = video_timing(pts[::-1], count, Fraction(1, tb_den), 0.0)
    if Fraction(tb_den, step).denominator <= 10_000:
        assert rate == Fraction(tb_den, step)
    assert frames == count
    assert start == first
    assert Fraction(float(rate)).limit_denominator(1_000_000) == rate  # survives MediaInfo.fps


@given(gaps=st.lists(st.integers(1, 200), min_size=1, max_size=60))
def test_uneven_timestamps_give_a_plausible_count(gaps: list[int]) -> None:
    pts = np.concatenate([[0], np.cumsum(gaps)]).tolist()
    rate, frames, _ = video_timing(pts, len(pts), Fraction(1, 1000), 0.0)
    assert rate > 0
    assert frames == normalised_frame_count(rate, 0, pts[-1], Fraction(1, 1000))
    nominal = nominal_rate(sorted(set(pts)), Fraction(1, 1000))
    assert abs(float(rate) / float(nominal) - 1) <= 0.01  # snapped or limited, never far
    average = (len(pts) - 1) / (pts[-1] / 1000)
    assert float(rate) >= 0.99 * average  # gaps are left out of the nominal rate, never added
    assert frames >= 0.99 * len(pts) - 1


def test_media_info_is_frozen(tmp_path: Path) -> None:
    info = probe_media(make_video(tmp_path / "c.mp4", frames=2))
    assert isinstance(info, MediaInfo)
    with pytest.raises(ValueError):
        info.fps = 1.0  # type: ignore[misc]
