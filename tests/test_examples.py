"""The example scripts and Makefile: valid shell/make, and every alignctl command in them parses.

Running them takes the demo's minutes (they use SmolLM2); here each `alignctl ...` line is handed
to the CLI's own parser (click `make_context`), which rejects an unknown flag or a missing
required one without running anything.
"""

from __future__ import annotations

import shlex
import subprocess

import pytest

from conftest import REPO

EXAMPLES = REPO / "examples"


def _example(name: str, monkeypatch):
    """An examples/ script as a module, with examples/ on the path for the whole test: compare_table
    imports its sibling compare when it builds a row (it passed only where another test had left
    compare imported)."""
    import importlib

    monkeypatch.syspath_prepend(str(EXAMPLES))
    return importlib.import_module(name)


def _commands(text: str) -> list[list[str]]:
    """The `alignctl ...` commands of a script or of `make -n` output, continuation lines joined."""
    joined = text.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line.startswith("alignctl "):
            out.append(shlex.split(line)[1:])
    return out


def _parse(args: list[str]) -> None:
    import typer

    from alignctl import cli

    group = typer.main.get_command(cli.app)
    name, rest = args[0], args[1:]
    command = group.get_command(None, name)
    assert command is not None, f"no command {name!r}"
    command.make_context(name, [a.replace("$", "X") for a in rest])  # raises on a bad flag


@pytest.mark.parametrize("script", ["pipeline.sh", "iterate_demo.sh"])
def test_shell_scripts_parse(script):
    path = EXAMPLES / script
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    commands = _commands(path.read_text())
    assert commands, script
    for args in commands:
        _parse(args)


def test_makefile_dry_run_chains_the_stages(tmp_path):
    proc = subprocess.run(
        ["make", "-n", "-f", str(EXAMPLES / "Makefile"), "ALIGNCTL=alignctl", f"OUT={tmp_path}/m", "all"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    commands = _commands(proc.stdout)
    names = [c[0] for c in commands]
    assert sorted(names) == sorted(["collect", "label", "train-rm", "dpo", "eval", "report"])
    assert names[:2] == ["collect", "label"] and names.index("eval") > names.index("dpo") and names[-1] == "report"
    for args in commands:
        _parse(args)


def test_demo_script_help():
    import sys

    proc = subprocess.run([sys.executable, str(EXAMPLES / "demo.py"), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--force" in proc.stdout


def test_compare_commands_parse_and_their_settings_resolve(tmp_path, monkeypatch):
    """Every command `make compare` runs is a valid alignctl command line, and its preset and
    --set values resolve (a typo would otherwise surface an hour into the run)."""

    from alignctl.stages import resolve

    compare = _example("compare", monkeypatch)
    jobs = compare.plan(tmp_path, list(compare.TASKS), list(compare.METHODS), [1, 2], 10.0)
    stages = {job.argv[0] for job in jobs}
    assert stages == {
        "collect",
        "label",
        "train-rm",
        "dpo",
        "kto",
        "orpo",
        "simpo",
        "sft",
        "online-dpo",
        "grpo",
        "rloo",
        "ppo",
        "iterate",
        "eval",
        "report",
    }
    chain = {job.name: job for job in jobs}
    for method in compare.METHODS:  # any one method alone plans the jobs it reads (ppo-rm-vllm: train-rm)
        alone = compare.plan(tmp_path, list(compare.TASKS), [method], [1], 10.0)
        names = {job.name for job in alone}
        assert all(a in names for job in alone for a in job.after), method
    first, then = chain["arith/sft-dpo-s2/sft"], chain["arith/sft-dpo-s2"]  # the chapter's order: sft, then dpo
    assert first.argv[0] == "sft" and "--from-prefs" in first.argv and then.argv[0] == "dpo"
    assert then.argv[then.argv.index("-m") + 1] == first.argv[first.argv.index("-o") + 1] and first.name in then.after
    for job in jobs:
        args = [str(a) for a in job.argv]
        _parse(args)
        if args[0] == "report":
            continue
        sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
        preset = args[args.index("--preset") + 1] if "--preset" in args else None
        resolve(args[0], preset=preset, sets=sets)
        if args[0] not in ("collect", "label", "eval", "train-rm"):
            halved = args[0] == "iterate" or "/sft-dpo-" in job.name  # iterate's rounds, the chain's two stages
            assert args[args.index("--max-minutes") + 1] == ("5" if halved else "10"), job.name


def test_compare_table_counts_right_answers_kept_lost_and_new_and_the_spread_over_seeds(tmp_path, monkeypatch):
    """Correctness apart from brevity, per question against the base, and each method's seeds summarised."""
    import json

    compare_table = _example("compare_table", monkeypatch)
    held = tmp_path / "held.jsonl"
    questions = [("Capital of France?", ["Paris"]), ("Two plus two?", ["four", "4"]), ("Largest ocean?", ["Pacific"])]
    held.write_text("".join(json.dumps({"prompt": q, "answer": a}) + "\n" for q, a in questions))
    base = ["It is Paris, a city of art and food and many other things.", "Five.", "The Pacific."]
    trained = {1: ["Lyon.", "Five.", "Atlantic."], 2: ["Paris.", "Four.", "Pacific."]}
    for seed, answers in trained.items():
        ev = tmp_path / "qa" / f"grpo-rule-s{seed}.eval-base"
        ev.mkdir(parents=True)
        rows = [{"prompt": q, "model": m, "baseline": b} for (q, _), m, b in zip(questions, answers, base, strict=True)]
        (ev / "eval.rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        stats = {"mean_reward": 0.5 + seed / 10, "mean_length": 1.0, "reward_ci": 0.1}
        outcome = {"model": stats, "baseline": stats, "wins": 1, "ties": 1, "losses": 1}
        (ev / "eval.json").write_text(json.dumps(outcome))
    rows = [compare_table.row_for(tmp_path, "qa", held, "grpo-rule", seed) for seed in (1, 2)]
    assert [r["right_changes"] for r in rows] == ["0 / 2 / 0", "2 / 0 / 1"]  # kept / lost / new
    assert rows[0]["correct"] == 0.0 and rows[1]["correct"] == 1.0 and rows[0]["base_correct"] == pytest.approx(2 / 3)
    summary = compare_table.by_method(rows)
    assert summary[-1] == "| grpo-rule | 2 | 0.650 (0.600 - 0.700) | 0.500 | 1.0 |"


def test_compare_table_takes_the_peak_memory_of_the_command_that_wrote_the_run(tmp_path, monkeypatch):
    """A job run again with other arguments and then set back: the row is the run on disk's."""
    import json

    compare_table = _example("compare_table", monkeypatch)
    run = tmp_path / "qa" / "grpo-rule-s1"
    run.mkdir(parents=True)
    (run / "alignctl.json").write_text(json.dumps({"command": ["/x/__main__.py", "grpo", "--lr", "3e-4"]}))
    records = [
        {"job": "qa/grpo-rule-s1", "command": "alignctl grpo --lr 3e-4", "peak_rss_mb": 4000},
        {"job": "qa/grpo-rule-s1", "command": "alignctl grpo --lr 6e-4", "peak_rss_mb": 5000},
        {"job": "qa/grpo-rule-s1", "command": "alignctl grpo --lr 3e-4", "peak_rss_mb": 1, "up_to_date": True},
    ]
    (tmp_path / "jobs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    held = tmp_path / "held.jsonl"
    held.write_text("")
    assert compare_table.row_for(tmp_path, "qa", held, "grpo-rule", 1)["peak_mb"] == 4000
