"""Train the compact sub-model a structured mask leaves, then put it back in dense coordinates.

A structured client that trains the dense model with its pruned channels held at zero pays the
dense model's compute for them. HeteroFL (Diao et al., ICLR 2021) and FedRolex (Alam et al.,
NeurIPS 2022) train the sub-model itself and write it back into the global coordinates; here the
sub-model is ``compact_model``'s (pruned channels removed, with every coupled slice) and
``kept_indices`` says where each of its entries sits in the dense state.

``expand`` gives what masked dense training would leave, with one chosen difference: entries
the sub-model lacks keep the values received. For parameters this is masked training's result
too (pruned entries are zero; a removed channel's input columns in the next layer get zero
gradient, as the channel's output is exactly zero) except under weight decay, which masked
training applies to those columns although they compute nothing. For a removed channel's
BatchNorm running statistics masked training feeds zeros, decaying them by ``1 - momentum`` per
batch toward a variance of 0, which the merge would average into the global model as if the
client had seen such a channel; keeping the received values adds nothing it did not learn.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from torch import nn

from fedrlprune.pruning.compact import Index, compact_model, kept_indices
from fedrlprune.state import Masks, State


@dataclass(frozen=True)
class SubModel:
    """A compact model and where each of its state entries sits in the dense state."""

    model: nn.Module
    index: Index


def extract(model: nn.Module, masks: Masks, input_shape: tuple[int, ...]) -> SubModel:
    """The compact sub-model of ``model`` under structured ``masks`` (masked entries zeroed),
    in ``model``'s training mode. Refused with FedRLPruneError as ``compact_model`` refuses."""
    return SubModel(
        compact_model(model, masks, input_shape), kept_indices(model, masks, input_shape)
    )


def to_compact(arrays: Mapping[str, np.ndarray], index: Index) -> dict[str, np.ndarray]:
    """Dense-coordinate arrays (a state, masks, a core) cut to the sub-model's entries."""
    return {
        key: np.asarray(np.asarray(value)[np.ix_(*index[key])]) for key, value in arrays.items()
    }


def expand(compact: Mapping[str, np.ndarray], index: Index, base: State) -> State:
    """``base`` (the dense state trained from, masked entries zero) with the sub-model's
    ``compact`` state written over the entries it kept; the rest keep ``base``'s values."""
    out = {key: np.array(value, copy=True) for key, value in base.items()}
    for key, value in compact.items():
        out[key][np.ix_(*index[key])] = value
    return out
