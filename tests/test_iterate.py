"""`alignctl iterate` on a tiny model: two rounds, resumable after SIGKILL, every stage up to date on rerun.

The tiny random model cannot answer questions, but it can be shorter or longer, so the reward is
`rule:length?target=3` (1.0 at three words or fewer, falling to 0 at nine).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tiny import write_jsonl

pytestmark = pytest.mark.usefixtures("torch_one_thread")  # conftest: one torch thread


WORDS = "the sky is blue red green paris rome cat dog sun moon".split()
BY = "rule:length?target=3"
SETS = [
    "rounds=2",
    "num_samples=4",
    "max_new_tokens=8",
    "eval_max_new_tokens=8",
    "dpo_set=[max_steps=8, learning_rate=1e-3, logging_steps=1, warmup_steps=0, optim=adamw_torch, save_steps=0]",
]


def _data(tmp: Path) -> tuple[Path, Path]:
    train = [{"prompt": f"What is {a} {b}?"} for a, b in zip(WORDS, reversed(WORDS), strict=True)]
    held = [{"prompt": f"Is {w} good?"} for w in WORDS[:4]]
    return write_jsonl(tmp / "train.jsonl", train), write_jsonl(tmp / "held.jsonl", held)


def _tree(out: Path) -> list[str]:
    """Relative paths of the run's files (checkpoints and temporary names excluded)."""
    return sorted(
        str(p.relative_to(out))
        for p in out.rglob("*")
        if p.is_file() and ".partial" not in str(p) and "/." not in str(p)
    )


def _same_weights(a: Path, b: Path) -> bool:
    import torch
    from safetensors.torch import load_file

    x, y = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def _comparable(path: Path, run_dir: Path) -> list:
    """A JSON or JSONL file's records with the run's own paths and wall-clock timings taken out."""
    text = path.read_text().replace(str(run_dir.parent), "<tmp>")
    records = [json.loads(x) for x in text.splitlines()] if path.suffix == ".jsonl" else [json.loads(text)]
    for r in records:
        r.pop("seconds", None)
    return records


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_lm):
    """An uninterrupted 2-round run, in process (the CLI's `run()`), with its own ALIGNCTL_HOME."""
    from alignctl.stages import iterate, resolve

    tmp = tmp_path_factory.mktemp("iterate-ref")
    train, held = _data(tmp)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALIGNCTL_HOME", str(tmp / "home"))
        resolved = resolve("iterate", sets=SETS)
        out = iterate.run(resolved, train, str(tiny_lm), BY, tmp / "it", eval_prompts=held)
    return out


def test_two_rounds_layout_and_manifest(reference):
    out = reference
    manifest = json.loads((out / "alignctl.json").read_text())
    assert manifest["stage"] == "iterate" and manifest["complete"] and len(manifest["rounds"]) == 2
    for n, entry in enumerate(manifest["rounds"], start=1):
        rdir = out / f"round-{n}"
        for name in ("candidates.jsonl", "prefs.jsonl", "train.jsonl", "eval.json", "model/model.safetensors"):
            assert (rdir / name).is_file(), name
        assert entry["candidates"] == 12 and entry["pairs"] >= 1
        ev = json.loads((rdir / "eval.json").read_text())
        assert ev["n"] == 4 and ev["wins"] + ev["ties"] + ev["losses"] == 4
        assert entry["eval"]["win_rate"] == ev["win_rate"]
    first, second = manifest["rounds"]
    # pairs accumulate: round 2 trains on round 1's pairs plus its own
    assert second["train_pairs"] == first["pairs"] + second["pairs"]
    # round 2 starts from round 1's model, which is also its eval baseline (and DPO reference)
    assert second["policy"] == str(out / "round-1" / "model")
    dpo_manifest = json.loads((out / "round-2" / "model" / "alignctl.json").read_text())
    assert dpo_manifest["parent_model"] == str(out / "round-1" / "model")
    assert json.loads((out / "round-2" / "eval.json").read_text())["baseline"]["name"] == second["policy"]
    assert (out / "round-2" / "eval-base.json").is_file() and "eval_vs_base" in second
    # round 2's eval reused round 1's generations of its baseline (the round-1 model) from the cache
    assert json.loads((out / "round-2" / "eval.json").read_text())["cached"]["baseline"] is True


