"""`label --by human` screens driven through a pseudo-terminal: best/worst (one screen per prompt
whatever the number of answers), ranking, writing a better answer in $EDITOR, undo and resume."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from alignctl import io
from tiny import write_jsonl

pexpect = pytest.importorskip("pexpect")

# the "editor": prefixes what it was given, so the test sees both the prefill and the edit
EDITOR = "import sys\np = sys.argv[1]\nt = open(p).read()\nopen(p, 'w').write('BETTER: ' + t)\n"


def _spawn(tmp_path: Path, *extra: str):
    argv = ["-m", "alignctl", "label", "-c", "c.jsonl", "--by", "human", "-o", "prefs.jsonl", *extra]
    (tmp_path / "ed.py").write_text(EDITOR)
    env = {**os.environ, "EDITOR": f"{sys.executable} {tmp_path / 'ed.py'}", "PAGER": "cat"}
    env.pop("VISUAL", None)
    return pexpect.spawn(
        sys.executable, argv, cwd=str(tmp_path), env=env, encoding="utf-8", timeout=60, dimensions=(50, 200)
    )


def _finish(child) -> None:
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before


def test_best_worst_one_screen_per_prompt_edit_undo_and_resume(tmp_path):
    """Prompts of 4, 4 and 8 answers: three screens. Screen 1: best 2, write a better one, worst 4;
    undo; best 1, worst 3; quit. Rerun resumes at screen 2: all equal. Screen 3 (8 answers): best
    2, write, worst 5. The undone edit is gone; the kept one is the chosen side."""
    cands = [
        {"id": "p0", "prompt": "Question zero?", "completions": [f" zero answer {k}" for k in range(4)]},
        {"id": "p1", "prompt": "Question one?", "completions": [f" one answer {k}" for k in range(4)]},
        {"id": "p2", "prompt": "Question two?", "completions": [f" two answer {k}" for k in range(8)]},
    ]
    write_jsonl(tmp_path / "c.jsonl", cands)
    child = _spawn(tmp_path)
    child.expect("screen 1 of 3")
    child.expect("zero answer 3")
    child.expect("the best")
    child.send("2")
    child.expect("e.* write a better answer")
    child.send("e")
    child.expect("the worst")
    child.send("4")
    child.expect("screen 2 of 3")
    child.send("u")
    child.expect("screen 1 of 3")
    child.expect("the best")
    child.send("1")
    child.expect("the worst")
    child.send("3")
    child.expect("screen 2 of 3")
    child.send("q")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1 and "rerun the same command to continue" in child.before
    assert not (tmp_path / "prefs.jsonl").exists()

    child = _spawn(tmp_path)
    child.expect("screen 2 of 3")
    child.send("t")
    child.expect("screen 3 of 3")
    child.expect("1-8.*: the best")
    child.send("2")
    child.expect("the worst")
    child.send("e")
    child.expect("the worst")
    child.send("5")
    _finish(child)
    assert "comparison" not in child.before  # no pairwise screen at all
    rows = io.load(tmp_path / "prefs.jsonl", "preferences")
    assert [(r["id"], r["chosen"], r["rejected"]) for r in rows] == [
        ("p0", " zero answer 0", " zero answer 2"),
        ("p2", "BETTER:  two answer 1", " two answer 4"),
    ]
    assert "human_written" not in rows[0]["label"]
    assert rows[1]["label"]["human_written"] is True and rows[1]["label"]["chosen_index"] == 1
    assert rows[1]["label"]["verdict"]["kind"] == "best-worst"
    stats = json.loads((tmp_path / "prefs.jsonl.alignctl.json").read_text())["final_metrics"]
    assert (stats["pairs"], stats["ties"]) == (2, 1)


def test_ranking_gives_pairs_from_the_order_and_long_answers_scroll_in_the_pager(tmp_path):
    long = "".join(f"line {k}\n" for k in range(60))
    cands = [{"id": "r0", "prompt": "Rank these?", "completions": [" alpha", " beta", long]}]
    write_jsonl(tmp_path / "c.jsonl", cands)
    child = _spawn(tmp_path, "--human-mode", "rank", "--pairs", "all")
    child.expect("screen 1 of 1")
    child.expect(r"more lines \(v shows all\)")
    child.expect("number 1")
    child.send("v")
    child.expect("line 59")  # the pager ($PAGER=cat here) shows the whole answer
    child.expect("number 1")
    child.send("3")
    child.expect("number 2")
    child.send("u")  # takes back the last key on this screen
    child.expect("number 1")
    child.send("3")
    child.expect("number 2")
    child.send("1")
    _finish(child)
    rows = io.load(tmp_path / "prefs.jsonl", "preferences")
    got = [(r["label"]["chosen_index"], r["label"]["rejected_index"], r["score_chosen"]) for r in rows]
    assert got == [(2, 0, 1.0), (2, 1, 1.0), (0, 1, 0.5)]
    assert rows[0]["label"]["verdict"]["order"] == [2, 0, 1]


def test_two_answers_keep_the_pairwise_screen_and_a_bad_mode_is_refused(tmp_path):
    from conftest import run_cli

    write_jsonl(tmp_path / "c.jsonl", [{"id": "x", "prompt": "Q?", "completions": [" a", " b"]}])
    child = _spawn(tmp_path)
    child.expect("comparison 1 of 1")
    child.send("b")
    _finish(child)
    assert io.load(tmp_path / "prefs.jsonl", "preferences")[0]["chosen"] == " b"
    proc = run_cli("label", "-c", tmp_path / "c.jsonl", "--by", "human", "--human-mode", "worst", "-o", tmp_path / "q")
    assert proc.returncode == 2 and "human_mode must be one of" in proc.stderr


def test_pairs_from_a_ranking_by_hand():
    from alignctl.rewards.pairs import pairs_from_ranking

    comps = ["a", "b", "c", "d"]
    bw = {"kind": "best-worst", "order": [2, 0]}
    assert [(p.chosen, p.rejected) for p in pairs_from_ranking(comps, bw, "best-worst", 0.0).pairs] == [(2, 0)]
    every = pairs_from_ranking(comps, bw, "all", 0.0).pairs
    assert [(p.chosen, p.rejected) for p in every] == [(2, 0), (2, 1), (2, 3), (1, 0), (3, 0)]
    written = pairs_from_ranking(comps, {**bw, "text": "mine"}, "all", 0.0).pairs
    assert [(p.text, p.rejected) for p in written if p.text] == [("mine", 0), ("mine", 1), ("mine", 3), ("mine", 2)]
    assert pairs_from_ranking(comps, {"kind": "rank", "order": []}, "all", 0.0).ties == 1
    assert pairs_from_ranking(comps, {"kind": "rank", "skipped": True}, "all", 0.0).skipped == 1
    ranked = pairs_from_ranking(comps, {"kind": "rank", "order": [3, 1, 0, 2]}, "best-worst", 0.5).pairs
    assert [(p.chosen, p.rejected, p.score_chosen, p.score_rejected) for p in ranked] == [(3, 2, 1.0, 0.0)]
