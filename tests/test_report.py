"""`alignctl report`: plots and summary from fake run dirs (no training needed)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alignctl.errors import InputError
from alignctl.tools.report import run_report
from alignctl.tools.report_runs import ema, load_metrics, sanitize

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def dpo_rows(steps: int = 30, shift: float = 0.0) -> list[dict]:
    """`steps` train logging lines (every 10 steps), an eval line every 100 steps, and
    TRL's one-off end-of-training line, as the MetricsFile callback writes them."""
    rows: list[dict] = []
    for i in range(1, steps + 1):
        step = 10 * i
        wiggle = 0.05 * math.sin(i * 1.7)
        rows.append(
            {
                "step": step,
                "epoch": round(i / steps * 3, 4),
                "loss": 0.69 * math.exp(-i / 12) + 0.1 + wiggle + shift,
                "rewards/margins": 2.0 * (1 - math.exp(-i / 10)) + wiggle - shift,
                "rewards/accuracies": min(1.0, 0.5 + i / 40 + wiggle),
                "learning_rate": 1e-5 * min(1.0, i / 5),
                "grad_norm": 3.0 + math.cos(i),
                "note": "not a number",
            }
        )
        if step % 100 == 0:
            rows.append({"step": step, "epoch": i / steps * 3, "eval_loss": 0.7 - i / 100})
    rows.append({"step": 10 * steps, "epoch": 3.0, "train_runtime": 120.5})
    return rows


def make_dpo(root: Path, name: str = "dpo-b0.1", beta: float = 0.1, shift: float = 0.0):
    run = root / name
    write_jsonl(run / "metrics.jsonl", dpo_rows(shift=shift))
    manifest = {
        "stage": "dpo",
        "config": {"beta": {"value": beta, "source": "flag"}, "learning_rate": 1e-5},
        "final_metrics": {"train_loss": 0.31, "train_runtime": 120.5},
    }
    (run / "alignctl.json").write_text(json.dumps(manifest), encoding="utf-8")
    return run


def make_iterate(root: Path, name: str = "iter") -> Path:
    run = root / name
    rounds = []
    for r in (1, 2):
        rows = [
            {
                "step": s,
                "epoch": s / 8,
                "loss": 0.7 - 0.05 * s - 0.1 * r,
                "rewards/margins": 0.2 * s,
            }
            for s in range(1, 9)
        ]
        write_jsonl(run / f"round-{r}" / "model" / "metrics.jsonl", rows)
        evaluation = {
            "model": {"mean_reward": 0.3 + 0.2 * r, "mean_length": 22 - 6 * r},
            "baseline": {"mean_reward": 0.33, "mean_length": 22},
            "wins": 18 + 6 * r,
            "ties": 4,
            "losses": 18 - 6 * r,
            "win_rate": 0.5 + 0.15 * r,
            "low": 0.38 + 0.15 * r,
            "high": 0.62 + 0.15 * r,
        }
        (run / f"round-{r}" / "eval.json").write_text(json.dumps(evaluation))
        rounds.append({"round": r, "dir": f"round-{r}", "eval": evaluation})
    manifest = {"stage": "iterate", "config": {}, "rounds": rounds}
    (run / "alignctl.json").write_text(json.dumps(manifest), encoding="utf-8")
    return run


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 5_000, (path, len(data))


def test_report_single_and_iterate(tmp_path: Path) -> None:
    dpo = make_dpo(tmp_path)
    it = make_iterate(tmp_path)
    out = tmp_path / "report"
    summary = run_report([dpo, it], out)
    assert summary == out / "index.md"

    series = json.loads((out / "series.json").read_text())
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert "rewards_margins.png" in pngs
    assert "iter_rounds.png" in pngs
    assert "note.png" not in pngs  # non-numeric values are not metrics
    assert "train_runtime.png" not in pngs  # logged once: a table entry, not a plot
    assert "epoch.png" not in pngs and "step.png" not in pngs
    for name in pngs:
        assert_png(out / name)
    assert set(series["plots"].values()) | {"iter_rounds.png"} == set(pngs)

    # every plotted series has exactly the logged length
    logged = load_metrics(dpo / "metrics.jsonl")
    assert len(logged["loss"]) == 30 and len(logged["eval_loss"]) == 3
    for metric in series["plots"]:
        assert series["runs"]["dpo-b0.1"]["points"][metric] == len(logged[metric])
    rounds = [load_metrics(it / f"round-{r}" / "model" / "metrics.jsonl") for r in (1, 2)]
    assert series["runs"]["iter"]["points"]["loss"] == 16
    assert series["runs"]["iter"]["rounds"]["round-2"]["loss"] == len(rounds[1]["loss"])

    index = summary.read_text()
    for name in pngs:
        assert f"]({name})" in index, name
    assert "dpo-b0.1 (dpo)" in index and "iter (iterate)" in index
    assert "| train_loss | 0.31 |" in index
    html = (out / "index.html").read_text()
    assert all(f'src="{name}"' in html for name in pngs)
    assert not list(out.glob(".*.tmp"))  # atomic writes left no temp files


