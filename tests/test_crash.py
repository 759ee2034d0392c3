"""Crash and rerun for the journalled stages: SIGKILL at seeded points, rerun, same output.

`ALIGNCTL_CRASH_AFTER_RECORDS=N` (io.Appender) kills the process with SIGKILL half-way through
writing journal record N+1, so each run leaves what a real crash mid-write leaves: a journal with
a torn last line and no output. The rerun (no flag, same command) must produce the same bytes as
a run that was never interrupted. Kill points come from seeded RNGs, so a failure reproduces.
"""

from __future__ import annotations

import hashlib
import json
import random
import signal

import pytest

from test_secrets import FakeJudge
from tiny import write_jsonl

N_PROMPTS = 12


def _kill_points(seeds: list[int], records: int) -> list[int]:
    # the journal's first record is its header; kill anywhere from just after it to before the last
    return [random.Random(seed).randint(1, records) for seed in seeds]


def _crash_then_rerun(args: list, out, whole, run, cli, crash_after: int, env: dict | None = None) -> None:
    journal = out.with_name(out.name + ".partial")
    killed = run(*args, "-o", out, env={"ALIGNCTL_CRASH_AFTER_RECORDS": str(crash_after), **(env or {})})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not out.exists() and journal.exists()
    torn = journal.read_bytes()
    assert not torn.endswith(b"\n") and torn.count(b"\n") == crash_after  # N whole records, then a torn one
    code, _, err = cli(*args, "-o", out)
    assert code == 0, err
    assert out.read_bytes() == whole.read_bytes()
    assert not journal.exists()
    manifest = json.loads(out.with_name(out.name + ".alignctl.json").read_text())
    assert (
        manifest["output"]["sha256"]
        == json.loads(whole.with_name(whole.name + ".alignctl.json").read_text())["output"]["sha256"]
    )


def _candidates(tmp, n: int = N_PROMPTS):
    recs = [
        {"id": f"q{i}", "prompt": f"Is the sky {i}?", "completions": ["a", "b c", "d e f good"][: 2 + i % 2]}
        for i in range(n)
    ]
    return write_jsonl(tmp / "cands.jsonl", recs)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_killed_at_a_seeded_point(seed, tmp_path, run, cli):
    args = ["label", "--candidates", _candidates(tmp_path), "--by", "rule:length", "--pairs", "all"]
    whole = tmp_path / "whole.jsonl"
    assert cli(*args, "-o", whole)[0] == 0
    (point,) = _kill_points([seed], N_PROMPTS)
    _crash_then_rerun(args, tmp_path / "cut.jsonl", whole, run, cli, point)


