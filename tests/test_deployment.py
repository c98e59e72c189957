"""End to end on Flower's deployment engine, on loopback: one SuperLink and three SuperNodes as
separate processes, TLS on, SuperNode authentication on, driven by Flower's own CLI
(`flower-superlink`, `flower-supernode`, `flwr supernode register`, `flwr run`).

Every process started here carries a marker in its environment; the fixture's teardown ends
each of them (and whatever Flower started below them) by its id, also when a test fails. Ports
are picked at run time, FLWR_HOME is a temporary folder, and every wait polls with a deadline
under one overall bound, so a broken federation fails the test instead of hanging CI.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # flower-superlink, flower-supernode and flwr live here
NODES = 3
TOTAL_SECONDS = 900.0  # the whole module: no wait below may outlast it
RUN_SECONDS = 420.0  # one `flwr run`
MARKER = "FEDRLPRUNE_E2E_FEDERATION"
# Tiny runs: scikit-learn's digits (bundled, no files), an MLP, one SuperNode per client.
BASE_RUN = {"dataset": "digits", "model": "mlp", "clients": NODES, "rounds": 2, "local_epochs": 2,
            "latency_runs": 0}  # fmt: skip
CHANCE = 0.1  # ten digit classes


_TAKEN: set[int] = set()


def _free_port() -> int:
    """A free port below the kernel's ephemeral range: a port the OS hands out (bind to 0) can
    be taken by any outgoing connection before the SuperNode that was given it binds it."""
    ranges = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low = int(ranges.read_text().split()[0]) if ranges.exists() else 32768
    rng = random.Random()
    while True:
        port = rng.randrange(max(1024, low - 12000), low)
        if port in _TAKEN:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _TAKEN.add(port)
        return port


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _marked(marker: str) -> list[int]:
    """Ids of the live processes whose environment holds this federation's marker."""
    found = []
    needle = f"{MARKER}={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0") and _alive(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return found


def _alive(pid: int) -> bool:
    """True while the process runs (a zombie waiting for its parent counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _descendants(pid: int) -> list[int]:
    """The process and everything below it (Flower starts its SuperExec in a new session, so a
    process group would miss it)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    return repr(value)


class Federation:
    """A SuperLink and NODES SuperNodes on loopback with TLS and SuperNode authentication."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.deadline = time.monotonic() + TOTAL_SECONDS
        self.marker = uuid.uuid4().hex
        self.certs = root / "certs"
        self.port = _free_port()
        self.node_ports = [_free_port() for _ in range(NODES)]
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "FLWR_HOME": str(root / "flwr-home"),
            MARKER: self.marker,
            "PYTHONUNBUFFERED": "1",
            # four Python processes share CI's two cores: one torch thread each, no contention
            "OMP_NUM_THREADS": "1",
        }
        self.superlink: subprocess.Popen[bytes] | None = None
        self.nodes: dict[int, subprocess.Popen[bytes]] = {}
        self.node_ids: dict[int, str] = {}  # partition -> SuperNode id given at registration

    def left(self, cap: float = TOTAL_SECONDS) -> float:
        """Seconds this wait may take: at most `cap`, never past the module's deadline."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"the deployment tests ran past {TOTAL_SECONDS:.0f} s")
        return min(cap, remaining)

    def wait_for(self, what: str, check: Any, cap: float, every: float = 0.5) -> None:
        """Poll `check()` until it is true; fail naming `what` after `cap` seconds."""
        end = time.monotonic() + self.left(cap)
        while not check():
            if time.monotonic() > end:
                raise TimeoutError(f"timed out after {cap:.0f} s waiting for {what}")
            time.sleep(every)

    def spawn(
        self, args: list[str], log: Path, home: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a Flower process in its own session; `home`: its own FLWR_HOME (a device's)."""
        env = self.env if home is None else {**self.env, "FLWR_HOME": str(home)}
        with log.open("ab") as out:
            return subprocess.Popen(
                args,
                cwd=self.root,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, away from pytest's signals
            )

    def flwr(self, *args: str, cap: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "flwr"), *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=self.left(cap),
        )

    def start(self) -> None:
        made = subprocess.run(
            ["bash", str(REPO / "scripts" / "make_certs.sh"), str(self.certs), str(NODES)],
            capture_output=True,
            text=True,
            timeout=self.left(60),
        )
        assert made.returncode == 0, f"scripts/make_certs.sh failed: {made.stderr}"
        home = Path(self.env["FLWR_HOME"])
        home.mkdir()
        # The `flwr` CLI's connection to this SuperLink: its address and the CA to trust.
        (home / "config.toml").write_text(
            '[superlink]\ndefault = "e2e"\n\n[superlink.e2e]\n'
            f'address = "127.0.0.1:{self.port}"\n'
            f'root-certificates = "{self.certs / "ca.crt"}"\n'
        )
        c = self.certs
        self.superlink = self.spawn(
            [
                str(BIN / "flower-superlink"),
                "--ssl-ca-certfile", str(c / "ca.crt"),
                "--ssl-certfile", str(c / "server.crt"),
                "--ssl-keyfile", str(c / "server.key"),
                "--enable-supernode-auth",
                "--disable-runtime-dependency-installation",  # run in this environment
                "--host", "127.0.0.1",
                "--port", str(self.port),
            ],
            self.root / "superlink.log",
        )  # fmt: skip
        self.wait_for("the SuperLink's port", lambda: _listening(self.port), 120, 0.2)
        for k in range(NODES):
            self.node_ids[k] = self.register(k)
        for k in range(NODES):
            self.start_node(k)
        for k in range(NODES):
            self.wait_joined(k)

    def register(self, k: int) -> str:
        """`flwr supernode register` node k's public key (retried while the SuperLink starts)."""
        end = time.monotonic() + self.left(120)
        while True:
            assert self.superlink is not None
            assert self.superlink.poll() is None, self.log("superlink")
            done = self.flwr(
                "supernode", "register", str(self.certs / f"supernode-{k}.pub"), "--format", "json"
            )
            reply = json.loads(done.stdout) if done.stdout.lstrip().startswith("{") else {}
            if done.returncode == 0 and reply.get("success"):
                return str(reply["node-id"])
            if time.monotonic() > end:
                raise TimeoutError(f"could not register SuperNode {k}: {done.stdout}{done.stderr}")
            time.sleep(1.0)

    def joined(self, k: int) -> list[str]:
        """The node ids SuperNode k's log reports, one per time it was let in (cheaper to poll
        than `flwr supernode list`, a Python process per call)."""
        path = self.root / f"supernode-{k}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return [
            line.split("SuperNode ID:")[1].strip()
            for line in text.splitlines()
            if "SuperNode ID:" in line
        ]

    def wait_joined(self, k: int, before: int = 0) -> None:
        """Wait until SuperNode k is let in (again), then check the SuperLink lists it online
        under the node id its registered key was given."""

        def check() -> bool:
            assert self.nodes[k].poll() is None, self.log(f"supernode-{k}")
            return len(self.joined(k)) > before

        self.wait_for(f"SuperNode {k} to join", check, 180)
        assert self.joined(k)[-1] == self.node_ids[k]
        self.wait_for(
            f"SuperNode {k} online",
            lambda: self.statuses().get(self.node_ids[k]) == "online",
            60,
            1.0,
        )

    def start_node(self, k: int) -> None:
        (self.root / f"device-{k}").mkdir(exist_ok=True)
        self.nodes[k] = self.spawn(
            [
                str(BIN / "flower-supernode"),
                "--superlink", f"127.0.0.1:{self.port}",
                "--root-certificates", str(self.certs / "ca.crt"),
                "--auth-supernode-private-key", str(self.certs / f"supernode-{k}"),
                "--node-config", f"partition-id={k} num-partitions={NODES}",
                "--port", str(self.node_ports[k]),
            ],
            self.root / f"supernode-{k}.log",
            self.root / f"device-{k}",  # each device installs the app in its own FLWR_HOME
        )  # fmt: skip

    def kill_node(self, k: int) -> None:
        """SIGKILL SuperNode k and everything it started: a device that dies without a word."""
        _signal(_descendants(self.nodes[k].pid), signal.SIGKILL)
        self.nodes[k].wait(timeout=self.left(30))

    def statuses(self) -> dict[str, str]:
        done = self.flwr("supernode", "list", "--format", "json")
        reply = json.loads(done.stdout) if done.stdout.lstrip().startswith("{") else {}
        return {n["node-id"]: n["status"] for n in reply.get("nodes", [])}

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return f"--- {name}.log (end) ---\n{text[-4000:]}"

    def run(self, out: Path, **overrides: Any) -> subprocess.Popen[str]:
        """Start `flwr run` of this repository's Flower App on the federation; logs streamed."""
        config = {**BASE_RUN, **overrides, "out": str(out)}
        pairs = " ".join(f"{k}={_toml_value(v)}" for k, v in config.items())
        with (self.root / f"{out.name}.flwr.log").open("w") as log:
            return subprocess.Popen(
                [str(BIN / "flwr"), "run", str(REPO), "e2e", "--run-config", pairs, "--stream"],
                cwd=self.root,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )

    def finish(self, proc: subprocess.Popen[str], out: Path) -> dict[str, Any]:
        """Wait for a `flwr run` to end and return the run's summary.json."""
        try:
            proc.wait(timeout=self.left(RUN_SECONDS))
        except subprocess.TimeoutExpired:
            _signal(_descendants(proc.pid), signal.SIGKILL)
            raise
        summary = out / "summary.json"
        assert summary.exists(), (
            f"`flwr run` ended ({proc.returncode}) without {summary}\n"
            + self.log(f"{out.name}.flwr")
            + self.log("superlink")
        )
        return dict(json.loads(summary.read_text()))

    def stop(self) -> None:
        """End every process this federation started, by id: politely, then for sure."""
        mine = set(_marked(self.marker))
        for proc in [self.superlink, *self.nodes.values()]:
            if proc is not None:
                mine.update(_descendants(proc.pid))
        _signal(sorted(mine), signal.SIGTERM)
        end = time.monotonic() + 10
        while any(_alive(p) for p in mine) and time.monotonic() < end:
            time.sleep(0.2)
        _signal([p for p in mine if _alive(p)], signal.SIGKILL)
        for proc in [self.superlink, *self.nodes.values()]:
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)  # reap our own children


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    fed = Federation(tmp_path_factory.mktemp("federation"))
    try:
        fed.start()
        yield fed
    finally:
        fed.stop()
        leftover = _marked(fed.marker)
        assert not leftover, f"processes of the test federation still alive: {leftover}"


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def _check_run(out: Path, summary: dict[str, Any], method: str) -> list[dict[str, str]]:
    """What every finished deployment run must show, whatever its method."""
    for name in ("summary.json", "metrics.csv", "partitions.json", "config.toml", "report.md"):
        assert (out / name).is_file(), f"{name} missing from {out}"
    assert summary["method"] == method
    assert summary["rounds_completed"] == BASE_RUN["rounds"]
    acc, best = summary["final_accuracy"], summary["best_accuracy"]
    assert math.isfinite(acc) and acc > CHANCE, f"final accuracy {acc} is not above chance"
    # it learned: two rounds of 2 local epochs reach 0.4-0.7 here; a broken run sits near 0.1
    assert best > CHANCE + 0.15, f"best accuracy {best}: the federation did not learn"
    rows = _rows(out)
    assert [int(r["round"]) for r in rows] == [1, 2]
    assert all(int(r["clients_selected"]) == NODES for r in rows)
    # each SuperNode loaded its own partition (the handshake maps partition -> node)
    parts = json.loads((out / "partitions.json").read_text())
    assert sorted(p["client"] for p in parts) == list(range(NODES))
    assert all(p["train"] > 0 for p in parts)
    return rows