def test_compare_runs_overlays_and_config_diff(tmp_path: Path) -> None:
    a = make_dpo(tmp_path / "a", "run", beta=0.1)
    b = make_dpo(tmp_path / "b", "run", beta=0.3, shift=0.1)
    out = tmp_path / "cmp"
    index = run_report([a, b], out).read_text()
    series = json.loads((out / "series.json").read_text())
    assert set(series["runs"]) == {"a/run", "b/run"}  # same dir name: parent added
    assert series["runs"]["b/run"]["points"]["loss"] == 30
    assert "| beta | 0.1 | 0.3 |" in index
    assert "learning_rate | 1e-05" not in index  # same in both: not a difference
    assert_png(out / "loss.png")


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    run = make_dpo(tmp_path)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[2] = '{"step": 30, "loss": 0.5'  # cut off mid-object
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"metrics\.jsonl:3: not valid JSON"):
        run_report([run], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written before inputs are checked


@pytest.mark.parametrize(
    ("line", "message"),
    [("[1, 2]", "expected a JSON object"), ('{"loss": 1.0}', "'step' must be")],
)
def test_bad_records(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 1.0}\n' + line + "\n")
    with pytest.raises(InputError, match=rf"metrics\.jsonl:2: {re.escape(message)}"):
        load_metrics(path)


def test_missing_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="run directory not found"):
        run_report([tmp_path / "nope"], tmp_path / "out")
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(InputError, match=r"metrics\.jsonl: file not found"):
        run_report([tmp_path / "empty-run"], tmp_path / "out")
    it = make_iterate(tmp_path)
    (it / "round-2" / "model" / "metrics.jsonl").unlink()
    with pytest.raises(InputError, match=r"round-2/model/metrics\.jsonl: file not found"):
        run_report([it], tmp_path / "out")


def test_empty_metrics_is_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "fresh"
    run.mkdir()
    (run / "metrics.jsonl").write_text("")
    index = run_report([run], tmp_path / "out").read_text()
    assert "empty, nothing logged" in capsys.readouterr().err
    assert "nothing to plot" in index or "no plots" in index


def test_every_run_of_a_large_compare_has_its_own_look() -> None:
    """`make compare` plots 16 runs in one figure: colours repeat after ten, so the look must not."""
    from alignctl.tools.report_plots import line_look

    looks = [line_look(i) for i in range(40)]
    assert len(set(looks)) == 40
    assert looks[0] == ("C0", "-") and looks[13] == ("C3", "--")


def test_sanitize_and_ema() -> None:
    assert sanitize("rewards/margins") == "rewards_margins"
    assert sanitize("objective/kl") == "objective_kl"
    assert sanitize("completions/mean_length") == "completions_mean_length"
    assert ema([2.0, 2.0, 2.0], span=5) == pytest.approx([2.0, 2.0, 2.0])  # no bias to 0
    # span 3 -> alpha 0.5: s = [1, (0.5*3 + 0.25*1)/0.75] = [1, 2.333...]
    assert ema([1.0, 3.0], span=3) == pytest.approx([1.0, 7 / 3])


def test_cli_command(tmp_path: Path) -> None:
    from alignctl.cli import app

    run = make_dpo(tmp_path)
    result = CliRunner().invoke(app, ["report", str(run), "-o", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "r" / "index.md")
    missing = CliRunner().invoke(app, ["report"])
    assert missing.exit_code == 2  # RUN_DIRS is required


def test_command_module_does_not_import_matplotlib() -> None:
    code = "import sys, alignctl.tools.report; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_run_labels_disambiguate() -> None:
    from alignctl.tools.report import _labels

    paths = [Path("/x/a"), Path("/y/a"), Path("/x/a"), Path("/z/b")]
    assert _labels(paths) == ["x/a", "y/a", "x/a (2)", "b"]


# ---------------------------------------------------------------- --x time


def timed(run: Path, seconds_per_step: float) -> Path:
    """Give every line of a run's metrics.jsonl the `elapsed` a training stage now writes."""
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    write_jsonl(run / "metrics.jsonl", [{**r, "elapsed": r["step"] * seconds_per_step} for r in rows])
    return run


def plotted_lines(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list, str | None]]:
    """Record what every metric plot hands matplotlib: (x data, legend label) per line drawn."""
    from matplotlib.axes import Axes

    drawn: list[tuple[list, str | None]] = []
    plot = Axes.plot

    def spy(self, xs, ys, *args, **kwargs):
        drawn.append((list(xs), kwargs.get("label")))
        return plot(self, xs, ys, *args, **kwargs)

    monkeypatch.setattr(Axes, "plot", spy)
    return drawn


