"""bench/run.py stamps every row it appends with what a reader needs to trust or rerun the figure."""

from __future__ import annotations

import importlib.util
import json

from conftest import REPO


def test_rows_carry_command_date_and_machine(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_run", REPO / "bench" / "run.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "RESULTS", tmp_path / "results.jsonl")
    monkeypatch.setattr(bench, "run_one", lambda name: [{"what": f"{name} a", "seconds": 1.5}, {"what": "b"}])
    assert bench.main(["fake"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["what"] for r in rows] == ["fake a", "b"] and rows[0]["seconds"] == 1.5
    for row in rows:
        assert row["bench"] == "fake" and row["command"] == "python bench/run.py fake"
        assert row["when"].endswith("Z") and len(row["when"]) == len("2026-11-29T12:32:00Z")
        assert "cores" in row["machine"] and "GB" in row["machine"] and row["python"]
        assert "load_avg" in row and "git" in row


def _load(name: str, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_versus_alternates_which_side_runs_first(tmp_path, monkeypatch):
    versus = _load("_versus", monkeypatch)
    order = []

    def fake_timed(cmd, env=None):
        side = "ours" if cmd[0].endswith("alignctl") else "bare"
        order.append(side)
        if side == "ours":
            out = cmd[cmd.index("-o") + 1]
            (tmp_path / out).mkdir(parents=True, exist_ok=True)
            (tmp_path / out / "alignctl.json").write_text(json.dumps({"final_metrics": {"train_runtime": 4.0}}))
        return {"seconds": 10.0 if side == "ours" else 8.0, "peak_rss_mb": 1.0, "stdout": '{"train_runtime": 2.0}'}

    monkeypatch.setattr(versus, "timed", fake_timed)
    monkeypatch.setattr(versus.tempfile, "mkdtemp", lambda prefix: str(tmp_path))
    rows = versus.compare("dpo", [], "dpo_trl.py", [], steps=2, repeats=4, label="alignctl dpo")
    assert order == ["ours", "bare", "bare", "ours", "ours", "bare", "bare", "ours"]
    assert rows[1]["ratio"] == 10.0 / 8.0 and rows[0]["s_per_step"] == 1.0 and rows[1]["s_per_step"] == 2.0


def test_ppo_times_both_sides_alike_from_outside(monkeypatch, tmp_path):
    """Per update = (wall time with UPDATES updates - with 1) / (UPDATES - 1), for TRL and alignctl alike."""
    ppo = _load("ppo", monkeypatch)
    import alignctl.models

    calls = []

    def fake_timed(cmd, env=None):
        ours = cmd[0].endswith("alignctl")
        n = int(cmd[cmd.index("--total-episodes") + 1]) // 4 if ours else int(cmd[-1])
        calls.append(("ours" if ours else "trl", n))
        seconds = 30 + 2 * n if ours else 40 + 3 * n  # fixed cost + per update
        return {"seconds": seconds, "peak_rss_mb": 100.0 * (1 + ours), "stdout": ""}

    monkeypatch.setattr(ppo, "timed", fake_timed)
    monkeypatch.setattr(ppo, "ensure_trl_venv", lambda: None)
    monkeypatch.setattr(ppo, "build_reward_model", lambda policy, out: None)
    monkeypatch.setattr(alignctl.models, "resolve_model", lambda ref: str(tmp_path / "model"))
    rows = ppo.main()
    assert rows[0]["s_per_update"] == 3.0 and rows[1]["s_per_update"] == 2.0
    assert rows[2]["s_per_update"] == 2.0 / 3.0 and rows[2]["peak_rss_mb"] == 2.0
    u = ppo.UPDATES
    assert calls[:8] == [
        ("trl", u),
        ("ours", u),
        ("trl", 1),
        ("ours", 1),
        ("ours", u),
        ("trl", u),
        ("ours", 1),
        ("trl", 1),
    ]


def test_every_recorded_row_was_written_by_the_harness():
    """docs/performance.md cites rows of bench/results.jsonl: each one stamped by bench/run.py
    (bench name, start time, machine), none typed in by hand."""
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "bench" / "results.jsonl"
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        row = json.loads(line)
        missing = {"bench", "when", "machine", "what"} - row.keys()
        assert not missing, f"results.jsonl:{lineno}: no {sorted(missing)}"
