"""Resume: the checkpoint holds everything, a stopped run goes on as if it had not stopped, and
every way resuming can go wrong says what is wrong and what to do."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

import fedrlprune.fl.server_app as server_app
from fedrlprune.cli import main
from fedrlprune.config import Config
from fedrlprune.errors import FedRLPruneError
from fedrlprune.experiments.export import load_checkpoint
from fedrlprune.experiments.runner import resume_experiment, run_experiment
from fedrlprune.federation.checkpoint import (
    CHECKPOINT,
    RunState,
    load_run_state,
    save_run_state,
)
from fedrlprune.rl.prune import new_agent

pytestmark = pytest.mark.usefixtures("one_ray")  # one Ray for every simulation (conftest)

# ------------------------------------------------------------------------- the checkpoint


def _run_state(cfg: Config, rnd: int = 1) -> RunState:
    rng = np.random.default_rng(cfg.seed)
    rng.choice(10, size=3, replace=False)
    layer = np.arange(12, dtype=np.float32).reshape(3, 4)
    return RunState(
        round=rnd,
        config=cfg.to_dict(),
        state={"fc.weight": layer, "fc.bias": np.ones(3, np.float32)},
        global_masks={"fc.weight": layer > 2},
        client_masks={0: {"fc.weight": layer > 5}, 3: {"fc.weight": layer > 7}},
        seen_rounds={0: [1], 3: [1]},
        method={
            **{f"universal/{k}": v for k, v in new_agent(0).get_weights().items()},
            **{f"client3/{k}": v for k, v in new_agent(3).get_weights().items()},
        },
        rng_state=rng.bit_generator.state,
        rows=[{"round": 1, "test_accuracy": float("nan"), "clients_dropped": "1;2"}],
        rates=[{"round": 1, "client": 3, "tier": "mcu", "heldout": 0, "layer": "fc", "rate": 0.5}],
        dropped={"1": [{"client": 1, "reason": "timeout", "detail": "no reply within 5 s"}]},
        failed=[1],
        elapsed=12.5,
    )


def test_the_checkpoint_round_trips_everything_as_plain_arrays(tmp_path: Path) -> None:
    cfg = Config.from_dict({"clients": 10, "fraction": 0.3})
    saved = _run_state(cfg)
    path = tmp_path / CHECKPOINT
    save_run_state(path, saved)
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT]  # no temporary file left
    back = load_run_state(path)  # np.load(..., allow_pickle=False) inside
    for name in ("round", "config", "seen_rounds", "rates", "dropped", "failed", "elapsed"):
        assert getattr(back, name) == getattr(saved, name), name
    assert np.isnan(back.rows[0]["test_accuracy"]) and back.rows[0]["clients_dropped"] == "1;2"
    for got, want in (
        (back.state, saved.state),
        (back.global_masks, saved.global_masks),
        (back.client_masks[3], saved.client_masks[3]),
        (back.method, saved.method),
    ):
        assert set(got) == set(want)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
            assert got[key].dtype == want[key].dtype
    # The sampling generator goes on with the very draws it would have made.
    a, b = np.random.default_rng(), np.random.default_rng()
    a.bit_generator.state, b.bit_generator.state = saved.rng_state, back.rng_state
    assert a.choice(10, size=3, replace=False).tolist() == b.choice(10, 3, replace=False).tolist()
    # `fedrlprune export` reads the same file: model and masks, nothing else.
    state, global_masks, client_masks = load_checkpoint(path)
    assert set(state) == {"fc.weight", "fc.bias"} and set(client_masks) == {0, 3}
    np.testing.assert_array_equal(global_masks["fc.weight"], saved.global_masks["fc.weight"])


def test_a_missing_or_damaged_checkpoint_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT
    with pytest.raises(FedRLPruneError, match="is missing"):
        load_run_state(path)
    save_run_state(path, _run_state(Config()))
    path.write_bytes(path.read_bytes()[:200])  # cut off
    with pytest.raises(FedRLPruneError, match="cannot be read") as err:
        load_run_state(path)
    assert str(path) in str(err.value) and "Start the run again" in str(err.value)


# ------------------------------------------------------------ resuming from the command line


def _stopped_run(folder: Path, cfg: Config) -> Path:
    """A results folder as a server stopped after round 1 leaves it."""
    folder.mkdir()
    (folder / "config.toml").write_text(cfg.to_toml())
    save_run_state(folder / CHECKPOINT, _run_state(cfg))
    return folder


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ("finished", ["finished run", "nothing to resume"]),
        ("no checkpoint", [CHECKPOINT, "is missing", "start the run again"]),
        ("edited config", ["differs from its checkpoint", "rounds: 5 -> 3"]),
        ("--set", ["differs from the config you gave", "rounds: 3 -> 4"]),
        ("not a results folder", ["no config.toml"]),
        ("a baseline", ["`feddst` run", "cannot resume", "Resumable methods: fedrlprune"]),
    ],
)
def test_resume_mistakes_exit_2_naming_the_problem_and_the_fix(
    change: str, words: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = Config.from_dict({"dataset": "digits", "model": "mlp", "clients": 4, "rounds": 3})
    out = _stopped_run(tmp_path / "run", cfg)
    args = ["run", "--resume", str(out)]
    if change == "finished":
        (out / "summary.json").write_text("{}")
    elif change == "no checkpoint":
        (out / CHECKPOINT).unlink()
    elif change == "edited config":
        (out / "config.toml").write_text(Config.from_dict({**cfg.to_dict(), "rounds": 5}).to_toml())
    elif change == "--set":
        args += ["--set", "rounds=4"]
    elif change == "a baseline":
        feddst = Config.from_dict({**cfg.to_dict(), "method": "feddst"})
        (out / "config.toml").write_text(feddst.to_toml())
    else:
        (out / "config.toml").unlink()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for word in words:
        assert word in err


def test_a_new_run_refuses_the_folder_of_a_stopped_one_in_the_callers_terms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = Config.from_dict({"dataset": "digits", "model": "mlp", "clients": 4, "rounds": 3})
    out = _stopped_run(tmp_path / "run", cfg)
    with pytest.raises(FedRLPruneError) as err:
        run_experiment(cfg, out_dir=out, live=False)
    assert "resume_experiment(" in str(err.value) and "out_dir" in str(err.value)
    assert "--out" not in str(err.value)
    assert main(["run", "--out", str(out)]) == 2
    said = capsys.readouterr().err
    assert f"fedrlprune run --resume {out}" in said and "--out folder" in said
    assert "out_dir" not in said


def test_a_run_with_your_own_model_and_data_resumes_only_with_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = Config.from_dict({"dataset": "user", "model": "user", "clients": 4, "rounds": 3})
    out = _stopped_run(tmp_path / "run", cfg)
    assert main(["run", "--resume", str(out)]) == 2
    said = capsys.readouterr().err
    assert "own model_fn and data" in said and "resume_experiment(" in said
    with pytest.raises(FedRLPruneError, match=r"own data: .*data=\.\.\.\)$"):
        resume_experiment(out, model_fn=lambda shape, classes: None, live=False)  # type: ignore


def test_flwr_run_resumes_through_its_run_config(tmp_path: Path) -> None:
    cfg = Config.from_dict({"dataset": "digits", "model": "mlp", "clients": 4, "rounds": 3})
    out = _stopped_run(tmp_path / "run", cfg)
    values = {**cfg.to_dict(), "out": str(out), "resume": True}
    got, folder, run = server_app.flwr_run_config(values)
    assert got == cfg and folder == out and run is not None and run.round == 1
    fresh, _, none = server_app.flwr_run_config({**values, "resume": False})
    assert fresh == cfg and none is None
    with pytest.raises(FedRLPruneError, match="needs out="):
        server_app.flwr_run_config({**values, "out": ""})
    with pytest.raises(FedRLPruneError, match="rounds: 3 -> 4"):
        server_app.flwr_run_config({**values, "rounds": 4})


# ------------------------------------------------------- a stopped and resumed run, end to end

RUN = {
    "dataset": "digits",
    "model": "mlp",
    "clients": 4,
    "fraction": 0.75,  # 3 of 4 clients a round: the sampling must go on where it stopped
    "rounds": 3,
    "local_epochs": 1,
    "lr": 0.05,
    "rl_episodes": 2,
    "prune_start": 0.0,
    "prune_until": 1.0,
    "device_mix": "sbc,phone,laptop,laptop",
    "latency_runs": 0,  # tests/test_runner.py checks the measurement
}


def test_a_run_stopped_mid_run_and_resumed_matches_an_uninterrupted_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = run_experiment(RUN, out_dir=tmp_path / "whole", live=False)

    # The server dies in round 2 after writing its metrics row, before its checkpoint: the
    # worst moment, since metrics.csv then holds a round the checkpoint does not.
    write = server_app.save_run_state

    def die_in_round_2(path: Path, run: RunState) -> None:
        if run.round == 2:
            raise RuntimeError("the server lost power")
        write(path, run)

    monkeypatch.setattr(server_app, "save_run_state", die_in_round_2)
    out = tmp_path / "stopped"
    with pytest.raises(RuntimeError, match="lost power"):  # the simulation re-raises it
        run_experiment(RUN, out_dir=out, live=False)
    assert load_run_state(out / CHECKPOINT).round == 1
    assert [r["round"] for r in csv.DictReader((out / "metrics.csv").open())] == ["1", "2"]
    monkeypatch.undo()

    resumed = resume_experiment(out, live=False)

    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["round"]) for r in rows] == [1, 2, 3]  # each round exactly once
    assert resumed["rounds_completed"] == 3
    assert json.loads((out / "summary.json").read_text())["rounds_completed"] == 3
    # Every random choice derives from (seed, round, client) or the restored sampling state,
    # and replies are merged in client order, so the resumed run repeats the uninterrupted one
    # bit for bit: same clients each round, same rates, same model, same accuracy.
    picked = {(r["round"], r["client"], r["layer"], r["rate"]) for r in _rates(out)}
    assert picked == {(r["round"], r["client"], r["layer"], r["rate"]) for r in _rates(whole)}
    assert len(_rates(out)) == len(picked)  # no rate row twice
    assert resumed["final_accuracy"] == whole["final_accuracy"]
    assert resumed["deployed_accuracy_mean"] == whole["deployed_accuracy_mean"]
    mine, _, _ = load_checkpoint(out / CHECKPOINT)
    theirs, _, _ = load_checkpoint(Path(whole["out_dir"]) / CHECKPOINT)
    for name, value in theirs.items():
        np.testing.assert_array_equal(mine[name], value)
    assert "resuming" in (out / "run.log").read_text()
    with pytest.raises(FedRLPruneError, match="finished run"):
        resume_experiment(out, live=False)


def _rates(where: Path | dict) -> list[dict[str, str]]:
    folder = Path(where["out_dir"]) if isinstance(where, dict) else where
    return list(csv.DictReader((folder / "rates.csv").open()))
