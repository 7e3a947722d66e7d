"""The committed sample media are what tests/media/README.md says they are.

Everything is decoded with the bundled ffmpeg (imageio_ffmpeg), as the pipeline does; the face
check uses OpenCV's Haar cascade directly, independent of lipkit's face processors.
"""

from __future__ import annotations

import subprocess
import wave
from collections.abc import Iterator
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import pytest

MEDIA = Path(__file__).parent / "media"
FILES = ("face.mp4", "face_with_audio.mp4", "speech.wav", "portrait.png")
FPS = 25.0
SIDE = 360
SR = 16000


def decode_audio(path: Path) -> np.ndarray:
    """The first audio stream of ``path`` as float32 mono 16 kHz, decoded by the bundled ffmpeg."""
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:a:0"]
    cmd += ["-ac", "1", "-ar", str(SR), "-f", "f32le", "pipe:1"]
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    return np.frombuffer(out, np.float32)


def video_frames(path: Path) -> tuple[dict, Iterator[np.ndarray]]:
    """The reader's metadata and an iterator of ``uint8 [H, W, 3]`` RGB frames."""
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta["size"]
    return meta, (np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in reader)


@pytest.fixture(scope="module")
def cascade() -> cv2.CascadeClassifier:
    """OpenCV's frontal-face Haar cascade, shipped in the opencv wheel."""
    import cv2.data  # cv2's stubs know the wheel's data folder once it is imported

    found = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    assert not found.empty()
    return found


def faces(cascade: cv2.CascadeClassifier, frame: np.ndarray) -> int:
    """How many frontal faces of at least 40 px the cascade finds in an RGB frame."""
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return len(cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(40, 40)))


@pytest.fixture(scope="module")
def face_frames() -> np.ndarray:
    """Every frame of face.mp4, ``uint8 [N, 360, 360, 3]`` (about 58 MB)."""
    _, frames = video_frames(MEDIA / "face.mp4")
    return np.stack(list(frames))


def test_media_are_committed_and_small() -> None:
    sizes = {name: (MEDIA / name).stat().st_size for name in FILES}
    assert all(size > 1000 for size in sizes.values()), sizes
    assert sum(sizes.values()) < 600 * 1024, sizes
    assert (MEDIA / "README.md").is_file() and (MEDIA / "make_samples.py").is_file()


def test_face_video_stream(face_frames: np.ndarray) -> None:
    meta, _ = video_frames(MEDIA / "face.mp4")
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p")
    assert meta["fps"] == FPS and tuple(meta["size"]) == (SIDE, SIDE)
    assert "audio_codec" not in meta, "face.mp4 has no audio track"
    assert face_frames.shape == (150, SIDE, SIDE, 3)
    assert meta["duration"] == pytest.approx(6.0, abs=0.05)
    # a camera that never stops, moving gently except for the quick pans away and back
    pairs = zip(face_frames[:-1], face_frames[1:], strict=True)
    steps = np.array([np.abs(a.astype(np.int16) - b).mean() for a, b in pairs])
    assert (steps > 0.5).all(), steps
    assert np.median(steps) < 5.0 and (steps > 10).sum() < 40, steps


def test_face_leaves_the_frame_in_the_middle(
    cascade: cv2.CascadeClassifier, face_frames: np.ndarray
) -> None:
    start = [faces(cascade, f) for f in face_frames[0:50:5]]
    middle = [faces(cascade, f) for f in face_frames[63:88]]  # 2.5 s .. 3.5 s
    end = [faces(cascade, f) for f in face_frames[110:150:5]]
    assert all(n >= 1 for n in start), start
    assert sum(middle) == 0, middle
    assert all(n >= 1 for n in end), end


def test_speech_wav_is_real_speech() -> None:
    with wave.open(str(MEDIA / "speech.wav"), "rb") as src:
        assert (src.getframerate(), src.getnchannels(), src.getsampwidth()) == (SR, 1, 2)
        frames = src.getnframes()
    audio = decode_audio(MEDIA / "speech.wav")
    assert len(audio) == frames
    seconds = len(audio) / SR
    assert 7.0 <= seconds <= 8.0 and seconds > 6.0, "longer than face.mp4: the loop policy runs"
    rms = np.sqrt(np.mean(audio.astype(np.float64) ** 2))
    assert 0.02 < rms < 0.5 and np.abs(audio).max() < 1.0
    # speech alternates sound and pauses: 20 ms frames are mostly voiced, some silent
    energy = np.sqrt((audio[: len(audio) // 320 * 320].reshape(-1, 320) ** 2).mean(axis=1))
    voiced = float((energy > 0.02).mean())
    assert 0.4 < voiced < 0.95 and (energy < 0.005).mean() > 0.03, voiced


def test_face_with_audio_is_the_start_of_both(face_frames: np.ndarray) -> None:
    meta, frames = video_frames(MEDIA / "face_with_audio.mp4")
    assert meta["audio_codec"] == "aac" and meta["fps"] == FPS
    assert tuple(meta["size"]) == (SIDE, SIDE)
    video = np.stack(list(frames))
    assert video.shape[0] == 75
    # the same camera move: close to face.mp4's first 3 s (both lossy)
    error = np.abs(video.astype(np.int16) - face_frames[:75]).mean()
    assert error < 4.0, error
    audio = decode_audio(MEDIA / "face_with_audio.mp4")
    assert len(audio) / SR == pytest.approx(3.0, abs=0.05)
    speech = decode_audio(MEDIA / "speech.wav")[: len(audio)]
    cosine = float(np.dot(audio, speech) / (np.linalg.norm(audio) * np.linalg.norm(speech)))
    assert cosine > 0.9, "the muxed track is the first seconds of speech.wav, in sync"


def test_portrait_is_a_still_face(cascade: cv2.CascadeClassifier) -> None:
    image = cv2.imread(str(MEDIA / "portrait.png"), cv2.IMREAD_UNCHANGED)
    assert image is not None and image.dtype == np.uint8 and image.ndim == 3
    height, width, channels = image.shape
    assert channels == 3 and height == width and 256 <= width <= 320
    assert faces(cascade, cv2.cvtColor(image, cv2.COLOR_BGR2RGB)) == 1
