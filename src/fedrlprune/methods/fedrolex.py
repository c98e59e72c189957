"""FedRolex: HeteroFL's widths, but each sub-model is a window that rolls over the channels.

Paper: S. Alam, L. Liu, M. Yan, M. Zhang, "FedRolex: Model-Heterogeneous Federated Learning with
Rolling Sub-Model Extraction", NeurIPS 2022. Official code: github.com/AIoT-MLSys-Lab/FedRolex
(`resnet_server.py`: `ResnetServerRoll.split_model`, `combine`; `main_resnet.py`).

What it does. Everything is `heterofl`'s (module `heterofl.py`: widths from the device budgets,
coupled channels cut together, the merge over the clients that held each entry, a dense global
model) except which channels a sub-model keeps: in round r a layer of C channels at width k
keeps channels (r + i) mod C for i < k (the paper's S = {r, ..., r + k - 1} mod C), so the
window moves one channel a round and every channel of the global model is trained by narrow
clients in turn, not only the first ones. At the end each client deploys the window of the
last round at its width: the sub-model its width trained last.

Where we depart from the official code, and why (beside `heterofl.py`'s list, which holds here
too, the scaler, static BatchNorm and label masking included):
- The window moves forward, as in the paper; the official `torch.roll(arange(C), r)` keeps
  (i - r) mod C, the same windows in the opposite order. Rounds count from 1 here, so round 1
  keeps the first channels, as the official round 0 does.
- The official script evaluates only the full global model; here the full global model is
  evaluated each round (metrics.csv) and each client also deploys a sub-model within its budget.
- Conv weights merge unweighted over their holders (the official default `weighting = avg`).
  The official `combine` weights BatchNorm, bias and head entries by how often each entry was
  updated so far (`tmp_counts`; as written, the counter also grows within a round, client by
  client, so later clients weigh more); we merge those unweighted over their holders too.
- The official `overlap` option (a shuffled order and larger steps) is not offered; its default,
  no overlap, is the rule above.
"""

from __future__ import annotations

import numpy as np

from fedrlprune.methods.heterofl import HeteroFL


def rolling_channels(size: int, width: int, rnd: int) -> np.ndarray:
    """FedRolex's rule: channels (rnd - 1 + i) mod size for i < width, a window that moves one
    channel a round (rounds count from 1) and wraps around."""
    alive = np.zeros(size, dtype=bool)
    alive[(rnd - 1 + np.arange(width)) % size] = True
    return alive


class FedRolex(HeteroFL):
    """HeteroFL with a rolling window of channels in place of the first ones."""

    name = "fedrolex"
    summary = "FedRolex: HeteroFL's widths, each sub-model a window rolling one channel a round"

    def kept(self, size: int, width: int, rnd: int) -> np.ndarray:
        return rolling_channels(size, width, rnd)
