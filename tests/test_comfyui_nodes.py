"""The ComfyUI node pack, called the way ComfyUI calls it.

ComfyUI is not installed here: the pack is loaded by path with importlib (as ComfyUI loads a
folder in ``custom_nodes/``), the node classes are driven through INPUT_TYPES, FUNCTION and
RETURN_TYPES with tensors in ComfyUI's layouts, and small fake ``comfy.utils`` / ``folder_paths``
modules stand in for ComfyUI's progress bar and folders.
"""

from __future__ import annotations

import contextvars
import importlib.util
import io
import os
import re
import sys
import tempfile
import types
from collections.abc import Iterator, Mapping
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

if TYPE_CHECKING:
    import torch
else:
    torch = pytest.importorskip("torch")

from lipkit.media.audio import load_audio  # noqa: E402
from lipkit.media.probe import probe_media  # noqa: E402
from lipkit.media.video import FrameReader  # noqa: E402

PACK = Path(__file__).resolve().parents[1] / "integrations" / "comfyui"
FPS = 25
CLIP_FRAMES = 40
SPEECH_SECONDS = 2.0
SPEECH_RATE = 22050  # not 16 kHz, so the node's resampling is exercised


def load_pack(folder: Path = PACK, name: str = "lipkit-comfyui") -> types.ModuleType:
    """Load a node pack folder exactly as ComfyUI's load_custom_node does."""
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


@pytest.fixture(scope="module")
def pack() -> Any:
    module = load_pack()
    yield module
    for key in [k for k in sys.modules if k == "lipkit-comfyui" or k.startswith("lipkit-comfyui.")]:
        del sys.modules[key]


@pytest.fixture(scope="module")
def clip(sample_face: Path) -> torch.Tensor:
    """The first frames of the sample face video as an IMAGE batch."""
    reader = FrameReader(probe_media(sample_face))
    try:
        frames = reader.read(0, CLIP_FRAMES)
    finally:
        reader.close()
    return torch.from_numpy(frames).to(torch.float32) / 255.0


@pytest.fixture(scope="module")
def speech(sample_speech: Path) -> dict[str, Any]:
    """The start of the sample speech as a stereo 22.05 kHz AUDIO value."""
    mono = load_audio(sample_speech, sample_rate=SPEECH_RATE, max_seconds=SPEECH_SECONDS)
    wave = torch.from_numpy(np.stack([mono, mono * 0.5]))[None]  # [batch, channels, samples]
    return {"waveform": wave, "sample_rate": SPEECH_RATE}


EXECUTING: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "executing_node", default=None
)
"""Stands in for ComfyUI's context variable naming the node being executed."""


class FakeProgressBar:
    """Records what the node does with comfy.utils.ProgressBar (same constructor and method).

    Like ComfyUI's hook, it reads the executing node from a context variable on every update.
    """

    instances: list[FakeProgressBar] = []
    interrupt_at: float | None = None  # raise on reaching this value, as ComfyUI does on cancel

    def __init__(self, total: float) -> None:
        self.total = total
        self.current = 0.0
        self.updates: list[tuple[float, float]] = []
        self.nodes: set[str | None] = set()
        FakeProgressBar.instances.append(self)

    def update_absolute(
        self, value: float, total: float | None = None, preview: Any = None
    ) -> None:
        if total is not None:
            self.total = total
        self.current = min(value, self.total)
        self.updates.append((self.current, self.total))
        self.nodes.add(EXECUTING.get())
        if self.interrupt_at is not None and self.current >= self.interrupt_at and MM:
            MM.interrupt_current_processing()  # the user pressed Cancel
        if MM is not None:  # ComfyUI's progress hook checks the flag on every update
            MM.throw_exception_if_processing_interrupted()

    def update(self, value: float) -> None:
        self.update_absolute(self.current + value)


class FakeModelManagement(types.ModuleType):
    """Stands in for comfy.model_management: the interrupt flag, the exception ComfyUI expects
    from a cancelled node, and the cache-emptying call (counted)."""

    class InterruptProcessingException(Exception):
        pass

    def __init__(self) -> None:
        super().__init__("comfy.model_management")
        self.interrupt_processing = False
        self.emptied = 0

    def interrupt_current_processing(self, value: bool = True) -> None:
        self.interrupt_processing = value

    def processing_interrupted(self) -> bool:
        return self.interrupt_processing

    def throw_exception_if_processing_interrupted(self) -> None:
        if self.interrupt_processing:
            self.interrupt_processing = False
            raise self.InterruptProcessingException()

    def soft_empty_cache(self, force: bool = False) -> None:
        self.emptied += 1


