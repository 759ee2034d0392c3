"""Several annotators on the same candidates: one journal each, each prompt handed to K of them.

The journals live in `<out>.annotations/`, one file per person (`alice-1f3a....jsonl`: a slug of
the name and a hash of it, so a name never becomes a path), each opening with a header that names
the person and the run's fingerprint (the candidates and the questions), then `core`'s records.
alignctl never deletes them: they are people's work. A restart reads them back and everyone
continues where they were.

Handing out: a person continues the prompt they began (a prompt of several comparisons, or one
whose answer they took back); otherwise they get the first prompt in file order that they have
not answered and that has fewer than K finished answers plus claims by others. A claim is the
prompt someone has open; it lapses after `CLAIM_SECONDS` so a closed tab holds nothing for long,
and a prompt may then end with more than K answers (all are counted).
"""

from __future__ import annotations

import hashlib
import re
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from alignctl.errors import InputError, OutputError
from alignctl.files import Appender, read_journal
from alignctl.labelling.core import BadAnswer, Question, Session
from alignctl.rewards.pairs import State

HEADER = "_alignctl_journal"
CLAIM_SECONDS = 15 * 60
NAME = re.compile(r"\w[\w .'-]{0,39}")  # letters and digits of any script, spaces, . ' -


def clean_name(raw: str) -> str:
    """A person's name as given (spaces collapsed), or BadAnswer saying what a name may hold."""
    name = " ".join(unicodedata.normalize("NFC", raw or "").split())
    if not NAME.fullmatch(name):
        raise BadAnswer("a name is 1 to 40 letters, digits, spaces, dots, dashes or apostrophes")
    return name


def journal_name(name: str) -> str:
    """The file of a person's journal: `[a-z0-9-]` only, whatever the name."""
    ident = name.casefold()
    slug = re.sub(r"[^a-z0-9]+", "-", ident.encode("ascii", "ignore").decode()).strip("-")[:24] or "annotator"
    return f"{slug}-{hashlib.sha256(ident.encode()).hexdigest()[:12]}.jsonl"


@dataclass
class Member:
    name: str
    session: Session
    appender: Appender | None = None


@dataclass
class Team:
    folder: Path
    questions: list[Question]
    forms: dict
    key: str  # fingerprint of the candidates and the questions: a journal of another run is refused
    k: int
    members: dict[str, Member] = field(default_factory=dict)  # by casefolded name
    claims: dict[str, tuple[str, float]] = field(default_factory=dict)  # person -> (prompt id, since)

    def __post_init__(self) -> None:
        self.pids = list(dict.fromkeys(q.pid for q in self.questions))
        self.by_pid: dict[str, list[Question]] = {}
        for q in self.questions:
            self.by_pid.setdefault(q.pid, []).append(q)

    @classmethod
    def open(cls, folder: Path, questions: list[Question], forms: dict, key: str, k: int) -> Team:
        """Read every journal in `folder` (made if missing); a journal of another run is an error."""
        team = cls(Path(folder), questions, forms, key, k)
        if team.folder.exists() and not team.folder.is_dir():
            raise OutputError(f"{team.folder}: exists and is not a folder (the annotators' journals go there)")
        for path in sorted(team.folder.glob("*.jsonl")):
            records = read_journal(path)
            header = records[0].get(HEADER, {}) if records and isinstance(records[0], dict) else {}
            if header.get("fingerprint") != key or "annotator" not in header:
                raise InputError(
                    f"{path}: annotations of other candidates or another --human-mode; "
                    f"move {team.folder} away to start afresh (alignctl never deletes people's work)"
                )
            name = header["annotator"]
            team.members[name.casefold()] = Member(name, Session(questions, forms, State.replay(records[1:]), None))
        for m in team.members.values():
            m.session.journal = _Lazy(team, m)
        return team

    # ----------------------------------------------------------------------------- people

    def member(self, name: str) -> Member:
        """The person called `name` (case does not matter), made on first sight."""
        ident = name.casefold()
        if ident not in self.members:
            m = Member(name, Session(self.questions, self.forms, State(), None))
            m.session.journal = _Lazy(self, m)
            self.members[ident] = m
        return self.members[ident]

    def finished(self, m: Member, pid: str) -> bool:
        return all(m.session.answered(q) for q in self.by_pid[pid])

    def count(self, pid: str) -> int:
        """How many people have answered every question of the prompt."""
        return sum(self.finished(m, pid) for m in self.members.values())

    def complete(self) -> bool:
        return all(self.count(pid) >= self.k for pid in self.pids)

    def next_for(self, name: str, now: float | None = None) -> Question | None:
        """The question to show `name` now (None: nothing left for them at the moment)."""
        now = time.time() if now is None else now
        m = self.member(name)
        ident = name.casefold()
        mine = self.claims.get(ident)
        begun = [p for p in self.pids if not self.finished(m, p) and any(m.session.answered(q) for q in self.by_pid[p])]
        if mine and not self.finished(m, mine[0]):
            pid = mine[0]
        elif begun:
            pid = begun[0]
        else:
            pid = next((p for p in self.pids if not self.finished(m, p) and self._room(p, ident, now)), None)
        if pid is None:
            self.claims.pop(ident, None)
            return None
        self.claims[ident] = (pid, now)
        return m.session.next(lambda q: q.pid == pid)

    def undo(self, name: str, now: float | None = None) -> Question | None:
        """Take back `name`'s last answer; their next question is the one it answered."""
        q = self.member(name).session.undo()
        if q is not None:
            self.claims[name.casefold()] = (q.pid, time.time() if now is None else now)
        return q

    def _room(self, pid: str, ident: str, now: float) -> bool:
        holding = sum(
            1
            for who, (p, since) in self.claims.items()
            if p == pid and who != ident and now - since < CLAIM_SECONDS and not self.finished(self.members[who], p)
        )
        return self.count(pid) + holding < self.k

    def progress(self, name: str | None = None) -> dict[str, int]:
        m = self.members.get((name or "").casefold())
        return {
            "mine": sum(self.finished(m, p) for p in self.pids) if m else 0,
            "prompts": len(self.pids),
            "complete": sum(self.count(p) >= self.k for p in self.pids),
            "k": self.k,
            "people": len(self.members),
        }

    def states(self) -> dict[str, State]:
        """Each person's answers, by name (those who gave none left out)."""
        return {m.name: m.session.state for m in self.members.values() if m.session.state.history}

    def close(self) -> None:
        for m in self.members.values():
            if m.appender is not None:
                m.appender.close()
                m.appender = None


class _Lazy:
    """A person's journal, opened (with its header) at their first answer, so a visit that answers
    nothing leaves no file behind."""

    def __init__(self, team: Team, member: Member) -> None:
        self.team, self.member = team, member
        self.path = team.folder / journal_name(member.name)

    def add(self, record: dict) -> None:
        m = self.member
        if m.appender is None:
            fresh = not self.path.exists() or self.path.stat().st_size == 0
            self.team.folder.mkdir(parents=True, exist_ok=True)
            m.appender = Appender(self.path)
            if fresh:
                m.appender.add({HEADER: {"stage": "label", "fingerprint": self.team.key, "annotator": m.name}})
        m.appender.add(record)
