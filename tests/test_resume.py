"""`--resume` for training stages: a run killed after a checkpoint continues where it stopped.

The crash is a real SIGKILL (ALIGNCTL_CRASH_AFTER_STEP, handled in training/callbacks.py), so nothing cleans
up: what is left in `<out>.partial` is what a preempted or OOM-killed job leaves.
"""

from __future__ import annotations

import json
import signal

import pytest

from alignctl import runs, stages
from tiny import toy_preferences, write_jsonl

# 16 pairs, batch 4: 4 steps an epoch, so 6 steps cross an epoch boundary after the resume
SETS = [
    "warmup_steps=0",
    "optim=adamw_torch",
    "learning_rate=5e-3",
    "logging_steps=1",
    "save_steps=2",
    "per_device_train_batch_size=4",
    "max_steps=6",
    "seed=7",
]


@pytest.fixture
def one_thread():
    """The same thread count in the killed subprocess (OMP_NUM_THREADS=1) and here, so the two runs
    do the same float arithmetic."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _rows(out):
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r]


def test_dpo_resume_after_kill_matches_an_uninterrupted_run(tmp_path, tiny_lm, run, one_thread):
    from alignctl.stages import dpo

    data = write_jsonl(tmp_path / "prefs.jsonl", toy_preferences(16))
    whole = dpo.run(stages.resolve("dpo", sets=SETS), data, str(tiny_lm), tmp_path / "whole")

    args = ["dpo", "--data", data, "--model", tiny_lm, "-o", tmp_path / "cut"]
    for item in SETS:
        args += ["--set", item]
    killed = run(*args, env={"ALIGNCTL_CRASH_AFTER_STEP": "2", "OMP_NUM_THREADS": "1"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    partial = tmp_path / "cut.partial"
    assert not (tmp_path / "cut").exists() and (partial / "checkpoint-2" / "trainer_state.json").is_file()
    assert [r["step"] for r in _rows(partial)] == [1, 2]

    resumed = dpo.run(stages.resolve("dpo", sets=SETS), data, str(tiny_lm), tmp_path / "cut", resume=True)
    assert not partial.exists()
    a, b = _rows(whole), _rows(resumed)
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]  # the step count continues, no duplicate lines
    for ra, rb in zip(a, b, strict=True):
        # same batches in the same order (logps of the chosen answers identify the batch), same losses
        assert rb["epoch"] == ra["epoch"]
        assert rb["logps/chosen"] == pytest.approx(ra["logps/chosen"], rel=1e-4, abs=1e-4)
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-4, abs=1e-5)
    fa = json.loads((whole / "alignctl.json").read_text())["final_metrics"]
    fb = json.loads((resumed / "alignctl.json").read_text())["final_metrics"]
    assert fa["global_step"] == fb["global_step"] == 6
    for key in ("loss", "rewards/margins", "rewards/accuracies"):
        assert fb[key] == pytest.approx(fa[key], rel=1e-3, abs=1e-4)
    assert not list(resumed.glob("checkpoint-*"))  # a finished run keeps no checkpoints
    assert _same_weights(whole, resumed)


def _same_weights(a, b) -> bool:
    import torch
    from safetensors.torch import load_file

    x, y = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def _fake_partial(tmp_path, steps):
    work = tmp_path / "out.partial"
    for step in steps:
        (work / f"checkpoint-{step}").mkdir(parents=True)
        (work / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (work / "checkpoint-9").mkdir()  # no trainer_state.json: a checkpoint cut off mid-save
    return work


def test_resume_picks_the_newest_complete_checkpoint(tmp_path):
    work = _fake_partial(tmp_path, [2, 10, 4])
    r = runs.begin("dpo", tmp_path / "out", inputs={}, resolved=None, resume=True)
    assert r.resume_from == work / "checkpoint-10"


def test_without_resume_an_unfinished_run_is_replaced(tmp_path):
    work = _fake_partial(tmp_path, [2])
    r = runs.begin("dpo", tmp_path / "out", inputs={}, resolved=None)
    assert r.resume_from is None and work.is_dir() and not list(work.iterdir())


def test_resume_with_nothing_to_resume_starts_fresh(tmp_path):
    r = runs.begin("dpo", tmp_path / "out", inputs={}, resolved=None, resume=True)
    assert r.resume_from is None and (tmp_path / "out.partial").is_dir()
    runs.discard_unused()  # an error before any work: the empty dir goes
    assert not (tmp_path / "out.partial").exists()


def test_other_ranks_never_touch_the_output(tmp_path, monkeypatch):
    """Under torchrun only rank 0 creates, clears or renames dirs; other ranks decide the same."""
    work = _fake_partial(tmp_path, [2])
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    r = runs.begin("dpo", tmp_path / "new" / "out", inputs={}, resolved=None)
    assert not (tmp_path / "new").exists()
    r = runs.begin("dpo", tmp_path / "out", inputs={}, resolved=None, resume=True)
    assert r.resume_from == work / "checkpoint-2"
    r = runs.begin("dpo", tmp_path / "out", inputs={}, resolved=None)
    assert (work / "checkpoint-2").is_dir()  # rank 0 clears it, not rank 1
    assert r.finish({}) == tmp_path / "out" and not (tmp_path / "out").exists()


def test_checkpoints_every_save_steps_but_not_after_the_last_step(tmp_path, tiny_lm, monkeypatch):
    """transformers would also save a whole checkpoint (weights + optimizer) after the final step;
    the final model is saved right after anyway, so alignctl skips that one. Periodic ones stay."""
    from transformers import Trainer

    from alignctl.stages import dpo

    saved = []
    original = Trainer._save_checkpoint

    def spy(self, *args, **kwargs):
        saved.append(self.state.global_step)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_save_checkpoint", spy)
    data = write_jsonl(tmp_path / "prefs.jsonl", toy_preferences(8))
    resolved = stages.resolve("dpo", sets=["max_steps=5", "save_steps=2", "per_device_train_batch_size=2"])
    out = dpo.run(resolved, data, str(tiny_lm), tmp_path / "dpo")
    assert saved == [2, 4]
    assert (out / "model.safetensors").is_file()


# train-rm, grpo and online-dpo: killed after checkpoint 2 of 4, resumed, compared with a run that
# was never interrupted. Each stage's own data; the shared settings make every step a checkpoint
# candidate and keep the runs to seconds.
COMMON = ["warmup_steps=0", "optim=adamw_torch", "logging_steps=1", "save_steps=2", "max_steps=4", "seed=7"]
PROMPTS = [{"prompt": f"Is {s} {c}?"} for s in ("paris", "rome", "the sky", "tokyo") for c in ("red", "big")]
RESUME_STAGES = {
    "train-rm": (
        ["--data", "data.jsonl", "--batch-size", "4", "--lr", "5e-3"],
        toy_preferences(16),
    ),
    "grpo": (
        ["--prompts", "data.jsonl", "--reward", "rule:length", "--num-generations", "2", "--batch-size", "4"]
        + ["--max-completion-length", "6", "--lr", "5e-2", "--set", "beta=0.04"],
        PROMPTS,
    ),
    "online-dpo": (
        ["--prompts", "data.jsonl", "--reward", "rule:length", "--batch-size", "2", "--max-new-tokens", "6"]
        + ["--lr", "5e-2"],
        PROMPTS,
    ),
}


@pytest.mark.parametrize(
    "stage",  # online-dpo's takes the path grpo's takes (TRL's checkpoint); it runs with make test-slow
    [pytest.param(s, marks=pytest.mark.long if s == "online-dpo" else ()) for s in sorted(RESUME_STAGES)],
)
def test_resume_after_kill_ends_with_the_weights_of_an_uninterrupted_run(
    stage, tmp_path, tiny_lm, run, cli, monkeypatch, one_thread
):
    monkeypatch.chdir(tmp_path)
    flags, records = RESUME_STAGES[stage]
    write_jsonl(tmp_path / "data.jsonl", records)
    args = [stage, *flags, "--model", tiny_lm, *[x for s in COMMON for x in ("--set", s)]]
    code, _, err = cli(*args, "-o", "whole")
    assert code == 0, err[-2000:]

    killed = run(*args, "-o", "cut", cwd=tmp_path, env={"ALIGNCTL_CRASH_AFTER_STEP": "2", "OMP_NUM_THREADS": "1"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (tmp_path / "cut.partial" / "checkpoint-2" / "trainer_state.json").is_file()
    code, _, err = cli(*args, "-o", "cut", "--resume")
    assert code == 0 and "resuming from" in err, err[-2000:]
    assert not (tmp_path / "cut.partial").exists()

    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert [r["step"] for r in _rows(cut)] == [r["step"] for r in _rows(whole)] == [1, 2, 3, 4]
    # one thread, the same seed, data order, optimizer and RNG state restored: bit for bit
    assert _same_weights(whole, cut)
