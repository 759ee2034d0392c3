"""`--max-minutes`, the training time budget every training stage shares (training/budget.py).

The stage runs replace the budget's clock with one that advances 10 s at each reading (one at the
first step's start, one at each step's end), so a 0.5-minute budget is spent at the end of step 3
on any machine; one dpo run uses the real clock with a budget that its first step outlasts.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from alignctl import stages
from alignctl.training import budget as budget_mod
from alignctl.training.budget import BUDGET
from stage_cases import CASES, PROMPTS, write_inputs
from tiny import toy_preferences, write_jsonl

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture
def ten_seconds_a_step(monkeypatch):
    monkeypatch.setattr(budget_mod, "_clock", itertools.count(0.0, 10.0).__next__)


def spent_at(steps: int, this_run: int) -> dict:
    """The manifest's `training` record of a run that a 0.5-minute budget stopped after 30 s."""
    return {"steps": steps, "steps_this_run": this_run, "seconds": 30.0, "max_minutes": 0.5, "stopped_by": BUDGET}


def _manifest(out: Path) -> dict:
    return json.loads((out / "alignctl.json").read_text())


def test_the_budget_stops_at_the_first_step_that_reaches_it(ten_seconds_a_step):
    b = budget_mod.Budget(0.5)  # 30 s: the clock reads 0 at the start, then 10, 20, 30, ...
    b.begin_step(4)  # resumed after step 4: only this run's steps and seconds count
    assert [b.end_step(step) for step in (5, 6, 7)] == [False, False, True]
    assert b.summary() == spent_at(7, 3)
    planned = budget_mod.Budget(0.01)  # spent at once, but the run's last planned step ends it anyway
    assert planned.end_step(1, last=True) is False and planned.summary()["stopped_by"] == "planned_steps"
    unlimited = budget_mod.Budget(None)
    assert not any(unlimited.end_step(step) for step in range(1, 50))
    assert unlimited.summary()["seconds"] > 0 and unlimited.summary()["stopped_by"] == "planned_steps"


@pytest.mark.parametrize("stage", ["dpo", "iterate"])
def test_a_budget_of_zero_is_refused_before_any_model_loads(tmp_path, tiny_lm, cli, monkeypatch, stage):
    from alignctl import models

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(models, "load_causal_lm", no_loading)
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "data.jsonl", toy_preferences(2))
    inputs = ("--data", "data.jsonl") if stage == "dpo" else ("--prompts", "data.jsonl", "--by", "rule:length")
    code, _, err = cli(stage, *inputs, "--model", tiny_lm, "--max-minutes", "0", "-o", "out")
    assert code == 2 and "max_minutes must be > 0" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def _agree_on_rank(rank: int, port: int, answers) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        answers.put((rank, budget_mod.agree(rank == 1)))  # only rank 1's clock says "spent"
    finally:
        dist.destroy_process_group()


def test_every_rank_takes_rank_0s_answer():
    """Two gloo ranks whose clocks disagree stop at the same step: rank 0's."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    answers = ctx.Queue()
    procs = [ctx.Process(target=_agree_on_rank, args=(rank, port, answers)) for rank in (0, 1)]
    for p in procs:
        p.start()
    got = dict(answers.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert got == {0: False, 1: False}


HASTY_RANK_1 = """
import itertools, os, runpy, sys
if os.environ.get("RANK") == "1":  # this rank's clock says 1000 s pass at every reading
    import alignctl.training.budget as budget
    budget._clock = itertools.count(0.0, 1000.0).__next__