def test_rerun_is_up_to_date_and_each_stage_alone_too(reference, tiny_lm, cli, monkeypatch):
    out = reference
    monkeypatch.setenv("ALIGNCTL_HOME", str(out.parent / "home"))
    stamps = {p: (out / p).stat().st_mtime_ns for p in _tree(out)}
    train, held = out.parent / "train.jsonl", out.parent / "held.jsonl"
    sets = [x for s in SETS for x in ("--set", s)]
    code, _, stderr = cli("iterate", "-p", train, "--eval-prompts", held, "-m", tiny_lm, "--by", BY, "-o", out, *sets)
    assert code == 0 and "up to date" in stderr, stderr
    assert {p: (out / p).stat().st_mtime_ns for p in _tree(out)} == stamps
    r1 = out / "round-1"
    # the same stages, run on their own with the arguments iterate gave them: no work
    gen = ["--num-samples", "4", "--temperature", "1.0", "--max-new-tokens", "8", "--seed", "42"]
    stage_runs = [
        ("collect", "-p", train, "-m", tiny_lm, *gen, "-o", r1 / "candidates.jsonl"),
        ("label", "-c", r1 / "candidates.jsonl", "--by", BY, "-o", r1 / "prefs.jsonl"),
        (
            "dpo",
            "--data",
            r1 / "train.jsonl",
            "-m",
            tiny_lm,
            "-o",
            r1 / "model",
            "--max-steps",
            "8",
            "--lr",
            "1e-3",
            "--seed",
            "42",
            "--set",
            "logging_steps=1",
            "--set",
            "warmup_steps=0",
            "--set",
            "optim=adamw_torch",
            "--set",
            "save_steps=0",
        ),  # fmt: skip
        ("eval", "-m", r1 / "model", "-b", tiny_lm, "-p", held, "--by", BY, "--max-new-tokens", "8", "-o", r1),
    ]
    for args in stage_runs:
        code, _, stderr = cli(*args)
        assert code == 0 and "up to date" in stderr, (args[0], stderr)
    assert {p: (out / p).stat().st_mtime_ns for p in _tree(out)} == stamps