def test_label_with_a_judge_killed_part_way(tmp_path, run, cli, monkeypatch):
    """A judge is asked a window of comparisons at once and each answer is journalled as it is
    used: a kill re-asks at most the window in flight, never what was journalled before it."""
    from alignctl.rewards.judge import OpenAIChatClient, PairwiseJudge

    monkeypatch.setenv("ALIGNCTL_TEST_KEY", "unused")
    with FakeJudge() as judge:
        # 60 prompts: 120 comparisons, 240 questions (both orders), several windows of them
        args = ["label", "--candidates", _candidates(tmp_path, 60), "--by", "judge:test", "--judge-url", judge.url]
        args += ["--judge-key-env", "ALIGNCTL_TEST_KEY"]
        whole = tmp_path / "whole.jsonl"
        assert cli(*args, "-o", whole)[0] == 0
        asked = len(judge.auth)
        window = PairwiseJudge(OpenAIChatClient(judge.url, "test")).window
        assert asked == 240 and window < 120 // 2
        (point,) = _kill_points([5], asked // 2)  # 80 of 120
        assert point > window  # the kill comes after whole windows were journalled
        _crash_then_rerun(args, tmp_path / "cut.jsonl", whole, run, cli, point)
        # the uninterrupted run, the killed one up to its kill, the rerun for the rest: the
        # journalled answers are not asked again, only the rest of the window the kill cut off
        assert len(judge.auth) <= 2 * asked + 2 * window + 2, (len(judge.auth), point)


@pytest.mark.parametrize("seed", [0])  # tests/test_collect.py kills collect at a timed point too
def test_collect_killed_at_a_seeded_point(seed, tmp_path, tiny_lm, run, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_jsonl(
        tmp_path / "prompts.jsonl",
        [{"prompt": f"Is {w} red?"} for w in ("paris", "rome", "tokyo", "the sky", "the sun", "a cat")],
    )
    args = ["collect", "-p", "prompts.jsonl", "-m", str(tiny_lm), "-n", "2", "--max-new-tokens", "8"]
    args += ["--batch-size", "2", "--seed", "11"]
    whole = tmp_path / "whole.jsonl"
    assert cli(*args, "-o", whole)[0] == 0
    (point,) = _kill_points([seed], 5)
    _crash_then_rerun(args, tmp_path / "cut.jsonl", whole, run, cli, point, env={"OMP_NUM_THREADS": "1"})


# `python -c` with this prelude runs alignctl with os.replace turned into a SIGKILL: the process
# dies inside io.atomic_path, the output fully written to its temp file and not yet renamed.
KILL_AT_RENAME = (
    "import os, runpy, signal\n"
    "os.replace = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n"
    "runpy.run_module('alignctl', run_name='__main__')\n"
)


def test_label_killed_inside_the_atomic_write_leaves_nothing_behind_after_the_rerun(tmp_path, cli):
    import subprocess
    import sys

    args = ["label", "--candidates", _candidates(tmp_path), "--by", "rule:length", "--pairs", "all"]
    whole = tmp_path / "whole.jsonl"
    assert cli(*args, "-o", whole)[0] == 0
    out = tmp_path / "cut.jsonl"
    cmd = [sys.executable, "-c", KILL_AT_RENAME, *[str(a) for a in args], "-o", str(out)]
    killed = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    # the kill landed there: the output's temp (and its manifest's, written inside the same window) stay
    temps = sorted("manifest" if ".alignctl.json." in p.name else "output" for p in tmp_path.glob(".cut.jsonl.*.tmp"))
    assert not out.exists() and temps == ["manifest", "output"]

    code, _, err = cli(*args, "-o", out)
    assert code == 0, err
    assert out.read_bytes() == whole.read_bytes()
    # no temp file, no journal: only the inputs, the two outputs and their manifests
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["cands.jsonl", "whole.jsonl", "whole.jsonl.alignctl.json", "cut.jsonl", "cut.jsonl.alignctl.json"]
    )


def test_kill_between_a_file_output_and_its_journal_removal(tmp_path, tiny_lm, run):
    """A finished run removes its journal itself; a kill after the output and its manifest are
    written, before the journal goes (file_runs), leaves a complete output, its manifest and the
    journal, each checked before any rerun; the rerun is up to date and removes the journal."""
    write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"Is {c} blue?"} for c in ("the sky", "grass", "paris")])
    args = ("collect", "-p", tmp_path / "p.jsonl", "-m", tiny_lm, "-n", "2", "--max-new-tokens", "4")
    whole = tmp_path / "whole.jsonl"
    assert run(*args, "-o", whole).returncode == 0
    assert not whole.with_name("whole.jsonl.partial").exists()  # a run that finishes leaves no journal
    out, journal = tmp_path / "c.jsonl", tmp_path / "c.jsonl.partial"
    killed = run(*args, "-o", out, env={"ALIGNCTL_CRASH_AT": "file-journal"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    # what the kill left, before any rerun: the whole output, its manifest naming it, the journal
    assert out.read_bytes() == whole.read_bytes() and journal.exists()
    manifest = json.loads(out.with_name("c.jsonl.alignctl.json").read_text())
    assert manifest["output"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert not list(tmp_path.glob(".c.jsonl.*.tmp"))  # the renames were done
    again = run(*args, "-o", out)
    assert again.returncode == 0 and "up to date" in again.stderr, again.stderr[-2000:]
    assert out.read_bytes() == whole.read_bytes() and not journal.exists()


def test_kill_between_a_run_manifest_and_its_rename(tmp_path, tiny_lm, run):
    """A kill after `<out>.partial` holds the finished model and manifest, before the rename
    (runs.Run.finish): the rerun completes the rename without training again, and leaves nothing."""
    from tiny import toy_preferences

    write_jsonl(tmp_path / "prefs.jsonl", toy_preferences(4))
    args = ("dpo", "-d", tmp_path / "prefs.jsonl", "-m", tiny_lm, "--max-steps", "1")
    out, work = tmp_path / "out", tmp_path / "out.partial"
    killed = run(*args, "-o", out, env={"ALIGNCTL_CRASH_AT": "run-rename"})
    assert killed.returncode == -signal.SIGKILL and not out.exists() and (work / "alignctl.json").is_file()
    weights = (work / "model.safetensors").read_bytes()
    again = run(*args, "-o", out)
    assert again.returncode == 0 and "up to date" in again.stderr, again.stderr[-2000:]
    assert (out / "model.safetensors").read_bytes() == weights and not work.exists()
