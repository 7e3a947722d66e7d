"""Build small real media files with the bundled ffmpeg (plain functions, for any test).

Every function writes one file and returns its path. Clips are tiny (64x48 by default) so a
test can make several in well under a second. Video content comes from ffmpeg's ``testsrc2``
pattern, audio from its ``sine`` source, so the files are decoded exactly as user files are.
"""

from __future__ import annotations

import re
import struct
import subprocess
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg
import numpy as np


def ffmpeg(*args: str | Path) -> None:
    """Run the bundled ffmpeg with ``args``; raise with its stderr if it fails."""
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    done = subprocess.run([*cmd, *map(str, args)], capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg {args} failed:\n{done.stderr.decode(errors='replace')}")


def _out(path: Path) -> str:
    return "file:" + str(Path(path).absolute())


def make_video(
    path: Path,
    *,
    size: tuple[int, int] = (64, 48),
    fps: str | float = 25,
    frames: int = 25,
    audio_seconds: float | None = None,
    tone: float = 440.0,
    gop: int | None = None,
    pix_fmt: str = "yuv420p",
    rotation: int | None = None,
    bframes: bool = True,
    ts_offset: float | None = None,
) -> Path:
    """An H.264 clip of ``frames`` frames of testsrc2 at ``fps`` (e.g. ``"30000/1001"``).

    ``audio_seconds`` adds a mono 44.1 kHz AAC sine track of that length; ``rotation`` stores
    display-rotation metadata (degrees, counter-clockwise); odd sizes need ``pix_fmt="yuv444p"``.
    ``ts_offset`` starts the file's timestamps at that many seconds. The container follows the
    extension (``.mp4``, ``.mkv``, ``.ts``, ...).
    """
    width, height = size
    source = f"testsrc2=size={width + width % 2}x{height + height % 2}:rate={fps}"
    args: list[str | Path] = ["-f", "lavfi", "-i", source]
    if audio_seconds is not None:
        args += ["-f", "lavfi", "-i", f"sine=frequency={tone}:duration={audio_seconds}"]
    args += ["-map", "0:v"] + (["-map", "1:a", "-c:a", "aac"] if audio_seconds is not None else [])
    args += ["-vf", f"format={pix_fmt},crop={width}:{height}:0:0", "-frames:v", str(frames)]
    args += ["-c:v", "libx264", "-preset", "veryfast"]
    args += ["-pix_fmt", pix_fmt]
    if gop is not None:
        args += ["-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0"]
    if not bframes:
        args += ["-bf", "0"]
    if ts_offset is not None:
        args += ["-output_ts_offset", str(ts_offset)]
    if rotation is None:
        ffmpeg(*args, _out(path))
        return path
    plain = path.with_name("unrotated-" + path.name)
    ffmpeg(*args, _out(plain))
    ffmpeg("-display_rotation", str(rotation), "-i", _out(plain), "-c", "copy", _out(path))
    plain.unlink()
    return path


def make_vfr_video(path: Path, *, size: tuple[int, int] = (64, 48)) -> Path:
    """A variable-frame-rate clip: 10 frames at 10 fps (0.0-0.9 s), then 25 at 25 fps.

    Frame timestamps are exact multiples of 1/100 s: see :func:`vfr_times`.
    """
    width, height = size
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate=100", "-t", "2",
        "-vf", r"select='if(lt(n\,100)\,not(mod(n\,10))\,not(mod(n\,4)))'",
        "-fps_mode", "passthrough", "-c:v", "libx264", "-preset", "veryfast",
        "-pix_fmt", "yuv420p", _out(path),
    )  # fmt: skip
    return path


def vfr_times() -> list[Fraction]:
    """Presentation times (seconds) of the frames of :func:`make_vfr_video`."""
    return [Fraction(n, 100) for n in range(200) if (n % 10 == 0 if n < 100 else n % 4 == 0)]


def make_trimmed_video(path: Path, source: Path, seconds: float) -> Path:
    """``source`` cut by stream copy at ``seconds``: an MP4 whose edit list hides some frames."""
    ffmpeg("-ss", f"{seconds}", "-i", _out(source), "-c", "copy", _out(path))
    return path


def make_zero_frame_video(path: Path) -> Path:
    """An MP4 with a video stream whose every packet is hidden by the edit list (0 frames)."""
    source = make_video(path.with_name("zero-src-" + path.name), frames=5)
    ffmpeg(
        "-ss", "100", "-i", _out(source), "-f", "lavfi", "-i", "sine=duration=1",
        "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", _out(path),
    )  # fmt: skip
    source.unlink()
    return path


def make_audio(
    path: Path,
    *,
    seconds: float = 1.0,
    rate: int = 44100,
    tones: Sequence[float] = (440.0,),
    codec: str | None = None,
) -> Path:
    """A sine tone per channel (``len(tones)`` channels), encoded by the path's extension."""
    inputs: list[str] = []
    for tone in tones:
        inputs += [
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency={tone}:sample_rate={rate}:duration={seconds}",
        ]
    args: list[str] = [*inputs]
    if len(tones) > 1:
        pads = "".join(f"[{i}:a]" for i in range(len(tones)))
        args += ["-filter_complex", f"{pads}amerge=inputs={len(tones)}"]
    if codec:
        args += ["-c:a", codec]
    ffmpeg(*args, _out(path))
    return path


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """Write float samples ``[n]`` or ``[n, channels]`` in [-1, 1] as a 16-bit PCM WAV."""
    data = np.asarray(samples, dtype=np.float64)
    if data.ndim == 1:
        data = data[:, None]
    pcm = np.clip(np.round(data * 32767), -32768, 32767).astype("<i2").tobytes()
    channels = data.shape[1]
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(pcm)) + pcm
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def write_unknown_codec_wav(path: Path) -> Path:
    """A WAV whose format tag no decoder knows: ffmpeg opens it but cannot decode it."""
    data = b"\x11" * 4000
    fmt = struct.pack("<HHIIHH", 0x1234, 1, 8000, 8000, 1, 8)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def make_image(path: Path, image: np.ndarray, *, exif_orientation: int | None = None) -> Path:
    """Save ``uint8 [H, W, 3]`` with Pillow (format from the extension), optionally EXIF-tagged."""
    from PIL import Image

    pil = Image.fromarray(image)
    if exif_orientation is None:
        pil.save(path)
    else:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        pil.save(path, exif=exif.tobytes())
    return path


def pattern(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A deterministic ``uint8 [height, width, 3]`` image with structure in both directions."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    base = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x + y) % 256])
    noise = rng.integers(0, 40, size=(3, height, width))
    return np.ascontiguousarray(((base + noise) % 256).astype(np.uint8).transpose(1, 2, 0))


def decode_passthrough(path: Path) -> np.ndarray:
    """Every decoded frame of ``path`` as ``uint8 [n, H, W, 3]``, no rate conversion at all."""
    probe = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", _out(path)],
        capture_output=True,
    ).stderr.decode(errors="replace")
    size = re.search(r"Video: .*?, (\d+)x(\d+)", probe)
    assert size, probe
    width, height = int(size.group(1)), int(size.group(2))
    done = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-noautorotate",
         "-i", _out(path), "-map", "0:v:0", "-fps_mode", "passthrough", "-f", "rawvideo",
         "-pix_fmt", "rgb24", "pipe:1"],
        capture_output=True,
        check=True,
    )  # fmt: skip
    return np.frombuffer(done.stdout, dtype=np.uint8).reshape(-1, height, width, 3)
