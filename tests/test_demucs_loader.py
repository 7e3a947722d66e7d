"""The Demucs checkpoint loader: both published formats load; anything that would run code,
name another class or need diffq is refused with a ModelError, without running it."""

from __future__ import annotations

import argparse
import fractions
import os
from pathlib import Path

import pytest
import torch
from demucs_helpers import (
    save_published,
    save_safetensors,
    save_th,
    th_package,
    tiny_demucs,
    tiny_hdemucs,
    tiny_htdemucs,
)
from lipkit_demucs import catalog
from lipkit_demucs.checkpoint import load_model

from lipkit.errors import ConfigError, ModelError


class _Boom:
    """Pickles as a call to os.system: loading it must not run the command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("factory", [tiny_htdemucs, tiny_hdemucs, tiny_demucs])
def test_published_th_and_safetensors_load(factory: object, tmp_path: Path) -> None:
    model = factory()  # type: ignore[operator]
    from_th = load_model(save_th(model, tmp_path, "abcd1234", half=False))
    from_st = load_model(save_safetensors(model, tmp_path / "abcd1234.safetensors"))
    for loaded in (from_th, from_st):
        assert type(loaded) is type(model) and not loaded.training
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key
    assert from_th.segment == model.segment  # a Fraction for HTDemucs, through both formats


def test_a_half_precision_state_is_widened(tmp_path: Path) -> None:
    model = load_model(save_th(tiny_htdemucs(), tmp_path, "abcd1234", half=True))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert isinstance(model.segment, fractions.Fraction)


def test_a_reduce_to_os_system_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    package = th_package(tiny_htdemucs())
    package["training_args"] = _Boom(marker)
    path = save_published(package, tmp_path, "evil0001")
    with pytest.raises(ModelError, match=r"refused.*(posix|os)\.system"):
        load_model(path)
    assert not marker.exists()


def test_an_extra_class_is_refused(tmp_path: Path) -> None:
    package = th_package(tiny_hdemucs())
    package["training_args"] = argparse.Namespace(lr=1.0)
    with pytest.raises(ModelError, match="argparse.Namespace"):
        load_model(save_published(package, tmp_path, "evil0002"))


def test_an_allowed_global_that_is_no_model_is_refused(tmp_path: Path) -> None:
    package = th_package(tiny_demucs())
    package["klass"] = fractions.Fraction
    with pytest.raises(ModelError, match="not a Demucs model class"):
        load_model(save_published(package, tmp_path, "evil0003"))


def test_a_bare_state_dict_is_refused(tmp_path: Path) -> None:
    path = save_published(tiny_demucs().state_dict(), tmp_path, "bare0001")
    with pytest.raises(ModelError, match="not a Demucs checkpoint"):
        load_model(path)


def test_a_quantized_state_is_refused(tmp_path: Path) -> None:
    package = th_package(tiny_demucs())
    package["state"] = {"__quantized": True, "packed": torch.zeros(3)}
    with pytest.raises(ModelError, match="diffq-quantized"):
        load_model(save_published(package, tmp_path, "quant001"))
    model = tiny_demucs()
    path = save_safetensors(model, tmp_path / "q.safetensors", extra={"structure": "{}"})
    with pytest.raises(ModelError, match="diffq-quantized"):
        load_model(path)
    with pytest.raises(ConfigError, match="quantized"):
        catalog.resolve("mdx_extra_q", tmp_path)


@pytest.mark.parametrize("klass", ["os.system", "builtins.eval", "demucs.apply.BagOfModels"])
def test_safetensors_klass_must_be_a_model_class(klass: str, tmp_path: Path) -> None:
    path = save_safetensors(tiny_demucs(), tmp_path / "x.safetensors", klass=klass)
    with pytest.raises(ModelError, match="refused"):
        load_model(path)


def test_a_truncated_published_file_fails_its_checksum(tmp_path: Path) -> None:
    path = save_th(tiny_demucs(), tmp_path, "trunc001")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ModelError, match="sha256"):
        load_model(path)


def test_garbage_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.th"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError):
        load_model(path)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ModelError):
        load_model(tmp_path / "junk.safetensors")


def test_a_state_of_another_model_is_a_model_error(tmp_path: Path) -> None:
    package = th_package(tiny_demucs())
    package["state"] = tiny_hdemucs().state_dict()
    with pytest.raises(ModelError, match="another model than its tensors"):
        load_model(save_published(package, tmp_path, "wrong001"))


class _BuildsAModel:
    """Pickles as a *call* of HTDemucs (REDUCE), as a crafted file could, to make a model of
    any size inside torch.load."""

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        from demucs.htdemucs import HTDemucs

        return (HTDemucs, (["vocals"],))


def test_a_call_of_a_model_class_while_unpickling_is_refused(tmp_path: Path) -> None:
    package = th_package(tiny_htdemucs())
    package["kwargs"] = {"channels": _BuildsAModel()}
    with pytest.raises(ModelError, match="refused"):
        load_model(save_published(package, tmp_path, "call0001"))


def test_arguments_that_are_not_plain_values_are_refused(tmp_path: Path) -> None:
    package = th_package(tiny_htdemucs())
    package["kwargs"] = {**package["kwargs"], "sources": [fractions.Fraction(1, 2)] * 2000}
    with pytest.raises(ModelError, match="plain values"):
        load_model(save_published(package, tmp_path, "plain001"))


def test_arguments_for_a_huge_model_are_refused_before_it_is_built(tmp_path: Path) -> None:
    package = th_package(tiny_htdemucs())
    package["kwargs"] = {**package["kwargs"], "channels": 4096}  # ~ a 100 GB model
    with pytest.raises(ModelError, match="another model than its tensors"):
        load_model(save_published(package, tmp_path, "huge0001"))
