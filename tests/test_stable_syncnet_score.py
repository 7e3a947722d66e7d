"""The ``stable-syncnet`` scorer at full size (random weights in the published format,
``{"state_dict": ...}``, 1.6 GB, written once per module): strict loading, the registry, missing
weights, and the scorer contract (slow: 401M parameters, about a second per window on 2 cores)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from lipkit_conformance import SyncScorerContract
from lipkit_syncnet.stable_checkpoint import load_stable_syncnet
from lipkit_syncnet.stable_model import StableSyncNet
from lipkit_syncnet.stable_scorer import STABLE_WEIGHTS, StableSyncNetParams, StableSyncNetScorer
from stable_syncnet_helpers import random_stable_syncnet, save_published

from lipkit.errors import ModelError
from lipkit.interfaces import SyncScorer
from lipkit.media.track import AudioTrack
from lipkit.plugins import load_registry
from lipkit.specs import DeviceInfo

CPU = DeviceInfo(id="cpu", kind="cpu", name="cpu", total_memory=0, free_memory=0)


@pytest.fixture(scope="module")
def published() -> StableSyncNet:
    return random_stable_syncnet(seed=5)


@pytest.fixture(scope="module")
def stable_home(tmp_path_factory: pytest.TempPathFactory, published: StableSyncNet) -> Path:
    home = tmp_path_factory.mktemp("stable-syncnet")
    save_published(published, home / STABLE_WEIGHTS.filename)
    return home


def test_the_published_format_loads_strictly_with_equal_weights(
    stable_home: Path, published: StableSyncNet
) -> None:
    loaded = load_stable_syncnet(stable_home / "stable_syncnet.pt")
    assert not loaded.training
    want = published.state_dict()
    assert set(loaded.state_dict()) == set(want)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, want[key]), key


def test_the_registry_lists_it_below_syncnet() -> None:
    registry = load_registry(allow=["syncnet"])
    scorers = registry.sync_scorers
    assert {"syncnet", "stable-syncnet"} <= set(scorers)
    stable = scorers["stable-syncnet"]
    assert isinstance(stable, StableSyncNetScorer)
    assert stable.spec.rank < scorers["syncnet"].spec.rank
    # `auto` takes the highest (rank, name), as lipkit.scoring.run.pick_scorer
    assert max(scorers.values(), key=lambda s: (s.spec.rank, s.spec.name)).spec.name == "syncnet"
    assert (stable.spec.crop_size, stable.spec.window_frames, stable.spec.max_offset) == (
        256,
        16,
        15,
    )
    assert STABLE_WEIGHTS.hf_repo == "ByteDance/LatentSync-1.6"


def test_missing_weights_are_listed_and_named(tmp_path: Path, stable_home: Path) -> None:
    scorer = StableSyncNetScorer()
    assert scorer.missing_weights(StableSyncNetParams(), tmp_path) == ["stable_syncnet"]
    assert scorer.missing_weights(StableSyncNetParams(), stable_home) == []
    given = StableSyncNetParams(checkpoint=tmp_path / "x.pt")
    assert scorer.missing_weights(given, stable_home) == [str(tmp_path / "x.pt")]
    silence = AudioTrack.from_array(np.zeros(16000, np.float32))
    with pytest.raises(ModelError, match="stable_syncnet.pt"):
        scorer.score([], silence, params=StableSyncNetParams(), model_home=tmp_path, device=CPU)


def test_syncnet_v2_in_its_place_is_refused(tmp_path: Path) -> None:
    from syncnet_helpers import random_syncnet
    from syncnet_helpers import save_published as save_syncnet

    path = save_syncnet(random_syncnet(0), tmp_path / "stable_syncnet.pt")
    with pytest.raises(ModelError) as info:
        load_stable_syncnet(path)
    assert "syncnet_v2.model" in str(getattr(info.value, "hint", ""))


@pytest.mark.slow
class TestStable(SyncScorerContract):
    """The contract on the full-size scorer (random weights in the published format)."""

    @pytest.fixture
    def scorer(self) -> SyncScorer:
        return load_registry(allow=["syncnet"]).sync_scorers["stable-syncnet"]

    @pytest.fixture
    def model_home(self, stable_home: Path) -> Path:
        return stable_home
