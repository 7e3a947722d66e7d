"""The Silero VAD model, loaded once per process, and the per-window probabilities of a track.

The model is recurrent: each 512-sample window is scored with the state (and the 64-sample
context) left by the previous one, exactly as ``silero_vad.get_speech_timestamps`` drives it.
The track is read in blocks of whole windows; only one float per window is kept.
"""

from __future__ import annotations

import threading
import warnings
from array import array
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lipkit.errors import ModelError
from lipkit.interfaces import StageProgress
from lipkit.media.track import AudioTrack
from lipkit_silero_vad.params import SAMPLE_RATE, WINDOW

BLOCK_WINDOWS = 256
"""Windows read per block (256 x 512 samples = 8.2 s, 512 KiB of float32)."""


@dataclass
class LoadedVad:
    """A loaded model and the lock that serialises its runs (its state lives inside it)."""

    model: Any
    engine: str
    lock: threading.Lock = field(default_factory=threading.Lock)


_CACHE: dict[bool, LoadedVad] = {}
_CACHE_LOCK = threading.Lock()


def _load(onnx: bool) -> LoadedVad:
    import torch

    threads = torch.get_num_threads()
    try:
        # silero_vad.model calls torch.set_num_threads(1) when first imported: undo that, it
        # would slow every other torch stage of the process.
        from silero_vad import load_silero_vad

        with warnings.catch_warnings():  # its loader's own deprecations, not the user's concern
            warnings.simplefilter("ignore", DeprecationWarning)
            model = load_silero_vad(onnx=onnx)
    except ImportError as exc:
        what = "onnxruntime (pip install onnxruntime)" if onnx else "silero-vad"
        raise ModelError(
            f"cannot load the Silero VAD model: {exc}",
            hint=f"install {what}" + ("" if not onnx else ", or set onnx=false"),
        ) from exc
    except Exception as exc:  # noqa: BLE001 - a broken bundled model file, reported as such
        raise ModelError(
            f"the Silero VAD model bundled with silero-vad did not load: {exc}",
            hint="reinstall silero-vad (pip install --force-reinstall silero-vad)",
        ) from exc
    finally:
        torch.set_num_threads(threads)
    return LoadedVad(model=model, engine="onnx" if onnx else "jit")


def get_model(onnx: bool = False) -> LoadedVad:
    """The process's Silero VAD model (TorchScript, or ONNX with ``onnx``), loaded on first use."""
    with _CACHE_LOCK:
        loaded = _CACHE.get(onnx)
        if loaded is None:
            loaded = _CACHE[onnx] = _load(onnx)
        return loaded


def window_probabilities(
    track: AudioTrack, vad: LoadedVad, progress: StageProgress | None = None
) -> array[float]:
    """The speech probability of each 512-sample window of ``track`` (the last zero-padded).

    Reads the track ``BLOCK_WINDOWS`` windows at a time and reports
    ``progress(seconds_done, seconds_total)`` after each block; what ``progress`` raises
    propagates (that cancels the run).
    """
    import torch

    probs: array[float] = array("d")
    total = track.num_samples / track.sample_rate
    done = 0
    with vad.lock, torch.no_grad():
        vad.model.reset_states()
        try:
            for block in track.blocks(WINDOW * BLOCK_WINDOWS):
                done += block.size
                short = -block.size % WINDOW
                if short:
                    block = np.concatenate([block, np.zeros(short, dtype=np.float32)])
                samples = torch.from_numpy(block)
                for offset in range(0, samples.shape[0], WINDOW):
                    window = samples[offset : offset + WINDOW]
                    probs.append(float(vad.model(window, SAMPLE_RATE).item()))
                if progress is not None:
                    progress(done / track.sample_rate, total)
        finally:
            vad.model.reset_states()
    return probs


__all__ = ["BLOCK_WINDOWS", "SAMPLE_RATE", "LoadedVad", "get_model", "window_probabilities"]
