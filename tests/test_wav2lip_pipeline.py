"""Wav2Lip through the whole pipeline: the CLI end to end, and controls that change the output the
way their names say. A random-weight checkpoint in the published format is loaded by the real code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io.wavfile
from cli_helpers import audio_seconds, decode_video
from cli_helpers import lipkit as run_cli
from wav2lip_helpers import random_state_dict, save_published

import lipkit
from lipkit.media.audio import load_audio
from lipkit.media.probe import probe_media
from lipkit.media.video import FrameReader
from lipkit.plugins import load_registry


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("w2l-ckpt") / "wav2lip_gan.pth"
    return save_published(random_state_dict(seed=11), path, module_prefix=True)


@pytest.fixture(scope="module")
def registry() -> Any:
    return load_registry(allow=["wav2lip"])


def _speech(tmp: Path, sample_speech: Path, seconds: float) -> Path:
    """The first ``seconds`` of the sample speech as a 16 kHz WAV."""
    audio = load_audio(sample_speech)[: int(seconds * 16000)]
    path = tmp / f"speech_{seconds:g}s.wav"
    scipy.io.wavfile.write(path, 16000, (audio * 32767).astype(np.int16))
    return path


def _frames(face: Path, audio: Path, registry: Any, checkpoint: Path, **kw: Any) -> np.ndarray:
    result = lipkit.sync(
        face, audio, None, backend="wav2lip", registry=registry, checkpoint=checkpoint, **kw
    )
    assert result.frames is not None
    return result.frames


def test_cli_end_to_end_writes_the_audios_length(
    tmp_path: Path, sample_face: Path, sample_speech: Path, checkpoint: Path
) -> None:
    speech = _speech(tmp_path, sample_speech, 2.4)
    out = tmp_path / "out.mp4"
    proc = run_cli(
        "run", sample_face, speech, "-o", out, "--backend", "wav2lip", "--checkpoint", checkpoint
    )
    assert proc.returncode == 0, proc.stderr
    frames, meta = decode_video(out)
    assert len(frames) == round(2.4 * 25) == 60
    assert abs(audio_seconds(out) - 2.4) < 0.05
    source = FrameReader(probe_media(sample_face)).read(0, 60)
    changed = np.abs(frames.astype(int) - source.astype(int)).max(axis=3) > 40
    # Wav2Lip regenerates the lower half of the face box (rows ~165-270 here); the eyes and
    # everything above stay as they were (up to the encoder's noise)
    assert changed[:, :150].mean() < 0.002
    assert changed[:40, 175:255, 110:240].mean() > 0.3


def test_plan_shows_the_controls(
    tmp_path: Path, sample_face: Path, sample_speech: Path, checkpoint: Path
) -> None:
    proc = run_cli(
        "plan",
        sample_face,
        sample_speech,
        "--backend",
        "wav2lip",
        "--checkpoint",
        checkpoint,
        "-p",
        "inference_batch=16",
        "-p",
        "sync_offset=2",
        "--length-policy",
        "repetitive",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["memory"]["batch_sizes"]["generate"] == 16
    assert plan["generator_params"]["sync_offset"] == 2
    assert plan["generator_params"]["checkpoint"] == str(checkpoint)
    assert plan["length_policy"] == "loop"
    bad = run_cli("plan", sample_face, sample_speech, "-b", "wav2lip", "-p", "colour_match=warm")
    assert bad.returncode == 2 and "colour_match" in bad.stderr


def test_sync_offset_shifts_the_lips_by_whole_frames(
    tmp_path: Path, sample_portrait: Path, sample_speech: Path, checkpoint: Path, registry: Any
) -> None:
    speech = _speech(tmp_path, sample_speech, 1.6)
    plain = _frames(sample_portrait, speech, registry, checkpoint)
    shifted = _frames(sample_portrait, speech, registry, checkpoint, sync_offset=3)
    assert len(plain) == len(shifted) == 40
    # a still gives the same crop every frame, so frame i with offset 3 shows frame i - 3's audio
    diff = np.abs(shifted[3:].astype(int) - plain[:-3].astype(int))
    assert diff.max() <= 1
    assert np.abs(shifted[3:].astype(int) - plain[3:].astype(int)).max() > 20


def test_faceless_frames_pass_through_untouched(
    tmp_path: Path, sample_face: Path, sample_speech: Path, checkpoint: Path, registry: Any
) -> None:
    speech = _speech(tmp_path, sample_speech, 3.6)
    frames = _frames(sample_face, speech, registry, checkpoint)
    assert len(frames) == 90
    source = FrameReader(probe_media(sample_face)).read(0, 90)
    same = [np.array_equal(frames[i], source[i]) for i in range(90)]
    # the face leaves the shot in about frames 63-82 (tests/media/README.md): no face, no change
    assert all(same[66:80]) and not any(same[:50])


def test_hard_paste_and_feathered_blend_differ_only_at_the_mask_edge(
    tmp_path: Path, sample_portrait: Path, sample_speech: Path, checkpoint: Path, registry: Any
) -> None:
    speech = _speech(tmp_path, sample_speech, 0.4)
    hard = _frames(sample_portrait, speech, registry, checkpoint, face_settings={"blend_radius": 0})
    soft = _frames(sample_portrait, speech, registry, checkpoint, face_settings={"blend_radius": 8})
    source = FrameReader(probe_media(sample_portrait)).read(0, 1)[0].astype(int)
    hard_changed = np.abs(hard[0].astype(int) - source).max(axis=2) > 0
    soft_changed = np.abs(soft[0].astype(int) - source).max(axis=2) > 0
    ys, xs = np.nonzero(hard_changed)
    # a hard paste changes a sharp rectangle: the lower half of the face box
    box = hard_changed[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    assert box.mean() > 0.9
    # feathering keeps the centre and fades out inside the same rectangle
    assert not (soft_changed & ~hard_changed).any()
    inner = (slice(ys.min() + 12, ys.max() - 12), slice(xs.min() + 12, xs.max() - 12))
    assert np.array_equal(hard[0][inner], soft[0][inner])
    assert not np.array_equal(hard[0], soft[0])


def test_s3fd_is_chosen_when_its_weights_are_in_the_model_home(
    tmp_path: Path, sample_face: Path, sample_speech: Path, checkpoint: Path, lipkit_home: Path
) -> None:
    import torch
    from lipkit_wav2lip.s3fd import S3FD

    def plan(*extra: str) -> Any:
        return run_cli(
            "plan", sample_face, sample_speech, "-b", "wav2lip", "--checkpoint", checkpoint,
            "--json", *extra,
        )  # fmt: skip

    without = plan()
    assert without.returncode == 0, without.stderr
    data = json.loads(without.stdout)
    assert {s["stage"]: s["implementation"] for s in data["stages"]}["face"] == "haar"
    assert any("'s3fd' skipped" in note for note in data["notices"])
    forced = plan("--face-detector", "s3fd")
    assert forced.returncode == 4 and "s3fd.pth" in forced.stderr

    weights = lipkit_home / "models" / "s3fd" / "s3fd.pth"
    weights.parent.mkdir(parents=True)
    torch.save(S3FD().state_dict(), weights)  # the published form: a bare state dict
    chosen = plan()
    assert chosen.returncode == 0, chosen.stderr
    data = json.loads(chosen.stdout)
    assert {s["stage"]: s["implementation"] for s in data["stages"]}["face"] == "s3fd"
    assert data["settings"]["face"]["detector_checkpoint"] == str(weights)
    models = run_cli("models", "--json")
    rows = {(r["backend"], r["name"]): r["present"] for r in json.loads(models.stdout)}
    assert rows[("s3fd", "s3fd")] is True and rows[("wav2lip", "wav2lip_gan")] is False


def test_mel_step_multiplier_keeps_the_output_on_the_audio(
    tmp_path: Path, sample_portrait: Path, sample_speech: Path, checkpoint: Path, registry: Any
) -> None:
    speech = _speech(tmp_path, sample_speech, 1.2)
    plain = _frames(sample_portrait, speech, registry, checkpoint)
    fast = _frames(sample_portrait, speech, registry, checkpoint, mel_step_multiplier=1.5)
    assert len(fast) == len(plain) == 30  # the video follows the audio whatever the multiplier
    assert not np.array_equal(fast, plain)


def test_a_job_runs_with_the_s3fd_detector(
    tmp_path: Path, sample_portrait: Path, sample_speech: Path, checkpoint: Path, registry: Any
) -> None:
    import torch
    from lipkit_wav2lip.s3fd import S3FD

    torch.manual_seed(5)
    torch.save(S3FD().state_dict(), tmp_path / "s3fd.pth")  # random weights still find "faces"
    speech = _speech(tmp_path, sample_speech, 0.4)
    result = lipkit.sync(
        sample_portrait, speech, None, backend="wav2lip", registry=registry,
        checkpoint=checkpoint, face_settings={"detector_checkpoint": tmp_path / "s3fd.pth"},
    )  # fmt: skip
    assert result.plan.choice("face").implementation == "s3fd"
    assert result.frames is not None and len(result.frames) == 10