MM: FakeModelManagement | None = None


@pytest.fixture
def comfy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Fake ComfyUI modules: comfy.utils.ProgressBar, comfy.model_management and folder_paths
    (output, temp and models dirs)."""
    global MM
    FakeProgressBar.instances = []
    FakeProgressBar.interrupt_at = None
    comfy_pkg = types.ModuleType("comfy")
    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = FakeProgressBar  # type: ignore[attr-defined]
    MM = FakeModelManagement()
    comfy_pkg.utils = utils  # type: ignore[attr-defined]
    comfy_pkg.model_management = MM  # type: ignore[attr-defined]
    dirs = {
        "output": tmp_path / "comfy-output",
        "temp": tmp_path / "comfy-temp",
        "models": tmp_path / "comfy-models",
    }
    folder_paths = types.ModuleType("folder_paths")
    folder_paths.get_output_directory = lambda: str(dirs["output"])  # type: ignore[attr-defined]
    folder_paths.get_temp_directory = lambda: str(dirs["temp"])  # type: ignore[attr-defined]
    folder_paths.models_dir = str(dirs["models"])  # type: ignore[attr-defined]

    def get_folder_paths(name: str) -> list[str]:
        raise KeyError(name)  # as ComfyUI does for a folder name nobody registered

    folder_paths.get_folder_paths = get_folder_paths  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "comfy", comfy_pkg)
    monkeypatch.setitem(sys.modules, "comfy.utils", utils)
    monkeypatch.setitem(sys.modules, "comfy.model_management", MM)
    monkeypatch.setitem(sys.modules, "folder_paths", folder_paths)
    return dirs


def run_node(cls: type[Any], **inputs: Any) -> tuple[Any, ...]:
    """Validate ``inputs`` against INPUT_TYPES, call FUNCTION, check the outputs' count."""
    spec = cls.INPUT_TYPES()
    required, optional = spec["required"], spec.get("optional", {})
    assert set(required) <= set(inputs), f"missing inputs {set(required) - set(inputs)}"
    for name, value in inputs.items():
        assert name in required or name in optional, f"unknown input {name}"
        kind = (required.get(name) or optional[name])[0]
        if isinstance(kind, list):  # a combo box: the value must be one of the choices
            assert value in kind, f"{name}={value!r} not in {kind}"
    out = getattr(cls(), cls.FUNCTION)(**inputs)
    if isinstance(out, dict):  # {"ui": ..., "result": (...)}
        out = out["result"]
    assert isinstance(out, tuple) and len(out) == len(cls.RETURN_TYPES)
    return out


def process_state() -> tuple[dict[str, str], str | None]:
    """Environment and tempfile.tempdir, after the one-time effects of imports.

    Python caches the default temp dir on first use (any library may trigger that), and
    OpenCV's own import appends to LD_LIBRARY_PATH: both happen before the snapshot, so only
    what the node itself does is compared. (In ComfyUI, cv2 is imported long before.)
    """
    import cv2  # noqa: F401

    tempfile.gettempdir()
    return dict(os.environ), tempfile.tempdir


# --------------------------------------------------------------------------- loading


