"""Several people's answers to the same prompts: preference pairs with their votes, and agreement.

Each person's answer to a prompt says something about pairs of its distinct answers (i < j): +1
(i is better), -1 (j is better), 0 (equally good). A comparison says it about its own pair; a
ranking about every pair; best/worst about best against each other answer and each other answer
against worst (the middle ones are not compared); "all equal" gives 0 for every pair; a skip says
nothing. Those are a pair's votes.

- A pair's winner is the value most of its votes give (a tie in the count, or most voting 0, is a
  tie); its agreement is that value's share of the votes (two people: 1.0 or 0.5; none with one
  vote). `--min-agreement A` keeps pairs whose agreement is at least A and that have two or more
  votes.
- `--pairs all` writes every pair with a winner; `best-worst` the pair of the answers with the
  highest and lowest score (share of their votes won, ties half, over everyone), if its own votes
  pick the best.
- An answer someone wrote (best/worst with `e`) is the chosen side of its own records, against the
  answers its writer put below their best; its votes are everyone's votes on (their best, that
  answer), since the writer offered it as better than their best.
- Over the set: Krippendorff's alpha (the `krippendorff` package), ordinal (-1 < 0 < +1), the
  people as coders and the pairs with two or more votes as units, missing votes allowed. 1 is full
  agreement, 0 what chance gives, below 0 systematic disagreement (Krippendorff 2011, "Computing
  Krippendorff's Alpha-Reliability"; 0.667 is his lowest bar for tentative conclusions).

`from_records` reads the same figures back from a written preference file (`validate`), from the
`label.votes` each record carries.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from alignctl.rewards.pairs import Outcome, Pair, State, distinct

Units = dict[tuple[int, int], dict[str, int]]  # (i, j), i < j -> {person: +1 / 0 / -1}


def judgements(comps: list, state: State, pid: str) -> dict[tuple[int, int], int]:
    """What one person's answer to prompt `pid` says about each pair of its distinct answers."""
    idx = distinct(comps)
    out: dict[tuple[int, int], int] = {}

    def put(hi: int, lo: int, value: int = 1) -> None:
        i, j = min(hi, lo), max(hi, lo)
        out[(i, j)] = 0 if value == 0 else (value if hi == i else -value)

    ranking = state.rankings.get(pid)
    if ranking is not None:
        order = ranking.get("order") or []
        if ranking.get("skipped"):
            return out
        if not order:
            for i, j in itertools.combinations(idx, 2):
                put(i, j, 0)
        elif ranking.get("kind") == "rank":
            for hi, lo in itertools.combinations(order, 2):
                put(hi, lo)
        else:
            best, worst = order[0], order[-1]
            put(best, worst)
            for m in (i for i in idx if i not in (best, worst)):
                put(best, m)
                put(m, worst)
        return out
    for (i, j), choice in state.decisions.get(pid, {}).items():
        if not choice.detail.get("skipped"):
            out[(i, j)] = 0 if choice.winner is None else (1 if choice.winner == 0 else -1)
    return out


def touched(states: dict[str, State], pid: str) -> bool:
    """Whether anyone answered prompt `pid` at all (a skip included)."""
    return any(pid in s.rankings or s.decisions.get(pid) for s in states.values())


def ballots(comps: list, states: dict[str, State], pid: str) -> Units:
    units: Units = {}
    for name, state in states.items():
        for pair, value in judgements(comps, state, pid).items():
            units.setdefault(pair, {})[name] = value
    return units


def majority(votes: dict[str, int]) -> tuple[int | None, float | None]:
    """(winning value or None for a tie in the count, its share of the votes; None with one vote)."""
    counts: dict[int, int] = {}
    for v in votes.values():
        counts[v] = counts.get(v, 0) + 1
    top = max(counts.values())
    leaders = [v for v, n in counts.items() if n == top]
    share = round(top / len(votes), 4) if len(votes) >= 2 else None
    return (leaders[0] if len(leaders) == 1 else None), share


def _named(votes: dict[str, int], chosen: int, rejected: int) -> dict[str, str]:
    """Votes on (min, max) as each person's word about this record: chosen, rejected or tie."""
    first = min(chosen, rejected)
    return {
        n: "tie" if v == 0 else ("chosen" if (v > 0) == (chosen == first) else "rejected") for n, v in votes.items()
    }