def test_sigkill_in_round_2_dpo_then_rerun_completes_without_redoing_round_1(reference, tiny_lm, tmp_path):
    train, held = _data(tmp_path)
    out = tmp_path / "it"
    sets = [x for s in SETS for x in ("--set", s)]
    cmd = [sys.executable, "-m", "alignctl", "iterate", "-p", train, "--eval-prompts", held, "-m", tiny_lm]
    cmd = [str(c) for c in (*cmd, "--by", BY, "-o", out, *sets)]
    env = {**os.environ, "ALIGNCTL_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    partial = out / "round-2" / "model.partial"
    deadline = time.monotonic() + 240
    while not partial.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert partial.exists() and not (out / "round-2" / "model").exists(), "the kill did not land in round 2's dpo"
    assert len(json.loads((out / "alignctl.json").read_text())["rounds"]) == 1

    round1 = {p: (out / p).stat().st_mtime_ns for p in _tree(out) if p.startswith("round-1/")}
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("up to date") >= 6  # round 1: 4 stages; round 2: collect, label
    assert "removing an unfinished earlier run" in again.stderr
    assert {p: (out / p).stat().st_mtime_ns for p in _tree(out) if p.startswith("round-1/")} == round1
    assert not partial.exists()

    assert _tree(out) == _tree(reference)
    got, ref = (json.loads((d / "alignctl.json").read_text())["rounds"] for d in (out, reference))
    counts = [[(e["candidates"], e["pairs"], e["train_pairs"]) for e in rounds] for rounds in (got, ref)]
    assert counts[0] == counts[1]
    for n in (1, 2):
        a, b = ((d / f"round-{n}" / "train.jsonl").read_text() for d in (out, reference))
        assert a == b  # the same pairs, not only the same number
    # what the killed round redid matches the uninterrupted run: the same weights (one thread, the
    # same seed and data: bit for bit), the same eval rows and summary (paths and timings aside)
    assert _same_weights(out / "round-2" / "model", reference / "round-2" / "model")
    for name in ("eval.json", "eval-base.json", "eval.rows.jsonl", "eval-base.rows.jsonl"):
        a, b = (_comparable(d / "round-2" / name, d) for d in (out, reference))
        assert a == b, name

    # a changed setting (accumulate=false changes round 2's training data only): refused without
    # --overwrite; with it, round 1 and round 2's sampling stay, round 2's dpo and evals are redone
    kept = [p for p in _tree(out) if p.startswith("round-1/") or p.startswith("round-2/candidates")]
    stamps = {p: (out / p).stat().st_mtime_ns for p in kept}
    changed = [*cmd, "--set", "accumulate=false"]
    refused = subprocess.run(changed, env=env, capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2 and "--overwrite" in refused.stderr
    before = (out / "round-2" / "model" / "alignctl.json").stat().st_mtime_ns
    redone = subprocess.run([*changed, "--overwrite"], env=env, capture_output=True, text=True, timeout=600)
    assert redone.returncode == 0, redone.stderr[-3000:]
    assert {p: (out / p).stat().st_mtime_ns for p in kept} == stamps
    assert (out / "round-2" / "model" / "alignctl.json").stat().st_mtime_ns != before
    second = json.loads((out / "alignctl.json").read_text())["rounds"][1]
    assert second["train_pairs"] == second["pairs"]  # round 2's own pairs only


def test_report_on_an_iterate_run_and_a_dpo_run(reference, tmp_path):
    from alignctl.tools.report import run_report

    dpo_run = reference / "round-1" / "model"
    run_report([reference, dpo_run], tmp_path / "report")
    series = json.loads((tmp_path / "report" / "series.json").read_text())
    assert (tmp_path / "report" / "index.html").is_file() and (tmp_path / "report" / "it_rounds.png").is_file()

    def logged(metrics_files: list[Path]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for f in metrics_files:
            for line in f.read_text().splitlines():
                for k, v in json.loads(line).items():
                    if k not in ("step", "epoch") and isinstance(v, int | float):
                        counts[k] = counts.get(k, 0) + 1
        return counts

    expected = {
        "it": logged([reference / f"round-{n}" / "model" / "metrics.jsonl" for n in (1, 2)]),
        "model": logged([dpo_run / "metrics.jsonl"]),
    }
    for label, want in expected.items():
        points = series["runs"][label]["points"]
        assert "loss" in points and "rewards/margins" in points
        for metric, n in points.items():
            assert n == want[metric], (label, metric)
            assert (tmp_path / "report" / series["plots"][metric]).is_file()


def test_output_dir_is_claimed_before_any_work(tmp_path, tiny_lm):
    """A run killed in round 1 (before any round finished) is still recognised as an iterate run
    on rerun; a dir holding anything else is refused."""
    from alignctl.errors import OutputError
    from alignctl.stages import iterate, resolve

    train, _ = _data(tmp_path)
    resolved = resolve("iterate", sets=["eval_split=0.25"])
    p = iterate.plan(resolved, train, str(tiny_lm), BY, tmp_path / "it", None)
    assert json.loads((p.out / "alignctl.json").read_text()) == {"stage": "iterate", "complete": False, "rounds": []}
    assert len(p.eval_prompts.read_text().splitlines()) == 3 and len(p.train_prompts.read_text().splitlines()) == 9
    stamp = p.train_prompts.stat().st_mtime_ns
    again = iterate.plan(resolved, train, str(tiny_lm), BY, tmp_path / "it", None)
    assert again.train_prompts.stat().st_mtime_ns == stamp  # unchanged split: not rewritten
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not an iterate run"):
        iterate.plan(resolved, train, str(tiny_lm), BY, tmp_path / "other", None)


def test_the_rounds_table_fits_80_columns_without_cutting_a_cell(monkeypatch):
    """iterate's round-by-round table on an 80-column terminal: every cell whole (no "…"), the
    interval on one line. Its old 9 boxed columns cut the reward, base and win-rate cells there."""
    import io

    from rich.console import Console

    from alignctl import comparison

    screen = Console(width=80, record=True, file=io.StringIO(), soft_wrap=True)
    monkeypatch.setattr(comparison, "console", screen)

    def ev(model: float, baseline: float, wtl: tuple[int, int, int]) -> dict:
        return {
            "model": {"mean_reward": model, "mean_length": 12.25},
            "baseline": {"mean_reward": baseline},
            **dict(zip(("wins", "ties", "losses"), wtl, strict=True)),
            **{"win_rate": 0.5625, "low": 0.2593, "high": 0.8261, "length_controlled": {"win_rate": 0.5714}},
        }

    first = ev(0.75, 0.625, (12, 26, 2))
    rounds = [
        {"round": 1, "pairs": 120, "train_pairs": 120, "eval": first, "eval_vs_base": first},
        {"round": 2, "pairs": 118, "train_pairs": 238, "eval": ev(0.8, 0.75, (10, 28, 2)), "eval_vs_base": first},
    ]
    comparison.rounds_table(rounds, title="iterate: runs/it (round 2 of 2)")
    table = screen.export_text().splitlines()[:-1]  # the caption is one grep-able line
    assert "…" not in "\n".join(table) and max(map(len, table)) <= 80, "\n".join(table)
    assert "0.56 [0.26, 0.83]" in table[-1] and "118/238" in table[-1] and "0.625" in table[-1]