def test_the_pack_loads_by_path_and_declares_comfyui_nodes(pack: Any) -> None:
    mappings = pack.NODE_CLASS_MAPPINGS
    assert set(mappings) == set(pack.NODE_DISPLAY_NAME_MAPPINGS)
    assert len(mappings) == 3
    for cls in mappings.values():
        spec = cls.INPUT_TYPES()
        assert set(spec) <= {"required", "optional", "hidden"} and spec["required"]
        assert isinstance(cls.RETURN_TYPES, tuple) and len(cls.RETURN_NAMES) == len(
            cls.RETURN_TYPES
        )
        assert callable(getattr(cls, cls.FUNCTION)) and cls.CATEGORY == "lipkit"
    sync = mappings["LipkitLipSync"]
    assert sync.RETURN_TYPES == ("IMAGE", "AUDIO", "STRING", "FLOAT", "STRING")
    assert sync.RETURN_NAMES == ("images", "audio", "video_path", "fps", "notes")
    spec = sync.INPUT_TYPES()
    backends = spec["required"]["backend"][0]
    assert backends[0] == "auto" and "preview" in backends
    assert spec["required"]["output_mode"][0] == ["auto", "frames", "file"]
    assert {n: spec["optional"][n][0] for n in ("images", "audio", "video")} == {
        "images": "IMAGE", "audio": "AUDIO", "video": "VIDEO",
    }  # fmt: skip
    assert spec["optional"]["model"][0][0] == "auto"
    plan = mappings["LipkitLipSyncPlan"]
    assert plan.OUTPUT_NODE is True and plan.RETURN_TYPES == ("STRING",)
    adjust = mappings["LipkitLengthAdjust"]
    assert adjust.INPUT_TYPES()["required"]["mode"][0] == ["loop", "pingpong", "trim", "freeze"]


def test_the_pack_loads_under_a_path_module_name(tmp_path: Path) -> None:
    """Current ComfyUI names the module after the folder's whole path ('.' -> '_x_')."""
    name = str(PACK).replace(".", "_x_")
    try:
        module = load_pack(PACK, name=name)
        adjust = module.NODE_CLASS_MAPPINGS["LipkitLengthAdjust"]
        _, _, count = run_node(
            adjust, images=torch.zeros(2, 4, 4, 3), audio=silence(3), mode="loop", fps=25.0
        )
        assert count == 3
    finally:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]


