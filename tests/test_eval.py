"""`alignctl eval`: the numbers of its table on hand-made scores (comparison.py), and the command on a tiny model."""

from __future__ import annotations

import json

import pytest

from alignctl import comparison
from alignctl.stages import eval as ev
from tiny import write_jsonl

pytestmark = pytest.mark.usefixtures("torch_one_thread")  # conftest: one torch thread


def test_pointwise_aggregation_by_hand():
    """model [1, 1, 0, 0.5, 1] vs baseline [0, 1, 0, 1, 0]: differences +1, 0, 0, -0.5, +1,
    so 2 wins, 2 ties, 1 loss; win rate (2 + 2/2) / 5 = 0.6. Wilson with z = 1.959964, z² = 3.841459:
    denominator 1 + z²/5 = 1.768292; centre (0.6 + z²/10) / 1.768292 = 0.556549;
    half-width z·sqrt(0.6·0.4/5 + z²/100) / 1.768292 = 1.959964·0.293963 / 1.768292 = 0.325826;
    interval [0.230723, 0.882375]. Mean rewards 3.5/5 = 0.7 and 2/5 = 0.4; lengths 4.0 and 10.0 words.
    """
    summary, outcomes = comparison.aggregate([1, 1, 0, 0.5, 1], [0, 1, 0, 1, 0], [2, 4, 6, 4, 4], [10] * 5)
    assert (summary["wins"], summary["ties"], summary["losses"], summary["n"]) == (2, 2, 1, 5)
    assert outcomes == ["win", "tie", "tie", "loss", "win"]
    assert summary["win_rate"] == pytest.approx(0.6)
    assert summary["low"] == pytest.approx(0.230723, abs=1e-5)
    assert summary["high"] == pytest.approx(0.882375, abs=1e-5)
    assert summary["model"]["mean_reward"] == pytest.approx(0.7)
    assert summary["baseline"]["mean_reward"] == pytest.approx(0.4)
    assert summary["reward_delta"] == pytest.approx(0.3)
    assert summary["model"]["mean_length"] == 4.0 and summary["baseline"]["mean_length"] == 10.0
    # mean 0.7, sample sd sqrt((3·0.3² + 0.7² + 0.2²) / 4) = sqrt(0.2) = 0.447214;
    # half-width 1.959964 · 0.447214 / sqrt(5) = 0.391993
    assert summary["model"]["reward_ci"] == pytest.approx(0.391993, abs=1e-5)
    lc = summary["length_controlled"]  # its numbers: tests/test_lcwin.py
    assert set(lc) == {"win_rate", "ci", "length_coef", "length_scale"} and lc["length_scale"] > 0


def test_tie_margin_turns_small_differences_into_ties():
    summary, outcomes = comparison.aggregate([0.52, 0.9, 0.1], [0.5, 0.5, 0.5], [1, 1, 1], [1, 1, 1], tie_margin=0.05)
    assert outcomes == ["tie", "win", "loss"]
    assert (summary["wins"], summary["ties"], summary["losses"]) == (1, 1, 1)


def test_pairwise_aggregation_has_no_mean_reward():
    """Verdicts [model, tie, baseline, model, model]: 3 wins, 1 tie, 1 loss, win rate 3.5/5 = 0.7."""
    summary, outcomes = comparison.aggregate(None, None, [3, 3, 3, 3, 3], [5, 5, 5, 5, 5], winners=[0, None, 1, 0, 0])
    assert outcomes == ["win", "tie", "loss", "win", "win"]
    assert (summary["wins"], summary["ties"], summary["losses"]) == (3, 1, 1)
    assert summary["win_rate"] == pytest.approx(0.7)
    assert summary["model"]["mean_reward"] is None and "reward_delta" not in summary
    # every model answer 2 words shorter: length and quality cannot be separated, so no LC number
    assert summary["length_controlled"]["win_rate"] is None and "note" in summary["length_controlled"]
    # at equal lengths the LC rate is the raw one, ties half (up to the ridge term's 1e-4 shift)
    summary, _ = comparison.aggregate(None, None, [4] * 5, [4] * 5, winners=[0, None, 1, 0, 0])
    assert summary["length_controlled"]["win_rate"] == pytest.approx(0.7, abs=5e-4)


