"""Local training: it learns, and the same seed gives the same weights."""

import copy
import itertools

import numpy as np
import pytest
import torch
from torch import nn

from fedrlprune.training import (
    as_tensors,
    batchnorm_statistics,
    evaluate,
    get_state,
    refresh_batchnorm,
    round_lr,
    set_state,
    train,
)


def _problem() -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    return as_tensors(x, y)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))


def test_training_learns_a_separable_problem() -> None:
    x, y = _problem()
    model = _model()
    before = evaluate(model, x, y)[1]
    result = train(model, x, y, epochs=20, batch_size=32, lr=0.1, seed=1)
    after = evaluate(model, x, y)[1]
    assert after > 0.95 and after > before
    assert result.samples == 20 * 256


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    x, y = _problem()
    runs = []
    for seed in (3, 3, 4):
        model = _model()
        train(model, x, y, epochs=1, batch_size=16, lr=0.1, momentum=0.9, seed=seed)
        runs.append(get_state(model))
    np.testing.assert_array_equal(runs[0]["0.weight"], runs[1]["0.weight"])
    assert not np.array_equal(runs[0]["0.weight"], runs[2]["0.weight"])


def test_state_round_trip_and_empty_evaluation() -> None:
    model = _model()
    state = get_state(model)
    state["0.bias"][:] = 7.0
    set_state(model, state)
    assert torch.all(model[0].bias == 7.0)
    loss, acc = evaluate(model, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert np.isnan(loss) and np.isnan(acc)


def test_core_is_trained_as_a_model_of_its_own_and_only_where_it_keeps() -> None:
    """One plain SGD step with a core: the gradient is the full model's plus the core model's,
    and the core's part reaches only the weights the core keeps."""
    x, y = _problem()
    x, y = x[:8], y[:8]
    core = {"0.weight": np.zeros((16, 4), bool)}
    core["0.weight"][:4] = True  # the core keeps the first 4 hidden units' input weights
    model = _model()
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    train(model, x, y, epochs=1, batch_size=8, lr=0.1, seed=0, core=core)

    reference = _model()
    loss_fn = nn.CrossEntropyLoss()
    full = torch.autograd.grad(loss_fn(reference(x), y), list(reference.parameters()))
    w = reference[0].weight
    masked = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    masked.load_state_dict(reference.state_dict())
    with torch.no_grad():
        masked[0].weight.mul_(torch.from_numpy(core["0.weight"]).float())
    sub = torch.autograd.grad(loss_fn(masked(x), y), list(masked.parameters()))
    keep = torch.from_numpy(core["0.weight"]).float()
    expected_w = w.detach() - 0.1 * (full[0] + sub[0] * keep)
    torch.testing.assert_close(model[0].weight.detach(), expected_w)
    torch.testing.assert_close(model[2].bias.detach(), start["2.bias"] - 0.1 * (full[3] + sub[3]))
    # outside the core, the first layer moved by the full model's gradient alone
    outside = ~core["0.weight"]
    torch.testing.assert_close(
        model[0].weight.detach()[outside], (start["0.weight"] - 0.1 * full[0])[outside]
    )


def test_round_lr_constant_or_annealed_over_the_rounds() -> None:
    assert [round_lr(0.1, "constant", r, 4) for r in (1, 4)] == [0.1, 0.1]
    cosine = [round_lr(0.1, "cosine", r, 4) for r in range(1, 5)]
    assert cosine[0] == pytest.approx(0.1)
    assert cosine[2] == pytest.approx(0.05)  # half way through the rounds, half the rate
    assert all(a > b > 0 for a, b in itertools.pairwise(cosine))
    with pytest.raises(ValueError, match="lr_schedule 'step'"):
        round_lr(0.1, "step", 1, 4)


def test_refresh_batchnorm_sets_the_statistics_of_the_weights_as_they_are() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten())
    bn = model[1]
    bn.running_mean.fill_(5.0)  # stale statistics, from weights that have moved since
    x = torch.randn(64, 2, 6, 6) * 3 + 1
    assert refresh_batchnorm(model, x, batch_size=16) == 64
    with torch.no_grad():
        features = model[0](x)
    assert torch.allclose(bn.running_mean, features.mean((0, 2, 3)), atol=1e-5)
    per_batch = torch.stack([features[i : i + 16].var((0, 2, 3)) for i in range(0, 64, 16)])
    assert torch.allclose(bn.running_var, per_batch.mean(0), rtol=1e-4)  # unbiased, per batch
    assert bn.momentum == 0.1  # restored: local training tracks as before
    assert batchnorm_statistics(model) == [
        "1.running_mean", "1.running_var", "1.num_batches_tracked"
    ]  # fmt: skip
    assert refresh_batchnorm(nn.Linear(2, 2), torch.randn(4, 2), 2) == 0


def test_micro_batches_take_the_same_step_as_the_whole_batch() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    twin = copy.deepcopy(model)
    x, y = torch.randn(40, 16), torch.randint(0, 3, (40,))
    whole = train(model, x, y, epochs=2, batch_size=16, lr=0.1, momentum=0.9)
    parts = train(twin, x, y, epochs=2, batch_size=16, lr=0.1, momentum=0.9, micro_batch=3)
    assert parts.loss == pytest.approx(whole.loss, rel=1e-5)
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
