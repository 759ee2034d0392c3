"""A model against a baseline, prompt by prompt: eval's summary (pure) and the tables eval and iterate print.

`aggregate` turns scores (pointwise sources) or verdicts (pairwise) into what `eval.json` holds:
each side's mean reward with its interval and mean length, win / tie / loss and the win rate with
its Wilson interval (`stats.py`), and the length-controlled win rate (`lcwin.py`). `render_table`
shows one eval; `rounds_table` shows iterate's rounds, from the `eval_brief` of each round's eval.json.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from alignctl.console import console


def word_count(completion: Any) -> int:
    """Words of a completion, a CJK character counting as one (io.text_length)."""
    from alignctl.io import text_length
    from alignctl.rewards.text import completion_text

    return text_length(completion_text(completion))


def _side(scores: list[float] | None, lengths: list[int]) -> dict[str, Any]:
    from alignctl.stats import mean_ci

    out: dict[str, Any] = {"mean_reward": None, "reward_ci": None}
    if scores is not None:
        mean, half = mean_ci(scores)
        out["mean_reward"] = mean
        out["reward_ci"] = None if math.isnan(half) else half
    out["mean_length"] = sum(lengths) / len(lengths)
    return out


def aggregate(
    model_scores: list[float] | None,
    baseline_scores: list[float] | None,
    model_lengths: list[int],
    baseline_lengths: list[int],
    *,
    winners: list[int | None] | None = None,
    tie_margin: float = 0.0,
) -> tuple[dict[str, Any], list[str]]:
    """The summary eval.json holds, and each prompt's outcome ("win" / "tie" / "loss" for the model).

    Pointwise: give both score lists; prompt i is a win when model - baseline > tie_margin.
    Pairwise: give `winners` (0 = the model's answer won, 1 = the baseline's, None = tie) and no
    scores; mean rewards are then None. Win rate and interval come from `stats.win_rate`;
    `length_controlled` (the win rate at equal length, its interval and the length coefficient)
    from `lcwin.length_controlled_win_rate`, ties counting half in its fit as in the raw rate.
    """
    from alignctl.lcwin import length_controlled_win_rate
    from alignctl.stats import win_rate

    n = len(model_lengths)
    if n == 0 or len(baseline_lengths) != n:
        raise ValueError(f"aggregate: {n} model answers and {len(baseline_lengths)} baseline answers")
    if winners is not None:
        if len(winners) != n:
            raise ValueError(f"aggregate: {len(winners)} verdicts for {n} prompts")
        # as scores for win_rate: the winner gets 1, the other 0; a tie gives both 0
        a = [1.0 if w == 0 else 0.0 for w in winners]
        b = [1.0 if w == 1 else 0.0 for w in winners]
        wr = win_rate(a, b)
        outcomes = ["win" if w == 0 else "loss" if w == 1 else "tie" for w in winners]
    else:
        if model_scores is None or baseline_scores is None or len(model_scores) != n or len(baseline_scores) != n:
            raise ValueError("aggregate: a pointwise eval needs one score per prompt on each side")
        wr = win_rate(model_scores, baseline_scores, tie_eps=max(tie_margin, 1e-9))
        outcomes = []
        for m, b in zip(model_scores, baseline_scores, strict=True):
            d = m - b
            outcomes.append("win" if d > max(tie_margin, 1e-9) else "loss" if d < -max(tie_margin, 1e-9) else "tie")
    summary = {
        "model": _side(model_scores, model_lengths),
        "baseline": _side(baseline_scores, baseline_lengths),
        **wr,
        "length_controlled": length_controlled_win_rate(outcomes, model_lengths, baseline_lengths),
    }
    if model_scores is not None and baseline_scores is not None:
        summary["reward_delta"] = summary["model"]["mean_reward"] - summary["baseline"]["mean_reward"]
    return summary, outcomes


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}"


def render_table(summary: dict[str, Any], model_name: str, baseline_name: str, *, title: str = "eval") -> None:
    """The comparison as a rich table on stderr."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(title), title_justify="left")
    table.add_column("")
    table.add_column(escape(f"model\n{model_name}"), justify="right")  # names are paths: text, not markup
    table.add_column(escape(f"baseline\n{baseline_name}"), justify="right")
    m, b = summary["model"], summary["baseline"]

    def reward(side: dict) -> str:
        if side.get("mean_reward") is None:
            return "— (pairwise)"
        ci = side.get("reward_ci")
        return _num(side["mean_reward"]) + (f" ± {ci:.3f}" if ci is not None else "")

    table.add_row("mean reward (95% CI)", reward(m), reward(b))
    table.add_row("mean length (words)", f"{m['mean_length']:.1f}", f"{b['mean_length']:.1f}")
    table.add_row("wins / ties / losses", f"{summary['wins']} / {summary['ties']} / {summary['losses']}", "")
    rate = f"{summary['win_rate']:.3f} [{summary['low']:.3f}, {summary['high']:.3f}]"
    table.add_row(escape("win rate [95% CI]"), escape(rate), "")
    lc = summary.get("length_controlled")  # absent from an eval.json written before it existed
    if lc is not None and lc["win_rate"] is None:
        table.add_row("  length-controlled", "— (same length gap everywhere)", "")
    elif lc is not None:
        low, high = lc["ci"]
        table.add_row("  length-controlled", f"{lc['win_rate']:.3f} [{low:.3f}, {high:.3f}]", "")
        coef = lc["length_coef"]
        leaning = " (favours shorter)" if coef < -0.005 else " (favours longer)" if coef > 0.005 else ""
        table.add_row("  length coefficient", f"{coef:+.2f}{leaning}", "")
    console.print(table)


