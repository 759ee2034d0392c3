"""The labelling core: the questions, one annotator's answers journalled as they are given, undo, resume.

A question is either one comparison of two distinct answers of a prompt (`pairwise`; a judge is
asked these too) or one screen per prompt: pick the best and the worst of N (`best-worst`), or
order them all (`rank`). `--human-mode auto` shows the best/worst screen to a prompt with more
than two distinct answers (N answers would cost N(N-1)/2 comparisons: 6 for 4, 28 for 8) and the
comparison to one with two.

A `Session` is one annotator's side of it: `next()` is the first question still open, `view(q)`
what a face shows, `compare` / `rank` / `record` check an answer and journal it at once (one
fsynced line), `undo()` takes the last one back (across prompts too). The journal (one JSON object
a line, replayed by `pairs.State` on resume):

    {"t": "cmp", "id": PID, "i": I, "j": J, "w": 0 | 1 | null, "d": {"key": "a" | "b" | "t" | "s", ...}}
    {"t": "rank", "id": PID, "r": {"kind": "best-worst" | "rank", "order": [indices, best first],
                                   "text": "a better answer they wrote", "skipped": true}}
    {"t": "undo"}

`order` holds completion indices: both answers of best/worst, every answer of a ranking, none
for "all equally good".
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from alignctl.errors import AlignctlError, InputError
from alignctl.rewards import Choice
from alignctl.rewards.pairs import State, distinct
from alignctl.rewards.text import completion_text, prompt_text

HUMAN_MODES = ("auto", "pairwise", "best-worst", "rank")
MAX_ON_SCREEN = 9  # one digit per answer at the terminal
MAX_TEXT = 20_000  # characters of an answer a person writes
PICKS = {"a": 0, "b": 1, "t": None, "s": None}  # a comparison's keys: A better, B better, tie, skip


class Stopped(AlignctlError):
    """The labelling stopped before every question had an answer; the message says what was kept."""


class BadAnswer(ValueError):
    """An answer that does not fit its question (a face shows the message and asks again)."""


class Answered(ValueError):
    """The question already has this annotator's answer (a second tab, a resubmitted form)."""


@dataclass(frozen=True)
class Question:
    pid: str
    mode: str  # "pairwise": one comparison; "best-worst" / "rank": one screen for the prompt
    pair: tuple[int, int] | None = None

    @property
    def task(self) -> tuple:
        """The journal's name for it: (id, i, j) a comparison, (id,) a screen."""
        return (self.pid, *self.pair) if self.pair else (self.pid,)

    @property
    def what(self) -> str:
        return "comparison" if self.pair else "screen"


def questions_for(records: list[dict], forms: dict, human_mode: str, person: bool = True) -> list[Question]:
    """Every question in file order (a judge, `person=False`, is asked comparisons only)."""
    out: list[Question] = []
    for r in records:
        idx = distinct(forms[r["id"]][1])
        screen = person and (
            human_mode in ("best-worst", "rank") or (human_mode == "auto" and 2 < len(idx) <= MAX_ON_SCREEN)
        )
        if screen and len(idx) >= 2:
            if len(idx) > MAX_ON_SCREEN:
                raise InputError(
                    f"prompt {r['id']}: {len(idx)} distinct answers; a {human_mode} screen shows at most "
                    f"{MAX_ON_SCREEN} (--human-mode pairwise)"
                )
            out.append(Question(r["id"], "best-worst" if human_mode == "auto" else human_mode))
        else:
            out += [Question(r["id"], "pairwise", (i, j)) for i, j in itertools.combinations(idx, 2)]
    return out


@dataclass
class View:
    """What a face shows for one question: texts only (a face never sees a record)."""

    question: Question
    number: int  # 1-based place of this question among `total`
    total: int
    prompt: str
    answers: list[str]  # A and B, or the prompt's distinct answers in file order
    indices: list[int]  # the completion index behind each shown answer

    @property
    def title(self) -> str:
        return f"{self.question.what} {self.number} of {self.total}   prompt {self.question.pid}"


