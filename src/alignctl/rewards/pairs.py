"""From what a reward source says to preference pairs: scores (pointwise) or decisions (pairwise).

Pure functions, no model and no file: `label` uses them on the scores or choices it journals, and
they are unit-tested on hand-made scores. Pointwise: `pairs_from_scores` keeps the top against the
bottom score of a prompt (`best-worst`), or every pair with different scores (`all`); pairwise:
`pairs_from_comparisons` turns each candidate's win rate (ties count half) into its score, and a
best-worst pair needs its own comparison to agree; a person's one screen per prompt (best and
worst, or a full ranking, perhaps with an answer they wrote): `pairs_from_ranking`. `State`
replays label's journal of scores, choices, rankings and undos.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from alignctl import io
from alignctl.rewards import Choice


def _key(completion: Any) -> str:
    return io.dumps(completion) if isinstance(completion, list) else completion


def distinct(comps: list) -> list[int]:
    """Indices of the first occurrence of each distinct completion."""
    seen: set[str] = set()
    out = []
    for i, c in enumerate(comps):
        k = _key(c)
        if k not in seen:
            seen.add(k)
            out.append(i)
    return out


# ---------------------------------------------------------------------------------------------
# Pair selection


@dataclass
class Pair:
    chosen: int
    rejected: int
    score_chosen: float
    score_rejected: float
    verdict: dict | None = None
    text: Any = None  # an answer a person wrote, the chosen side instead of completion `chosen`
    extra: dict | None = None  # more for the record's `label` (several people's votes and agreement)


@dataclass
class Outcome:
    pairs: list[Pair] = field(default_factory=list)
    ties: int = 0
    dropped: int = 0
    skipped: int = 0
    disagreed: int = 0  # several people: below --min-agreement, or one vote only


def pairs_from_scores(scores: list[float], comps: list, mode: str, min_margin: float) -> Outcome:
    """best-worst: the top against the bottom score; all: every pair of distinct completions."""
    out = Outcome()
    idx = distinct(comps)
    if len(idx) < 2:
        out.dropped += 1
        return out
    if mode == "best-worst":
        best = max(idx, key=lambda i: scores[i])
        worst = min(idx, key=lambda i: scores[i])
        candidates = [(best, worst)]
    else:
        candidates = list(itertools.combinations(idx, 2))
    for i, j in candidates:
        if scores[i] == scores[j]:
            out.ties += 1
            continue
        hi, lo = (i, j) if scores[i] > scores[j] else (j, i)
        if scores[hi] - scores[lo] < min_margin:
            out.dropped += 1
            continue
        out.pairs.append(Pair(hi, lo, float(scores[hi]), float(scores[lo])))
    return out


def win_rates(idx: list[int], decisions: dict[tuple[int, int], Any]) -> dict[int, float]:
    """Each candidate's share of its comparisons won (ties and skips count half): its score."""
    wins = {i: 0.0 for i in idx}
    for i, j in itertools.combinations(idx, 2):
        winner = decisions[(i, j)].winner
        if winner is None:
            wins[i] += 0.5
            wins[j] += 0.5
        else:
            wins[(i, j)[winner]] += 1.0
    return {i: w / (len(idx) - 1) for i, w in wins.items()}


def pairs_from_comparisons(comps: list, decisions: dict[tuple[int, int], Any], mode: str, min_margin: float) -> Outcome:
    """Pairs from pairwise decisions (`decisions[(i, j)]` for every i < j among distinct completions)."""
    out = Outcome()
    idx = distinct(comps)
    if len(idx) < 2:
        out.dropped += 1
        return out
    if decisions and all(c.detail.get("skipped") for c in decisions.values()):
        out.skipped += 1 if mode == "best-worst" else len(decisions)
        return out
    rates = win_rates(idx, decisions)

    def verdict(i: int, j: int, choice) -> dict:
        return {"first": i, "second": j, **choice.detail}

    if mode == "all":
        for (i, j), choice in sorted(decisions.items()):
            if choice.detail.get("skipped"):
                out.skipped += 1
            elif choice.winner is None:
                out.ties += 1
            else:
                hi, lo = (i, j) if choice.winner == 0 else (j, i)
                out.pairs.append(Pair(hi, lo, 1.0, 0.0, verdict(i, j, choice)))
        return out
    best = max(idx, key=lambda i: rates[i])
    worst = min(idx, key=lambda i: rates[i])
    if best == worst or rates[best] == rates[worst]:
        out.ties += 1
        return out
    i, j = min(best, worst), max(best, worst)
    choice = decisions[(i, j)]
    if choice.detail.get("skipped"):
        out.skipped += 1
    elif choice.winner is None or (i, j)[choice.winner] != best:  # a tie, or a cycle: no clear pair
        out.ties += 1
    elif rates[best] - rates[worst] < min_margin:
        out.dropped += 1
    else:
        out.pairs.append(Pair(best, worst, rates[best], rates[worst], verdict(i, j, choice)))
    return out


