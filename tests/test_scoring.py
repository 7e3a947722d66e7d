"""``lipkit score`` in the core: the face tracks, the protocol crops, the audio each track is
scored against and the report, with a scorer test double (``scoring_helpers.EnergyScorer``);
SyncNet itself (``lipkit-syncnet``) is tested in its own files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from lipkit_conformance import SyncScorerContract
from scoring_helpers import EnergyScorer

import lipkit
from lipkit.errors import InputError, PluginError
from lipkit.interfaces import SyncScorer
from lipkit.plugins import load_registry
from lipkit.scoring.crops import PAD_VALUE, protocol_crop, smoothed_boxes
from lipkit.scoring.report import TrackScore, combine
from lipkit.scoring.tracks import runs


class TestEnergyScorer(SyncScorerContract):
    @pytest.fixture
    def scorer(self) -> SyncScorer:
        return EnergyScorer()


class _Hooks:
    def __init__(self) -> None:
        self.scorer = EnergyScorer()

    @lipkit.hookimpl
    def lipkit_sync_scorers(self) -> list[SyncScorer]:
        return [self.scorer]


@given(st.lists(st.booleans(), max_size=80), st.integers(1, 10))
def test_runs_are_the_long_stretches_with_a_face(valid: list[bool], least: int) -> None:
    found = runs(np.array(valid, bool), least)
    covered = np.zeros(len(valid), bool)
    for run in found:
        assert len(run) >= least and all(valid[run.start : run.stop])
        assert run.start == 0 or not valid[run.start - 1]
        assert run.stop == len(valid) or not valid[run.stop]
        covered[run.start : run.stop] = True
    # every stretch of faces at least `least` long is one of the runs
    for i, v in enumerate(valid):
        if v and not covered[i]:
            a = i
            while a > 0 and valid[a - 1]:
                a -= 1
            b = i
            while b < len(valid) and valid[b]:
                b += 1
            assert b - a < least


def test_protocol_crop_frames_the_box_as_the_reference() -> None:
    frame = np.zeros((200, 300, 3), np.uint8)
    frame[50:150, 100:200] = 255  # the "face": a 100x100 box
    box = smoothed_boxes(np.array([[100, 50, 200, 150]] * 13, np.float32))[6]
    assert box.tolist() == [50.0, 150.0, 100.0]
    crop = protocol_crop(frame, box, 0.4, 224)
    assert crop.shape == (224, 224, 3)
    # rows from y - s to y + 1.8 s, columns x -+ 1.4 s: the face fills the middle of the top
    # third to two thirds, scaled by 224 / 140 across and 224 / 140 down
    assert crop[5, 112].tolist() == [255, 255, 255]  # just under the crop's top: the face
    assert crop[112, 10].tolist() == [0, 0, 0]  # left of the face: the frame
    edge = protocol_crop(frame, np.array([50.0, 10.0, 10.0]), 0.4, 224)
    assert (edge[:20, :20] == PAD_VALUE).all()  # beyond the frame: the reference's grey 110


def test_combine_weights_by_frames() -> None:
    def track(frames: int, d: float, c: float, offset: int) -> TrackScore:
        score = lipkit.interfaces.SyncScore(lse_d=d, lse_c=c, offset=offset, frames=frames)
        return TrackScore(start_frame=0, frames=frames, score=score)

    lse_d, lse_c, offset = combine([track(100, 6.0, 2.0, 1), track(300, 8.0, 4.0, -2)])
    assert (lse_d, lse_c, offset) == (7.5, 3.5, -2)


def test_score_a_talking_video(sample_face_with_audio: Path) -> None:
    hooks = _Hooks()
    report = lipkit.score(sample_face_with_audio, registry=load_registry(extra=[hooks]))
    scorer = hooks.scorer
    assert report.scorer == "energy" and report.fps == 25.0
    assert len(report.tracks) >= 1
    frames = sum(t.frames for t in report.tracks)
    assert scorer.frames_seen == frames  # every frame of every track, cropped once
    assert all(c.shape == (224, 224, 3) for c in scorer.crops_seen)
    last = report.tracks[-1]
    assert scorer.samples_seen == round(last.frames / 25 * 16000)  # the track's own audio
    assert len(last.score.distances) == 31
    assert report.lse_d == pytest.approx(report.tracks[0].score.lse_d) or len(report.tracks) > 1


def test_score_needs_a_scorer_and_a_video(sample_face: Path, sample_portrait: Path) -> None:
    with pytest.raises(PluginError, match="no lip-sync scorer"):
        lipkit.score(sample_face, registry=load_registry())
    registry = load_registry(extra=[_Hooks()])
    with pytest.raises(InputError, match="still image"):
        lipkit.score(sample_portrait, registry=registry)
    with pytest.raises(InputError, match="in a row"):
        lipkit.score(sample_face, registry=registry, min_track_seconds=60)


def test_cli_score_json(sample_face_with_audio: Path, tmp_path: Path) -> None:
    plugin = tmp_path / "energy_plugin.py"
    plugin.write_text(
        "import lipkit, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from scoring_helpers import EnergyScorer\n"
        "@lipkit.hookimpl\n"
        "def lipkit_sync_scorers():\n"
        "    return [EnergyScorer()]\n"
    )
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import energy_plugin, lipkit.plugins as p\n"
        "real = p.load_registry\n"
        "p.load_registry = lambda *a, **k: real(*a, extra=[energy_plugin], **k)\n"
        "from lipkit.cli import main; sys.exit(main(sys.argv[2:]))\n"
    )
    args: list[Any] = [sys.executable, "-c", code, tmp_path, "score"]
    args += [sample_face_with_audio, "--json"]
    env = {**os.environ, "LIPKIT_LOAD_PLUGINS": ""}  # only the test double scores
    done = subprocess.run(
        list(map(str, args)), capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["scorer"] == "energy" and "lse_c" in report and report["tracks"]
    plain = subprocess.run(
        list(map(str, args[:-1])), capture_output=True, text=True, timeout=300, env=env
    )
    assert plain.returncode == 0, plain.stderr
    assert "LSE-C" in plain.stdout and "LSE-D" in plain.stdout and "offset" in plain.stdout


def test_lipkit_score_with_syncnet_weights_in_the_model_home(
    sample_face_with_audio: Path, lipkit_home: Path
) -> None:
    """`lipkit score VIDEO --json` end to end: SyncNet (random weights in the published format,
    in the model home where `lipkit models` says), the real face track and crops."""
    from syncnet_helpers import random_syncnet, save_published

    save_published(random_syncnet(seed=2), lipkit_home / "models" / "syncnet" / "syncnet_v2.model")
    env = {**os.environ, "LIPKIT_LOAD_PLUGINS": "syncnet"}
    cmd = [sys.executable, "-m", "lipkit.cli", "score", str(sample_face_with_audio), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["scorer"] == "syncnet" and report["fps"] == 25.0
    track = report["tracks"][0]["score"]
    assert len(track["distances"]) == 31 and track["lse_c"] >= 0
    assert track["lse_d"] == pytest.approx(min(track["distances"]), rel=1e-6)
    assert -15 <= report["offset"] <= 15


def test_lipkit_score_without_syncnet_weights_says_where_to_get_them(
    sample_face_with_audio: Path,
) -> None:
    env = {**os.environ, "LIPKIT_LOAD_PLUGINS": "syncnet"}
    cmd = [sys.executable, "-m", "lipkit.cli", "score", str(sample_face_with_audio)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 4, done.stderr  # a model error
    assert "syncnet_v2" in done.stderr and "lipkit models" in done.stderr


class TestSyncNet(SyncScorerContract):
    """The contract on SyncNet itself, random weights in the published format."""

    @pytest.fixture
    def scorer(self) -> SyncScorer:
        return load_registry(allow=["syncnet"]).sync_scorers["syncnet"]

    @pytest.fixture
    def model_home(self, tmp_path: Path) -> Path:
        from syncnet_helpers import random_syncnet, save_published

        save_published(random_syncnet(seed=4), tmp_path / "models" / "syncnet_v2.model")
        return tmp_path / "models"


def test_compare_scores_each_backend_and_keeps_going(
    tmp_path: Path, sample_face: Path, sample_speech: Path, sample_portrait: Path
) -> None:
    from lipkit.scoring.compare import compare

    registry = load_registry(extra=[_Hooks()])
    report = compare(
        sample_face,
        sample_speech,
        ["preview", "nosuch"],
        out_dir=tmp_path / "ab",
        registry=registry,
    )
    ok, failed = report.rows
    assert ok.backend == "preview" and ok.error is None and ok.output is not None
    assert ok.output.is_file() and ok.lse_c is not None and ok.lse_c >= 0
    assert ok.mouth_motion is not None and ok.mouth_motion > 0  # preview moves the mouth
    assert failed.error is not None and "nosuch" in failed.error and failed.output is None
    assert report.scorer == "energy" and report.source_motion is not None
    still = compare(
        sample_portrait, sample_speech, ["preview"], out_dir=tmp_path / "s", registry=registry
    )
    assert still.source_motion is None and still.rows[0].error is None


def test_mouth_motion_counts_change_in_the_lower_half() -> None:
    from lipkit.scoring.crops import MouthMotion

    still = np.zeros((4, 8, 8, 3), np.uint8)
    moving = still.copy()
    moving[1::2, 4:] = 100  # the lower half flips between 0 and 100
    moving[:, :4] = np.arange(4)[:, None, None, None] * 50  # the upper half does not count
    for blocks, want in (([still], 0.0), ([moving[:1], moving[1:3], moving[3:]], 100.0)):
        motion = MouthMotion(iter(blocks))
        assert sum(len(b) for b in motion) == 4
        assert motion.value == pytest.approx(want)


@pytest.fixture
def syncnet_home(lipkit_home: Path) -> dict[str, str]:
    """Random SyncNet weights in the model home; the environment a child lipkit needs."""
    from syncnet_helpers import random_syncnet, save_published

    save_published(random_syncnet(seed=5), lipkit_home / "models" / "syncnet" / "syncnet_v2.model")
    return {**os.environ, "LIPKIT_LOAD_PLUGINS": "syncnet", "LIPKIT_HOME": str(lipkit_home)}


def test_bench_quality_scores_the_output(
    syncnet_home: dict[str, str], sample_face: Path, sample_speech: Path
) -> None:
    cmd = [sys.executable, "-m", "lipkit.cli", "bench", str(sample_face), str(sample_speech)]
    cmd += ["-b", "preview", "--frames", "25", "--quality", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=syncnet_home)
    assert done.returncode == 0, done.stderr
    quality = json.loads(done.stdout)["quality"]
    assert quality["scorer"] == "syncnet" and quality["lse_c"] >= 0 and quality["mouth_motion"] > 0


def test_batch_summary_has_lse_columns_when_syncnet_can_run(
    syncnet_home: dict[str, str], tmp_path: Path, sample_face: Path, sample_speech: Path
) -> None:
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(
        "face,audio,output,backend\n"
        f"{sample_face},{sample_speech},{tmp_path / 'a.mp4'},preview\n"
        f"{sample_face},{sample_speech},{tmp_path / 'b.mp4'},nosuch\n"
    )
    cmd = [sys.executable, "-m", "lipkit.cli", "batch", str(jobs), "--workers", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=syncnet_home)
    assert done.returncode == 8, done.stderr  # the second row fails, the first is scored
    header = done.stdout.splitlines()[0]
    assert "LSE-C" in header and "LSE-D" in header
    first = next(line for line in done.stdout.splitlines() if line.startswith("1 "))
    assert " ok " in first and re.search(r"\d+\.\d{3}\s+\d+\.\d{3}", first)
    unscored = subprocess.run(
        [*cmd, "--no-score", "--no-resume"], capture_output=True, text=True, timeout=600,
        env=syncnet_home,
    )  # fmt: skip
    assert "LSE-C" not in unscored.stdout.splitlines()[0]


def test_sync_offset_auto_measures_and_corrects(sample_portrait: Path, sample_speech: Path) -> None:
    """The preview's mouth trails the speech by a couple of frames as the test-double scorer
    measures it; ``sync_offset=auto`` measures that on the first pass and corrects it, so the
    job's own output then scores offset 0 (to the frame)."""
    registry = load_registry(extra=[_Hooks()])
    plain = lipkit.sync(sample_portrait, sample_speech, None, backend="preview", registry=registry)
    assert plain.frames is not None
    result = lipkit.sync(
        sample_portrait, sample_speech, None, backend="preview", registry=registry,
        sync_offset="auto",
    )  # fmt: skip
    note = next(n for n in result.plan.notices if n.startswith("sync_offset auto"))
    measured = int(note.split("offset of ")[1].split(" frames")[0])
    assert measured != 0 and f"sync_offset={-measured}" in note
    assert result.plan.generator_params["sync_offset"] == -measured


def test_sync_offset_auto_output_scores_in_sync(
    tmp_path: Path, sample_portrait: Path, sample_speech: Path
) -> None:
    registry = load_registry(extra=[_Hooks()])
    out = tmp_path / "corrected.mp4"
    lipkit.sync(sample_portrait, sample_speech, out, backend="preview", registry=registry,
                params={"sync_offset": "auto"})  # fmt: skip
    assert abs(lipkit.score(out, registry=registry).offset) <= 1
    with pytest.raises(lipkit.ConfigError):
        lipkit.sync(sample_portrait, sample_speech, tmp_path / "x.mp4", backend="preview",
                    registry=registry, sync_offset="later")  # fmt: skip
