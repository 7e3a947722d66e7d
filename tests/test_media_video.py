"""FrameReader: constant-rate decoding, exact seeks, stepping, stills and process hygiene."""

from __future__ import annotations

import gc
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from media_fixtures import (
    decode_passthrough,
    make_image,
    make_trimmed_video,
    make_vfr_video,
    make_video,
    pattern,
    vfr_times,
)

from lipkit.errors import InputError, MediaError
from lipkit.media.probe import MediaInfo, probe_media
from lipkit.media.video import FrameReader


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Clips shared by the tests of this module (made once)."""
    d = tmp_path_factory.mktemp("video")
    long = make_video(d / "long.mp4", frames=90, gop=12)  # B-frames, a keyframe every 12
    return {
        "long": long,
        "vfr": make_vfr_video(d / "vfr.mp4"),
        "trimmed": make_trimmed_video(d / "trimmed.mp4", long, 1.1),
        "odd": make_video(d / "odd.mp4", size=(63, 47), pix_fmt="yuv444p", frames=12, gop=5),
        "ntsc": make_video(d / "ntsc.mp4", fps="30000/1001", frames=40, gop=10),
        # timestamps rounded to milliseconds: uneven steps, snapped back to 30000/1001
        "mkv": make_video(d / "ntsc.mkv", fps="30000/1001", frames=40, gop=10),
        # timestamps that do not start at zero
        "ts": make_video(d / "clip.ts", frames=40, gop=10),
        "offset": make_video(d / "offset.mp4", frames=40, gop=10, ts_offset=3.3),
    }


@pytest.fixture(scope="module")
def full_decodes(media: dict[str, Path]) -> dict[str, np.ndarray]:
    """One sequential decode of every clip, the reference for seeks."""
    out = {}
    for name, path in media.items():
        with FrameReader(probe_media(path)) as reader:
            out[name] = reader.read(0, 100_000)
    return out


def _is_decoder_process(proc: psutil.Process) -> bool:
    """ffmpeg, the small supervisor that lipkit starts it under, or a child of ours that has
    ended without being reaped (a zombie: also a leak)."""
    try:
        if proc.status() == psutil.STATUS_ZOMBIE:
            return proc.ppid() == os.getpid()
        if "ffmpeg" in proc.name():
            return True
        return any("posix_spawnp" in part for part in proc.cmdline())  # the supervisor
    except psutil.NoSuchProcess:
        return False


def _ffmpeg_children() -> list[psutil.Process]:
    """ffmpeg processes (and their supervisors) below this one, running or unreaped, waiting
    briefly for a starting or ending one to settle."""
    import time

    seen: list[psutil.Process] = []
    for _ in range(20):
        now = [p for p in psutil.Process().children(recursive=True) if _is_decoder_process(p)]
        if seen and {p.pid for p in now} == {p.pid for p in seen}:
            return now
        seen = now
        time.sleep(0.1)
    return seen


# --------------------------------------------------------------------------- sequential decode


@pytest.mark.parametrize("name", ["long", "trimmed", "odd", "ntsc", "mkv", "ts", "offset"])
def test_constant_rate_clips_decode_to_exactly_their_frames(
    media: dict[str, Path], full_decodes: dict[str, np.ndarray], name: str
) -> None:
    info = probe_media(media[name])
    frames = full_decodes[name]
    assert frames.dtype == np.uint8
    assert frames.shape == (info.num_frames, info.height, info.width, 3)
    # at the native rate every source frame appears once, untouched
    np.testing.assert_array_equal(frames, decode_passthrough(media[name]))


def test_variable_rate_frames_follow_the_source_timestamps(
    media: dict[str, Path], full_decodes: dict[str, np.ndarray]
) -> None:
    info = probe_media(media["vfr"])
    frames = full_decodes["vfr"]
    source = decode_passthrough(media["vfr"])
    times = vfr_times()
    assert len(source) == len(times)
    rate = Fraction(info.fps).limit_denominator(1_000_000)
    assert len(frames) == info.num_frames
    for k, frame in enumerate(frames):
        # output frame k shows the last source frame whose time rounds to slot <= k
        shown = max(i for i, t in enumerate(times) if int(t * rate + Fraction(1, 2)) <= k)
        np.testing.assert_array_equal(frame, source[shown], err_msg=f"output frame {k}")


def test_reads_past_the_end_are_short(media: dict[str, Path]) -> None:
    info = probe_media(media["long"])
    with FrameReader(info) as reader:
        assert len(reader.read(85, 10)) == 5
        assert len(reader.read(90, 3)) == 0
        assert len(reader.read(500, 3)) == 0
        assert len(reader.read(0, 0)) == 0
        assert reader.read(89, 1).shape == (1, 48, 64, 3)


# --------------------------------------------------------------------------- seeking


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.sampled_from(["long", "vfr", "trimmed", "odd", "ntsc", "mkv", "ts", "offset"]),
    reads=st.lists(st.tuples(st.integers(0, 95), st.integers(1, 20)), min_size=1, max_size=4),
)
def test_random_reads_are_bit_identical_to_a_sequential_decode(
    media: dict[str, Path],
    full_decodes: dict[str, np.ndarray],
    name: str,
    reads: list[tuple[int, int]],
) -> None:
    full = full_decodes[name]
    with FrameReader(probe_media(media[name])) as reader:
        for start, count in reads:
            got = reader.read(start, count)
            np.testing.assert_array_equal(got, full[start : start + count])


def test_sequential_reads_reuse_the_decoder(media: dict[str, Path]) -> None:
    with FrameReader(probe_media(media["long"])) as reader:
        reader.read(0, 10)
        first = reader._decoder
        reader.read(10, 10)
        reader.read(22, 5)  # a short jump ahead decodes through
        assert reader._decoder is first
        reader.read(3, 2)  # backwards: a new decoder
        assert reader._decoder is not first


# --------------------------------------------------------------------------- iterating


@pytest.mark.parametrize(("start", "step", "batch"), [(0, 1, 32), (0, 5, 4), (7, 3, 5), (89, 4, 2)])
def test_iter_frames_with_steps(
    media: dict[str, Path],
    full_decodes: dict[str, np.ndarray],
    start: int,
    step: int,
    batch: int,
) -> None:
    full = full_decodes["long"]
    with FrameReader(probe_media(media["long"])) as reader:
        chunks = list(reader.iter_frames(start=start, step=step, batch=batch))
    assert all(len(i) == len(f) <= batch for i, f in chunks)
    indices = np.concatenate([i for i, _ in chunks])
    frames = np.concatenate([f for _, f in chunks])
    assert indices.dtype == np.int64
    np.testing.assert_array_equal(indices, np.arange(start, 90, step))
    np.testing.assert_array_equal(frames, full[start::step])


def test_iter_frames_interleaves_with_read(
    media: dict[str, Path], full_decodes: dict[str, np.ndarray]
) -> None:
    full = full_decodes["ntsc"]
    with FrameReader(probe_media(media["ntsc"])) as reader:
        for indices, frames in reader.iter_frames(step=7, batch=2):
            np.testing.assert_array_equal(frames, full[indices])
            last = int(indices[-1])
            np.testing.assert_array_equal(reader.read(last, 2), full[last : last + 2])


def test_scaled_decode(media: dict[str, Path], full_decodes: dict[str, np.ndarray]) -> None:
    info = probe_media(media["long"])
    with FrameReader(info, size=(32, 24)) as reader:
        small = reader.read(0, 90)
        stepped = np.concatenate([f for _, f in reader.iter_frames(step=10)])
    assert small.shape == (90, 24, 32, 3)
    np.testing.assert_array_equal(stepped, small[::10])
    # the same pictures: equal when both are averaged down to 8x6 blocks
    coarse_full = full_decodes["long"].reshape(90, 6, 8, 8, 8, 3).mean(axis=(2, 4))
    coarse_small = small.reshape(90, 6, 4, 8, 4, 3).mean(axis=(2, 4))
    assert np.abs(coarse_full - coarse_small).mean() < 2.5
    assert np.abs(coarse_full - np.roll(coarse_small, 1, axis=2)).mean() > 10


# --------------------------------------------------------------------------- stills


def test_png_still_is_served_exactly(tmp_path: Path) -> None:
    image = pattern(33, 21)
    info = probe_media(make_image(tmp_path / "face.png", image))
    with FrameReader(info) as reader:
        frame = reader.read(0, 5)
        np.testing.assert_array_equal(frame, image[None])
        chunks = list(reader.iter_frames())
        assert len(chunks) == 1 and chunks[0][0].tolist() == [0]
        assert list(reader.iter_frames(start=1)) == []
        assert len(reader.read(1, 1)) == 0
        frame[0, 0, 0] = 255 - frame[0, 0, 0]  # callers get their own copy
        np.testing.assert_array_equal(reader.read(0, 1), image[None])


def test_exif_rotated_jpeg_is_upright(tmp_path: Path) -> None:
    image = pattern(40, 30)
    info = probe_media(make_image(tmp_path / "phone.jpg", image, exif_orientation=6))
    frame = FrameReader(info).read(0, 1)[0].astype(int)
    upright = np.rot90(image, k=-1).astype(int)  # orientation 6: rotate 90 degrees clockwise
    upside_down = np.rot90(image, k=1).astype(int)
    assert frame.shape == upright.shape
    assert np.abs(frame - upright).mean() < 0.5 * np.abs(frame - upside_down).mean()


def test_scaled_still(tmp_path: Path) -> None:
    info = probe_media(make_image(tmp_path / "face.png", pattern(64, 48)))
    assert FrameReader(info, size=(16, 12)).read(0, 1).shape == (1, 12, 16, 3)


def test_reader_needs_video(tmp_path: Path) -> None:
    info = MediaInfo(
        path=tmp_path / "x.wav", is_still=False, width=0, height=0, fps=0.0, num_frames=0,
        duration=0.0, has_video=False, has_audio=True,
    )  # fmt: skip
    with pytest.raises(InputError):
        FrameReader(info)


# --------------------------------------------------------------------------- process hygiene


def test_no_ffmpeg_left_behind(media: dict[str, Path]) -> None:
    info = probe_media(media["long"])
    before = {p.pid for p in _ffmpeg_children()}
    # children that other tests in this process left on purpose (multiprocessing's resource
    # tracker, a Ray runtime) are not this test's business
    existing = {p.pid for p in psutil.Process().children(recursive=True)}

    reader = FrameReader(info)
    reader.read(0, 3)
    assert {p.pid for p in _ffmpeg_children()} - before  # a decoder is running
    reader.close()
    assert {p.pid for p in _ffmpeg_children()} == before
    with pytest.raises(ValueError):
        reader.read(0, 1)

    gen = FrameReader(info).iter_frames(batch=2)
    next(gen)
    assert {p.pid for p in _ffmpeg_children()} - before
    del gen  # an abandoned generator
    gc.collect()
    assert {p.pid for p in _ffmpeg_children()} == before

    dropped = FrameReader(info)
    dropped.read(0, 2)
    del dropped  # never closed
    gc.collect()
    leftover = [p for p in psutil.Process().children(recursive=True) if p.pid not in existing]
    assert leftover == []  # neither running nor zombie


def test_bad_arguments_fail_at_the_call(media: dict[str, Path]) -> None:
    reader = FrameReader(probe_media(media["long"]))
    with pytest.raises(ValueError):
        reader.iter_frames(step=0)
    with pytest.raises(ValueError):
        reader.read(-1, 2)
    with pytest.raises(ValueError):
        FrameReader(probe_media(media["long"]), size=(0, 10))
    reader.close()


def test_a_file_broken_after_probing_is_a_media_error(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "clip.mp4", frames=10)
    info = probe_media(clip)
    clip.write_bytes(b"\x00" * 4096)
    before = {p.pid for p in _ffmpeg_children()}
    with FrameReader(info) as reader:
        with pytest.raises(MediaError, match="ffmpeg failed to decode"):
            reader.read(0, 5)
        with pytest.raises(MediaError):
            reader.read(5, 5)  # a fresh decoder, failing the same way
    assert {p.pid for p in _ffmpeg_children()} == before