def test_aggregate_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        comparison.aggregate([1.0], [1.0, 0.0], [1], [1, 2])
    with pytest.raises(ValueError):
        comparison.aggregate(None, None, [1, 1], [1, 1], winners=[0])


def test_table_shows_the_numbers(capsys):
    summary, _ = comparison.aggregate([1, 1, 0, 0.5, 1], [0, 1, 0, 1, 0], [2, 4, 6, 4, 4], [10] * 5)
    from alignctl.console import console

    with console.capture() as cap:
        comparison.render_table(summary, "runs/dpo", "base")
    text = cap.get()
    for needle in ("0.700 ± 0.392", "0.400", "4.0", "10.0", "2 / 2 / 1", "0.600 [0.231, 0.882]", "runs/dpo"):
        assert needle in text, (needle, text)
    lc = summary["length_controlled"]
    assert "length-controlled" in text and f"{lc['win_rate']:.3f} [{lc['ci'][0]:.3f}, {lc['ci'][1]:.3f}]" in text
    assert f"{lc['length_coef']:+.2f} (favours shorter)" in text  # the model is shorter on every prompt
    del summary["length_controlled"]  # an eval.json from before the key: the table still renders
    with console.capture() as cap:
        comparison.render_table(summary, "runs/dpo", "base")
    assert "0.600 [0.231, 0.882]" in cap.get() and "length-controlled" not in cap.get()


def _prompts(tmp_path):
    rows = [
        {"prompt": [{"role": "user", "content": f"Is the sky {c}?"}], "answer": ["yes"]} for c in "red blue".split()
    ]
    rows += [{"prompt": f"What is {w}?", "answer": ["paris"]} for w in ("one", "two")]
    return write_jsonl(tmp_path / "held.jsonl", rows)


