"""Synthetic(alpha, beta): the federated dataset of FedProx, generated from the seed, no files.

Li et al., "Federated Optimization in Heterogeneous Networks" (MLSys 2020), section 5.1, and
their generator `data/synthetic_1_1/generate_synthetic.py` (github.com/litian96/FedProx).
Client k has its own softmax model and its own input distribution:

    u_k ~ N(0, alpha),  W_k ~ N(u_k, 1) (60 x 10),  b_k ~ N(u_k, 1) (10)
    B_k ~ N(0, beta),   v_k ~ N(B_k, 1) (60),       x ~ N(v_k, Sigma), Sigma_jj = j^-1.2
    y = argmax(softmax(x W_k + b_k))

and lognormal(4, 2) + 50 samples (rounded down), so a few clients hold most of the data.
`beta` spreads the clients' inputs. `alpha` is meant to spread their models, but u_k is one
number added to every entry of W_k and b_k, so it adds u_k (1 + sum x) to every class's logit
alike and the argmax never sees it: as published, alpha changes no sample (the clients' models
differ anyway, through their own N(0, 1) draws). The draws follow the official
script's order on numpy's legacy generator, so `np.random.seed(s)` before it gives the same
data as `seed = s` here (for `clients = 30`, its NUM_USER). Like the official script, each
client's last 10% (int(0.9 n) kept for training) is its held-out test share.

Departures from the official script:
- `alpha` and `beta` are standard deviations of the normals, as in the official code (the
  paper writes them as variances; the two agree for the published 0, 0.5 and 1);
- labels are the argmax of the logits: the same as the argmax of the softmax, without the
  overflow of its unshifted `exp` at extreme alpha (where it returns NaN and class 0);
- no shuffle before the 90/10 cut: a client's samples are drawn i.i.d., so it changes nothing
  in distribution, and the script's shuffle was unseeded anyway;
- the number of clients is the config's `clients`, not fixed at 30.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from fedrlprune.data.loaders import ArrayDataset

FEATURES = 60
CLASSES = 10
TRAIN_SHARE = 0.9  # the official script's per-client train/test cut


def generate(
    num_clients: int, alpha: float, beta: float, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each client's (x float64 N_k x 60, y int64 N_k) by the official procedure and draw order."""
    rng = np.random.RandomState(seed)
    counts = rng.lognormal(4, 2, num_clients).astype(int) + 50
    mean_w = rng.normal(0, alpha, num_clients)  # u_k, also the mean of b_k
    centre = rng.normal(0, beta, num_clients)  # B_k
    mean_x = [rng.normal(centre[k], 1, FEATURES) for k in range(num_clients)]
    root = _cov_root()
    clients = []
    for k in range(num_clients):
        w = rng.normal(mean_w[k], 1, (FEATURES, CLASSES))
        b = rng.normal(mean_w[k], 1, CLASSES)
        x = rng.standard_normal((counts[k], FEATURES)) @ root + mean_x[k]
        clients.append((x, np.argmax(x @ w + b, axis=1).astype(np.int64)))
    return clients


def _cov_root() -> np.ndarray:
    """The factor numpy's legacy `multivariate_normal` multiplies standard normals by, from
    its SVD of Sigma: the same numbers as calling it per client, one SVD instead of one each
    (a 60 x 60 SVD per client is what made generation slow on a loaded machine)."""
    cov = np.diag(np.arange(1, FEATURES + 1, dtype=np.float64) ** -1.2)
    _, s, v = np.linalg.svd(cov)
    return np.sqrt(s)[:, None] * v


@lru_cache(maxsize=4)
def synthetic_dataset(num_clients: int, alpha: float, beta: float, seed: int) -> ArrayDataset:
    """Synthetic(alpha, beta) as a dataset: the train split is every client's first 90%, its
    `owners` say whose each sample is (the natural split), the test split the clients' last
    10%. Not standardised: the official data is used as generated."""
    parts = [_cut(x, y, k) for k, (x, y) in enumerate(generate(num_clients, alpha, beta, seed))]
    x_train, y_train, owners, x_test, y_test = (np.concatenate(a) for a in zip(*parts, strict=True))
    arrays = (x_train.astype(np.float32), y_train, x_test.astype(np.float32), y_test, owners)
    for array in arrays:
        array.setflags(write=False)
    return ArrayDataset("synthetic", *arrays[:4], num_classes=CLASSES, owners=arrays[4])


def _cut(x: np.ndarray, y: np.ndarray, client: int) -> tuple[np.ndarray, ...]:
    """(x_train, y_train, owners, x_test, y_test) of one client, cut as the official script."""
    n = int(TRAIN_SHARE * len(y))
    return x[:n], y[:n], np.full(n, client, dtype=np.int64), x[n:], y[n:]
