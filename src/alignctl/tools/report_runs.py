"""What `alignctl report` reads: a run dir's metrics.jsonl, manifest and iterate rounds, as `Run`s,
with the series helpers (smoothing, segments) the plots use. Every input is checked here, before
anything is written."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignctl.console import warn
from alignctl.errors import InputError
from alignctl.files import read_text

Series = list[tuple[int, float]]


# Not metrics: the x axes themselves (`--x step|time`), and the epoch counter TRL logs next to every metric.
AXIS_KEYS = frozenset({"step", "epoch", "elapsed"})
LOGGED, ESTIMATED = "logged", "estimated"  # where a run's time axis comes from
ESTIMATE_NOTE = "time estimated from mean step time"
# Metrics people look at first come first in the report; anything else follows alphabetically.
METRIC_ORDER = ("loss", "eval_loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected")
METRIC_ORDER += ("objective/scores", "objective/kl", "reward", "kl", "completions/mean_length")
TRAILING_METRICS = ("learning_rate", "grad_norm")
ROUND_DIR = re.compile(r"round-(\d+)$")
EVAL_KEYS = ("mean_reward", "mean_length")
SMOOTH_ABOVE = 20  # more raw points than this get an EMA line on top
NEVER_SMOOTH = frozenset({"learning_rate"})  # a schedule, not noise: smoothing would lie


@dataclass
class Run:
    """One RUN_DIR as read from disk: its series (rounds concatenated for iterate runs)."""

    path: Path
    label: str
    stage: str
    manifest: dict[str, Any]
    series: dict[str, Series]
    lines: int = 0  # logging lines read
    last_epoch: float | None = None
    boundaries: list[tuple[int, int]] = field(default_factory=list)  # (first step, round no.)
    rounds: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (round no., eval)
    round_points: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: dict[int, float] = field(default_factory=dict)  # step -> training seconds (`elapsed`)
    time_source: str | None = None  # LOGGED, ESTIMATED, or None: no time axis


def load_metrics(path: Path) -> dict[str, Series]:
    """Read a `metrics.jsonl`: `{metric: [(step, value), ...]}` in file order.

    Each line is `{"step": int, "epoch": float, "<metric>": number, ...}`; a line may carry only
    some metrics (eval lines). Values that are not finite numbers (strings, null, bools, NaN) are
    ignored; `step` and `epoch` are the axis, not metrics. Blank lines are skipped.
    """
    return _read_metrics(path)[0]


def _read_metrics(path: Path) -> tuple[dict[str, Series], int, float | None, dict[int, float]]:
    text = read_text(path, "every training stage writes one")
    series: dict[str, Series] = {}
    seconds: dict[int, float] = {}
    lines = 0
    last_epoch: float | None = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}:"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where} not valid JSON ({exc.msg}, column {exc.colno})") from None
        if not isinstance(record, dict):
            raise InputError(f"{where} expected a JSON object, got {type(record).__name__}")
        step = record.get("step")
        if isinstance(step, float) and step.is_integer():
            step = int(step)
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise InputError(f"{where} 'step' must be a non-negative integer, got {step!r}")
        lines += 1
        epoch = record.get("epoch")
        if _number(epoch) is not None:
            last_epoch = float(epoch)
        if (elapsed := _number(record.get("elapsed"))) is not None:
            seconds.setdefault(step, elapsed)  # an eval line at the same step carries the same value
        for key, value in record.items():
            number = _number(value)
            if key not in AXIS_KEYS and number is not None:
                series.setdefault(key, []).append((step, number))
    return series, lines, last_epoch, seconds


def time_axis(
    seconds: dict[int, float], manifest: dict[str, Any], steps: set[int]
) -> tuple[dict[int, float], str | None]:
    """Training seconds per step: as logged (`elapsed`), or, for metrics written before `elapsed`
    existed, step x the mean step time of the manifest's `training` record; ({}, None) if neither."""
    if seconds:
        return seconds, LOGGED
    training = manifest.get("training")
    training = training if isinstance(training, dict) else {}
    total = _number(training.get("seconds"))
    # A resumed run's seconds are its own steps' only (budget.py).
    count = _number(training.get("steps_this_run", training.get("steps")))
    if total is None or not count:
        return {}, None
    return {step: step * total / count for step in steps}, ESTIMATED


def _steps(series: dict[str, Series]) -> set[int]:
    return {step for points in series.values() for step, _ in points}


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}:1: expected a JSON object, got {type(data).__name__}")
    return data


def load_run(path: Path, label: str | None = None) -> Run:
    """Read one RUN_DIR (a stage's output dir, or an iterate run holding `round-N/` dirs)."""
    if not path.is_dir():
        raise InputError(f"{path}: run directory not found")
    from alignctl import runs

    manifest_path = runs.manifest_path(path)
    manifest = runs.read_manifest(path, strict=True) or {}
    if not manifest:
        warn(f"{manifest_path}: no manifest; stage unknown, final metrics from the last log line")
    stage = str(manifest.get("stage", "unknown"))
    run = Run(path=path, label=label or path.name, stage=stage, manifest=manifest, series={})
    if stage == "iterate":
        _load_rounds(run)
        return run
    metrics_path = path / "metrics.jsonl"
    if not metrics_path.is_file() and (path / "model" / "metrics.jsonl").is_file():
        metrics_path = path / "model" / "metrics.jsonl"  # a single iterate round dir
    run.series, run.lines, run.last_epoch, logged = _read_metrics(metrics_path)
    model_manifest = manifest if metrics_path.parent == path else runs.read_manifest(metrics_path.parent) or {}
    run.seconds, run.time_source = time_axis(logged, model_manifest, _steps(run.series))
    if not run.lines:
        warn(f"{metrics_path}: empty, nothing logged; the run is listed but not plotted")
    return run