def pairs_from_ranking(comps: list, ranking: dict, mode: str, min_margin: float) -> Outcome:
    """Pairs from one screen of a person: `ranking["order"]` lists completion indices best first
    (the whole order, or [best, worst] from a best/worst screen); `ranking["text"]` an answer they
    wrote, better than the best. best-worst: the first against the last (the written answer
    chosen); all: every ordered pair, with [best, worst] only best > each other > worst, and a
    written answer also chosen against the best. Scores: 1.0 best .. 0.0 worst."""
    out = Outcome()
    detail = {k: v for k, v in ranking.items() if k != "text"}
    if ranking.get("skipped"):
        out.skipped += 1
        return out
    order = ranking.get("order") or []
    if len(order) < 2:  # "all equally good"
        out.ties += 1
        return out
    full = ranking.get("kind") == "rank"
    if full:
        score = {c: 1.0 - n / (len(order) - 1) for n, c in enumerate(order)}
    else:
        best, worst = order[0], order[-1]
        score = {i: 0.5 for i in distinct(comps)} | {best: 1.0, worst: 0.0}
    if mode == "best-worst":
        ordered = [(order[0], order[-1])]
    elif full:
        ordered = list(itertools.combinations(order, 2))
    else:
        middle = [i for i in distinct(comps) if i not in (best, worst)]
        ordered = [(best, worst), *((best, m) for m in middle), *((m, worst) for m in middle)]
    text = ranking.get("text")
    for hi, lo in ordered:
        if score[hi] - score[lo] < min_margin:
            out.dropped += 1
            continue
        out.pairs.append(Pair(hi, lo, score[hi], score[lo], detail, text if hi == order[0] else None))
    if text is not None and mode == "all":  # the written answer beats the best model answer too
        out.pairs.append(Pair(order[0], order[0], 1.0, 1.0, detail, text))
    return out


def _words(value: Any) -> int:
    return io.text_length(io.text_of(value))


def summarize(n_prompts: int, outcomes: list[Outcome], rows: list[dict], pairwise: bool) -> dict[str, Any]:
    """label's final metrics: pairs written, why others were not, chosen vs rejected length."""
    n = len(rows)
    stats = {
        "prompts": n_prompts,
        "pairs": n,
        "ties": sum(o.ties for o in outcomes),
        "dropped": sum(o.dropped for o in outcomes),
        "skipped": sum(o.skipped for o in outcomes),
        "mean_chosen_words": round(sum(_words(r["chosen"]) for r in rows) / n, 2) if n else None,
        "mean_rejected_words": round(sum(_words(r["rejected"]) for r in rows) / n, 2) if n else None,
    }
    if not pairwise:
        del stats["skipped"]
    if any(o.disagreed for o in outcomes):
        stats["disagreed"] = sum(o.disagreed for o in outcomes)
    return stats


# ---------------------------------------------------------------------------------------------
# The journal: scores (pointwise) or choices and undos (pairwise), replayed on resume


@dataclass
class State:
    scores: dict[str, list[float]] = field(default_factory=dict)
    decisions: dict[str, dict[tuple[int, int], Any]] = field(default_factory=dict)
    rankings: dict[str, dict] = field(default_factory=dict)  # one screen per prompt (a person)
    history: list[tuple] = field(default_factory=list)  # (id, i, j) a comparison, (id,) a ranking

    @classmethod
    def replay(cls, events: list[dict]) -> State:
        state = cls()
        for ev in events:
            kind = ev.get("t")
            if kind == "scores":
                state.scores[ev["id"]] = ev["scores"]
            elif kind == "cmp":
                state.decisions.setdefault(ev["id"], {})[(ev["i"], ev["j"])] = Choice(ev["w"], ev.get("d") or {})
                state.history.append((ev["id"], ev["i"], ev["j"]))
            elif kind == "rank":
                state.rankings[ev["id"]] = ev["r"]
                state.history.append((ev["id"],))
            elif kind == "undo" and state.history:
                state.take_back(state.history.pop())
        return state

    def take_back(self, task: tuple) -> None:
        if len(task) == 1:
            del self.rankings[task[0]]
        else:
            del self.decisions[task[0]][(task[1], task[2])]


# ---------------------------------------------------------------------------------------------
# Preference records


def preference_records(records: list[dict], forms: dict, outcome, base: dict) -> tuple[list[dict], list[Outcome]]:
    """label's output records from each prompt's `outcome(record, completions) -> Outcome`:
    `{prompt, chosen, rejected, score_chosen, score_rejected, id, label}`, `label` = `base` + how
    the pair was picked (indices, margin, verdict, a written answer, several people's votes)."""
    rows, outcomes = [], []
    for r in records:
        prompt, comps = forms[r["id"]]
        result = outcome(r, comps)
        outcomes.append(result)
        for pair in result.pairs:
            label = {
                **base,
                "chosen_index": pair.chosen,
                "rejected_index": pair.rejected,
                "margin": round(pair.score_chosen - pair.score_rejected, 6),
            }
            if pair.verdict is not None:
                label["verdict"] = pair.verdict
            if pair.text is not None:  # written by a person, better than answer `chosen_index`
                label["human_written"] = True
            label.update(pair.extra or {})
            chosen = comps[pair.chosen]
            if pair.text is not None:  # in the form of the candidates: a string or an assistant turn
                chosen = [{"role": "assistant", "content": pair.text}] if isinstance(chosen, list) else pair.text
            rows.append(
                {
                    "prompt": prompt,
                    "chosen": chosen,
                    "rejected": comps[pair.rejected],
                    "score_chosen": pair.score_chosen,
                    "score_rejected": pair.score_rejected,
                    "id": r["id"],
                    "label": label,
                }
            )
    return rows, outcomes