def eval_brief(path: Path) -> dict[str, Any]:
    """An eval.json cut down to what iterate's manifest keeps per round."""
    data = json.loads(path.read_text(encoding="utf-8"))
    keep = ("wins", "ties", "losses", "n", "win_rate", "low", "high", "length_controlled", "reward_delta", "by")
    return {
        "model": {k: data["model"].get(k) for k in ("name", "mean_reward", "mean_length")},
        "baseline": {k: data["baseline"].get(k) for k in ("name", "mean_reward", "mean_length")},
        **{k: data.get(k) for k in keep},
    }


def rounds_final(entries: list[dict]) -> dict[str, Any]:
    """iterate's final metrics: the last round's reward and, when evaluated, its win rate against base."""
    if not entries:
        return {}
    last = entries[-1]
    out = {"rounds": len(entries), "train_pairs": last["train_pairs"]}
    out["mean_reward"] = last["eval"]["model"]["mean_reward"]
    if "eval_vs_base" in last:
        out["base_mean_reward"] = last["eval_vs_base"]["baseline"]["mean_reward"]
        out["win_rate_vs_base"] = last["eval_vs_base"]["win_rate"]
    return out


def rounds_table(entries: list[dict], title: str = "iterate") -> None:
    """Round by round: pairs, reward beside the previous round's and the base model's, W/T/L and win rates
    (raw, length-controlled) against the previous round, words."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    def r(x: Any) -> str:
        return "—" if x is None else f"{x:.3f}"

    # fits 80 columns: no outer edge, one space of padding, no cell wraps
    table = Table(
        title=escape(title),
        title_justify="left",
        caption="pairs: the round's / trained on. reward, prev., base: the round's model, the model it started "
        "from, the base model. W/T/L, win rate, LC (length-controlled): the round's model against the one it "
        "started from.",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        collapse_padding=True,
        pad_edge=False,
        show_edge=False,
    )
    cols = ("round", "pairs", "reward", "prev.", "base", "W/T/L", "win rate [95% CI]", "LC win", "words")
    for col in cols:
        table.add_column(col, justify="right", no_wrap=True)
    for e in entries:
        ev, base = e["eval"], e.get("eval_vs_base") or {}
        table.add_row(
            str(e["round"]),
            f"{e['pairs']}/{e['train_pairs']}",
            r(ev["model"]["mean_reward"]),
            r(ev["baseline"]["mean_reward"]),
            r((base.get("baseline") or {}).get("mean_reward")),
            f"{ev['wins']}/{ev['ties']}/{ev['losses']}",
            f"{ev['win_rate']:.2f} [{ev['low']:.2f}, {ev['high']:.2f}]",
            r((ev.get("length_controlled") or {}).get("win_rate")),
            f"{ev['model']['mean_length']:.1f}",
        )
    console.print(table)
