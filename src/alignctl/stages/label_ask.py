"""label's questions to a pairwise source (a judge or a person), journalled and undoable.

A judge answers every comparison of two distinct answers of a prompt. A person answers either
those comparisons or one screen per prompt (`human.HumanSource.screen`): pick the best and the
worst of N (`best-worst`), or order them (`rank`). `--human-mode auto` shows the best/worst
screen to a prompt with more than two distinct answers (N answers would cost N(N-1)/2 pairwise
screens: 6 for 4, 28 for 8) and the pairwise screen to one with two. Each answer is journalled
as it is given (`cmp` or `rank` events, `undo` takes the last back), so a rerun asks only what
is left, and undo steps back across prompts.
"""

from __future__ import annotations

import itertools
from typing import Any

from alignctl.errors import AlignctlError, InputError
from alignctl.rewards.pairs import State, distinct

HUMAN_MODES = ("auto", "pairwise", "best-worst", "rank")
MAX_ON_SCREEN = 9  # one digit per answer


class Stopped(AlignctlError):
    """The person labelling quit; their choices are saved in the journal."""


def tasks_for(source, records: list[dict], forms: dict, human_mode: str) -> list[tuple]:
    """Every question in file order: (id, i, j) a comparison, (id,) one screen for the prompt."""
    tasks: list[tuple] = []
    for r in records:
        idx = distinct(forms[r["id"]][1])
        screen = source.kind == "human" and (
            human_mode in ("best-worst", "rank") or (human_mode == "auto" and 2 < len(idx) <= MAX_ON_SCREEN)
        )
        if screen and len(idx) >= 2:
            if len(idx) > MAX_ON_SCREEN:
                raise InputError(
                    f"prompt {r['id']}: {len(idx)} distinct answers; a {human_mode} screen shows at most "
                    f"{MAX_ON_SCREEN} (--human-mode pairwise)"
                )
            tasks.append((r["id"],))
        else:
            tasks += [(r["id"], i, j) for i, j in itertools.combinations(idx, 2)]
    return tasks


def _done(state: State, task: tuple) -> bool:
    if len(task) == 1:
        return task[0] in state.rankings
    return task[0] in state.rankings or (task[1], task[2]) in state.decisions.get(task[0], {})


def ask(source, records: list[dict], forms: dict, state: State, journal, progress, human_mode: str = "auto") -> None:
    """Ask every question still unanswered, in file order; undo steps back one answer."""
    from alignctl.console import warn
    from alignctl.rewards.human import Quit, Undo

    tasks = tasks_for(source, records, forms, human_mode)
    where = {t: n for n, t in enumerate(tasks)}
    what = "screen" if all(len(t) == 1 for t in tasks) else "question"
    # A judge is asked a window of comparisons at once (requests in flight, one batch); each
    # answer is journalled as it is used, so a kill re-asks at most the window in flight.
    every = getattr(source, "decide_all", None)
    ready: dict[tuple, Any] = {}
    pos = 0
    while pos < len(tasks):
        task = tasks[pos]
        if _done(state, task):
            pos += 1
            continue
        pid = task[0]
        prompt, comps = forms[pid]
        done = sum(_done(state, t) for t in tasks)
        kind = "comparison" if len(task) == 3 else what
        source.position = f"{kind} {done + 1} of {len(tasks)}   prompt {pid}"
        try:
            if len(task) == 3 and every is not None:
                if task not in ready:  # the next window of open comparisons, across prompts
                    todo = [t for t in tasks[pos:] if len(t) == 3 and not _done(state, t)][: source.window]
                    choices = every(
                        [forms[t[0]][0] for t in todo], [(forms[t[0]][1][t[1]], forms[t[0]][1][t[2]]) for t in todo]
                    )
                    ready.update(zip(todo, choices, strict=True))
                choice = ready.pop(task)
            elif len(task) == 3:
                choice = source.decide(prompt, comps[task[1]], comps[task[2]])
            else:
                idx = distinct(comps)
                mode = "best-worst" if human_mode == "auto" else human_mode
                answer = source.screen(prompt, [comps[i] for i in idx], mode)
                answer["order"] = [idx[k] for k in answer.get("order", [])]  # screen positions -> indices
        except Undo:
            if not state.history:
                warn("nothing to undo")
                continue
            last = state.history.pop()
            state.take_back(last)
            journal.add({"t": "undo"})
            pos = where.get(last, 0)
            continue
        except Quit:
            done = sum(_done(state, t) for t in tasks)
            raise Stopped(
                f"stopped after {done} of {len(tasks)} {what}s; choices saved in {journal.path}; "
                "rerun the same command to continue"
            ) from None
        if len(task) == 3:
            state.decisions.setdefault(pid, {})[(task[1], task[2])] = choice
            journal.add({"t": "cmp", "id": pid, "i": task[1], "j": task[2], "w": choice.winner, "d": choice.detail})
        else:
            state.rankings[pid] = answer
            journal.add({"t": "rank", "id": pid, "r": answer})
        state.history.append(task)
        progress(1)
        pos += 1
