"""The table of `examples/compare.py`, read from its finished runs (runs/compare/ by default).

Per task, method and seed: the held-out mean reward with its 95% interval (eval.json), wins /
ties / losses against the base model and against dpo of the same seed, the length-controlled
win rate against base where eval reports it, correctness and length apart from the combined
reward (from eval.rows.jsonl and the held-out answers), the mean KL to the base over the last
logged steps where the method logs one, optimizer steps done and training seconds (the run's
manifest), and the peak RSS of the training process (jobs.jsonl). A row whose run is missing
says so instead of a number.
"""

from __future__ import annotations

import json
import shlex
import statistics
from pathlib import Path
from typing import Any

# The KL to the reference each method logs: ppo and online-dpo (TRL's k1 estimate summed over the
# answer), grpo and rloo (TRL's per-token mean). kto's logged "kl" is its reference point z_ref, not
# a distance to base.
KL_KEYS = {"ppo": "objective/kl", "online-dpo": "objective/kl", "grpo": "kl", "rloo": "kl", "iterate": None}


def _json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _rows(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return []


def _right(task: str, held: Path, rows: list[dict], side: str) -> list[bool]:
    """Per held-out question: is `side`'s answer right, whatever its length."""
    from alignctl.rewards.answers import accuracy, contains_word

    gold = {json.dumps(r["prompt"]): r["answer"] for r in _rows(held)}  # eval rows keep the prompt
    right = []
    for row in rows:
        answers = gold[json.dumps(row["prompt"])]
        answers = answers if isinstance(answers, list) else [answers]
        text = row[side]
        if task == "arith":
            right.append(accuracy([None], [text], answer=[answers])[0] == 1.0)
        else:
            right.append(any(contains_word(text, str(a)) for a in answers))
    return right


def right_changes(base: list[bool], model: list[bool]) -> str | None:
    """Right answers against the base model's, per question: kept / lost / new."""
    if not base:
        return None
    pairs = list(zip(base, model, strict=True))
    kept = sum(b and m for b, m in pairs)
    lost = sum(b and not m for b, m in pairs)
    return f"{kept} / {lost} / {sum(m and not b for b, m in pairs)}"


def _kl(run: Path, method: str) -> float | None:
    key = next((k for prefix, k in KL_KEYS.items() if method.startswith(prefix)), None)
    values = [r[key] for r in _rows(run / "metrics.jsonl") if key and isinstance(r.get(key), (int, float))]
    if not values:
        return None
    return statistics.mean(values[-max(1, len(values) // 5) :])  # the last fifth of training


def _peak(out: Path, job: str, run: Path) -> int | None:
    """The peak RSS of the job that wrote `run`: the last record of that job with the run's own
    command (a job run again with other arguments, then set back, leaves records of both)."""
    records = [r for r in _rows(out / "jobs.jsonl") if r["job"] == job and not r.get("up_to_date")]
    command = (_json(run / "alignctl.json") or {}).get("command")
    if command:
        same = [r for r in records if shlex.split(r["command"])[1:] == [str(c) for c in command[1:]]]
        records = same or records
    return records[-1]["peak_rss_mb"] if records else None


def _wtl(ev: dict | None) -> str:
    return f"{ev['wins']} / {ev['ties']} / {ev['losses']}" if ev else "—"


def _f(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def row_for(out: Path, task: str, held: Path, method: str, seed: int) -> dict[str, Any]:
    d = out / task
    run = d / f"{method}-s{seed}"
    base_eval = _json(d / f"{method}-s{seed}.eval-base" / "eval.json")
    dpo_eval = _json(d / f"{method}-s{seed}.eval-dpo" / "eval.json")
    rows = _rows(d / f"{method}-s{seed}.eval-base" / "eval.rows.jsonl")
    model_right, base_right = (_right(task, held, rows, side) for side in ("model", "baseline"))
    from compare import FIRST

    trained = [run / f"round-{n}" / "model" for n in (1, 2)] if method == "iterate" else [run]
    if method in FIRST:  # the chain's first stage, then its own
        trained = [d / f"{method}-s{seed}.{FIRST[method]}", run]
    blocks = [(_json(t / "alignctl.json") or {}).get("training") or {} for t in trained]
    lc = (base_eval or {}).get("length_controlled") or {}
    return {
        "method": method,
        "seed": seed,
        "reward": base_eval and base_eval["model"]["mean_reward"],
        "ci": base_eval and base_eval["model"].get("reward_ci"),
        "base": base_eval and base_eval["baseline"]["mean_reward"],
        "base_ci": base_eval and base_eval["baseline"].get("reward_ci"),
        "vs_base": _wtl(base_eval),
        "vs_dpo": _wtl(dpo_eval) if method != "dpo" else "(itself)",
        "win_rate": base_eval and base_eval.get("win_rate"),
        "lc_win_rate": lc.get("win_rate"),
        "correct": statistics.mean(model_right) if rows else None,  # right, whatever the length
        "base_correct": statistics.mean(base_right) if rows else None,
        "right_changes": right_changes(base_right, model_right),
        "words": base_eval and base_eval["model"]["mean_length"],
        "base_words": base_eval and base_eval["baseline"]["mean_length"],
        "kl": _kl(run, method),
        "steps": "+".join(str(b.get("steps", "?")) for b in blocks) if any(blocks) else None,
        "train_s": sum(b.get("seconds") or 0 for b in blocks) if any(blocks) else None,
        "stopped_by": ", ".join(sorted({b["stopped_by"] for b in blocks if b.get("stopped_by")})) or None,
        "peak_mb": _peak(out, f"{task}/{method}-s{seed}", run),
        "done": base_eval is not None,
    }


def markdown(rows: list[dict], task: str) -> list[str]:
    head = (
        "| method | seed | held-out reward [95% CI] | W / T / L vs base | W / T / L vs dpo | win rate vs base "
        "(length-controlled) | correct (kept / lost / new) | words | KL to base | steps (stopped by) | train s | "
        "peak RSS MB |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    if rows and rows[0]["base"] is not None:
        r = rows[0]
        ci = f" ± {r['base_ci']:.3f}" if r["base_ci"] is not None else ""
        lines.append(
            f"| base ({task}) | | {r['base']:.3f}{ci} | | | | {_f(r['base_correct'])} | "
            f"{_f(r['base_words'], 1)} | | | | |"
        )
    for r in rows:
        if not r["done"]:
            lines.append(f"| {r['method']} | {r['seed']} | not run / not finished | | | | | | | | | |")
            continue
        ci = f" ± {r['ci']:.3f}" if r["ci"] is not None else ""
        lc = f" ({_f(r['lc_win_rate'])})" if r["lc_win_rate"] is not None else ""
        steps = f"{r['steps']}" + (f" ({r['stopped_by']})" if r["stopped_by"] else "")
        lines.append(
            f"| {r['method']} | {r['seed']} | {r['reward']:.3f}{ci} | {r['vs_base']} | {r['vs_dpo']} | "
            f"{_f(r['win_rate'])}{lc} | {_f(r['correct'])} ({r['right_changes']}) | {_f(r['words'], 1)} | "
            f"{_f(r['kl'])} | "
            f"{steps} | {_f(r['train_s'], 0)} | {r['peak_mb'] or '—'} |"
        )
    return lines


def by_method(rows: list[dict]) -> list[str]:
    """One line per method over its seeds: the mean and the spread (lowest - highest)."""
    lines = [
        "| method | seeds | held-out reward: mean (lowest - highest) | correct: mean | words: mean |",
        "|---|---|---|---|---|",
    ]
    for method in dict.fromkeys(r["method"] for r in rows):
        done = [r for r in rows if r["method"] == method and r["done"]]
        if not done:
            continue
        rewards = [r["reward"] for r in done]
        spread = f" ({min(rewards):.3f} - {max(rewards):.3f})" if len(done) > 1 else ""
        lines.append(
            f"| {method} | {len(done)} | {statistics.mean(rewards):.3f}{spread} | "
            f"{_f(statistics.mean(r['correct'] for r in done))} | {statistics.mean(r['words'] for r in done):.1f} |"
        )
    return lines


def write_table(out: Path, tasks: list[str], methods: list[str], seeds: list[int], budget: float, wall: float) -> Path:
    from compare import ARITH_METHODS, TASKS

    parts = [f"# make compare: {budget:g} minutes of training per method, one CPU thread each", ""]
    for task in tasks:
        chosen = [m for m in methods if task == "qa" or m in ARITH_METHODS]
        rows = [row_for(out, task, TASKS[task]["held"], m, s) for m in chosen for s in seeds]
        parts += [f"## {task} (eval: {TASKS[task]['metric']}, greedy, {TASKS[task]['held'].name})", ""]
        parts += markdown(rows, task) + [""]
        if len(seeds) > 1:
            parts += ["Over the seeds:", "", *by_method(rows), ""]
        (out / f"{task}.rows.json").write_text(json.dumps(rows, indent=1, default=str))
    jobs = _rows(out / "jobs.jsonl")
    parts.append(
        f"This run: {wall / 60:.1f} min wall; all jobs recorded: {sum(j.get('seconds', 0) for j in jobs) / 60:.1f} "
        "min of job time (jobs.jsonl, reruns included)."
    )
    path = out / "results.md"
    path.write_text("\n".join(parts) + "\n")
    return path
