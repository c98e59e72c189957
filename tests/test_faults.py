"""Faults: clients that fail, hang or come back late; rounds with too few replies.

The exchange is checked against a scripted grid (fast, exact timing), then a whole run on
Flower's simulation engine where one client raises and another hangs past `round_timeout`.
"""

import csv
import json
import os
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from uuid import uuid4

import numpy as np
import pytest
import torch
from flwr.app import Error, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from torch import nn

from fedrlprune.config import Config
from fedrlprune.data.federated import federate, global_test
from fedrlprune.data.user import user_dataset
from fedrlprune.errors import PayloadError
from fedrlprune.experiments.progress import RunProgress
from fedrlprune.experiments.runner import run_experiment
from fedrlprune.fl import protocol
from fedrlprune.fl.server_app import deploy_reply, exchange
from fedrlprune.training import as_tensors, evaluate

# ----------------------------------------------------------------------- the exchange alone


class ScriptedGrid:
    """Answers each node as told: 'ok', 'error', or 'never'; every pull also returns a late
    reply to a message of an earlier round, which the exchange must not take for this one."""

    def __init__(self, script: dict[int, str]) -> None:
        self.script = script
        self.pushed: list[Message] = []
        old = Message(RecordDict(), dst_node_id=101, message_type="train", group_id="0")
        old.metadata.__dict__["_message_id"] = uuid4().hex
        self.late = Message(RecordDict(), reply_to=old)  # from node 101, an earlier round

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = uuid4().hex
            self.pushed.append(msg)
        return [m.metadata.message_id for m in self.pushed]

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        wanted = set(message_ids)
        out = [self.late]
        for msg in self.pushed:
            answer = self.script[msg.metadata.dst_node_id]
            if msg.metadata.message_id not in wanted or answer == "never":
                continue
            if answer == "ok":
                out.append(Message(RecordDict(), reply_to=msg))
            else:
                out.append(Message(Error(code=0, reason="ValueError: boom"), reply_to=msg))
        return out