sys.argv = ["alignctl", *sys.argv[1:]]
runpy.run_module("alignctl", run_name="__main__")
"""


@pytest.mark.long  # two ranks under torchrun; test_every_rank_takes_rank_0s_answer keeps the rule in the default run
def test_two_ranks_whose_clocks_disagree_train_the_same_steps(tmp_path, tiny_lm):
    """`torchrun --nproc_per_node 2` dpo with a 10-minute budget that rank 1's clock spends at step 1:
    both ranks go on with rank 0's answer to the planned step 3 (a rank that stopped alone would
    leave the other waiting in its gradient all-reduce until the timeout)."""
    import os
    import subprocess
    import sys

    write_jsonl(tmp_path / "prefs.jsonl", toy_preferences(8))
    (tmp_path / "hasty.py").write_text(HASTY_RANK_1)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "hasty.py"]
    cmd += ["dpo", "--data", "prefs.jsonl", "--model", str(tiny_lm), "--batch-size", "2", "--max-steps", "3"]
    cmd += ["--max-minutes", "10", "-o", "out"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = _manifest(tmp_path / "out")
    assert manifest["world_size"] == 2 and manifest["final_metrics"]["global_step"] == 3
    assert manifest["training"]["stopped_by"] == "planned_steps"


def test_dpo_stops_on_a_real_clock_and_the_rerun_is_up_to_date(tmp_path, tiny_lm, run):
    """A budget of 6 ms: step 1 outlasts it, so the run stops there, saves a loadable merged model,
    writes its manifest, and the same command again does nothing."""
    write_jsonl(tmp_path / "prefs.jsonl", toy_preferences(8))
    args = (
        "dpo", "--data", "prefs.jsonl", "--model", tiny_lm, "--batch-size", "2", "--max-steps", "40",
        "--max-minutes", "0.0001", "--set", "save_steps=1", "--set", "logging_steps=5", "-o", "out",
    )  # fmt: skip
    proc = run(*args, cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--max-minutes 0.0001: training stops after step 1" in proc.stderr
    out = tmp_path / "out"
    manifest = _manifest(out)
    assert manifest["training"]["stopped_by"] == "max_minutes" and manifest["training"]["steps"] == 1
    assert manifest["training"]["seconds"] >= 0.006 and manifest["training"]["max_minutes"] == 0.0001
    assert manifest["final_metrics"]["global_step"] == 1
    assert manifest["final_metrics"]["train_seconds"] == manifest["training"]["seconds"]
    assert manifest["config"]["max_minutes"] == {"value": 0.0001, "source": "flag --max-minutes"}
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1]
    assert not list(out.glob("checkpoint-*")) and not (tmp_path / "out.partial").exists()
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out)
    stamp = (out / "alignctl.json").stat().st_mtime_ns
    again = run(*args, cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert again.returncode == 0 and "up to date" in again.stderr
    assert (out / "alignctl.json").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("stage", sorted(CASES))
def test_every_trl_stage_stops_when_its_budget_is_spent(tmp_path, tiny_lm, cli, monkeypatch, ten_seconds_a_step, stage):
    """Budget 0.5 min at 10 s a step: step 3 of 10 is the last, and the run is complete (every stage
    with a TRL trainer: tests/stage_cases.py)."""
    monkeypatch.chdir(tmp_path)
    write_inputs(tmp_path)
    args = (stage, *CASES[stage].args, "--model", tiny_lm, "--max-steps", "10", "--max-minutes", "0.5", "-o", "out")
    code, stdout, err = cli(*args, "--set", "save_steps=3")  # step 3's checkpoint: skipped, the final save follows
    assert code == 0, err[-2000:]
    manifest = _manifest(tmp_path / "out")
    assert manifest["training"] == spent_at(3, 3)
    assert manifest["final_metrics"]["global_step"] == 3 and manifest["final_metrics"]["train_seconds"] == 30.0
    assert not list((tmp_path / "out").glob("checkpoint-*"))
    rows = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert any(r["step"] == 3 and "loss" in r for r in rows)  # the last step is logged, whatever logging_steps
    code, _, err = cli(*args, "--set", "save_steps=3")
    assert code == 0 and "up to date" in err


def test_a_resumed_run_counts_only_its_own_steps_and_time(tmp_path, tiny_lm, run, monkeypatch):
    """Killed after checkpoint 2 (the budget far away), resumed with the 10-s clock: the resumed
    run's budget starts at its own first step, so it stops after step 5, three steps later."""
    import signal

    from alignctl.stages import dpo

    data = write_jsonl(tmp_path / "prefs.jsonl", toy_preferences(8))
    sets = ["max_steps=10", "max_minutes=0.5", "per_device_train_batch_size=2", "save_steps=2", "logging_steps=1"]
    args = ["dpo", "--data", data, "--model", tiny_lm, "-o", tmp_path / "out"]
    for item in sets:
        args += ["--set", item]
    killed = run(*args, env={"ALIGNCTL_CRASH_AFTER_STEP": "2", "OMP_NUM_THREADS": "1"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    monkeypatch.setattr(budget_mod, "_clock", itertools.count(0.0, 10.0).__next__)
    out = dpo.run(stages.resolve("dpo", sets=sets), data, str(tiny_lm), tmp_path / "out", resume=True)
    assert _manifest(out)["training"] == spent_at(5, 3)
    # metrics.jsonl's elapsed goes on from the checkpoint's (docs/formats.md), not from 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    before = next(r["elapsed"] for r in rows if r["step"] == 2 and "loss" in r)
    resumed = [(r["step"], r["elapsed"]) for r in rows if r["step"] > 2 and "loss" in r]
    assert resumed == [(s, pytest.approx(before + 10.0 * (s - 2))) for s in (3, 4, 5)]


def test_every_metrics_line_carries_the_budgets_clock(tmp_path, tiny_lm, ten_seconds_a_step):
    """dpo, 3 steps at 10 s a step, logged at every step: each line's `elapsed` is the budget's
    seconds at the end of its step (seconds, not minutes), so the last equals the manifest's."""
    from alignctl.stages import dpo

    data = write_jsonl(tmp_path / "prefs.jsonl", toy_preferences(6))
    resolved = stages.resolve("dpo", sets=["max_steps=3", "per_device_train_batch_size=2", "logging_steps=1"])
    out = dpo.run(resolved, data, str(tiny_lm), tmp_path / "out")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["elapsed"]) for r in rows if "loss" in r] == [(1, 10.0), (2, 20.0), (3, 30.0)]
    elapsed = [r["elapsed"] for r in rows]  # every line, TRL's end-of-training summary included
    assert elapsed == sorted(elapsed) and elapsed[-1] == _manifest(out)["training"]["seconds"] == 30.0


