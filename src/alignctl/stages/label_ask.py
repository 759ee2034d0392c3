"""label's questions to a pairwise source: a judge, one person at the terminal, or people at a page.

The questions, answers, journal, undo and resume are `labelling.core`'s; this module is what
label does with them: asks a judge a window of comparisons at a time (`ask_judge`), says what a
person's quit kept (`quit_message`), and runs the page for several people and reads their
journals back into pairs with votes (`together`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alignctl.config import Resolved
from alignctl.console import info
from alignctl.errors import InputError
from alignctl.labelling.core import Session, Stopped


def ask_judge(source, session: Session, progress) -> None:
    """Every open comparison, a window at a time (requests in flight; one batch for a local
    judge); each verdict is journalled as it is used, so a kill re-asks at most one window."""
    todo = [q for q in session.questions if not session.answered(q)]
    every = getattr(source, "decide_all", None)
    step = source.window if every is not None else 1
    for start in range(0, len(todo), step):
        part = todo[start : start + step]
        pairs = [(session.forms[q.pid][1][q.pair[0]], session.forms[q.pid][1][q.pair[1]]) for q in part]
        prompts = [session.forms[q.pid][0] for q in part]
        choices = every(prompts, pairs) if every is not None else [source.decide(prompts[0], *pairs[0])]
        for q, choice in zip(part, choices, strict=True):
            session.record(q, choice)
            progress(1)


def check_serving(resolved: Resolved, by: str, serve: bool, host: str | None, until_done: bool) -> None:
    """--serve and its options, and the settings that only several people give meaning to."""
    if (host or until_done) and not serve:
        raise InputError(f"{'--host' if host else '--until-done'} goes with --serve")
    if serve and by != "human":
        raise InputError(f"--serve is for --by human (people at a web page), not --by {by}")
    if not serve and resolved["annotations_per_prompt"] > 1:
        raise InputError("annotations_per_prompt > 1 needs --serve (several people at the labelling page)")
    if not serve and resolved["min_agreement"]:
        raise InputError("min_agreement needs --serve with annotations_per_prompt >= 2 (votes to agree on)")
    if serve:
        from alignctl.labelling import require_serve

        require_serve()


def quit_message(session: Session, run_) -> str:
    """What quitting kept and where: the journal (if any answer stands) and how to continue. A
    journal with no answer standing is removed, so the message never names a file that is not there."""
    total, done = len(session.questions), session.done()
    kinds = {q.what for q in session.questions}
    what = kinds.pop() if len(kinds) == 1 else "question"
    if not done:
        session.journal.close()
        run_.journal.unlink(missing_ok=True)
        return f"stopped before any answer: nothing was kept, {run_.out} was not written"
    return (
        f"stopped after {done} of {total} {what}s ({session.given} answered just now): your answers are kept "
        f"in {run_.journal}; rerun the same command to continue ({run_.out} is written after the last one)"
    )


def together(resolved: Resolved, records: list[dict], forms: dict, questions, run_, where: tuple):
    """--serve: the page until Ctrl-C or --until-done, then pairs with votes from every journal.
    Returns (records, stats), or None when the output is up to date."""
    from alignctl import runs
    from alignctl.labelling import serve, team, votes
    from alignctl.rewards.pairs import preference_records, summarize

    host, port, until_done = where
    folder = annotations_dir(run_.out)
    group = team.Team.open(folder, questions, forms, run_.journal_fingerprint, resolved["annotations_per_prompt"])
    if group.complete() and run_.up_to_date:
        runs.say_up_to_date(run_)
        return None
    if group.complete():
        info(f"every prompt already has {group.k} answer(s) in {folder}/: writing {run_.out}")
    else:
        serve.serve(group, host=host, port=port, until_done=until_done, out=run_.out)
    states = group.states()
    if not states:
        raise Stopped(f"no answers were given: {run_.out} was not written")
    mode, margin, agree = resolved["pairs"], resolved["min_margin"], resolved["min_agreement"]

    def outcome(r: dict, comps: list):
        return votes.team_pairs(comps, states, r["id"], mode, margin, agree)

    source = {"kind": "human", "annotators": sorted(states), "annotations_per_prompt": group.k}
    base = {"by": "human", "kind": "human", "source": source, "pairs": mode}
    rows, outcomes = preference_records(records, forms, outcome, base)
    stats: dict[str, Any] = summarize(len(records), outcomes, rows, True)
    stats["disagreed"] = sum(o.disagreed for o in outcomes)
    stats["annotated"] = group.progress()["complete"]
    stats["unanswered"] = sum(1 for pid in group.pids if not votes.touched(states, pid))
    judged = votes.judged(forms, states)
    if group.k > 1 or judged["pairs"]:
        stats["agreement"] = {"judged": judged, "written": votes.from_records(rows)}
    return rows, stats


def annotations_dir(out: Path) -> Path:
    """Where --serve keeps one journal per annotator: beside the output, never deleted by alignctl."""
    return out.with_name(out.name + ".annotations")