def test_fedrlprune_runs_on_the_deployment_engine(federation: Federation, tmp_path: Path) -> None:
    # a SuperNode whose key was never registered is refused (tried beside the first run)
    rogue = tmp_path / "rogue"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ecdsa", "-b", "384", "-N", "", "-f", str(rogue)],
        check=True,
        timeout=30,
    )
    refused = federation.spawn(
        [
            str(BIN / "flower-supernode"),
            "--superlink", f"127.0.0.1:{federation.port}",
            "--root-certificates", str(federation.certs / "ca.crt"),
            "--auth-supernode-private-key", str(rogue),
            "--node-config", f"partition-id=0 num-partitions={NODES}",
            "--port", str(_free_port()),
            "--max-retries", "0",
        ],
        federation.root / "rogue.log",
    )  # fmt: skip
    out = tmp_path / "fedrlprune"
    run = federation.run(out, method="fedrlprune", rl_episodes=2, prune_start=0.5)
    federation.wait_for("the rogue SuperNode to give up", lambda: refused.poll() is not None, 120)
    assert refused.returncode != 0, "a SuperNode with an unregistered key was let in"
    assert "Failed to activate SuperNode" in federation.log("rogue")

    summary = federation.finish(run, out)
    rows = _check_run(out, summary, "fedrlprune")
    assert all(int(r["clients_replied"]) == NODES for r in rows)
    assert summary["rl_episodes_total"] > 0, "no SuperNode ran the pruning agent"
    assert summary["deployed_param_reduction"] > 1.0, "the deployed models were not pruned"
    assert not summary["dropped_clients"]
    # (fedavg on the deployment engine: the next test's run, which one SuperNode leaves)


