"""Write the small sample media the test suite runs on (deterministic; not needed at test time).

Run from anywhere::

    python tests/media/make_samples.py

It writes, next to this script:

- ``face.mp4``: 6 s, 25 fps, 360x360 H.264 yuv420p, no audio. A virtual camera moves gently over
  the scikit-image "astronaut" photograph (slow zoom, pan and a slight roll) and, in the middle,
  pans away so the face leaves the frame for about a second, then comes back.
- ``face_with_audio.mp4``: the first 3 s of the same camera move with the first 3 s of the speech
  muxed in as AAC (for ``--audio-from-face``).
- ``speech.wav``: real speech from espeak-ng, 16 kHz mono 16-bit PCM, about 7.7 s (longer than
  the video, so the default ``loop`` length policy is exercised).
- ``portrait.png``: a still head-and-shoulders crop of the same photograph, 288x288.

The inputs are a public-domain NASA photograph shipped with scikit-image and espeak-ng's
synthetic voice, so everything here can be redistributed.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import tempfile
import wave
from fractions import Fraction
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
from scipy.signal import resample_poly
from skimage import data

HERE = Path(__file__).resolve().parent

FPS = 25
SIZE = 360  # output frame side, pixels
SECONDS = 6.0
NUM_FRAMES = int(SECONDS * FPS)  # 150
WITH_AUDIO_FRAMES = 3 * FPS  # 75
CANVAS_SCALE = 1.5  # the photo is upscaled 512 -> 768 to make the canvas the camera moves over
CRF = 30

# Camera key positions in canvas pixels (768 x 768 canvas; the face is near x 336, y 170).
HOME = (336.0, 205.0)  # framed on the face
AWAY = (640.0, 600.0)  # down and right: the helmet on the table, no face in view
# (start, end) seconds of the move away and of the move back; the face is fully out between.
LEAVE = (2.0, 2.5)
RETURN = (3.5, 4.0)

SPEECH_TEXT = (
    "The quick brown fox jumps over the lazy dog. "
    "Every frame of this video should move its lips in time with these words."
)
SPEECH_RATE = 155  # espeak-ng words per minute
SAMPLE_RATE = 16000


def smoothstep(x: float) -> float:
    """Cubic ease-in/ease-out of ``x`` clipped to [0, 1]."""
    x = min(1.0, max(0.0, x))
    return x * x * (3.0 - 2.0 * x)


def away_amount(t: float) -> float:
    """0 when the camera is on the face, 1 when it is fully panned away, eased in between."""
    if t < LEAVE[1]:
        return smoothstep((t - LEAVE[0]) / (LEAVE[1] - LEAVE[0]))
    return 1.0 - smoothstep((t - RETURN[0]) / (RETURN[1] - RETURN[0]))


def camera(t: float) -> tuple[float, float, float, float]:
    """Camera centre (x, y) in canvas pixels, zoom factor and roll in degrees at time ``t``."""
    phase = 2.0 * math.pi * t / SECONDS
    drift_x = 12.0 * math.sin(phase)
    drift_y = 6.0 * math.sin(2.0 * phase)
    zoom = 1.0 + 0.06 * (1.0 - math.cos(phase)) / 2.0
    roll = 2.0 * math.sin(phase)
    a = away_amount(t)
    cx = HOME[0] + a * (AWAY[0] - HOME[0]) + drift_x
    cy = HOME[1] + a * (AWAY[1] - HOME[1]) + drift_y
    return cx, cy, zoom, roll


def make_canvas() -> np.ndarray:
    """The astronaut photograph upscaled to the canvas the virtual camera films."""
    photo = data.astronaut()
    side = int(round(photo.shape[0] * CANVAS_SCALE))
    return cv2.resize(photo, (side, side), interpolation=cv2.INTER_CUBIC)


def render_frame(canvas: np.ndarray, t: float) -> np.ndarray:
    """One ``SIZE`` x ``SIZE`` RGB frame of the camera at time ``t``."""
    cx, cy, zoom, roll = camera(t)
    # Output pixel (u, v) samples the canvas at centre + R(roll) * (u - c, v - c) / zoom.
    rad = math.radians(roll)
    cos_r, sin_r = math.cos(rad) / zoom, math.sin(rad) / zoom
    half = (SIZE - 1) / 2.0
    matrix = np.array(
        [
            [cos_r, -sin_r, cx - cos_r * half + sin_r * half],
            [sin_r, cos_r, cy - sin_r * half - cos_r * half],
        ],
        dtype=np.float64,
    )
    return cv2.warpAffine(
        canvas,
        matrix,
        (SIZE, SIZE),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )


def render_frames() -> np.ndarray:
    """All ``NUM_FRAMES`` frames of the camera move, ``uint8 [N, SIZE, SIZE, 3]``."""
    canvas = make_canvas()
    return np.stack([render_frame(canvas, i / FPS) for i in range(NUM_FRAMES)])


def synthesize_speech(path: Path) -> np.ndarray:
    """Speak ``SPEECH_TEXT`` with espeak-ng; write 16 kHz mono 16-bit ``path``; return int16."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        sys.exit("espeak-ng is not installed: apt-get install espeak-ng")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "speech.wav"
        subprocess.run(
            [espeak, "-v", "en-us", "-s", str(SPEECH_RATE), "-w", str(raw), SPEECH_TEXT],
            check=True,
        )
        with wave.open(str(raw), "rb") as src:
            rate = src.getframerate()
            assert src.getnchannels() == 1 and src.getsampwidth() == 2
            pcm = np.frombuffer(src.readframes(src.getnframes()), dtype="<i2")
    ratio = Fraction(SAMPLE_RATE, rate)
    resampled = resample_poly(pcm.astype(np.float64), ratio.numerator, ratio.denominator)
    samples = np.clip(np.round(resampled), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as dst:
        dst.setnchannels(1)
        dst.setsampwidth(2)
        dst.setframerate(SAMPLE_RATE)
        dst.writeframes(samples.tobytes())
    return samples


def encode_video(frames: np.ndarray, path: Path, audio: Path | None = None) -> None:
    """Encode RGB ``frames`` to H.264 yuv420p at ``FPS`` (and AAC ``audio``, cut to the video)."""
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    height, width = frames.shape[1:3]
    cmd = [ffmpeg, "-y", "-hide_banner", "-loglevel", "error"]
    cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(FPS)]
    cmd += ["-i", "pipe:0"]
    if audio is not None:
        cmd += ["-i", str(audio), "-map", "0:v:0", "-map", "1:a:0"]
        cmd += ["-c:a", "aac", "-b:a", "48k", "-ac", "1", "-ar", str(SAMPLE_RATE)]
        cmd += ["-t", f"{len(frames) / FPS:.3f}"]
    else:
        cmd += ["-an"]
    cmd += ["-c:v", "libx264", "-preset", "slow", "-crf", str(CRF), "-pix_fmt", "yuv420p"]
    cmd += ["-threads", "1", "-g", str(2 * FPS), "-movflags", "+faststart"]
    cmd += ["-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact"]
    cmd += ["-flags:a", "+bitexact", str(path)]
    subprocess.run(cmd, input=np.ascontiguousarray(frames).tobytes(), check=True)


def write_portrait(path: Path) -> None:
    """Write a 288x288 head-and-shoulders crop of the photograph as PNG."""
    photo = data.astronaut()
    crop = photo[10:330, 100:420]  # 320 x 320 around the face (face box ~ x 177-272, y 66-161)
    small = cv2.resize(crop, (288, 288), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(path), cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])


def main() -> None:
    """Write every sample next to this script and print their sizes."""
    speech = HERE / "speech.wav"
    synthesize_speech(speech)
    frames = render_frames()
    encode_video(frames, HERE / "face.mp4")
    encode_video(frames[:WITH_AUDIO_FRAMES], HERE / "face_with_audio.mp4", audio=speech)
    write_portrait(HERE / "portrait.png")
    total = 0
    for name in ("face.mp4", "face_with_audio.mp4", "speech.wav", "portrait.png"):
        size = (HERE / name).stat().st_size
        total += size
        print(f"{name:22s} {size / 1024:7.1f} KiB")
    print(f"{'total':22s} {total / 1024:7.1f} KiB")


if __name__ == "__main__":
    main()