@pytest.fixture
def flower_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replies can only be built inside a Flower task; pretend to be one."""
    for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value)


def _exchange_with(script: dict[int, str], timeout: float) -> tuple[dict, dict, float]:
    nodes = {cid: 100 + cid for cid in script}  # client id -> node id
    grid = ScriptedGrid({100 + cid: answer for cid, answer in script.items()})
    cfg = Config.from_dict({"clients": len(script), "round_timeout": timeout})
    sent = {cid: RecordDict() for cid in script}
    t0 = time.monotonic()
    with RunProgress(1, "test", live=False) as progress:
        replies, drops = exchange(grid, nodes, sent, "train", cfg, 3, progress)  # type: ignore[arg-type]
    return replies, drops, time.monotonic() - t0


def test_exchange_drops_errors_and_timeouts_and_ignores_late_replies(
    flower_identity: None,
) -> None:
    replies, drops, seconds = _exchange_with({0: "ok", 1: "error", 2: "never", 3: "ok"}, 0.3)
    assert list(replies) == [0, 3]
    assert drops[1] == ("error", "ValueError: boom")
    assert drops[2] == ("timeout", "no reply within round_timeout=0.3 s")
    assert set(drops) == {1, 2}  # the late reply (node 101) counted for nobody
    assert 0.3 <= seconds < 2.0
    for cid, reply in replies.items():  # each reply answers the message sent to that client
        assert reply.metadata.src_node_id == 100 + cid


def test_exchange_without_timeout_returns_as_soon_as_everyone_answered(
    flower_identity: None,
) -> None:
    replies, drops, seconds = _exchange_with({0: "ok", 1: "error"}, 0.0)
    assert list(replies) == [0] and drops == {1: ("error", "ValueError: boom")}
    assert seconds < 1.0


@pytest.mark.parametrize(
    ("metrics", "words"),
    [
        ({"test-accuracy": 0.75}, None),
        ({"test-accuracy": 1.5}, "not a number in [0, 1]"),
        ({"test-loss": 0.3}, "test-accuracy is None"),
        (None, "lacks its model or its metrics"),
    ],
)
def test_a_deployment_reply_is_used_only_when_whole(
    metrics: dict[str, float] | None, words: str | None, flower_identity: None
) -> None:
    reference = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    mask = {"w": reference["w"] > 1}
    content = RecordDict({protocol.ARRAYS: protocol.pack(reference, mask)})
    if metrics is not None:
        content[protocol.METRICS] = MetricRecord(metrics)
    sent = Message(RecordDict(), dst_node_id=7, message_type="evaluate", group_id="3")
    sent.metadata.__dict__["_message_id"] = uuid4().hex
    reply = Message(content, reply_to=sent)
    if words is None:
        answer = deploy_reply(reply, reference, [])
        assert answer.accuracy == 0.75 and np.array_equal(answer.masks["w"], mask["w"])
    else:
        with pytest.raises(PayloadError, match=re.escape(words)):
            deploy_reply(reply, reference, [])


# ------------------------------------------------------------------- a run with bad clients

RAISE, HANG = 50.0, -50.0  # feature 0 of one training sample marks the client that misbehaves
TIMEOUT, HANG_SECONDS = 15.0, 22.0  # generous: this 2-core machine is shared


def _faulty_model_fn(flag: Path) -> Callable[[tuple[int, ...], int], nn.Module]:
    """A model that raises on a batch holding the RAISE sample, and the first time (over every
    worker process) it meets the HANG sample sleeps past the round timeout."""

    class Faulty(nn.Module):
        def __init__(self, features: int, classes: int) -> None:
            super().__init__()
            self.fc1 = nn.Linear(features, 16)
            self.fc2 = nn.Linear(16, classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.training and bool((x[:, 0] > RAISE / 4).any()):
                raise RuntimeError("this client's hardware failed")
            if self.training and bool((x[:, 0] < HANG / 4).any()):
                try:
                    os.close(os.open(flag, os.O_CREAT | os.O_EXCL))  # first time only
                    time.sleep(HANG_SECONDS)
                except FileExistsError:
                    pass
            return self.fc2(torch.relu(self.fc1(x)))

    return lambda shape, classes: Faulty(shape[0], classes)


@pytest.mark.skipif(
    (os.cpu_count() or 1) < 2, reason="the hung client holds one of the engine's workers"
)
def test_a_run_survives_a_client_that_raises_and_one_that_hangs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=2.0, size=(3, 6))
    y_train, y_test = rng.integers(0, 3, 400), rng.integers(0, 3, 150)
    x_train = (centers[y_train] + rng.normal(size=(400, 6))).astype(np.float32)
    x_test = (centers[y_test] + rng.normal(size=(150, 6))).astype(np.float32)
    cfg = {
        "method": "fedavg",
        "clients": 4,
        "rounds": 2,
        "partition": "iid",
        "local_epochs": 1,
        "lr": 0.05,
        "round_timeout": TIMEOUT,
        "min_clients": 3,
        "latency_runs": 0,
    }
    # Who holds which sample depends on labels and seed only: mark one training sample of
    # client 1 (it will raise) and one of client 2 (it will hang once).
    fed = federate(Config.from_dict(cfg), user_dataset((x_train, y_train, x_test, y_test)))
    x_train[fed.clients[1].train[0], 0] = RAISE
    x_train[fed.clients[2].train[0], 0] = HANG
    data = (x_train, y_train, x_test, y_test)
    model_fn = _faulty_model_fn(tmp_path / "hung-once")

    out = tmp_path / "faults"
    summary = run_experiment(cfg, model_fn=model_fn, data=data, out_dir=out, live=False)

    assert summary["rounds_completed"] == 2
    dropped = summary["dropped_clients"]
    assert [(d["client"], d["reason"]) for d in dropped["1"]] == [(1, "error"), (2, "timeout")]
    assert "hardware failed" in dropped["1"][0]["detail"]
    assert [(d["client"], d["reason"]) for d in dropped["2"]] == [(1, "error")]
    assert "deploy" not in dropped  # client 1 trains badly, but deploys (evaluates) fine
    assert summary["failed_clients"] == [1, 2]
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["clients_dropped"] for r in rows] == ["1;2", "1"]
    assert [r["clients_replied"] for r in rows] == ["2", "3"]
    # The server gave up on the hung client at the timeout, not when it woke up.
    assert TIMEOUT <= float(rows[0]["round_seconds"]) < HANG_SECONDS
    # Round 1 had 2 accepted replies < min_clients=3: the global model stayed the initial one.
    assert [r["global_updated"] for r in rows] == ["0", "1"]
    assert summary["rounds_without_update"] == [1]
    torch.manual_seed(0)
    initial = model_fn((6,), 3)
    x, y = as_tensors(*global_test(Config.from_dict(cfg), user_dataset(data)))
    assert float(rows[0]["test_loss"]) == pytest.approx(evaluate(initial, x, y)[0], rel=1e-5)
    assert float(rows[1]["test_loss"]) != pytest.approx(float(rows[0]["test_loss"]), rel=1e-3)
    assert "fewer than min_clients=3" in (out / "run.log").read_text()
    # Deployment heard from everyone: each client has its local accuracy.
    assert all(c["accuracy_local_test"] is not None for c in summary["per_client"])
    assert json.loads((out / "summary.json").read_text())["dropped_clients"] == dropped
    report = (out / "report.md").read_text()
    assert "Clients dropped at least once: 1, 2" in report and "min_clients" in report