def team_pairs(
    comps: list, states: dict[str, State], pid: str, mode: str, min_margin: float, min_agreement: float
) -> Outcome:
    """The pairs of one prompt from everyone's answers (see the module docstring)."""
    out = Outcome()
    idx = distinct(comps)
    units = ballots(comps, states, pid)
    if len(idx) < 2:
        out.dropped += 1
        return out
    if not units:  # skipped by all who saw it; a prompt nobody answered yet counts nowhere
        out.skipped += touched(states, pid)
        return out
    won = {i: [0.0, 0] for i in idx}
    for (i, j), votes in units.items():
        for v in votes.values():
            won[i][0] += (v + 1) / 2
            won[j][0] += (1 - v) / 2
            won[i][1] += 1
            won[j][1] += 1
    score = {i: round(w / n, 4) if n else 0.5 for i, (w, n) in won.items()}

    def keep(hi: int, lo: int, votes: dict[str, int], text: Any = None, writer: str | None = None) -> None:
        _, share = majority(votes)
        if min_agreement and (share is None or share < min_agreement):
            out.disagreed += 1
            return
        if text is None and score[hi] - score[lo] < min_margin:
            out.dropped += 1
            return
        extra = {"annotators": sorted(votes), "votes": _named(votes, hi, lo), "agreement": share}
        if writer is not None:
            extra["written_by"] = writer
        out.pairs.append(Pair(hi, lo, score[hi] if text is None else 1.0, score[lo], None, text, extra))

    if mode == "best-worst":
        best = max(idx, key=lambda i: score[i])
        worst = min(idx, key=lambda i: score[i])
        votes = units.get((min(best, worst), max(best, worst)), {})
        winner, _ = majority(votes) if votes else (None, None)
        if best == worst or not winner or (winner > 0) != (best < worst):
            out.ties += 1
        else:
            keep(best, worst, votes)
    else:
        for (i, j), votes in sorted(units.items()):
            winner, _ = majority(votes)
            if not winner:
                out.ties += 1
            else:
                keep(*((i, j) if winner > 0 else (j, i)), votes)
    for name, state in sorted(states.items()):
        ranking = state.rankings.get(pid) or {}
        if ranking.get("text") is None:
            continue
        best, worst = ranking["order"][0], ranking["order"][-1]
        below = [worst] if mode == "best-worst" else [i for i in idx if i != best and i != worst] + [worst]
        for lo in below:
            keep(best, lo, units.get((min(best, lo), max(best, lo)), {}), ranking["text"], name)
        if mode == "all":  # better than their best too: their word alone
            keep(best, best, {name: 1}, ranking["text"], name)
    return out


def agreement(units: list[dict[str, int]]) -> dict[str, Any]:
    """Per-pair agreement and Krippendorff's alpha over the units with two or more votes."""
    rated = [u for u in units if len(u) >= 2]
    people = sorted({n for u in rated for n in u})
    shares = [majority(u)[1] for u in rated]
    out: dict[str, Any] = {
        "pairs": len(rated),
        "people": len(people),
        "mean_agreement": round(sum(shares) / len(shares), 4) if shares else None,
        "full_agreement": sum(1 for s in shares if s == 1.0),
        "alpha": None,
    }
    if rated:
        import krippendorff
        import numpy as np

        data = np.full((len(people), len(rated)), np.nan)
        for col, unit in enumerate(rated):
            for name, value in unit.items():
                data[people.index(name), col] = value
        with np.errstate(all="ignore"):
            try:
                alpha = float(krippendorff.alpha(data, value_domain=[-1, 0, 1], level_of_measurement="ordinal"))
            except (ValueError, ZeroDivisionError):  # one value only: no disagreement to expect
                alpha = math.nan
        out["alpha"] = round(alpha, 4) if math.isfinite(alpha) else None
    return out


def from_records(rows: list[dict]) -> dict[str, Any] | None:
    """The agreement of a preference file from its records' `label.votes` (None if none has votes).
    Records of a written answer are left out of the set's figure: their votes are another pair's."""
    units, any_votes = [], False
    for r in rows:
        label = r.get("label") if isinstance(r.get("label"), dict) else {}
        votes = label.get("votes")
        if not isinstance(votes, dict) or not votes:
            continue
        any_votes = True
        if label.get("human_written"):
            continue
        c, j = label.get("chosen_index"), label.get("rejected_index")
        first_chosen = not (isinstance(c, int) and isinstance(j, int)) or c < j
        value = {"chosen": 1, "rejected": -1, "tie": 0}
        units.append({str(n): value[v] * (1 if first_chosen else -1) for n, v in votes.items() if v in value})
    return agreement(units) if any_votes else None


def judged(forms: dict, states: dict[str, State]) -> dict[str, Any]:
    """The agreement over every pair anyone judged (before ties and --min-agreement drop any)."""
    units = [u for pid, (_, comps) in forms.items() for u in ballots(comps, states, pid).values()]
    return agreement(units)


def agreement_line(a: dict[str, Any]) -> str:
    """One line of agreement figures (label's summary and validate say it the same way)."""
    if not a["pairs"]:
        return "no pair has 2 or more votes"
    alpha = "undefined (every vote the same)" if a["alpha"] is None else f"{a['alpha']:.3f}"
    return (
        f"Krippendorff's alpha {alpha} over {a['pairs']} pairs, {a['people']} people; "
        f"mean per-pair agreement {a['mean_agreement']:.2f}, {a['full_agreement']} unanimous"
    )