def _round_dirs(run: Run) -> list[tuple[int, Path, dict[str, Any]]]:
    rounds = run.manifest.get("rounds")
    if rounds is None:  # an interrupted iterate run: take the round dirs that exist
        found = [(int(m.group(1)), p) for p in run.path.iterdir() if (m := ROUND_DIR.match(p.name))]
        return [(n, p, {}) for n, p in sorted(found)]
    if not isinstance(rounds, list):
        raise InputError(f"{run.path / 'alignctl.json'}: 'rounds' must be a list")
    out = []
    for i, entry in enumerate(rounds, start=1):
        if not isinstance(entry, dict):
            raise InputError(f"{run.path / 'alignctl.json'}: rounds[{i - 1}] must be an object")
        number = int(entry.get("round", i))
        out.append((number, run.path / str(entry.get("dir", f"round-{number}")), entry))
    return out


def _load_rounds(run: Run) -> None:
    """Concatenate the rounds' metrics on one step axis: round k starts after round k-1 ended;
    likewise in time, where every round's source must give one (else the run has no time axis)."""
    from alignctl import runs

    offset = 0
    clock, sources = 0.0, set()
    for number, round_dir, entry in _round_dirs(run):
        if not round_dir.is_dir():
            raise InputError(f"{round_dir}: round {number} directory not found")
        metrics_path = round_dir / "model" / "metrics.jsonl"
        series, lines, epoch, logged = _read_metrics(metrics_path)
        seconds, source = time_axis(logged, runs.read_manifest(round_dir / "model") or {}, _steps(series))
        sources.add(source)
        run.seconds.update({offset + s: clock + t for s, t in seconds.items()})
        clock = max([clock, *(clock + t for t in seconds.values())])
        if not lines:
            warn(f"{metrics_path}: empty, nothing logged in round {number}")
        run.lines += lines
        run.last_epoch = epoch if epoch is not None else run.last_epoch
        run.boundaries.append((offset, number))
        run.round_points[f"round-{number}"] = {k: len(v) for k, v in series.items()}
        last = offset
        for key, points in series.items():
            run.series.setdefault(key, []).extend((offset + s, v) for s, v in points)
            last = max([last, *(offset + s for s, _ in points)])
        offset = last
        run.time_source = None if None in sources else ESTIMATED if ESTIMATED in sources else LOGGED
        eval_path = round_dir / "eval.json"
        evaluation = _read_json(eval_path) if eval_path.is_file() else entry.get("eval")
        if isinstance(evaluation, dict):
            run.rounds.append((number, evaluation))
        else:
            warn(f"{eval_path}: missing; round {number} has no eval to plot")


def sanitize(name: str) -> str:
    """A metric name as a file name: `rewards/margins` -> `rewards_margins`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "metric"


def _unique(stem: str, used: set[str]) -> str:
    name, n = f"{stem}.png", 2
    while name in used:
        name, n = f"{stem}-{n}.png", n + 1
    used.add(name)
    return name


def _metric_key(name: str) -> tuple[int, int, str]:
    if name in METRIC_ORDER:
        return (0, METRIC_ORDER.index(name), name)
    if name in TRAILING_METRICS:
        return (2, TRAILING_METRICS.index(name), name)
    return (1, 0, name)


def ema(values: list[float], span: float) -> list[float]:
    """Exponential moving average with bias correction (as TensorBoard's smoothing), so the
    first points are not pulled towards zero: s_t = a*x_t + (1-a)*s_{t-1}, divided by 1-(1-a)^t.
    """
    alpha = 2.0 / (span + 1.0)
    out, acc, weight = [], 0.0, 0.0
    for x in values:
        acc = alpha * x + (1 - alpha) * acc
        weight = alpha + (1 - alpha) * weight
        out.append(acc / weight)
    return out


def _segments(points: Series, boundaries: list[tuple[int, int]]) -> list[tuple[list[int], list[float]]]:
    """Points sorted by step and split at round boundaries (no boundaries: one segment)."""
    starts = [start for start, _ in boundaries[1:]]
    groups: dict[int, Series] = {}
    for step, value in sorted(points, key=lambda p: p[0]):
        groups.setdefault(sum(step > s for s in starts), []).append((step, value))
    return [([s for s, _ in g], [v for _, v in g]) for _, g in sorted(groups.items())]


def xy_segments(run: Run, metric: str, x: str) -> list[tuple[list[float], list[float]]]:
    """What one run's line in a metric plot is drawn from: `_segments`, with the x axis in steps
    (x="step") or in training minutes (x="time"; points of steps with no time are left out)."""
    out: list[tuple[list[float], list[float]]] = []
    for steps, values in _segments(run.series[metric], run.boundaries):
        if x == "time":
            kept = [(run.seconds[s] / 60.0, v) for s, v in zip(steps, values, strict=True) if s in run.seconds]
            out.append(([t for t, _ in kept], [v for _, v in kept]))
        else:
            out.append(([float(s) for s in steps], values))
    return [(xs, ys) for xs, ys in out if xs]


def _span(n: int) -> float:
    return max(5.0, n / 15.0)  # light: ~5 points for short runs, ~7% of the run for long ones