def test_a_supernode_killed_mid_round_is_dropped_and_the_run_completes(
    federation: Federation, tmp_path: Path
) -> None:
    victim = NODES - 1
    node_log = federation.root / f"supernode-{victim}.log"

    def trains() -> int:
        return node_log.read_text(errors="replace").count("Receiving: train message")

    before = trains()
    out = tmp_path / "killed"
    proc = federation.run(out, method="fedavg")
    # the victim has its round-1 instructions in hand: now it dies (SIGKILL, no goodbye)
    federation.wait_for("round 1 to reach the SuperNodes", lambda: trains() > before, RUN_SECONDS)
    federation.kill_node(victim)
    killed_at = datetime.now()
    summary = federation.finish(proc, out)

    rows = _check_run(out, summary, "fedavg")
    assert summary["nonzero_params"] == summary["dense_params"]
    assert [int(r["clients_replied"]) for r in rows] == [NODES - 1] * 2
    assert [r["clients_dropped"] for r in rows] == [str(victim)] * 2
    assert summary["failed_clients"] == [victim]
    for phase in ("1", "2", "deploy"):
        (entry,) = summary["dropped_clients"][phase]
        assert entry["client"] == victim and entry["reason"] == "error"
        assert "Node Unavailable" in entry["detail"]
    # the SuperLink answers for a node whose heartbeats stopped: about 2 x 30 s after the last
    first = next(
        line
        for line in (out / "run.log").read_text().splitlines()
        if "round 1: 1 of" in line and f"first, client {victim}:" in line
    )
    dropped_at = datetime.strptime(first[:23], "%Y-%m-%d %H:%M:%S,%f")
    assert 0 < (dropped_at - killed_at).total_seconds() < 90

    # the device comes back with the same key and rejoins as the same registered node
    before = len(federation.joined(victim))
    federation.start_node(victim)
    federation.wait_joined(victim, before)


def test_the_flower_app_run_config_takes_every_config_key() -> None:
    """`flwr run --run-config` only overrides keys the app declares, so declare them all."""
    import dataclasses
    import tomllib

    from fedrlprune.config import Config

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    defaults = {f.name: getattr(Config(), f.name) for f in dataclasses.fields(Config)}
    assert declared["config"] == {**defaults, "out": "", "resume": False}


class _Grid:
    """Just enough of a Flower Grid for the wait before the handshake: who is online."""

    def __init__(self, nodes: list[int]) -> None:
        self.nodes = nodes

    def get_node_ids(self) -> list[int]:
        return self.nodes


def test_the_server_waits_node_wait_for_supernodes_and_says_what_to_do() -> None:
    from fedrlprune.config import Config
    from fedrlprune.errors import FedRLPruneError
    from fedrlprune.fl.server_app import handshake

    cfg = Config.from_dict({"clients": 2, "node_wait": 0.5})
    started = time.monotonic()
    with pytest.raises(
        FedRLPruneError, match=r"only 1 of 2 SuperNodes connected within 0\.5 s.*node_wait"
    ):
        handshake(_Grid([7]), cfg)  # type: ignore[arg-type]
    assert 0.5 <= time.monotonic() - started < 5
