"""Input-frame transforms (resize_factor, rotate, crop, static) on real decodes.

The reference for every check is a plain decode of the same file (no transform) put through
:meth:`FrameTransform.apply` (OpenCV ``INTER_AREA`` resize, ``np.rot90``, slicing). Rotation and
crop move whole RGB pixels (the reader converts to rgb24 before them), so those must match
exactly. A resize is ffmpeg's ``area`` scaler against OpenCV's: both average the source pixels a
destination pixel covers, but they round the fixed-point weights differently (at most 1 level
apart when the factor divides the size), and when ``size // factor`` is not an exact division the
two weight the partly covered edge pixels of each box a little differently, which on a sharp edge
of the test pattern can reach a few levels (mean well below one level).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import decode_video
from cli_helpers import lipkit as run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from media_fixtures import make_image, make_video, pattern

from lipkit.api import prepare
from lipkit.config import FaceSettings, InputSettings, load_settings
from lipkit.errors import ConfigError
from lipkit.media.info import transform_info
from lipkit.media.probe import MediaInfo, probe_media
from lipkit.media.transform import FrameTransform, make_transform
from lipkit.media.video import FrameReader
from lipkit.pipeline.faces import track_cache_path
from lipkit.pipeline.runner import Pipeline


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("transform")
    return {
        # B-frames and a keyframe every 6 frames: seeks land between keyframes
        "video": make_video(d / "clip.mp4", size=(64, 48), frames=40, gop=6),
        "small": make_video(d / "small.mp4", size=(23, 17), pix_fmt="yuv444p", frames=8, gop=4),
        "png": make_image(d / "still.png", pattern(37, 29, seed=3)),
        "exif": make_image(d / "exif.jpg", pattern(40, 30, seed=4), exif_orientation=6),
    }


@pytest.fixture(scope="module")
def plain(clips: dict[str, Path]) -> dict[str, np.ndarray]:
    """Every frame of each video, decoded without a transform."""
    out = {}
    for name in ("video", "small"):
        with FrameReader(probe_media(clips[name])) as reader:
            out[name] = reader.read(0, 1000)
    return out


def _settings(**values: object) -> InputSettings:
    return InputSettings(**values)


def _reference(frames: np.ndarray, transform: FrameTransform) -> np.ndarray:
    return np.stack([transform.apply(frame) for frame in frames])


def _assert_close(got: np.ndarray, want: np.ndarray, transform: FrameTransform) -> None:
    assert got.shape == want.shape
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    if transform.resize_factor == 1:
        assert diff.max() == 0  # rotation and crop are exact pixel moves
        return
    width, height = transform.source_size
    exact = width % transform.resize_factor == 0 and height % transform.resize_factor == 0
    if exact:
        assert diff.max() <= 1  # rounding of the box average only
    else:
        assert diff.max() <= 16, diff.max()  # edge weights of a non-integer box (docstring)
        if diff[0].size >= 16 * 3:  # a mean over a few pixels says nothing (1x1 crops: 0.67)
            assert diff.mean() <= 0.5, diff.mean()


CASES = [
    {"rotate": 90},
    {"rotate": 180},
    {"rotate": 270},
    {"crop": (5, 40, 3, 61)},
    {"crop": (7, -1, 11, -1)},
    {"resize_factor": 2},
    {"resize_factor": 4, "rotate": 90},
    {"resize_factor": 2, "rotate": 270, "crop": (3, 30, 1, 22)},
    {"resize_factor": 3, "rotate": 180, "crop": (1, -1, 2, 19)},  # 64 // 3: not exact
]


@pytest.mark.parametrize("values", CASES, ids=[str(c) for c in CASES])
def test_video_frames_match_the_numpy_transform_of_a_plain_decode(
    values: dict, clips: dict[str, Path], plain: dict[str, np.ndarray]
) -> None:
    info = transform_info(probe_media(clips["video"]), _settings(**values))
    transform = info.transform
    assert transform is not None
    reference = _reference(plain["video"], transform)
    assert (info.width, info.height) == transform.size == reference.shape[2:0:-1]
    assert info.num_frames == len(plain["video"]) and not info.is_still
    with FrameReader(info) as reader:
        _assert_close(reader.read(0, 1000), reference, transform)
        for start, count in [(31, 4), (2, 3), (17, 6), (39, 5), (0, 1)]:  # random access, seeks
            _assert_close(reader.read(start, count), reference[start : start + count], transform)
        for step in (1, 3, 7):
            got_idx, got = zip(*reader.iter_frames(start=2, step=step, batch=4), strict=True)
            indices = np.concatenate(got_idx)
            assert indices.tolist() == list(range(2, len(reference), step))
            _assert_close(np.concatenate(got), reference[indices], transform)


def test_detection_size_scales_the_transformed_frame(
    clips: dict[str, Path], plain: dict[str, np.ndarray]
) -> None:
    """The face pass reads scaled-down frames: of the transformed picture, not the source."""
    info = transform_info(probe_media(clips["video"]), _settings(rotate=90, crop=(0, 60, 0, 40)))
    assert (info.width, info.height) == (40, 60)
    with FrameReader(info, size=(20, 30)) as reader:
        small = reader.read(0, 3)
    full = _reference(plain["video"][:3], info.transform)  # type: ignore[arg-type]
    boxed = full.reshape(3, 30, 2, 20, 2, 3).mean(axis=(2, 4))
    assert small.shape == (3, 30, 20, 3)
    assert np.abs(small - boxed).max() <= 1.0


@pytest.mark.parametrize("name", ["png", "exif"])
@pytest.mark.parametrize(
    "values",
    [
        {"rotate": 90},
        {"resize_factor": 2, "crop": (1, -1, 2, 13)},
        {"rotate": 270, "crop": (0, 9, 4, 8)},
    ],
)
def test_stills_are_transformed_after_exif_orientation(
    name: str, values: dict, clips: dict[str, Path]
) -> None:
    probed = probe_media(clips[name])
    with FrameReader(probed) as reader:
        upright = reader.read(0, 1)[0]  # EXIF orientation already applied
    info = transform_info(probed, _settings(**values))
    assert info.transform is not None and info.is_still and info.decoder == "image"
    with FrameReader(info) as reader:
        got = reader.read(0, 1)
        (indices, iterated), *_ = list(reader.iter_frames())
    want = info.transform.apply(upright)
    assert got.shape == (1, info.height, info.width, 3)
    assert np.array_equal(got[0], want)
    assert indices.tolist() == [0] and np.array_equal(iterated, got)


def test_static_reads_only_the_first_frame_as_a_still(
    clips: dict[str, Path], plain: dict[str, np.ndarray]
) -> None:
    probed = probe_media(clips["video"])
    info = transform_info(probed, _settings(static=True))
    assert info.is_still and info.num_frames == 1 and info.fps == 0.0 and info.duration == 0.0
    assert (info.width, info.height) == (probed.width, probed.height)
    assert info.transform is not None and info.transform.static
    with FrameReader(info) as reader:
        assert np.array_equal(reader.read(0, 5), plain["video"][:1])
        assert reader.read(1, 1).shape[0] == 0
    # with a geometric transform too: the first frame, transformed
    info = transform_info(probed, _settings(static=True, rotate=90, crop=(2, 50, 4, 40)))
    assert info.is_still and (info.width, info.height) == (36, 48)
    with FrameReader(info) as reader:
        got = reader.read(0, 1)
    assert np.array_equal(got[0], info.transform.apply(plain["video"][0]))  # type: ignore[union-attr]


def test_static_makes_the_resolver_treat_a_video_as_a_still(
    sample_face: Path, sample_speech: Path
) -> None:
    selection, _, _ = prepare(
        sample_face, sample_speech, "out.mp4", backend="preview", input_settings={"static": True}
    )
    assert selection.face_info.is_still and selection.plan.inputs.face_is_still
    assert selection.plan.inputs.source_frames == 1
    assert selection.plan.fps == 25  # a still's rate: the `fps` setting


def test_static_keeps_the_videos_frame_rate_unless_fps_is_given(
    tmp_path: Path, sample_speech: Path
) -> None:
    video = make_video(tmp_path / "thirty.mp4", size=(64, 48), frames=12, fps=30)
    static = {"static": True}
    plan = prepare(video, sample_speech, None, backend="preview", input_settings=static)[0].plan
    assert plan.inputs.face_is_still and plan.fps == 30  # the reference keeps the video's fps
    given = prepare(video, sample_speech, None, backend="preview", input_settings=static, fps=12)
    assert given[0].plan.fps == 12


def test_identity_settings_leave_the_info_alone(clips: dict[str, Path]) -> None:
    info = probe_media(clips["video"])
    assert transform_info(info, InputSettings()) is info
    assert transform_info(info, _settings(crop=(0, -1, 0, -1))) is info  # the whole frame
    assert transform_info(info, _settings(crop=(0, 48, 0, 64), rotate=0)) is info


@pytest.mark.parametrize(
    ("values", "frame"),
    [
        ({"crop": (0, 49, 0, 10)}, "64x48"),  # y2 past the bottom
        ({"crop": (0, 10, 0, 65)}, "64x48"),  # x2 past the right edge
        ({"crop": (10, 10, 0, -1)}, "64x48"),  # empty
        ({"crop": (0, -1, 64, -1)}, "64x48"),  # x1 at the edge: empty
        ({"rotate": 90, "crop": (0, 10, 0, 50)}, "48x64"),  # fits only before the rotation
        ({"resize_factor": 2, "crop": (0, 25, 0, 10)}, "32x24"),  # fits only before the resize
    ],
)
def test_a_crop_outside_the_frame_is_a_config_error_with_the_size(
    values: dict, frame: str, clips: dict[str, Path]
) -> None:
    with pytest.raises(ConfigError) as caught:
        transform_info(probe_media(clips["video"]), _settings(**values))
    text = f"{caught.value.message} {caught.value.hint}"
    assert f"frame is {frame}" in text
    width, height = frame.split("x")
    assert f"y2 <= {height}" in text and f"x2 <= {width}" in text


def test_bad_settings_are_config_errors(clips: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="resize_factor 49 leaves no pixels of the 64x48"):
        transform_info(probe_media(clips["video"]), _settings(resize_factor=49))
    for bad in ({"rotate": 45}, {"resize_factor": 0}, {"crop": (-1, 5, 0, 5)}, {"crop": (1, 2)}):
        with pytest.raises(ConfigError):
            load_settings({"input": bad}, use_default_config=False)


def test_environment_variables_set_the_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIPKIT_INPUT__ROTATE", "270")
    monkeypatch.setenv("LIPKIT_INPUT__RESIZE_FACTOR", "3")
    monkeypatch.setenv("LIPKIT_INPUT__CROP", "[1, -1, 2, -1]")
    monkeypatch.setenv("LIPKIT_INPUT__STATIC", "true")
    got = load_settings(use_default_config=False).input
    assert got == InputSettings(resize_factor=3, rotate=270, crop=(1, -1, 2, -1), static=True)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_valid_transform_matches_numpy(
    data: st.DataObject, clips: dict[str, Path], plain: dict[str, np.ndarray]
) -> None:
    probed = probe_media(clips["small"])  # 23x17: odd sizes, factors that do not divide
    factor = data.draw(st.integers(1, 6), label="resize_factor")
    rotate = data.draw(st.sampled_from([0, 90, 180, 270]), label="rotate")
    base = make_transform((23, 17), resize_factor=factor, rotate=rotate)
    width, height = base.rotated_size if base is not None else (23, 17)
    y1 = data.draw(st.integers(0, height - 1), label="y1")
    y2 = data.draw(st.sampled_from([-1, *range(y1 + 1, height + 1)]), label="y2")
    x1 = data.draw(st.integers(0, width - 1), label="x1")
    x2 = data.draw(st.sampled_from([-1, *range(x1 + 1, width + 1)]), label="x2")
    values = {"resize_factor": factor, "rotate": rotate, "crop": (y1, y2, x1, x2)}
    info = transform_info(probed, _settings(**values))
    if info.transform is None:  # nothing to do: the plain frames
        assert info is probed
        return
    expect_w = (x2 if x2 != -1 else width) - x1
    expect_h = (y2 if y2 != -1 else height) - y1
    assert (info.width, info.height) == info.transform.size == (expect_w, expect_h)
    start = data.draw(st.integers(0, len(plain["small"]) - 1), label="start")
    with FrameReader(info) as reader:
        got = reader.read(start, 3)
    want = _reference(plain["small"][start : start + 3], info.transform)
    _assert_close(got, want, info.transform)


def _info(clips: dict[str, Path], **values: object) -> MediaInfo:
    return transform_info(probe_media(clips["video"]), _settings(**values))


def test_the_face_track_cache_key_follows_the_transform(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    face = FaceSettings()
    keys = {
        track_cache_path(tmp_path, _info(clips, **values), "haar", face)
        for values in ({}, {"rotate": 90}, {"rotate": 270}, {"crop": (0, -1, 1, -1)},
                       {"resize_factor": 2}, {"static": True})
    }  # fmt: skip
    assert len(keys) == 6
    assert track_cache_path(tmp_path, _info(clips), "haar", face) == track_cache_path(
        tmp_path, _info(clips, crop=(0, -1, 0, -1)), "haar", face
    )


def test_the_job_key_follows_the_transform(sample_face: Path, sample_speech: Path) -> None:
    def key(**values: object) -> str:
        selection, resolved, registry = prepare(
            sample_face, sample_speech, "out.mp4", backend="preview", input_settings=values
        )
        policy = registry.memory_policies[selection.plan.choice("memory").implementation]
        return Pipeline(selection, resolved, Path("out.mp4"), memory_policy=policy)._job_key()

    plain_key = key()
    assert plain_key == key(crop=(0, -1, 0, -1))  # the whole frame: no transform
    others = [key(resize_factor=2), key(rotate=90), key(crop=(0, 300, 0, 300)), key(static=True)]
    assert len({plain_key, *others}) == 5


@pytest.mark.slow
@pytest.mark.parametrize(
    ("flags", "size"),
    [
        # 360x360 -> 180x180 -> rows 20:180, columns 10:150: 140x160
        (["--resize-factor", "2", "--crop", "20", "-1", "10", "150"], (140, 160)),
        # odd: 180x180 -> rows 0:171, columns 3:180: 177x171, encoded padded to even sizes
        # (mp4.py adds a black column and row); no rotation: the Haar detector wants upright faces
        (["--resize-factor", "2", "--crop", "0", "171", "3", "-1"], (178, 172)),
    ],
)
def test_lipkit_run_writes_the_transformed_size(
    flags: list[str],
    size: tuple[int, int],
    sample_face: Path,
    sample_speech: Path,
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.mp4"
    args: list[str | Path] = [sample_face, sample_speech, "--backend", "preview", *flags]
    proc = run_cli("run", *args, "-o", out, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    frames, meta = decode_video(out)
    assert tuple(meta["size"]) == size
    assert len(frames) == result["num_frames"]
    inputs = result["plan"]["inputs"]
    transform = FrameTransform.model_validate(inputs["transform"])
    assert (inputs["width"], inputs["height"]) == transform.size
    # away from the mouth the output is the transformed source (up to H.264 loss)
    with FrameReader(probe_media(sample_face)) as reader:
        first = transform.apply(reader.read(0, 1)[0])
    top = first.shape[0] // 4
    diff = np.abs(frames[0, :top, : first.shape[1]].astype(int) - first[:top].astype(int))
    assert diff.mean() < 4, diff.mean()

    plan = run_cli("plan", *args)
    assert plan.returncode == 0, plan.stderr
    assert "input transform: 360x360 -> resize 1/2 180x180" in plan.stdout


def test_lipkit_plan_rejects_a_crop_outside_the_frame(
    sample_face: Path, sample_speech: Path
) -> None:
    proc = run_cli("plan", sample_face, sample_speech, "--crop", "0", "400", "0", "-1")
    assert proc.returncode == 2
    assert "the frame is 360x360" in proc.stderr and "y2 <= 360" in proc.stderr
    assert "Traceback" not in proc.stderr
