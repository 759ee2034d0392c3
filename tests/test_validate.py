"""`alignctl validate`: every problem at once, then counts, shapes, duplicates, lengths, length bias."""

from __future__ import annotations

import json
import sys

import pytest

from alignctl.errors import InputError, ModelError
from alignctl.tools import validate
from tiny import write_jsonl

MSG_Q = [{"role": "user", "content": "Capital of France?"}]


def check(capsys, *files, **options):
    """Call the command in-process: (exit code, stdout, stderr)."""
    code = 0
    try:
        validate.command(list(files), **{"kind": None, "model": None, "as_json": False, **options})
    except InputError as exc:
        code = exc.exit_code
        print(f"error: {exc}", file=sys.stderr)
    out, err = capsys.readouterr()
    return code, out, err


def test_every_problem_in_every_file_is_reported(tmp_path, run):
    """The reader collects all problems; validate shows them all (a stage shows only the first)."""
    a = tmp_path / "a.jsonl"
    a.write_text(
        '{"prompt": "q", "chosen": "x", "rejected": "y"}\n'
        '{"prompt": "q", "chosen": "x"}\n'
        "{not json\n"
        '{"prompt": "q", "chosen": "same", "rejected": "same"}\n'
    )
    b = write_jsonl(tmp_path / "b.jsonl", [{"prompt": "fine"}, {"prompt": ""}])
    proc = run("validate", a, b, tmp_path / "missing.jsonl")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    for expected in (
        f'{a}:2: "rejected" is missing',
        f"{a}:3: invalid JSON",
        f'{a}:4: "chosen" is identical to "rejected"',
        f'{b}:2: "prompt" is an empty string',
        f"{tmp_path / 'missing.jsonl'}: file not found",
    ):
        assert any(ln.startswith(expected) for ln in lines), (expected, proc.stderr)
    assert lines[-1].startswith("error: 5 problems in")
    assert f"{a}: preferences, 1 records, 3 problems" in proc.stdout
    assert f"{b}: prompts, 1 records, 1 problem" in proc.stdout


def test_stats_of_a_clean_preference_file(tmp_path, capsys):
    recs = [
        {"prompt": "one two three", "chosen": "a b", "rejected": "c d e f"},
        {"prompt": "one two three", "chosen": "a b", "rejected": "c d e f"},  # an exact duplicate
        {"prompt": MSG_Q, "chosen": [{"role": "assistant", "content": "Paris."}],
         "rejected": [{"role": "assistant", "content": "Rome is it."}]},
        {"chosen": "Q: why? A: because so", "rejected": "Q: why? A: no"},
    ]  # fmt: skip
    path = write_jsonl(tmp_path / "prefs.jsonl", recs)
    code, out, err = check(capsys, path, as_json=True)
    assert code == 0, err
    (report,) = json.loads(out)["files"]
    stats = report["stats"]
    assert report["kind"] == "preferences" and report["problems"] == []
    assert stats["records"] == 4 and stats["duplicates"] == 1 and stats["identical_pairs"] == 0
    assert stats["shapes"] == {"explicit/standard": 2, "explicit/conversational": 1, "implicit/standard": 1}
    # words: chosen 2, 2, 1, 2 ("because so"); rejected 4, 4, 3, 1 ("no"); the implicit prompt is "Q: why? A:"
    assert stats["lengths"]["chosen"] == {"p50": 2, "p90": 2, "p99": 2, "max": 2, "mean": 1.75}
    assert stats["lengths"]["rejected"] == {"p50": 3, "p90": 4, "p99": 4, "max": 4, "mean": 3.0}
    assert stats["lengths"]["prompt"]["max"] == 3
    ratio = stats["length_ratio"]
    assert ratio == {"mean_ratio": round(1.75 / 3.0, 3), "chosen_longer": 0.25, "chosen_shorter": 0.75, "pairs": 4}


def test_human_report_has_the_table(tmp_path, capsys):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a b c"}, {"prompt": "a b c", "id": "2"}, {"prompt": MSG_Q}])
    code, out, _ = check(capsys, path)
    assert code == 0
    assert f"{path}: prompts, 3 records, 0 problems" in out
    assert "shape            conversational 1, standard 2" in out
    assert "duplicates       1" in out  # the same prompt text under a second id
    assert "length (words)" in out and "p50" in out and "p99" in out