class Session:
    """One annotator's answers to `questions`, replayed from and journalled to `journal`."""

    def __init__(self, questions: list[Question], forms: dict, state: State, journal) -> None:
        self.questions = questions
        self.forms = forms
        self.state = state
        self.journal = journal  # anything with add(record): files.Appender
        self.by_task = {q.task: q for q in questions}
        self.given = 0  # answers given through this object (for the quit message)

    # ------------------------------------------------------------------------------- reading

    def answered(self, q: Question) -> bool:
        if q.pair is None:
            return q.pid in self.state.rankings
        return q.pid in self.state.rankings or q.pair in self.state.decisions.get(q.pid, {})

    def done(self, among: list[Question] | None = None) -> int:
        return sum(self.answered(q) for q in (self.questions if among is None else among))

    def next(self, allowed: Callable[[Question], bool] | None = None) -> Question | None:
        """The first question in file order without an answer (and `allowed`, if given)."""
        for q in self.questions:
            if not self.answered(q) and (allowed is None or allowed(q)):
                return q
        return None

    def view(self, q: Question, number: int | None = None, total: int | None = None) -> View:
        prompt, comps = self.forms[q.pid]
        idx = list(q.pair) if q.pair else distinct(comps)
        return View(
            q,
            self.done() + 1 if number is None else number,
            len(self.questions) if total is None else total,
            prompt_text(prompt),
            [completion_text(comps[i]) for i in idx],
            idx,
        )

    # ------------------------------------------------------------------------------- answering

    def compare(self, q: Question, key: str) -> None:
        """A person's comparison: `key` a (A better), b (B better), t (tie) or s (skip)."""
        if q.pair is None or key not in PICKS:
            raise BadAnswer(f"a comparison takes one of {', '.join(PICKS)}, got {key!r}")
        self.record(q, Choice(PICKS[key], {"key": key} | ({"skipped": True} if key == "s" else {})))

    def record(self, q: Question, choice: Choice) -> None:
        """A comparison's answer (a judge's verdict or a person's key), journalled at once."""
        self._check_open(q)
        i, j = q.pair
        self.state.decisions.setdefault(q.pid, {})[(i, j)] = choice
        self._add({"t": "cmp", "id": q.pid, "i": i, "j": j, "w": choice.winner, "d": choice.detail}, q)

    def rank(self, q: Question, order: list[int] | None = None, text: str | None = None, skip: bool = False) -> None:
        """One screen's answer. `order`: positions in `view(q).answers`, best first (best and worst
        for best-worst, every answer for rank); [] all equally good; `text` a better answer than
        the best, written by the person (best-worst only); `skip` no answer."""
        self._check_open(q)
        if q.pair is not None:
            raise BadAnswer("this question is a comparison, not a screen")
        view = self.view(q)
        answer = check_screen(q.mode, len(view.indices), order, text, skip)
        if "text" in answer and answer["text"] == view.answers[answer["order"][0]].strip("\n"):
            del answer["text"]  # the best answer itself, unchanged: nothing was written
        idx = view.indices
        if "order" in answer:
            answer["order"] = [idx[k] for k in answer["order"]]  # screen positions -> completion indices
        self.state.rankings[q.pid] = answer
        self._add({"t": "rank", "id": q.pid, "r": answer}, q)

    def undo(self) -> Question | None:
        """Take back the last answer (journalled); returns its question, None if there is none."""
        if not self.state.history:
            return None
        last = self.state.history.pop()
        self.state.take_back(last)
        self.journal.add({"t": "undo"})
        self.given = max(0, self.given - 1)
        return self.by_task.get(last)

    def _check_open(self, q: Question) -> None:
        if q.task not in self.by_task:
            raise BadAnswer(f"no such question: {q.task}")
        if self.answered(q):
            raise Answered(f"{q.what} for prompt {q.pid} already has your answer")

    def _add(self, record: dict, q: Question) -> None:
        self.journal.add(record)
        self.state.history.append(q.task)
        self.given += 1


def check_screen(mode: str, n: int, order: list[int] | None, text: str | None, skip: bool) -> dict[str, Any]:
    """A screen's answer as the journal holds it (positions still), or BadAnswer saying what is wrong."""
    if skip:
        return {"kind": mode, "skipped": True}
    order = list(order or [])
    if any(not isinstance(k, int) or not 0 <= k < n for k in order) or len(set(order)) != len(order):
        raise BadAnswer(f"answers are numbered 1 to {n}, each once")
    if text is not None:
        text = text.strip("\n")
        if mode != "best-worst" or len(order) != 2:
            raise BadAnswer("a written answer goes with a best and a worst pick")
        if not text.strip():
            text = None
        elif len(text) > MAX_TEXT:
            raise BadAnswer(f"a written answer has at most {MAX_TEXT} characters")
    if order and mode == "best-worst" and len(order) != 2:
        raise BadAnswer("pick one best and one worst answer (two different ones)")
    if order and mode == "rank" and len(order) != n:
        raise BadAnswer(f"rank every answer, 1 to {n}")
    return {"kind": mode, "order": order} | ({"text": text} if text is not None else {})
