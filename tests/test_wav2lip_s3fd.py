"""The Wav2Lip plugin's S3FD face detector: layout, safe loading, decoding, batching, devices."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

if TYPE_CHECKING:
    import torch
else:
    torch = pytest.importorskip("torch")

from lipkit_wav2lip.s3fd import (  # noqa: E402
    S3FD,
    L2Norm,
    S3FDFaceProcessor,
    S3FDFaceSession,
    decode,
    detect,
    nms,
)

from lipkit.config import FaceSettings  # noqa: E402
from lipkit.errors import ModelError  # noqa: E402
from lipkit.face.warp import box_affine  # noqa: E402
from lipkit.interfaces import Detection  # noqa: E402
from lipkit.specs import DeviceInfo  # noqa: E402

CPU = DeviceInfo(id="cpu", kind="cpu", name="cpu", total_memory=1, free_memory=1)
GPU = DeviceInfo(id="cuda:0", kind="cuda", name="gpu", total_memory=1, free_memory=1)
SLOW = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# ----------------------------------------------------------------------------- reference data
# Layer table of face-alignment's net_s3fd.py (1adrianb/face-alignment,
# face_alignment/detection/sfd/net_s3fd.py; the same in Rudrabha/Wav2Lip
# face_detection/detection/sfd/net_s3fd.py): conv name -> (in, out, kernel).
REFERENCE_CONVS = {
    "conv1_1": (3, 64, 3),
    "conv1_2": (64, 64, 3),
    "conv2_1": (64, 128, 3),
    "conv2_2": (128, 128, 3),
    "conv3_1": (128, 256, 3),
    "conv3_2": (256, 256, 3),
    "conv3_3": (256, 256, 3),
    "conv4_1": (256, 512, 3),
    "conv4_2": (512, 512, 3),
    "conv4_3": (512, 512, 3),
    "conv5_1": (512, 512, 3),
    "conv5_2": (512, 512, 3),
    "conv5_3": (512, 512, 3),
    "fc6": (512, 1024, 3),
    "fc7": (1024, 1024, 1),
    "conv6_1": (1024, 256, 1),
    "conv6_2": (256, 512, 3),
    "conv7_1": (512, 128, 1),
    "conv7_2": (128, 256, 3),
    "conv3_3_norm_mbox_conf": (256, 4, 3),
    "conv3_3_norm_mbox_loc": (256, 4, 3),
    "conv4_3_norm_mbox_conf": (512, 2, 3),
    "conv4_3_norm_mbox_loc": (512, 4, 3),
    "conv5_3_norm_mbox_conf": (512, 2, 3),
    "conv5_3_norm_mbox_loc": (512, 4, 3),
    "fc7_mbox_conf": (1024, 2, 3),
    "fc7_mbox_loc": (1024, 4, 3),
    "conv6_2_mbox_conf": (512, 2, 3),
    "conv6_2_mbox_loc": (512, 4, 3),
    "conv7_2_mbox_conf": (256, 2, 3),
    "conv7_2_mbox_loc": (256, 4, 3),
}
REFERENCE_NORMS = {
    "conv3_3_norm": (256, 10.0),
    "conv4_3_norm": (512, 8.0),
    "conv5_3_norm": (512, 5.0),
}
# Parameters counted by hand from the table (weights + biases):
#   trunk conv1_1 .. conv7_2:          22,287,296
#   heads (12 convs):                     170,534
#   L2Norm scales 256 + 512 + 512:          1,280
REFERENCE_PARAMETERS = 22_459_110
REFERENCE_TENSORS = 65  # 31 convs x (weight, bias) + 3 norm scales
SPOT_CHECKS = {
    "conv1_1.weight": (64, 3, 3, 3),
    "fc6.weight": (1024, 512, 3, 3),
    "fc7.weight": (1024, 1024, 1, 1),
    "conv6_1.weight": (256, 1024, 1, 1),
    "conv7_2.bias": (256,),
    "conv3_3_norm.weight": (256,),
    "conv5_3_norm.weight": (512,),
    "conv3_3_norm_mbox_conf.weight": (4, 256, 3, 3),
    "conv3_3_norm_mbox_conf.bias": (4,),
    "conv4_3_norm_mbox_conf.weight": (2, 512, 3, 3),
    "fc7_mbox_loc.weight": (4, 1024, 3, 3),
}


def reference_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for name, (cin, cout, k) in REFERENCE_CONVS.items():
        shapes[f"{name}.weight"] = (cout, cin, k, k)
        shapes[f"{name}.bias"] = (cout,)
    for name, (channels, _) in REFERENCE_NORMS.items():
        shapes[f"{name}.weight"] = (channels,)
    return shapes


def head_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """Feature sizes of the six heads, from the reference's layer arithmetic."""

    def conv_out(n: int, k: int, s: int, p: int) -> int:
        return (n + 2 * p - k) // s + 1

    sizes = []
    for n in (height, width):
        s1 = n // 4  # two 2x2 pools
        s2 = s1 // 2
        s3 = s2 // 2
        s4 = conv_out(s3 // 2, 3, 1, 3)  # fc6: 3x3, padding 3, no dilation
        s5 = conv_out(s4, 3, 2, 1)
        s6 = conv_out(s5, 3, 2, 1)
        sizes.append((s1, s2, s3, s4, s5, s6))
    return list(zip(*sizes, strict=True))


# ------------------------------------------------------------------- independent numpy decode


def reference_decode(heads: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """Straightforward per-position decode as the reference does it (one frame at a time)."""
    results = []
    for frame in range(heads[0][0].shape[0]):
        rows = []
        for i, (conf, loc) in enumerate(heads):
            logits = conf[frame].astype(np.float64)
            if logits.shape[0] == 4:  # max-out background of conv3_3
                logits = np.stack([logits[:3].max(axis=0), logits[3]])
            e = np.exp(logits - logits.max(axis=0))
            face = e[1] / e.sum(axis=0)
            stride = 2 ** (i + 2)
            for r in range(face.shape[0]):
                for c in range(face.shape[1]):
                    if not face[r, c] > 0.05:
                        continue
                    cx, cy, side = stride / 2 + c * stride, stride / 2 + r * stride, 4.0 * stride
                    dx, dy, dw, dh = loc[frame, :, r, c].astype(np.float64)
                    x = cx + dx * 0.1 * side
                    y = cy + dy * 0.1 * side
                    w = side * math.exp(dw * 0.2)
                    h = side * math.exp(dh * 0.2)
                    rows.append([x - w / 2, y - h / 2, x + w / 2, y + h / 2, face[r, c]])
        rows.sort(key=lambda row: -row[4])
        kept = np.zeros((0, 5))
        for row in np.array(rows).reshape(-1, 5):  # greedy, best first
            if not len(kept) or iou_plus_one(row, kept.T).max() <= 0.3:
                kept = np.vstack([kept, row])
        results.append(kept[kept[:, 4] > 0.5])
    return results


def iou_plus_one(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box ``a`` with box(es) ``b`` (columns x1, y1, x2, y2), areas counted +1."""
    w = np.maximum(0.0, np.minimum(a[2], b[2]) - np.maximum(a[0], b[0]) + 1)
    h = np.maximum(0.0, np.minimum(a[3], b[3]) - np.maximum(a[1], b[1]) + 1)
    inter = w * h
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return inter / (area_a + area_b - inter)


def assert_same(got: list[np.ndarray], want: list[np.ndarray], atol: float = 2e-3) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == np.float32 and g.ndim == 2 and g.shape[1] == 5
        assert g.shape == w.shape, (g, w)
        # both are sorted by score; boxes whose scores tie to float32 precision may come in
        # either order (and any rounding of the scores can split a tie), so each row is
        # matched to the closest unmatched row of the other, then compared
        np.testing.assert_allclose(g, _matched(g, w), rtol=1e-4, atol=atol)


def _matched(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """``want``'s rows reordered so row ``i`` is the unmatched one closest to ``got[i]``."""
    want = np.asarray(want, dtype=np.float64)
    free = list(range(len(want)))
    order = []
    for row in np.asarray(got, dtype=np.float64):
        best = min(free, key=lambda j: float(np.abs(want[j] - row).max()))
        free.remove(best)
        order.append(best)
    return want[order]


def random_heads(
    rng: np.random.Generator, batch: int, height: int, width: int, spread: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    heads = []
    for i, (h, w) in enumerate(head_sizes(height, width)):
        conf = rng.normal(0.0, spread, (batch, 4 if i == 0 else 2, h, w)).astype(np.float32)
        loc = rng.normal(0.0, 1.0, (batch, 4, h, w)).astype(np.float32)
        heads.append((conf, loc))
    return heads


def as_torch(heads: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Heads as the network returns them: conv3_3's confidence already max-out reduced."""
    out = []
    for conf, loc in heads:
        c = torch.from_numpy(conf)
        if c.shape[1] == 4:
            c = torch.cat([c[:, :3].amax(dim=1, keepdim=True), c[:, 3:]], dim=1)
        out.append((c, torch.from_numpy(loc)))
    return out


# ----------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def net() -> S3FD:
    torch.manual_seed(0)
    return S3FD().eval()


@pytest.fixture(scope="module")
def bare_checkpoint(net: S3FD, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("s3fd") / "s3fd.pth"
    torch.save(net.state_dict(), path)
    return path


def frames_like(rng: np.random.Generator, batch: int, height: int, width: int) -> np.ndarray:
    """Smooth random pictures (blurred noise), so the random net's scores spread."""
    noise = rng.integers(0, 256, (batch, height // 4 + 2, width // 4 + 2, 3)).astype(np.float32)
    big = np.repeat(np.repeat(noise, 4, axis=1), 4, axis=2)[:, :height, :width]
    return big.astype(np.uint8)


def open_session(path: Path | None, device: DeviceInfo = CPU, **face: object) -> S3FDFaceSession:
    settings = FaceSettings.model_validate({"detector_checkpoint": path, **face})
    session = S3FDFaceProcessor().open(settings, device)
    assert isinstance(session, S3FDFaceSession)
    return session


class FixedHead(torch.nn.Module):
    """Stands in for a head conv: seeded random output shaped like the real one, recorded."""

    def __init__(self, channels: int, seed: int, spread: float, record: list) -> None:
        super().__init__()
        self.channels, self.seed, self.spread, self.record = channels, seed, spread, record

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rng = np.random.default_rng(self.seed)
        shape = (x.shape[0], self.channels, *x.shape[2:])
        out = rng.normal(0.0, self.spread, shape).astype(np.float32)
        self.record.append(out)
        return torch.from_numpy(out)


def patch_heads(net: S3FD, spread: float) -> tuple[S3FD, list[tuple[list, list]]]:
    """A copy of ``net`` with all twelve head convs replaced, and each head's records."""
    net = copy.deepcopy(net)
    records = []
    for i, (name, (_, cout, _)) in enumerate(REFERENCE_CONVS.items()):
        if "_mbox_conf" not in name:
            continue
        conf_rec: list = []
        loc_rec: list = []
        loc_name = name.replace("_conf", "_loc")
        setattr(net, name, FixedHead(cout, 100 + i, spread, conf_rec))
        setattr(net, loc_name, FixedHead(4, 200 + i, 1.0, loc_rec))
        records.append((conf_rec, loc_rec))
    return net, records


# ------------------------------------------------------------------------ (a) the layout


def test_state_dict_matches_the_published_layout(net: S3FD) -> None:
    state = net.state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes == reference_shapes()
    assert len(state) == REFERENCE_TENSORS
    assert sum(v.numel() for v in state.values()) == REFERENCE_PARAMETERS
    for key, shape in SPOT_CHECKS.items():
        assert shapes[key] == shape, key


def test_layer_facts(net: S3FD) -> None:
    for name, (_, scale) in REFERENCE_NORMS.items():  # the fixture's net is untrained
        assert torch.all(getattr(net, name).weight == scale), name
    fc6 = net.fc6
    assert (fc6.kernel_size, fc6.padding, fc6.dilation) == ((3, 3), (3, 3), (1, 1))
    assert net.conv6_2.stride == (2, 2) and net.conv7_2.stride == (2, 2)
    with torch.no_grad():
        out = net(torch.zeros(1, 3, 97, 131))
    assert [tuple(c.shape[2:]) for c, _ in out] == head_sizes(97, 131)
    assert [(c.shape[1], loc.shape[1]) for c, loc in out] == [(2, 4)] * 6


def test_l2norm_scales_each_position_to_its_weight() -> None:
    norm = L2Norm(512, 8.0)
    x = torch.rand(2, 512, 3, 5) * 300
    with torch.no_grad():
        y = norm(x)
        half = norm(x.half())
    np.testing.assert_allclose(y.norm(dim=1).numpy(), 8.0, rtol=1e-5)
    assert half.dtype == torch.float16 and torch.isfinite(half).all()  # no fp16 overflow


def test_max_out_background_of_conv3_3(net: S3FD) -> None:
    hand = torch.tensor([1.0, -2.0, 7.0, 3.0]).view(1, 4, 1, 1).expand(1, 4, 16, 16).clone()
    hand[0, :, 2, 3] = torch.tensor([-1.0, 5.0, 2.0, 0.5])

    class Hand(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return hand

    net = copy.deepcopy(net)
    net.conv3_3_norm_mbox_conf = Hand()
    with torch.no_grad():
        conf = net(torch.zeros(1, 3, 64, 64))[0][0]
    assert conf.shape == (1, 2, 16, 16)
    assert conf[0, 0, 0, 0] == 7.0 and conf[0, 1, 0, 0] == 3.0
    assert conf[0, 0, 2, 3] == 5.0 and conf[0, 1, 2, 3] == 0.5


# -------------------------------------------------------------------- (b) loading checkpoints


def test_spec() -> None:
    spec = S3FDFaceProcessor.spec
    assert (spec.name, spec.alignment, spec.landmarks, spec.rank) == ("s3fd", "box", False, 10)
    (weight,) = spec.weights
    assert (weight.name, weight.filename, weight.param) == (
        "s3fd",
        "s3fd.pth",
        "detector_checkpoint",
    )
    assert weight.url == "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth"


def assert_loaded(session: S3FDFaceSession, net: S3FD) -> None:
    assert session.net is not None
    for key in ("conv1_1.weight", "conv3_3_norm.weight", "conv7_2_mbox_loc.bias"):
        assert torch.equal(session.net.state_dict()[key], net.state_dict()[key])
    assert session.device.type == "cpu" and session.dtype == torch.float32


def test_loads_the_published_bare_format(net: S3FD, bare_checkpoint: Path) -> None:
    assert_loaded(open_session(bare_checkpoint), net)


def test_loads_wrapped_and_prefixed(net: S3FD, tmp_path: Path) -> None:
    path = tmp_path / "wrapped.pth"
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "global_step": 3}, path)
    assert_loaded(open_session(path), net)


def test_loads_safetensors(net: S3FD, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "s3fd.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    assert_loaded(open_session(path), net)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ("missing", ["missing keys (1)", "fc7_mbox_loc.bias"]),
        ("shape", ["shape mismatches (1)", "conv3_3_norm_mbox_conf.weight", "(2, 256, 3, 3)"]),
        ("extra", ["unexpected keys (1)", "conv8_1.weight"]),
    ],
)
def test_refuses_a_mismatched_checkpoint(
    net: S3FD, tmp_path: Path, change: str, words: list[str]
) -> None:
    state = dict(net.state_dict())
    if change == "missing":
        del state["fc7_mbox_loc.bias"]
    elif change == "shape":
        state["conv3_3_norm_mbox_conf.weight"] = torch.zeros(2, 256, 3, 3)
    else:
        state["conv8_1.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ModelError) as info:
        open_session(path)
    text = str(info.value)
    for word in words:
        assert word in text
    assert "s3fd" in text


def test_refuses_pickled_code(net: S3FD, tmp_path: Path) -> None:
    path = tmp_path / "whole_model.pth"
    torch.save(net, path)  # the whole module: unpickling it would import and run code
    with pytest.raises(ModelError, match="pickled Python code"):
        open_session(path)


def test_refuses_a_truncated_file(bare_checkpoint: Path, tmp_path: Path) -> None:
    path = tmp_path / "s3fd.pth"
    path.write_bytes(bare_checkpoint.read_bytes()[: bare_checkpoint.stat().st_size // 2])
    with pytest.raises(ModelError, match="truncated"):
        open_session(path)


def test_says_where_to_get_the_weights(tmp_path: Path) -> None:
    for path in (None, tmp_path / "nowhere" / "s3fd.pth"):
        with pytest.raises(ModelError) as info:
            open_session(path)
        text = str(info.value)
        assert (
            "s3fd.pth" in text and "s3fd-619a316812.pth" in text and "--detector-checkpoint" in text
        )


# ---------------------------------------------------------- (c) decoding against numpy


@settings(SLOW, max_examples=40)
@given(
    height=st.integers(32, 160),
    width=st.integers(32, 160),
    batch=st.integers(1, 3),
    spread=st.sampled_from([0.5, 1.0, 2.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_decode_matches_a_straightforward_reimplementation(
    height: int, width: int, batch: int, spread: float, seed: int
) -> None:
    heads = random_heads(np.random.default_rng(seed), batch, height, width, spread)
    assert_same(decode(as_torch(heads)), reference_decode(heads))


def test_decode_hand_built_outputs() -> None:
    heads = random_heads(np.random.default_rng(0), 1, 64, 64, 1.0)
    for conf, loc in heads:  # background everywhere ...
        conf[:] = 0.0
        conf[:, 0] = 9.0
        loc[:] = 0.0
    conf1, loc1 = heads[0]  # ... but two cells of the conv3_3 head (stride 4, anchor 16)
    conf1[0, :, 2, 3] = [0.0, 0.0, 0.0, 4.0]  # a face: background logits all low
    conf1[0, :, 5, 5] = [-5.0, -5.0, 6.0, 4.0]  # only the *third* background logit is high
    conf4, loc4 = heads[3]  # and one fc7 cell (stride 32, anchor 128), shifted and widened
    conf4[0, :, 1, 1] = [0.0, 3.0]
    loc4[0, :, 1, 1] = [0.5, -0.25, math.log(2.0) / 0.2, 0.0]
    (got,) = decode(as_torch(heads))
    s1 = 1 / (1 + math.exp(-4.0))
    s4 = 1 / (1 + math.exp(-3.0))
    # fc7 cell (1, 1): centre (48 + 0.5*0.1*128, 48 - 0.25*0.1*128) = (54.4, 44.8), 256 x 128
    want = np.array(
        [
            [6.0, 2.0, 22.0, 18.0, s1],  # centre (14, 10), 16 x 16
            [54.4 - 128, 44.8 - 64, 54.4 + 128, 44.8 + 64, s4],
        ],
        dtype=np.float32,
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_nms_suppresses_by_plus_one_iou() -> None:
    boxes = np.array([[0, 0, 9, 9], [5, 0, 14, 9], [4, 0, 13, 9], [100, 100, 120, 120]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    # +1 areas: 10 x 10 = 100; [0,9] & [5,14] -> 5 x 10 = 50, IoU 50/150 = 0.333 > 0.3
    # [0,9] & [4,13] -> 6 x 10 = 60, IoU 60/140 = 0.43
    assert nms(boxes, scores, 0.3).tolist() == [0, 3]
    assert nms(boxes, scores, 0.34).tolist() == [0, 1, 3]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.3).tolist() == []


def test_net_heads_through_detect(net: S3FD) -> None:
    """The whole path (max-out in the net, softmax, priors, NMS) on hand-fed head outputs."""
    net, records = patch_heads(net, spread=3.0)
    frames = frames_like(np.random.default_rng(1), 2, 48, 72)
    got = detect(net, frames)
    heads = [(c[-1], loc[-1]) for c, loc in records]
    assert heads[0][0].shape[1] == 4  # conv3_3's raw four logits reached the reference
    want = reference_decode(heads)
    assert sum(len(w) for w in want) > 2
    assert_same(got, want)


def test_max_side_shrinks_and_scales_back(net: S3FD) -> None:
    net, records = patch_heads(net, spread=3.0)
    frames = frames_like(np.random.default_rng(2), 1, 128, 96)
    got = detect(net, frames, max_side=64)
    heads = [(c[-1], loc[-1]) for c, loc in records]
    assert heads[0][0].shape[2:] == (16, 12)  # the net saw 64 x 48
    (want,) = reference_decode(heads)
    want[:, :4] *= 2.0
    assert_same(got, [want], atol=4e-3)


# --------------------------------------------------------------- (d) batching and devices


def test_batched_equals_per_frame(net: S3FD) -> None:
    frames = frames_like(np.random.default_rng(3), 3, 48, 48)
    batched = detect(net, frames)
    single = [detect(net, frames[i : i + 1])[0] for i in range(3)]
    assert sum(len(b) for b in batched) > 0
    assert_same(batched, single)


def test_session_detects_the_best_face(bare_checkpoint: Path, net: S3FD) -> None:
    frames = frames_like(np.random.default_rng(4), 3, 48, 48)
    whole = open_session(bare_checkpoint)
    split = S3FDFaceSession(net, FaceSettings(detect_batch=2))
    got = whole.detect(frames)
    rows = detect(net, frames)
    for a, b in zip(got, split.detect(frames), strict=True):
        assert a is not None and b is not None
        np.testing.assert_allclose(a.box, b.box, atol=1e-3)
    for det, found in zip(got, rows, strict=True):
        assert isinstance(det, Detection) and det.box.dtype == np.float32 and det.box.shape == (4,)
        best = np.clip(found[0, :4], 0, 48)
        np.testing.assert_allclose(det.box, best, atol=1e-3)
        assert det.score == pytest.approx(float(found[0, 4]), abs=1e-5)
        assert det.landmarks is None
        np.testing.assert_array_equal(whole.align(det, 96), box_affine(det.box, 96))
    whole.close()
    assert whole.net is None


def test_session_returns_none_without_a_face(net: S3FD) -> None:
    blind = copy.deepcopy(net)
    with torch.no_grad():
        for name, module in blind.named_children():
            if name.endswith("_mbox_conf"):
                module.bias[0] = 100.0  # background wins everywhere
    frames = frames_like(np.random.default_rng(5), 2, 40, 40)
    assert S3FDFaceSession(blind, FaceSettings()).detect(frames) == [None, None]


@pytest.mark.parametrize("detector_device", ["cpu", "auto"])
def test_device_choice(bare_checkpoint: Path, detector_device: str) -> None:
    session = open_session(bare_checkpoint, GPU, detector_device=detector_device)
    if detector_device == "cpu" or not torch.cuda.is_available():
        assert session.device.type == "cpu"
    else:
        assert session.device == torch.device("cuda:0")


def test_fp16_is_cuda_only(bare_checkpoint: Path) -> None:
    settings = FaceSettings(detector_checkpoint=bare_checkpoint, detector_device="cpu")
    session = S3FDFaceProcessor(fp16=True).open(settings, GPU)
    assert isinstance(session, S3FDFaceSession)
    assert session.device.type == "cpu" and session.dtype == torch.float32


def test_bgr_option_reverses_channels(net: S3FD) -> None:
    frames = frames_like(np.random.default_rng(6), 1, 40, 40)
    assert_same(detect(net, frames, bgr=True), detect(net, np.ascontiguousarray(frames[..., ::-1])))


def test_rejects_bad_frames(bare_checkpoint: Path) -> None:
    session = open_session(bare_checkpoint)
    with pytest.raises(ValueError, match="uint8"):
        session.detect(np.zeros((1, 32, 32, 3), np.float32))
    assert detect(session.net, np.zeros((0, 32, 32, 3), np.uint8)) == []


# ------------------------------------------------------------------ (e) varying frame sizes


@settings(SLOW, max_examples=4)
@given(
    height=st.integers(8, 72) | st.just(97),
    width=st.integers(8, 72) | st.just(131),
    seed=st.integers(0, 1000),
)
def test_any_frame_size(net: S3FD, height: int, width: int, seed: int) -> None:
    frames = frames_like(np.random.default_rng(seed), 2, height, width)
    batched = detect(net, frames)
    assert_same(batched[1:], detect(net, frames[1:]))  # (frames under 32 pixels are padded)
    for rows in batched:
        assert np.all(rows[:, 4] > 0.5)
        assert np.all(np.diff(rows[:, 4]) <= 0)  # best first
        assert np.all(rows[:, 2] > rows[:, 0]) and np.all(rows[:, 3] > rows[:, 1])
        for i in range(len(rows)):
            for j in range(i + 1, len(rows)):
                assert iou_plus_one(rows[i], rows[j]) <= 0.3 + 1e-6


def test_detect_all_gives_every_face_and_detect_the_best(bare_checkpoint: Path) -> None:
    """detect_all (face.select) returns every kept detection, best first, clipped like
    detect's; detect's main face is the first of them."""
    session = open_session(bare_checkpoint)
    frames = frames_like(np.random.default_rng(7), 3, 96, 128)
    every = session.detect_all(frames)
    main = session.detect(frames)
    assert sum(len(f) for f in every) > len(every)  # the random net finds several per frame
    for faces, best in zip(every, main, strict=True):
        if best is None:
            assert faces == []
            continue
        assert np.array_equal(faces[0].box, best.box) and faces[0].score == best.score
        assert all(a.score >= b.score for a, b in zip(faces, faces[1:], strict=False))
        assert all((f.box[2:] > f.box[:2]).all() for f in faces)
