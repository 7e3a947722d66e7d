"""Parameter models: :class:`NoParams` and :func:`as_params`."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel


class NoParams(BaseModel):
    """Parameter model for implementations that take none."""

    model_config = {"extra": "forbid"}


ParamsT = TypeVar("ParamsT", bound=BaseModel)


def as_params(params: BaseModel, model: type[ParamsT]) -> ParamsT:
    """``params`` as an instance of ``model``: the resolver passes one already; a caller may pass
    another model with the same fields (validated again)."""
    if isinstance(params, model):
        return params
    return model.model_validate(params.model_dump())
