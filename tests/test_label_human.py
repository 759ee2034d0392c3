"""`label --by human` at the terminal: the Textual app driven headless with its pilot through
`label.run` (journal, undo across prompts, resume, the written answer shown back, the quit
message), a snapshot of two screens, and one run in a real pseudo-terminal."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from alignctl import io
from alignctl.labelling.core import Stopped
from alignctl.labelling.terminal import ConfirmWritten, LabelApp
from alignctl.rewards.human import HumanSource
from alignctl.stages import label, resolve
from tiny import write_jsonl

# the "editor": prefixes what it was given, so the test sees both the prefill and the edit
EDITOR = "import sys\np = sys.argv[1]\nt = open(p).read()\nopen(p, 'w').write('BETTER: ' + t)\n"
THREE = [
    {"id": "p0", "prompt": "Question zero?", "completions": [f" zero answer {k}" for k in range(4)]},
    {"id": "p1", "prompt": "Question one?", "completions": [f" one answer {k}" for k in range(4)]},
    {"id": "p2", "prompt": "Question two?", "completions": [f" two answer {k}" for k in range(8)]},
]


@pytest.fixture
def at_terminal(tmp_path, monkeypatch):
    """`label(*steps, sets=...)`: label.run with the app under Textual's pilot. A step is a key, or
    a function of the app (a check at that point); returns the app (the run's result in .out)."""
    (tmp_path / "ed.py").write_text(EDITOR)
    monkeypatch.setenv("EDITOR", f"{sys.executable} {tmp_path / 'ed.py'}")
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setattr(HumanSource, "check_terminal", lambda self: None)

    def drive(*steps, sets=(), size=(110, 40)):
        apps = []

        def fake(session):
            app = LabelApp(session)
            apps.append(app)

            async def go():
                async with app.run_test(size=size) as pilot:
                    await pilot.pause()
                    for step in steps:
                        if callable(step):
                            step(app)
                        else:
                            await pilot.press(step)
                        await pilot.pause()

            asyncio.run(go())
            return app.return_value or "quit"

        monkeypatch.setattr("alignctl.labelling.terminal.label_in_terminal", fake)
        out = tmp_path / "prefs.jsonl"
        try:
            result = label.run(resolve("label", sets=list(sets)), tmp_path / "c.jsonl", "human", out, progress=False)
        except Stopped as exc:
            result = exc
        apps[0].out = result
        return apps[0]

    return drive


def title(app) -> str:
    return str(app.query_one("#title").render())


def test_best_worst_write_shown_back_undo_across_prompts_and_resume(tmp_path, at_terminal):
    """Screen 1: best 2, write a better one (shown back, kept), worst 4; undo steps back to screen 1
    (the written answer goes with it); best 1, worst 3; quit: the message names the journal.
    Rerun: screen 2 all equal; screen 3 (8 answers) best 2, write (kept), worst 5."""
    write_jsonl(tmp_path / "c.jsonl", THREE)
    seen = []

    def shown_back(app):
        assert isinstance(app.screen, ConfirmWritten)
        seen.append(str(app.screen.query_one("#written Static").render()))

    app = at_terminal(
        lambda a: seen.append(title(a)), "2", "e", shown_back, "y", "4",
        lambda a: seen.append(title(a)), "u", lambda a: seen.append(title(a)), "1", "3", "q",
    )  # fmt: skip
    assert seen == ["screen 1 of 3   prompt p0", "BETTER:  zero answer 1", "screen 2 of 3   prompt p1",
                    "screen 1 of 3   prompt p0"]  # fmt: skip
    journal = tmp_path / "prefs.jsonl.partial"
    assert str(app.out) == (
        f"stopped after 1 of 3 screens (1 answered just now): your answers are kept in {journal}; "
        f"rerun the same command to continue ({tmp_path / 'prefs.jsonl'} is written after the last one)"
    )
    assert journal.is_file() and not (tmp_path / "prefs.jsonl").exists()

    app = at_terminal(lambda a: seen.append(title(a)), "t", "2", "e", "y", "5")
    assert seen[-1] == "screen 2 of 3   prompt p1" and app.return_value == "done"
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
    assert not journal.exists()


def test_quit_on_the_first_screen_keeps_nothing_and_says_so(tmp_path, at_terminal):
    """The bug this replaced: quitting before any answer named a `.partial` that did not exist."""
    write_jsonl(tmp_path / "c.jsonl", THREE[:1])
    app = at_terminal("2", "u", "ctrl+c")  # a pick taken back on the screen: still no answer; Ctrl-C quits too
    assert str(app.out) == f"stopped before any answer: nothing was kept, {tmp_path / 'prefs.jsonl'} was not written"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl", "ed.py"]
    write_jsonl(tmp_path / "c.jsonl", THREE[:2])
    app = at_terminal("1", "2", "u", "u", "q")  # an answer given, then taken back (and nothing before it)
    assert "nothing was kept" in str(app.out) and not (tmp_path / "prefs.jsonl.partial").exists()


def test_a_written_answer_can_be_dropped_or_edited_again(tmp_path, at_terminal):
    write_jsonl(tmp_path / "c.jsonl", THREE[:1])
    at_terminal("1", "e", "n", "e", "e", "y", "2")  # drop it; write again, edit that again, keep
    rows = io.load(tmp_path / "prefs.jsonl", "preferences")
    assert rows[0]["chosen"] == "BETTER: BETTER:  zero answer 0"


def test_ranking_and_a_long_answer_scrolls_inside_its_panel(tmp_path, at_terminal):
    long = "".join(f"line {k}\n" for k in range(60))
    write_jsonl(tmp_path / "c.jsonl", [{"id": "r0", "prompt": "Rank these?", "completions": [" alpha", " beta", long]}])
    scrolled = []

    def scroll(app):
        panel = app.query(".answer")[2]
        assert panel.max_scroll_y > 30  # the panel holds 60 lines in far fewer rows
        panel.focus()
        scrolled.append(panel)

    def moved(app):
        assert scrolled[0].scroll_y > 0

    app = at_terminal(scroll, "pagedown", moved, "3", "u", "3", "1", sets=["human_mode=rank", "pairs=all"])
    assert app.return_value == "done"
    rows = io.load(tmp_path / "prefs.jsonl", "preferences")
    got = [(r["label"]["chosen_index"], r["label"]["rejected_index"], r["score_chosen"]) for r in rows]
    assert got == [(2, 0, 1.0), (2, 1, 1.0), (0, 1, 0.5)]
    assert rows[0]["label"]["verdict"]["order"] == [2, 0, 1]


def test_comparisons_keys_in_the_footer_and_the_rest(tmp_path, at_terminal):
    """Two answers: the comparison screen. a, undo, b, tie, skip; keys not of this screen do nothing."""
    cands = [
        {"id": f"h{i}", "prompt": f"Question {i}?", "completions": [f" first {i}", f" second {i}"]} for i in range(4)
    ]
    write_jsonl(tmp_path / "c.jsonl", cands)
    keys = []

    def footer(app):
        keys.append(sorted(k for k, b in app.screen.active_bindings.items() if b.enabled and b.binding.show))

    at_terminal(footer, "a", "u", "7", "e", "b", "t", "s", "a")
    assert keys == [["a", "b", "q", "s", "t", "u"]]
    rows = io.load(tmp_path / "prefs.jsonl", "preferences")
    assert [(r["id"], r["chosen"], r["rejected"]) for r in rows] == [
        ("h0", " second 0", " first 0"),
        ("h3", " first 3", " second 3"),
    ]
    assert rows[0]["label"]["kind"] == "human" and rows[0]["label"]["verdict"]["key"] == "b"
    stats = json.loads((tmp_path / "prefs.jsonl.alignctl.json").read_text())["final_metrics"]
    assert (stats["pairs"], stats["ties"], stats["skipped"]) == (2, 1, 1)


@pytest.mark.parametrize("mode", ["best-worst", "pairwise"])
def test_screen_snapshot(tmp_path, snap_compare, mode):
    """What the screen shows (tests/__snapshots__/; `pytest --snapshot-update` redraws them)."""
    from alignctl.files import Appender
    from alignctl.labelling.core import Session, questions_for
    from alignctl.prompts import training_form
    from alignctl.rewards.pairs import State

    records = [{"id": "q1", "prompt": "Name a fruit and say why you like it.", "completions": [
        " An apple: crisp, sweet, and it keeps for weeks.", " Bananas.",
        " <b>Mango</b> [bold]because[/bold] it is the best fruit there is.\n" + "It is juicy.\n" * 20,
    ]}]  # fmt: skip
    forms = {r["id"]: training_form(r) for r in records}
    session = Session(questions_for(records, forms, mode), forms, State(), Appender(tmp_path / "j.jsonl"))
    assert snap_compare(LabelApp(session), press=["2"] if mode == "best-worst" else [], terminal_size=(100, 34))


def test_a_real_terminal(tmp_path):
    """The app in a pseudo-terminal (the alternate screen, redrawn in place), a choice, quit, resume."""
    pexpect = pytest.importorskip("pexpect")
    write_jsonl(tmp_path / "c.jsonl", THREE[:2])
    argv = ["-m", "alignctl", "label", "-c", "c.jsonl", "--by", "human", "-o", "prefs.jsonl"]

    def spawn():
        env = {**os.environ, "TERM": "xterm-256color"}
        return pexpect.spawn(sys.executable, argv, cwd=str(tmp_path), env=env, encoding="utf-8", timeout=60,
                             dimensions=(40, 120))  # fmt: skip

    child = spawn()
    child.expect_exact("\x1b[?1049h")  # the alternate screen: the app redraws there, never scrolls
    child.expect("screen 1 of 2")
    child.send("2")
    child.expect("the worst")
    child.send("3")
    child.expect("screen 2 of 2")
    child.send("q")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    said = " ".join(child.before.split())
    assert "stopped after 1 of 2 screens (1 answered just now): your answers are kept in prefs.jsonl.partial" in said
    assert Path(tmp_path / "prefs.jsonl.partial").is_file()

    child = spawn()
    child.expect("screen 2 of 2")
    child.send("4")
    child.expect("the worst")
    child.send("1")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    rows = io.load(tmp_path / "prefs.jsonl", "preferences")
    assert [(r["label"]["chosen_index"], r["label"]["rejected_index"]) for r in rows] == [(1, 2), (3, 0)]


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