def test_eval_command_writes_summary_rows_manifest_and_is_up_to_date(tmp_path, tiny_lm, cli):
    held = _prompts(tmp_path)
    out = tmp_path / "ev"
    args = ["eval", "-m", tiny_lm, "-b", tiny_lm, "-p", held, "--by", "rule:length?target=3"]
    args += ["--max-new-tokens", "6", "-o", out]
    code, stdout, stderr = cli(*args)
    assert code == 0, stderr
    assert stdout.strip() == str(out / "eval.json")
    summary = json.loads((out / "eval.json").read_text())
    assert summary["n"] == 4 and summary["ties"] == 4  # the same model on both sides, greedy: all ties
    assert summary["model"]["mean_reward"] == summary["baseline"]["mean_reward"]
    rows = [json.loads(x) for x in (out / "eval.rows.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {r["outcome"] for r in rows} == {"tie"}
    assert all(r["model_words"] == len(r["model"].split()) for r in rows)
    manifest = json.loads((out / "eval.json.alignctl.json").read_text())
    assert manifest["stage"] == "eval" and manifest["config"]["max_new_tokens"]["value"] == 6
    assert "mean reward" in stderr and "wins / ties / losses" in stderr
    stamp = (out / "eval.json").stat().st_mtime_ns
    code, _, stderr = cli(*args)
    assert code == 0 and "up to date" in stderr
    assert (out / "eval.json").stat().st_mtime_ns == stamp
    code, _, stderr = cli(*args[:-2], "--max-new-tokens", "5", "-o", out)
    assert code == 2 and "--overwrite" in stderr


def test_a_win_by_brevity_alone_shows_in_the_length_controlled_rate(tmp_path, tiny_lm, monkeypatch):
    """`rule:length` scores -words/100, so every verdict is "the shorter answer wins". The model is
    shorter on 6 of 8 prompts: raw win rate 0.75, but the length term explains every verdict and
    the length-controlled rate falls toward one half (separable case: tests/test_lcwin.py)."""
    import shutil

    from alignctl.stages import resolve

    model_words = [2, 3, 2, 4, 3, 2, 14, 16]
    base_words = [9, 12, 8, 15, 10, 11, 6, 5]
    answers = {"model": [" ".join(["ok"] * w) for w in model_words]}
    answers["baseline"] = [" ".join(["yes"] * w) for w in base_words]

    def canned(model_path, records, resolved, *, label, **_):  # generation is not what this tests
        return answers[label], 0.0, False

    monkeypatch.setattr(ev, "generate_answers", canned)
    baseline = shutil.copytree(tiny_lm, tmp_path / "base")  # another dir: eval generates each side
    held = write_jsonl(tmp_path / "held.jsonl", [{"prompt": f"Question {i}?"} for i in range(8)])
    resolved = resolve("eval", sets=["max_new_tokens=4"])
    out = ev.run(resolved, str(tiny_lm), str(baseline), held, "rule:length", tmp_path / "e" / "eval.json")
    summary = json.loads(out.read_text())
    assert (summary["wins"], summary["ties"], summary["losses"]) == (6, 0, 2)
    lc = summary["length_controlled"]
    assert summary["win_rate"] == 0.75 and lc["win_rate"] < summary["win_rate"] - 0.05
    assert lc["length_coef"] < 0 and lc["ci"][0] < lc["win_rate"] < lc["ci"][1]


def test_generations_are_cached_per_model_and_settings(tmp_path, tiny_lm):
    from alignctl.stages import resolve

    held = _prompts(tmp_path)
    resolved = resolve("eval", sets=["max_new_tokens=4"])
    first = ev.run(resolved, str(tiny_lm), str(tiny_lm), held, "rule:length", tmp_path / "a" / "eval.json")
    again = ev.run(resolved, str(tiny_lm), str(tiny_lm), held, "rule:length?target=2", tmp_path / "b" / "eval.json")
    s1, s2 = (json.loads(p.read_text()) for p in (first, again))
    assert s1["cached"] == {"model": False, "baseline": True}  # one model: generated once
    assert s2["cached"] == {"model": True, "baseline": True}  # another source: same answers, not regenerated
    rows1 = (tmp_path / "a" / "eval.rows.jsonl").read_text().splitlines()
    rows2 = (tmp_path / "b" / "eval.rows.jsonl").read_text().splitlines()
    assert [json.loads(r)["model"] for r in rows1] == [json.loads(r)["model"] for r in rows2]


def test_bad_input_fails_before_any_model_loads(tmp_path, cli):
    held = tmp_path / "held.jsonl"
    held.write_text('{"prompt": "a"}\n{"nope": 1}\n')
    code, _, stderr = cli("eval", "-m", tmp_path / "missing", "-p", held, "--by", "rule:length", "-o", tmp_path / "o")
    assert code == 2 and f"{held}:2:" in stderr
    held.write_text('{"prompt": "a"}\n')
    code, _, stderr = cli("eval", "-m", tmp_path / "missing", "-p", held, "--by", "rule:nope", "-o", tmp_path / "o")
    assert code == 2 and "unknown rule" in stderr
    assert not (tmp_path / "o").exists()


def test_pairwise_judge_eval(tmp_path, tiny_lm):
    """A judge compares the two answers (both orders); the tiny model answers "A" in both orders, so
    every comparison is a tie, and the summary has no mean reward."""
    from alignctl.stages import resolve

    held = write_jsonl(tmp_path / "held.jsonl", [{"prompt": "Is the sky blue?"}, {"prompt": "Is paris big?"}])
    resolved = resolve("eval", sets=["max_new_tokens=4"])
    out = ev.run(resolved, str(tiny_lm), str(tiny_lm), held, f"judge:{tiny_lm}", tmp_path / "j" / "eval.json")
    summary = json.loads(out.read_text())
    assert summary["model"]["mean_reward"] is None and summary["source"]["kind"] == "judge"
    assert (summary["wins"], summary["ties"], summary["losses"], summary["n"]) == (0, 2, 0, 2)
    assert summary["win_rate"] == 0.5 and summary["source"]["orders"] == 2
    rows = [json.loads(x) for x in (tmp_path / "j" / "eval.rows.jsonl").read_text().splitlines()]
    assert [r["outcome"] for r in rows] == ["tie", "tie"]
    # the local judge reads its verdict from the letters' scores (verdict_by "scores"); the untrained
    # model prefers "A" whichever answer sits there: pure position bias, which the two orders turn
    # into a tie, not a win
    assert summary["source"]["verdict_by"] == "scores"
    assert all(r["verdict"] == {"orders": ["A", "A"], "reason": "disagree"} for r in rows)