def test_max_steps_first_ends_the_run_as_planned(tmp_path, tiny_lm, ten_seconds_a_step):
    """--max-steps 2 with a 0.5-minute budget: the plan ends the run at step 2, before the budget."""
    from alignctl.stages import dpo

    data = write_jsonl(tmp_path / "prefs.jsonl", toy_preferences(4))
    resolved = stages.resolve("dpo", sets=["max_steps=2", "max_minutes=0.5", "per_device_train_batch_size=2"])
    out = dpo.run(resolved, data, str(tiny_lm), tmp_path / "out")
    training = _manifest(out)["training"]
    assert (training["steps"], training["seconds"], training["stopped_by"]) == (2, 20.0, "planned_steps")


def test_ppo_stops_after_the_update_that_spends_the_budget(tmp_path, tiny_lm, tiny_rm, ten_seconds_a_step):
    """8 planned updates, stopped after update 3: the policy and value model saved, the count honest."""
    from transformers import AutoModelForCausalLM

    from alignctl.stages import ppo

    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    sets = [
        "total_episodes=16", "per_device_train_batch_size=2", "gradient_accumulation_steps=1", "response_length=4",
        "num_ppo_epochs=1", "max_minutes=0.5", "save_steps=3",
    ]  # fmt: skip
    resolved = stages.resolve("ppo", sets=sets)
    out = ppo.run(resolved, prompts, str(tiny_lm), tmp_path / "out", reward_model=str(tiny_rm))
    manifest = _manifest(out)
    assert manifest["training"]["steps"] == 3 and manifest["training"]["stopped_by"] == "max_minutes"
    final = manifest["final_metrics"]
    assert (final["updates"], final["episodes"], final["global_step"], final["train_seconds"]) == (3, 6, 3, 30.0)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["elapsed"]) for r in rows] == [(1, 10.0), (2, 20.0), (3, 30.0)]  # the budget's clock
    assert "elapsed" not in final  # a time axis, not a metric (train_seconds is the total)
    assert not list(out.glob("checkpoint-*")) and (out / "value" / "model.safetensors").is_file()
    AutoModelForCausalLM.from_pretrained(out)
    stamp = (out / "alignctl.json").stat().st_mtime_ns
    ppo.run(stages.resolve("ppo", sets=sets), prompts, str(tiny_lm), tmp_path / "out", reward_model=str(tiny_rm))
    assert (out / "alignctl.json").stat().st_mtime_ns == stamp  # up to date


@pytest.mark.parametrize("trainer", ["dpo", "kto", "online-dpo"])
def test_iterate_gives_the_budget_to_each_rounds_trainer(tmp_path, tiny_lm, trainer):
    from alignctl.stages import iterate

    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    resolved = stages.resolve("iterate", sets=[f"trainer={trainer}"], flags={"max_minutes": (2.5, "--max-minutes")})
    p = iterate.plan(resolved, prompts, str(tiny_lm), "rule:length", tmp_path / "it", None)
    assert p.dpo.stage == trainer and p.dpo["max_minutes"] == 2.5
    assert p.dpo.sources["max_minutes"] == "flag iterate max_minutes"