def test_the_pack_imports_as_an_installed_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pip installs the folder as the package lipkit_comfyui (pyproject's package-dir)."""
    (tmp_path / "lipkit_comfyui").symlink_to(PACK, target_is_directory=True)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        module = importlib.import_module("lipkit_comfyui")
        assert set(module.NODE_CLASS_MAPPINGS) == {
            "LipkitLipSync",
            "LipkitLipSyncPlan",
            "LipkitLengthAdjust",
        }
    finally:
        for key in [k for k in sys.modules if k.split(".")[0] == "lipkit_comfyui"]:
            del sys.modules[key]


def test_a_folder_named_lipkit_is_refused(tmp_path: Path) -> None:
    """ComfyUI names the module after the folder: 'lipkit' would replace the library."""
    saved = sys.modules["lipkit"]
    try:
        with pytest.raises(ImportError, match="rename it"):
            load_pack(PACK, name="lipkit")
    finally:
        sys.modules["lipkit"] = saved


# --------------------------------------------------------------------------- LipSync


def test_lipsync_returns_frames_matching_the_audio(
    pack: Any, comfy: dict[str, Path], clip: torch.Tensor, speech: dict[str, Any]
) -> None:
    before = process_state()
    token = EXECUTING.set("node-7")  # ComfyUI sets the executing node before calling FUNCTION
    try:
        images, audio, video_path, fps, notes = run_node(
            pack.NODE_CLASS_MAPPINGS["LipkitLipSync"],
            images=clip,
            audio=speech,
            backend="preview",
            seed=0,
            output_mode="frames",
        )
    finally:
        EXECUTING.reset(token)
    expected = round(SPEECH_SECONDS * FPS)  # the default loop policy follows the audio
    assert images.shape == (expected, clip.shape[1], clip.shape[2], 3)
    assert images.dtype == torch.float32
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    # the preview backend moves the mouth: the frames changed, but only in a small region
    looped = clip[torch.arange(expected) % CLIP_FRAMES]
    changed = (images - looped).abs().amax(dim=-1) > 2 / 255
    assert 0 < float(changed.float().mean()) < 0.2
    assert audio["sample_rate"] == 16000
    assert audio["waveform"].shape == (1, 1, round(SPEECH_SECONDS * 16000))
    assert audio["waveform"].dtype == torch.float32
    assert float(audio["waveform"].abs().max()) > 0.05  # speech, not silence
    assert video_path == "" and fps == 25.0 and notes == ""  # a named backend: no warning
    # no process-wide changes, and the node's own temp folder is gone
    assert process_state() == before
    assert list(comfy["temp"].iterdir()) == []
    assert not comfy["output"].exists()
    # ComfyUI's progress bar followed the faces and the render to the end
    (bar,) = FakeProgressBar.instances
    assert bar.updates[-1] == (expected, expected)
    render = bar.updates.index((0, expected))  # the face pass first, then the render, in order
    assert all(t != expected for _, t in bar.updates[:render])
    assert all(t == expected for _, t in bar.updates[render:])
    assert [v for v, _ in bar.updates[render:]] == sorted(v for v, _ in bar.updates[render:])
    assert bar.nodes == {"node-7"}  # lipkit's worker threads reported in the node's context
    assert MM is not None and MM.emptied == 1  # memory handed back after the run


def test_lipsync_auto_writes_a_file_for_long_clips(
    pack: Any, comfy: dict[str, Path], clip: torch.Tensor, speech: dict[str, Any]
) -> None:
    before = process_state()
    images, audio, video_path, fps, notes = run_node(
        pack.NODE_CLASS_MAPPINGS["LipkitLipSync"],
        images=clip,
        audio=speech,
        backend="preview",
        seed=0,
        output_mode="auto",
        auto_max_mib=1,  # the 50 frames (77 MB as an IMAGE) count as long
        filename_prefix="talks/take",
    )
    path = Path(video_path)
    assert path.is_file() and path.suffix == ".mp4"
    assert path.parent == comfy["output"] / "talks" and path.name.startswith("take_")
    info = probe_media(path)
    assert info.num_frames == round(SPEECH_SECONDS * FPS) and info.fps == FPS == fps
    assert info.has_audio
    assert images.shape == (1, clip.shape[1], clip.shape[2], 3)  # a thumbnail: frame 0
    assert images.dtype == torch.float32 and float(images.max()) <= 1.0
    assert audio["sample_rate"] == 16000
    assert audio["waveform"].shape == (1, 1, round(SPEECH_SECONDS * 16000))
    # the switch is said: in the notes output and on the node
    assert "output_mode auto wrote the video to take_" in notes
    assert "ONLY its first frame" in notes and "auto_max_mib = 1" in notes
    out = pack.NODE_CLASS_MAPPINGS["LipkitLipSync"]().sync(
        images=clip, audio=speech, backend="preview", output_mode="auto", auto_max_mib=1
    )
    assert out["ui"]["text"] == [out["result"][4]]
    assert process_state() == before
    assert list(comfy["temp"].iterdir()) == []
    assert (50, 50) in FakeProgressBar.instances[0].updates


def test_auto_falling_back_to_the_preview_is_said(
    pack: Any, comfy: dict[str, Path], clip: torch.Tensor, speech: dict[str, Any]
) -> None:
    *_, notes = run_node(
        pack.NODE_CLASS_MAPPINGS["LipkitLipSync"],
        images=clip, audio=speech, backend="auto", seed=0, output_mode="frames",
    )  # fmt: skip
    assert "fell back to 'preview'" in notes and "does NOT lip-sync" in notes
    assert "models/lipkit/<backend>/" in notes


def test_cancelling_from_comfyui_stops_the_job(
    pack: Any, comfy: dict[str, Path], clip: torch.Tensor, speech: dict[str, Any]
) -> None:
    FakeProgressBar.interrupt_at = 1  # the user presses Cancel once the bar has moved
    assert MM is not None
    with pytest.raises(MM.InterruptProcessingException):
        pack.NODE_CLASS_MAPPINGS["LipkitLipSync"]().sync(
            images=clip, audio=speech, backend="preview", output_mode="file"
        )
    assert not MM.interrupt_processing  # handled as ComfyUI handles it: the flag is cleared
    assert list(comfy["temp"].iterdir()) == []
    assert not list(comfy["output"].rglob("*.mp4"))  # no half-written output
    assert MM.emptied == 1


def test_lipsync_errors_carry_the_message_and_hint(
    pack: Any, comfy: dict[str, Path], clip: torch.Tensor, speech: dict[str, Any]
) -> None:
    node = pack.NODE_CLASS_MAPPINGS["LipkitLipSync"]
    with pytest.raises(RuntimeError, match=r"not KEY=VALUE[\s\S]*hint:"):
        node().sync(images=clip, audio=speech, backend="preview", params="strength 2")
    with pytest.raises(RuntimeError, match="lipkit: .*nosuch") as info:
        node().sync(images=clip, audio=speech, backend="nosuch")
    assert "hint:" in str(info.value)
    assert type(info.value).__module__ == "lipkit"  # ComfyUI shows "lipkit.ConfigError"
    assert type(info.value).__name__ in ("ConfigError", "PluginError")
    with pytest.raises(RuntimeError, match=r"\[frames, height, width, 3\]"):
        node().sync(images=clip[..., :2], audio=speech, backend="preview")
    with pytest.raises(RuntimeError, match="filename_prefix"):
        node().sync(images=clip, audio=speech, backend="preview", filename_prefix="../x")
    with pytest.raises(RuntimeError, match="connect images and audio, or a video"):
        node().sync(images=clip, backend="preview")
    assert list(comfy["temp"].iterdir()) == []  # cleaned up after failures too


def test_errors_name_node_inputs_not_flags_or_paths(pack: Any) -> None:
    from lipkit.errors import InputError, ModelError

    messages = sys.modules["lipkit-comfyui.messages"]
    error = messages.node_error(
        InputError(
            "no face in frames 0-49 of /srv/comfy/temp/lipkit-comfyui-x1/face.mkv",
            hint="give the face with --face-box X1 Y1 X2 Y2, or --param mask=none; "
            "`lipkit plugins --all` lists the detectors; --seed 3",
        )
    )
    text = str(error)
    outside_commands = re.sub(r"`[^`]*`", "", text)
    assert "--" not in outside_commands and "/srv" not in text and "comfy/temp" not in text
    assert 'face_settings={"box": ...} in the node input "params"' in text
    assert 'a line mask=none in the node input "params"' in text
    assert 'the node input "seed"' in text and "face.mkv" in text
    assert "`lipkit plugins --all` (in a terminal" in text
    assert type(error).__name__ == "InputError" and type(error).__module__ == "lipkit"
    model = messages.node_error(ModelError("missing", hint="or give --checkpoint PATH"))
    assert 'the node input "model"' in str(model) and isinstance(model, messages.LipkitNodeError)


def test_params_are_key_value_lines_with_json_values(pack: Any) -> None:
    parse = sys.modules["lipkit-comfyui.params"].parse_params
    text = '# comment\nstrength=0.5\n\nlength-policy = "pingpong"\npads=[0, 10, 0, 0]\nmode=fast'
    assert parse(text) == {
        "strength": 0.5,
        "length_policy": "pingpong",
        "pads": [0, 10, 0, 0],
        "mode": "fast",
    }
    with pytest.raises(Exception, match="seed"):
        parse("seed=3")


def test_input_frames_reach_lipkit_losslessly(pack: Any, tmp_path: Path) -> None:
    media = sys.modules["lipkit-comfyui.media"]
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (5, 17, 23, 3), dtype=np.uint8)  # odd sizes on purpose
    path = media.write_face(torch.from_numpy(frames).float() / 255, tmp_path, 12.5)
    info = probe_media(path)
    assert (info.num_frames, info.width, info.height, info.fps) == (5, 23, 17, 12.5)
    reader = FrameReader(info)
    try:
        np.testing.assert_array_equal(reader.read(0, 5), frames)
    finally:
        reader.close()
    # the same frames give the same bytes: lipkit's resume, keyed on the inputs' content,
    # finds the segments of a cancelled job when the node runs again
    (tmp_path / "again").mkdir()
    again = media.write_face(torch.from_numpy(frames).float() / 255, tmp_path / "again", 12.5)
    assert again.read_bytes() == path.read_bytes()