def test_time_axis_is_training_minutes_from_elapsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from alignctl.tools.report_runs import load_run, xy_segments

    run = timed(make_dpo(tmp_path), 6.0)  # step 10 ends at 60 s: 1 minute
    assert "elapsed" not in load_metrics(run / "metrics.jsonl")
    [(xs, ys)] = xy_segments(load_run(run), "loss", "time")
    assert xs == pytest.approx([i * 1.0 for i in range(1, 31)]) and len(ys) == 30
    [(steps, _)] = xy_segments(load_run(run), "loss", "step")
    assert steps == [10.0 * i for i in range(1, 31)]

    drawn = plotted_lines(monkeypatch)
    index = run_report([run], tmp_path / "out", x="time").read_text()
    loss_lines = [xs for xs, _ in drawn if len(xs) == 30]
    assert loss_lines and all(xs == pytest.approx(list(range(1, 31))) for xs in loss_lines)
    series = json.loads((tmp_path / "out" / "series.json").read_text())
    assert series["x"] == "time" and series["runs"]["dpo-b0.1"]["time"] == "logged"
    assert series["runs"]["dpo-b0.1"]["points"]["loss"] == 30
    assert "training minutes" in index and "estimated" not in index
    for x in ("step", "time"):  # an axis, never a metric of its own
        run_report([run], tmp_path / x, x=x)
        assert not (tmp_path / x / "elapsed.png").exists()
        assert "elapsed" not in json.loads((tmp_path / x / "series.json").read_text())["plots"]


def test_time_of_older_runs_is_estimated_from_the_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    old = make_dpo(tmp_path, "old")  # metrics.jsonl without elapsed
    manifest = json.loads((old / "alignctl.json").read_text())
    manifest["training"] = {"steps": 300, "steps_this_run": 300, "seconds": 600.0, "stopped_by": "planned_steps"}
    (old / "alignctl.json").write_text(json.dumps(manifest))
    bare = make_dpo(tmp_path, "bare")  # no elapsed, no training record: left out, one line says so
    new = timed(make_dpo(tmp_path, "new"), 6.0)

    drawn = plotted_lines(monkeypatch)
    index = run_report([old, bare, new], tmp_path / "out", x="time").read_text()
    assert "bare: no elapsed in its metrics" in capsys.readouterr().err
    loss = {label: xs for xs, label in drawn if len(xs) == 30 and label}
    estimated = "old (time estimated from mean step time)"
    assert loss[estimated] == pytest.approx([10 * i * 2.0 / 60 for i in range(1, 31)])  # 2 s a step
    assert loss["new"] == pytest.approx(list(range(1, 31)))
    assert not any(label and label.startswith("bare") for _, label in drawn)
    series = json.loads((tmp_path / "out" / "series.json").read_text())
    assert series["runs"]["bare"]["points"] == {} and series["runs"]["bare"]["time"] is None
    assert series["runs"]["old"]["time"] == "estimated"
    assert "old: time estimated from mean step time" in index and "Not plotted" in index and "bare" in index


def test_iterate_rounds_follow_each_other_in_time(tmp_path: Path) -> None:
    from alignctl.tools.report_runs import load_run, xy_segments

    it = make_iterate(tmp_path)
    for r in (1, 2):
        timed(it / f"round-{r}" / "model", 15.0)  # 8 steps a round, 2 minutes
    segments = xy_segments(load_run(it), "loss", "time")
    assert [xs for xs, _ in segments] == [[s / 4 for s in range(1, 9)], [2 + s / 4 for s in range(1, 9)]]


def test_cli_x_option(tmp_path: Path) -> None:
    from alignctl.cli import app

    run = timed(make_dpo(tmp_path), 6.0)
    result = CliRunner().invoke(app, ["report", str(run), "--x", "time", "-o", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r" / "series.json").read_text())["x"] == "time"
    bad = CliRunner().invoke(app, ["report", str(run), "--x", "minutes", "-o", str(tmp_path / "b")])
    assert bad.exit_code != 0 and not (tmp_path / "b").exists()
