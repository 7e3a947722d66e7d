"""SyncNet plugin: strict loading of syncnet_v2.model, the registry, missing weights."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
import torch
from lipkit_syncnet import SyncNetParams, SyncNetScorer
from lipkit_syncnet.checkpoint import load_syncnet
from lipkit_syncnet.model import EMBED_DIM, SyncNet
from syncnet_helpers import random_syncnet, save_published

from lipkit.errors import ModelError
from lipkit.plugins import load_registry

NUM_PARAMETERS = 13_631_616


def published_keys() -> set[str]:
    return set(SyncNet().state_dict())


def test_architecture_has_the_published_names_and_size() -> None:
    model = SyncNet()
    keys = published_keys()
    assert {k.split(".")[0] for k in keys} == {"netcnnaud", "netfcaud", "netcnnlip", "netfclip"}
    for key in (
        "netcnnaud.18.weight",
        "netcnnlip.18.weight",
        "netfcaud.3.weight",
        "netfclip.1.running_var",
    ):
        assert key in keys
    assert tuple(model.state_dict()["netcnnlip.0.weight"].shape) == (96, 3, 5, 7, 7)
    assert tuple(model.state_dict()["netcnnaud.18.weight"].shape) == (512, 256, 5, 4)
    assert tuple(model.state_dict()["netfclip.3.weight"].shape) == (EMBED_DIM, 512)
    assert sum(p.numel() for p in model.parameters()) == NUM_PARAMETERS
    with torch.inference_mode():
        assert model.embed_lips(torch.zeros(2, 3, 5, 224, 224)).shape == (2, EMBED_DIM)
        assert model.embed_audio(torch.zeros(2, 1, 13, 20)).shape == (2, EMBED_DIM)


@pytest.mark.parametrize("legacy", [True, False])
def test_published_format_loads_strictly_with_equal_weights(tmp_path: Path, legacy: bool) -> None:
    model = random_syncnet(3)
    path = save_published(model, tmp_path / "syncnet_v2.model", legacy=legacy)
    loaded = load_syncnet(path)
    assert not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_old_files_without_batch_counters_load(tmp_path: Path) -> None:
    state = collections.OrderedDict(
        (k, v) for k, v in random_syncnet(1).state_dict().items() if "num_batches" not in k
    )
    torch.save(state, tmp_path / "old.model", _use_new_zipfile_serialization=False)
    load_syncnet(tmp_path / "old.model")


def test_a_missing_key_is_refused(tmp_path: Path) -> None:
    state = random_syncnet(0).state_dict()
    del state["netfclip.3.bias"]
    torch.save(state, tmp_path / "m.model")
    with pytest.raises(ModelError, match=r"missing keys \(1\): netfclip\.3\.bias"):
        load_syncnet(tmp_path / "m.model")


def test_an_unexpected_key_is_refused(tmp_path: Path) -> None:
    state = random_syncnet(0).state_dict()
    state["extra.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "m.model")
    with pytest.raises(ModelError, match="unexpected keys"):
        load_syncnet(tmp_path / "m.model")


def test_a_wrong_shape_is_refused(tmp_path: Path) -> None:
    state = random_syncnet(0).state_dict()
    state["netfcaud.3.weight"] = torch.zeros(512, 512)  # num_layers_in_fc_layers 512
    torch.save(state, tmp_path / "m.model")
    with pytest.raises(
        ModelError, match=r"netfcaud\.3\.weight: file \(512, 512\) vs model \(1024, 512\)"
    ):
        load_syncnet(tmp_path / "m.model")


class Payload:
    """Anything a weights-only unpickler must not construct."""


def test_a_pickle_with_a_global_is_refused(tmp_path: Path) -> None:
    state: dict[str, object] = dict(random_syncnet(0).state_dict())
    state["payload"] = Payload()
    torch.save(state, tmp_path / "evil.model")
    with pytest.raises(ModelError, match="pickled Python code") as info:
        load_syncnet(tmp_path / "evil.model")
    assert info.value.hint and "safetensors" in info.value.hint


def test_a_whole_pickled_module_is_refused(tmp_path: Path) -> None:
    torch.save(random_syncnet(0), tmp_path / "module.model")  # torch.save(model), not its state
    with pytest.raises(ModelError, match="pickled Python code"):
        load_syncnet(tmp_path / "module.model")


def test_wav2lip_expert_gets_a_hint(tmp_path: Path) -> None:
    torch.save({"face_encoder.0.weight": torch.zeros(1)}, tmp_path / "expert.pth")
    with pytest.raises(ModelError) as info:
        load_syncnet(tmp_path / "expert.pth")
    assert info.value.hint and "lipsync_expert" in info.value.hint


def test_the_registry_lists_the_scorer() -> None:
    registry = load_registry(allow=["syncnet"])
    scorer = registry.sync_scorers["syncnet"]
    assert isinstance(scorer, SyncNetScorer)
    spec = scorer.spec
    assert (spec.fps, spec.crop_size, spec.crop_scale, spec.window_frames, spec.max_offset) == (
        25.0, 224, 0.4, 5, 15,
    )  # fmt: skip
    (weight,) = spec.weights
    assert weight.filename == "syncnet_v2.model" and weight.param == "checkpoint"
    assert weight.url and weight.url.endswith("/lipsync/data/syncnet_v2.model")
    assert (weight.hf_repo, weight.hf_filename) == (
        "ByteDance/LatentSync-1.5",
        "auxiliary/syncnet_v2.model",
    )


def test_missing_weights(tmp_path: Path) -> None:
    scorer = SyncNetScorer()
    assert scorer.missing_weights(SyncNetParams(), tmp_path) == ["syncnet_v2"]
    given = tmp_path / "elsewhere.model"
    assert scorer.missing_weights(SyncNetParams(checkpoint=given), tmp_path) == [str(given)]
    save_published(random_syncnet(0), tmp_path / "syncnet_v2.model")
    assert scorer.missing_weights(SyncNetParams(), tmp_path) == []
    save_published(random_syncnet(0), given)
    assert scorer.missing_weights(SyncNetParams(checkpoint=given), tmp_path) == []
