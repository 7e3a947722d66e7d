"""The streamed vocals equal ``demucs.apply.apply_model``'s, bit for bit, for tiny random
models of each class saved in the published ``.th`` format and loaded through the plugin's
loader; single models, bags, shifts."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from demucs.apply import BagOfModels, apply_model
from demucs_helpers import save_th, tiny_demucs, tiny_hdemucs, tiny_htdemucs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lipkit_demucs.checkpoint import load_model
from lipkit_demucs.engine import BagMember, Settings, stream_vocals
from torch import nn

CPU = torch.device("cpu")
FACTORIES: dict[str, Callable[[], nn.Module]] = {
    "htdemucs": tiny_htdemucs,
    "hdemucs": tiny_hdemucs,
    "demucs": tiny_demucs,
}
_LOADED: dict[str, nn.Module] = {}


def loaded(kind: str, tmp: Path) -> nn.Module:
    """A tiny model of ``kind`` written as a published .th and read back (cached)."""
    if kind not in _LOADED:
        _LOADED[kind] = load_model(save_th(FACTORIES[kind](), tmp / kind, "0badf00d"))
    return _LOADED[kind]


def blocks_of(mix: np.ndarray, sizes: list[int]) -> Iterator[np.ndarray]:
    start, i = 0, 0
    while start < len(mix):
        size = sizes[i % len(sizes)]
        yield mix[start : start + size]
        start, i = start + size, i + 1


def streamed(
    members: list[BagMember], mix: np.ndarray, sizes: list[int], s: Settings = Settings()
) -> torch.Tensor:
    parts = list(stream_vocals(members, blocks_of(mix, sizes), len(mix), s, CPU))
    return torch.cat(parts, dim=1)


def reference(model: Any, mix: np.ndarray, **kwargs: object) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(mix.T))[None]
    out = apply_model(model, tensor, split=True, overlap=0.25, **kwargs)  # type: ignore[arg-type]
    return out[0, 3]


def normalised_mix(length: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((length, 2)).astype(np.float32)


@pytest.mark.parametrize("kind", sorted(FACTORIES))
@settings(
    max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    length=st.integers(min_value=300, max_value=50000),
    sizes=st.lists(st.integers(min_value=1, max_value=30000), min_size=1, max_size=3),
)
def test_streamed_equals_apply_model(
    kind: str, length: int, sizes: list[int], tmp_path_factory: pytest.TempPathFactory
) -> None:
    model: Any = loaded(kind, tmp_path_factory.mktemp("m"))
    mix = normalised_mix(length, length)
    ours = streamed([BagMember(model, 1.0)], mix, sizes)
    assert ours.shape == (2, length)
    assert torch.equal(ours, reference(model, mix, shifts=0))


def test_segment_and_overlap_overrides(tmp_path: Path) -> None:
    for kind, segment in (("htdemucs", 0.3), ("hdemucs", 0.7), ("demucs", 0.4)):
        model: Any = loaded(kind, tmp_path)
        mix = normalised_mix(50000, 1)
        s = Settings(segment=segment, overlap=0.4)
        ours = streamed([BagMember(model, 1.0)], mix, [7000], s)
        tensor = torch.from_numpy(np.ascontiguousarray(mix.T))[None]
        ref = apply_model(model, tensor, split=True, overlap=0.4, shifts=0, segment=segment)
        assert torch.equal(ours, ref[0, 3]), kind


def test_shifts_match_with_the_same_random_offsets(tmp_path: Path) -> None:
    model: Any = loaded("hdemucs", tmp_path)
    mix = normalised_mix(40000, 2)
    ours = streamed([BagMember(model, 1.0)], mix, [9000], Settings(shifts=2, seed=5))
    random.seed(5)  # apply_model draws its offsets from the global generator
    assert torch.equal(ours, reference(model, mix, shifts=2))


def test_a_bag_with_one_hot_weights_runs_only_the_vocals_model(tmp_path: Path) -> None:
    """htdemucs_ft's layout: four models, each trusted for one source."""
    models: list[Any] = [
        load_model(save_th(tiny_htdemucs(seed=i), tmp_path, f"ft{i}")) for i in range(4)
    ]
    weights = [[1.0 if j == i else 0.0 for j in range(4)] for i in range(4)]
    bag = BagOfModels(models, weights)
    mix = normalised_mix(30000, 3)
    members = [
        BagMember(None if w[3] == 0 else m, w[3]) for m, w in zip(models, weights, strict=True)
    ]
    ours = streamed(members, mix, [4096])
    assert torch.equal(ours, reference(bag, mix, shifts=0))


def test_a_bag_of_mixed_classes_with_a_segment(tmp_path: Path) -> None:
    """mdx_extra's layout: no weights (all ones), a bag segment, hybrid and time models."""
    models: list[Any] = [
        load_model(save_th(factory(seed=i), tmp_path, f"mx{i}"))
        for i, factory in enumerate([tiny_hdemucs, tiny_demucs, tiny_hdemucs, tiny_demucs])
    ]
    bag = BagOfModels(models, None, segment=0.6)  # sets each model's segment, as demucs does
    mix = normalised_mix(45000, 4)
    ours = streamed([BagMember(m, 1.0) for m in models], mix, [10000, 333])
    assert torch.equal(ours, reference(bag, mix, shifts=0))