def test_outside_comfyui_files_go_to_a_temp_folder(pack: Any) -> None:
    host = sys.modules["lipkit-comfyui.host"]
    progress = sys.modules["lipkit-comfyui.progress"]
    assert "folder_paths" not in sys.modules
    assert host.output_dir() == Path(tempfile.gettempdir()) / "lipkit-comfyui-output"
    assert host.model_roots() == []
    assert not progress.ComfyProgress().enabled  # no comfy.utils: no progress bar, no error
    assert not progress.ComfyProgress().cancelled()


# --------------------------------------------------------------------------- LipSync Plan


def test_plan_node_shows_the_plan(
    pack: Any, comfy: dict[str, Path], clip: torch.Tensor, speech: dict[str, Any]
) -> None:
    node = pack.NODE_CLASS_MAPPINGS["LipkitLipSyncPlan"]
    inputs = {"images": clip, "audio": speech, "backend": "preview", "seed": 3}
    out = node().plan(**inputs, output_mode="auto")
    assert out["ui"]["text"] == list(out["result"])
    (text,) = run_node(node, **inputs, output_mode="auto")
    assert "backend: preview" in text
    assert f"{round(SPEECH_SECONDS * FPS)} frames at 25 fps" in text
    assert "returned as frames" in text and "seed: 3" in text
    (text,) = run_node(node, **inputs, output_mode="auto", auto_max_mib=1)
    assert "returned as file" in text and "encoder: mp4" in text
    (text,) = run_node(node, **inputs, output_mode="frames", params='length_policy="trim"')
    assert f"{CLIP_FRAMES} frames at 25 fps" in text and "length policy trim" in text
    assert not comfy["output"].exists() and list(comfy["temp"].iterdir()) == []


