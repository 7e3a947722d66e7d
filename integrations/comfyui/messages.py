"""lipkit's errors as a ComfyUI user reads them: node inputs, not CLI flags, and no paths.

lipkit writes its messages for the command line (``--face-box``, ``--param checkpoint=PATH``,
``lipkit models``). Here each flag becomes the node input that sets the same thing: ``backend``,
``seed``, ``fps`` and ``model`` (``--checkpoint``) are inputs of the node, every other setting
is a line of its ``params`` input (``face_settings={"box": ...}`` for ``--face-box``). Absolute
paths become a file's name, so a server's temp or state folder never shows in the browser.

ComfyUI shows an exception's type as its module path and class name; the error raised here is
named after the lipkit error (``lipkit.ModelError``), with ``lipkit: <message>`` and a
``hint:`` line as its text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from lipkit.errors import JobInterrupted, LipkitError
from lipkit.host_errors import HostWords, for_host, public_path

NODE_INPUTS = {
    "backend": "backend",
    "seed": "seed",
    "fps": "fps",
    "checkpoint": "model",
    "audio-start": "audio_start",
    "audio-end": "audio_end",
    "separate-vocals": "separate_vocals",
    "no-separate-vocals": "separate_vocals",
    "silence": "silence",
}
"""CLI flags that are inputs of the LipSync node (``model``: a file in ComfyUI's models/lipkit;
a path elsewhere goes in ``params`` as checkpoint=PATH)."""
SECTION_FLAGS = {
    "face_settings": {
        "face-box": "box", "pads": "pads", "smoothing": "smoothing",
        "detect-every": "detect_every", "blend-radius": "blend_radius",
        "detect-batch": "detect_batch", "face-detector": "detector", "detector": "detector",
        "face-select": "select",
        "detector-checkpoint": "detector_checkpoint", "detector-device": "detector_device",
    },
    "input_settings": {
        "resize-factor": "resize_factor", "rotate": "rotate", "crop": "crop", "static": "static",
    },
    "output_settings": {
        "crf": "crf", "x264-preset": "x264_preset", "audio-bitrate": "audio_bitrate",
    },
    "memory_settings": {
        "memory-policy": "policy", "memory-mode": "mode", "memory-budget": "budget",
        "batch-size": "batch_size", "chunk-frames": "chunk_frames", "precision": "precision",
    },
}  # fmt: skip
"""CLI flags of a settings section, and the key of that section in ``params``."""


def _flag(name: str, value: str | None) -> str:
    if name in NODE_INPUTS:
        return f'the node input "{NODE_INPUTS[name]}"'
    if name == "param":
        if value and "=" in value:
            key, _, setting = value.partition("=")
            return f'a line {key}={setting} in the node input "params"'
        return 'the node input "params"'
    for section, keys in SECTION_FLAGS.items():
        if name in keys:
            return f'a line {section}={{"{keys[name]}": ...}} in the node input "params"'
    return f'a line {name.replace("-", "_")}=... in the node input "params"'


def _command(line: str) -> str:
    return f"`{line}` (in a terminal, with ComfyUI's Python environment active)"


COMFY_WORDS = HostWords(flag=_flag, path=public_path, command=_command)


class LipkitNodeError(RuntimeError):
    """A lipkit error as ComfyUI shows it: ``lipkit: <message>`` and a ``hint:`` line."""

    def __init__(self, error: LipkitError) -> None:
        _, message, hint = for_host(error, COMFY_WORDS)
        text = f"lipkit: {message}"
        if hint:
            text += f"\nhint: {hint}"
        super().__init__(text)
        self.error = error
        self.message = message
        self.hint = hint


_NODE_ERRORS: dict[str, type[LipkitNodeError]] = {}


def node_error(error: LipkitError) -> LipkitNodeError:
    """The ComfyUI-facing exception for ``error``: a :class:`LipkitNodeError` subclass named
    after its lipkit class, so the UI shows ``lipkit.ModelError`` rather than a module path."""
    name = type(error).__name__
    cls = _NODE_ERRORS.get(name)
    if cls is None:
        cls = type(name, (LipkitNodeError,), {"__module__": "lipkit", "__qualname__": name})
        _NODE_ERRORS[name] = cls
    return cls(error)


@contextmanager
def user_errors(on_interrupt: Callable[[], None] | None = None) -> Iterator[None]:
    """Turn lipkit's user errors into :func:`node_error` exceptions. A cancelled job first
    calls ``on_interrupt`` (which raises ComfyUI's own exception when ComfyUI cancelled it)."""
    try:
        yield
    except JobInterrupted as exc:
        if on_interrupt is not None:
            on_interrupt()
        raise node_error(exc) from exc
    except LipkitError as exc:
        raise node_error(exc) from exc