def test_length_bias_warning_cites_the_chapter(tmp_path, capsys):
    long_chosen = [
        {"prompt": f"q{i}", "chosen": "a long and detailed answer here", "rejected": "short"} for i in range(8)
    ]
    code, out, err = check(capsys, write_jsonl(tmp_path / "long.jsonl", long_chosen))
    assert code == 0
    assert "chosen is longer than rejected in 100% of pairs (6.00x on average)" in err
    assert "PPO 训练细节及超参数, Reward Hacking" in err and "2310.03716" in err
    balanced = [
        {"prompt": f"q{i}", "chosen": "one two" if i % 2 else "one", "rejected": "one" if i % 2 else "one two"}
        for i in range(8)
    ]
    code, out, err = check(capsys, write_jsonl(tmp_path / "balanced.jsonl", balanced))
    assert code == 0 and "warning" not in err
    assert "chosen longer in 50% of pairs" in out


def test_candidates_stats(tmp_path, capsys):
    recs = [
        {"id": "1", "prompt": "q", "completions": ["a", "b c"], "scores": [0.1, 0.2]},
        {"id": "2", "prompt": "r", "completions": ["same", "same", "same"]},
    ]
    code, out, _ = check(capsys, write_jsonl(tmp_path / "c.jsonl", recs), as_json=True)
    stats = json.loads(out)["files"][0]["stats"]
    assert code == 0
    assert stats["completions_per_record"] == {"min": 2, "max": 3} and stats["scored"] == 1
    assert stats["identical_pairs"] == 1  # record 2 cannot give a chosen/rejected pair
    assert stats["lengths"]["completion"]["max"] == 2


def test_token_lengths_use_the_models_tokenizer(tmp_path, capsys, tiny_lm):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    recs = [
        {"prompt": "what is the capital of france", "chosen": "paris", "rejected": "rome is the capital city"},
        {"prompt": MSG_Q, "chosen": [{"role": "assistant", "content": "Paris."}],
         "rejected": [{"role": "assistant", "content": "Rome."}]},
    ]  # fmt: skip
    code, out, err = check(capsys, write_jsonl(tmp_path / "p.jsonl", recs), model=str(tiny_lm), as_json=True)
    assert code == 0, err
    data = json.loads(out)
    assert data["length_unit"] == f"tokens of {tiny_lm}"
    lengths = data["files"][0]["stats"]["lengths"]
    templated = tok.apply_chat_template(MSG_Q, tokenize=False)  # message lists count their chat template
    expected_prompt = sorted(len(tok(t, add_special_tokens=False)["input_ids"]) for t in (recs[0]["prompt"], templated))
    assert lengths["prompt"]["max"] == expected_prompt[-1] and lengths["prompt"]["p50"] == expected_prompt[0]
    assert lengths["rejected"]["max"] == len(tok("rome is the capital city", add_special_tokens=False)["input_ids"])


def test_bad_kind_and_missing_model(tmp_path, capsys):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}])
    code, _, err = check(capsys, path, kind="prefs")
    assert code == 2 and "--kind prefs: expected one of prompts, candidates, preferences" in err
    with pytest.raises(ModelError) as exc:
        validate.command([path], kind=None, model=str(tmp_path / "no-model"), as_json=False)
    assert exc.value.exit_code == 2 and "no-model: model dir not found" in str(exc.value)


def test_kind_flag_overrides_the_guess(tmp_path, capsys):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}])  # valid prompts, not preferences
    code, _, err = check(capsys, path, kind="preferences")
    assert code == 2 and f'{path}:1: "chosen" is missing' in err


@pytest.mark.parametrize("values, p50, p90, p99", [([1, 2, 3, 4], 2, 4, 4), (list(range(1, 101)), 50, 90, 99)])
def test_nearest_rank_percentiles(values, p50, p90, p99):
    assert [validate.percentile(values, p) for p in (50, 90, 99)] == [p50, p90, p99]