# --------------------------------------------------------------------------- Length Adjust


def numbered_frames(count: int) -> torch.Tensor:
    """Frames whose every pixel holds the frame number / 10."""
    values = torch.arange(count, dtype=torch.float32) / 10
    return values.reshape(count, 1, 1, 1).expand(count, 4, 6, 3).contiguous()


def silence(frames: int, rate: int = 8000) -> dict[str, Any]:
    samples = frames * rate // FPS
    return {"waveform": torch.zeros(1, 2, samples), "sample_rate": rate}


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("loop", [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]),
        ("pingpong", [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]),
        ("freeze", [0, 1, 2, 3, 3, 3, 3, 3, 3, 3]),
        ("trim", [0, 1, 2, 3]),
    ],
)
def test_length_adjust_modes(pack: Any, mode: str, expected: list[int]) -> None:
    audio = silence(10)
    images, out_audio, count = run_node(
        pack.NODE_CLASS_MAPPINGS["LipkitLengthAdjust"],
        images=numbered_frames(4),
        audio=audio,
        mode=mode,
        fps=float(FPS),
    )
    assert count == len(expected) == images.shape[0]
    assert images.shape[1:] == (4, 6, 3) and images.dtype == torch.float32
    assert [round(float(f[0, 0, 0]) * 10) for f in images] == expected
    samples = out_audio["waveform"].shape[-1]
    assert out_audio["sample_rate"] == 8000
    assert samples == (4 * 8000 // FPS if mode == "trim" else 10 * 8000 // FPS)


def test_length_adjust_holds_a_still_image(pack: Any) -> None:
    images, _, count = run_node(
        pack.NODE_CLASS_MAPPINGS["LipkitLengthAdjust"],
        images=numbered_frames(1) + 0.5,
        audio=silence(7),
        mode="pingpong",
        fps=float(FPS),
    )
    assert count == 7 and torch.all(images == 0.5)


def test_length_adjust_rejects_audio_shorter_than_a_frame(pack: Any) -> None:
    with pytest.raises(RuntimeError, match="shorter than one frame"):
        pack.NODE_CLASS_MAPPINGS["LipkitLengthAdjust"]().adjust(
            images=numbered_frames(3),
            audio={"waveform": torch.zeros(1, 1, 100), "sample_rate": 8000},  # 12.5 ms
            mode="loop",
            fps=25.0,
        )


# --------------------------------------------------------------------------- hosts' values


class LazyAudio(Mapping):
    """VideoHelperSuite's audio: a read-only Mapping that decodes on first access."""

    def __init__(self, value: dict[str, Any]) -> None:
        self._value = value
        self.reads = 0

    def __getitem__(self, key: str) -> Any:
        self.reads += 1
        return self._value[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._value)

    def __len__(self) -> int:
        return len(self._value)


class FakeVideo:
    """ComfyUI's VIDEO (comfy_api VideoInput): components, and the file it came from."""

    def __init__(self, images: Any, audio: Any, rate: Fraction, source: Path | None) -> None:
        self.components = types.SimpleNamespace(images=images, audio=audio, frame_rate=rate)
        self.source = source

    def get_components(self) -> Any:
        return self.components

    def get_stream_source(self) -> Any:
        return str(self.source) if self.source else io.BytesIO(b"")

    def get_active_trim_window(self) -> tuple[float, float]:
        return self.trim

    trim = (0.0, 0.0)


def test_vhs_lazy_audio_is_accepted(
    pack: Any, comfy: dict[str, Path], clip: torch.Tensor, speech: dict[str, Any]
) -> None:
    lazy = LazyAudio(speech)
    images, audio, *_ = run_node(
        pack.NODE_CLASS_MAPPINGS["LipkitLipSync"],
        images=clip, audio=lazy, backend="preview", seed=0, output_mode="frames",
    )  # fmt: skip
    assert lazy.reads > 0 and images.shape[0] == round(SPEECH_SECONDS * FPS)
    assert audio["waveform"].shape == (1, 1, round(SPEECH_SECONDS * 16000))


def test_a_video_input_in_memory_sets_the_frame_rate(
    pack: Any, comfy: dict[str, Path], clip: torch.Tensor, speech: dict[str, Any]
) -> None:
    video = FakeVideo(clip, speech, Fraction(30000, 1001), source=None)
    images, audio, video_path, fps, _ = run_node(
        pack.NODE_CLASS_MAPPINGS["LipkitLipSync"],
        video=video, backend="preview", seed=0, output_mode="frames",
    )  # fmt: skip
    assert fps == pytest.approx(30000 / 1001)  # the VIDEO's own rate, passed on as an output
    media = sys.modules["lipkit-comfyui.media"]
    trimmed = FakeVideo(clip, speech, Fraction(25), source=Path(__file__))
    assert media.video_source(trimmed) == Path(__file__)
    trimmed.trim = (0.5, 1.0)  # a trimmed VIDEO is read through its components, not the file
    assert media.video_source(trimmed) is None
    assert images.shape[0] == round(SPEECH_SECONDS * 30000 / 1001)
    assert video_path == "" and audio["sample_rate"] == 16000


def test_a_video_file_input_is_read_by_lipkit_with_its_own_audio(
    pack: Any, comfy: dict[str, Path], sample_face_with_audio: Path
) -> None:
    info = probe_media(sample_face_with_audio)
    video = FakeVideo(None, None, Fraction(int(info.fps)), source=sample_face_with_audio)
    images, audio, video_path, fps, _ = run_node(
        pack.NODE_CLASS_MAPPINGS["LipkitLipSync"],
        video=video, backend="preview", seed=0, output_mode="file",
    )  # fmt: skip
    assert fps == info.fps and Path(video_path).is_file()
    out = probe_media(Path(video_path))
    assert out.has_audio and out.num_frames == round(info.audio_seconds * info.fps)
    assert images.shape[0] == 1 and audio["waveform"].shape[-1] > 0
    with pytest.raises(RuntimeError, match="both the images and the video input"):
        pack.NODE_CLASS_MAPPINGS["LipkitLipSync"]().sync(
            images=torch.zeros(1, 8, 8, 3), video=video, backend="preview"
        )


def test_quiet_logging_inside_comfyui(
    pack: Any, comfy: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    host = sys.modules["lipkit-comfyui.host"]
    import logging

    logger = logging.getLogger("lipkit")
    monkeypatch.setattr(logger, "level", logger.level)
    host.quiet_logging()
    assert logger.getEffectiveLevel() == logging.INFO  # no ffmpeg command lines (DEBUG)
    monkeypatch.setenv("LIPKIT_COMFYUI_LOG_LEVEL", "debug")
    host.quiet_logging()
    assert logger.getEffectiveLevel() == logging.DEBUG  # unless asked


# --------------------------------------------------------------------------- a real backend


@pytest.fixture
def wav2lip_in_comfy(comfy: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A full-size random Wav2Lip in ComfyUI/models/lipkit/wav2lip/, and the plugin loaded."""
    from wav2lip_helpers import random_state_dict, save_published

    folder = comfy["models"] / "lipkit" / "wav2lip"
    folder.mkdir(parents=True)
    save_published(random_state_dict(seed=4), folder / "wav2lip_gan.pth", module_prefix=True)
    monkeypatch.setenv("LIPKIT_LOAD_PLUGINS", "wav2lip")
    params = sys.modules["lipkit-comfyui.params"]
    params.generator_weights.cache_clear()
    yield "wav2lip/wav2lip_gan.pth"
    params.generator_weights.cache_clear()


def test_weights_in_comfyuis_model_folder_show_in_the_dropdown_and_cancel_resumes(
    pack: Any,
    comfy: dict[str, Path],
    clip: torch.Tensor,
    speech: dict[str, Any],
    wav2lip_in_comfy: str,
) -> None:
    from lipkit_wav2lip.generator import CPU_SLICE

    node = pack.NODE_CLASS_MAPPINGS["LipkitLipSync"]
    assert wav2lip_in_comfy in node.INPUT_TYPES()["optional"]["model"][0]
    total = round(SPEECH_SECONDS * FPS)
    inputs = {
        "images": clip, "audio": speech, "backend": "auto", "model": wav2lip_in_comfy,
        "output_mode": "file", "filename_prefix": "w2l/take",
        "params": 'output_settings={"x264_preset": "ultrafast", "segment_seconds": 0.64}\n'
        'memory_settings={"chunk_frames": 16}',
    }  # fmt: skip
    cancel_at = 24
    FakeProgressBar.interrupt_at = cancel_at  # Cancel pressed once 24 frames are rendered
    assert MM is not None
    with pytest.raises(MM.InterruptProcessingException):
        node().sync(**inputs)
    (bar,) = FakeProgressBar.instances
    render = [v for v, t in bar.updates if t == total]
    assert render[-1] - next(v for v in render if v >= cancel_at) <= CPU_SLICE
    assert render[-1] < total and not list(comfy["output"].rglob("*.mp4"))
    # the same inputs again: lipkit resumes from the kept segments and finishes
    FakeProgressBar.interrupt_at = None
    *_, video_path, fps, notes = run_node(node, **inputs, seed=0)
    again = [v for v, t in FakeProgressBar.instances[-1].updates if t == total]
    assert again[0] >= 16 and again[-1] == total  # started from the finished segments
    assert Path(video_path).is_file() and probe_media(Path(video_path)).num_frames == total
    assert notes == "" and fps == 25.0  # wav2lip ran: no preview warning


@pytest.mark.parametrize("mode", ["frames", "file"])
def test_lipsync_audio_crop_inputs(
    pack: Any, comfy: dict[str, Path], clip: torch.Tensor, speech: dict[str, Any], mode: str
) -> None:
    """audio_start/audio_end do what the AudioCrop node did: the frames and the AUDIO output
    follow the cropped range, in both output modes."""
    images, audio, video_path, fps, _ = run_node(
        pack.NODE_CLASS_MAPPINGS["LipkitLipSync"],
        images=clip,
        audio=speech,
        backend="preview",
        seed=0,
        output_mode=mode,
        audio_start="0:00.5",
        audio_end="1.5",
    )
    expected = round(1.0 * FPS)
    if mode == "frames":
        assert images.shape[0] == expected
    else:
        assert probe_media(Path(video_path)).num_frames == expected
    assert audio["waveform"].shape[-1] == 16000
    _, whole, *_ = run_node(
        pack.NODE_CLASS_MAPPINGS["LipkitLipSync"],
        images=clip,
        audio=speech,
        backend="preview",
        seed=0,
        output_mode="frames",
    )
    uncropped = whole["waveform"][0, 0].numpy()[8000:24000]
    got = audio["waveform"][0, 0].numpy()
    # cropped before or after resampling: equal away from the edges' filter tails
    np.testing.assert_allclose(got[500:-500], uncropped[500:-500], atol=2e-3)


def test_lipsync_audio_inputs_are_declared(pack: Any) -> None:
    optional = pack.NODE_CLASS_MAPPINGS["LipkitLipSync"].INPUT_TYPES()["optional"]
    assert optional["separate_vocals"][0] == "BOOLEAN"
    assert optional["silence"][0] == ["model", "keep", "closed"]
    assert optional["audio_start"][0] == optional["audio_end"][0] == "STRING"
