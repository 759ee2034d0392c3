# ruff: noqa: E501 (the case tables read best one case a line)
"""The bad-input corpus, settings: flags, --set values, presets and config files a stage refuses,
and inputs of the wrong kind for a stage. Each case: exit 2, one line naming the flag or file,
nothing left behind (the rules in tests/test_bad_input.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignctl import stages
from alignctl.errors import InputError
from refusals import (
    OK_CAND,
    fails_writing_nothing,
    jl,
    write_prefs,
)

# ---------------------------------------------------------------------------------------------
# Settings


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set", "betta=0.2"], "--set betta: unknown key 'betta' for dpo; did you mean 'beta'?"),
        (["--set", "beta=abc"], "--set beta=abc: beta must be a number, got 'abc'"),
        (["--set", "beta"], "--set beta: expected key=value"),
        (["--set", "lora_r=1.5"], "lora_r must be an integer"),
        (["--set", "learning_rate=nan"], "learning_rate must be a finite number"),
        (["--set", "use_peft=maybe"], "use_peft must be true/false"),
        (["--preset", "dpo-cpx"], "--preset dpo-cpx: no such preset; did you mean 'dpo-cpu'?"),
        (["--preset", "grpo"], "--preset grpo: it is a preset for 'grpo', not 'dpo'"),
        (["--eval-split", "1.5"], "--eval-split: eval_split must be in [0, 1) or a file that exists, got '1.5'"),
        (["--eval-split", "held-out.jsonl"], "held-out.jsonl: file not found"),
        # each setting against its domain (domains.py), before any model loads
        (["--beta", "-1"], "--beta: beta must be > 0, got -1.0"),
        (["--beta", "0"], "--beta: beta must be > 0, got 0.0"),
        (["--learning-rate", "-1"], "--learning-rate: learning_rate must be > 0, got -1.0"),
        (["--batch-size", "0"], "--batch-size: per_device_train_batch_size must be >= 1, got 0"),
        (["--lora-r", "0"], "--lora-r: lora_r must be >= 1, got 0"),
        (["--epochs", "0"], "--epochs: num_train_epochs must be > 0, got 0.0"),
        (["--max-steps", "0"], "--max-steps: max_steps must be -1 or >= 1, got 0"),
        (["--seed", "-1"], "--seed: seed must be in [0, 4294967295], got -1"),
        (["--set", "label_smoothing=0.7"], "--set label_smoothing=0.7: label_smoothing must be in [0, 0.5), got 0.7"),
        (["--set", "lora_dropout=1"], "--set lora_dropout=1: lora_dropout must be in [0, 1), got 1.0"),
        (["--set", "adam_beta2=1.5"], "--set adam_beta2=1.5: adam_beta2 must be in [0, 1), got 1.5"),
        (["--set", "warmup_steps=-5"], "warmup_steps must be >= 0, got -5.0"),
        (["--set", "optim=adam"], "--set optim=adam: optim must be one of adamw_torch, "),
        (["--set", "lr_scheduler_type=cosin"], "did you mean 'cosine'?"),
        (["--loss-type", "sigmod"], "--loss-type: loss_type must be one of sigmoid, hinge, ipo"),
        (["--set", "ref_model=./no-such-ref"], "--set ref_model=./no-such-ref: ./no-such-ref: no such model"),
        (["--set", "deepspeed=ds_z3.json"], "--set deepspeed=ds_z3.json: ds_z3.json: file not found"),
        (
            ["--beta", "-1", "--seed", "-2"],
            "beta must be > 0, got -1.0; --seed: seed must be in [0, 4294967295], got -2",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None,
)
def test_bad_settings(extra, message, tmp_path, tiny_lm, cli):
    err = fails_writing_nothing(
        cli, tmp_path, "dpo", "--data", write_prefs(tmp_path), "--model", tiny_lm, "-o", tmp_path / "out", *extra
    )
    assert message in err, err


def _prompts(tmp: Path, **columns) -> Path:
    path = tmp / "prompts.jsonl"
    path.write_bytes(jl({"prompt": "What is 2 + 2?", **columns}, {"prompt": "What is 3 + 3?", **columns}))
    return path


# (argv after the stage, built from the prompts file, message): settings of the stages that sample
OTHER_STAGE_SETTINGS = [
    (["grpo", "--reward", "rule:length", "--set", "num_generations=1"], "--set num_generations=1: num_generations must be >= 2, got 1"),
    (["grpo", "--reward", "rule:length", "--temperature", "0"], "--temperature: temperature must be > 0, got 0.0"),
    (["grpo", "--reward", "rule:length", "--set", "beta=-0.1"], "--set beta=-0.1: beta must be >= 0, got -0.1"),
    (["grpo", "--reward", "rule:length", "--set", "scale_rewards=std"], "scale_rewards must be one of group, batch, none, got 'std'"),
    (["online-dpo", "--reward", "rule:length", "--set", "loss_type=hinge"], "loss_type must be one of sigmoid, ipo, got 'hinge'"),
    (["online-dpo", "--reward", "rule:length", "--max-new-tokens", "0"], "--max-new-tokens: max_new_tokens must be >= 1, got 0"),
    (["ppo", "--reward", "rule:length", "--set", "gamma=1.5"], "--set gamma=1.5: gamma must be in [0, 1], got 1.5"),
    (["ppo", "--reward", "rule:length", "--top-p", "0"], "--top-p: top_p must be in (0, 1], got 0.0"),
    (["collect", "--top-p", "1.5"], "--top-p: top_p must be in (0, 1], got 1.5"),
    (["collect", "--num-samples", "0"], "--num-samples: num_samples must be >= 1, got 0"),
    (["iterate", "--by", "rule:length", "--num-samples", "1"], "--num-samples: num_samples must be >= 2, got 1"),
    (["iterate", "--by", "rule:length", "--dpo-preset", "dpo-cpx"], "--dpo-preset: dpo-cpx: no such preset"),
    (["eval", "--by", "rule:length", "--set", "tie_margin=-1"], "--set tie_margin=-1: tie_margin must be >= 0, got -1.0"),
]  # fmt: skip


@pytest.mark.parametrize(
    "argv, message", OTHER_STAGE_SETTINGS, ids=[" ".join(a[:1] + a[-2:]) for a, _ in OTHER_STAGE_SETTINGS]
)
def test_bad_settings_of_the_sampling_stages(argv, message, tmp_path, tiny_lm, cli):
    stage, *rest = argv
    model = ["--model", tiny_lm] if stage != "eval" else ["--model", tiny_lm, "--baseline", tiny_lm]
    err = fails_writing_nothing(
        cli, tmp_path, stage, "--prompts", _prompts(tmp_path), *model, *rest, "-o", tmp_path / "out"
    )
    assert message in err, err


# a file of another kind where prompts are wanted, and a reward that reads a column the prompts lack
PREFS_AS_PROMPTS = 'a file of preference pairs (its records have "chosen", "rejected"), but this input takes prompts'
INPUT_CASES = [
    (["grpo", "--reward", "rule:accuracy"], "prefs", PREFS_AS_PROMPTS),
    (["collect"], "prefs", PREFS_AS_PROMPTS),
    (["online-dpo", "--reward", "rule:length"], "prefs", PREFS_AS_PROMPTS),
    (["ppo", "--reward", "rule:length"], "prefs", PREFS_AS_PROMPTS),
    (["iterate", "--by", "rule:length"], "prefs", PREFS_AS_PROMPTS),
    (["eval", "--by", "rule:length", "--baseline", "./no-such-baseline"], "prefs", PREFS_AS_PROMPTS),
    (["grpo", "--reward", "rule:accuracy"], "no-answer", "record 1: rule:accuracy needs the `answer` column, and 2 of 2 records lack it"),
    (["grpo", "--reward", "rule:length", "--reward", "rule:qa?column=gold"], "no-answer", "rule:qa?column=gold needs the `gold` column"),
    (["online-dpo", "--reward", "rule:qa"], "no-answer", "rule:qa needs the `answer` column"),
    (["ppo", "--reward", "rule:contains"], "no-answer", "rule:contains needs the `answer` column"),
    (["iterate", "--by", "rule:qa"], "no-answer", "rule:qa needs the `answer` column"),
    (["eval", "--by", "rule:qa_strict", "--baseline", "./no-such-baseline"], "no-answer", "rule:qa_strict needs the `answer` column"),
    (["grpo", "--reward", "rule:accuracy"], "empty-answer", "record 1: rule:accuracy needs the `answer` column, and 2 of 2 records lack it or leave it empty"),
]  # fmt: skip


@pytest.mark.parametrize("argv, data, message", INPUT_CASES, ids=[f"{a[0]}-{a[-1]}-{d}" for a, d, _ in INPUT_CASES])
def test_an_input_the_stage_cannot_use(argv, data, message, tmp_path, tiny_lm, cli):
    """Found on the records before any model loads (the stage's model points nowhere to prove it)."""
    stage, *rest = argv
    if data == "prefs":
        path = write_prefs(tmp_path)
    else:
        path = _prompts(tmp_path, **({"answer": " "} if data == "empty-answer" else {}))
    err = fails_writing_nothing(
        cli, tmp_path, stage, "--prompts", path, "--model", tmp_path / "no-such-model", *rest, "-o", tmp_path / "out"
    )
    assert message in err, err


def test_a_candidates_file_without_the_answer_column_is_refused_by_label(tmp_path, cli):
    cands = tmp_path / "c.jsonl"
    cands.write_bytes(jl(OK_CAND))
    err = fails_writing_nothing(
        cli, tmp_path, "label", "--candidates", cands, "--by", "rule:qa", "-o", tmp_path / "p.jsonl"
    )
    assert "record 1: rule:qa needs the `answer` column" in err


@pytest.mark.parametrize(
    "text, message",
    [
        ("betta: 0.2\n", ":1: unknown key 'betta' for dpo; did you mean 'beta'?"),
        ("beta: 0.1\nlearning_rate: 1.0e-5\nbetta: 0.2\n", ":3: unknown key 'betta' for dpo"),
        ("# mine\nvalues:\n  beta: 0.1\n\n  betta: 0.2\n", ":5: unknown key 'betta' for dpo"),
        ("beta: 0.1\nloss_type: [1, 2]\n", ":2: loss_type must be"),
        ("beta: [1, 2]\n", ":1: beta must be a number"),
        ("beta: 0.1\n  lr: 2\n", ":2: invalid YAML"),
        ("- beta\n- 0.1\n", ": config must be a mapping of key: value"),
        ("beta: !!timestamp 2001-02-30\n", ": invalid YAML value"),
        ("beta: 0.1\nlearning_rate: -1.0e-5\n", ":2: learning_rate must be > 0, got -1e-05"),
        ("values:\n  per_device_train_batch_size: 0\n", ":2: per_device_train_batch_size must be >= 1, got 0"),
        ("optim: adamw\n", ":1: optim must be one of"),
        (
            "beta: 0.1\nbetta: 0.2\npush_to_hub: true\n",
            ": 2 keys alignctl cannot honour: line 2: unknown key 'betta' for dpo; did you mean 'beta'?; "
            "line 3: push_to_hub: True: alignctl writes a local model dir",
        ),
    ],
)
def test_bad_config_file(text, message, tmp_path, tiny_lm, cli):
    """Named as file:line where a line is to blame, in-process and through the command (which writes nothing)."""
    cfg = tmp_path / "my.yaml"
    cfg.write_text(text)
    with pytest.raises(InputError) as exc:
        stages.resolve("dpo", config_file=cfg)
    assert str(exc.value).startswith(f"{cfg}{message}"), str(exc.value)
    err = fails_writing_nothing(
        cli,
        tmp_path,
        "dpo",
        "--data",
        write_prefs(tmp_path),
        "--model",
        tiny_lm,
        "--config",
        cfg,
        "-o",
        tmp_path / "out",
    )
    assert f"{cfg}{message}" in err


def test_preset_file_with_unknown_key(tmp_path):
    preset = tmp_path / "mine.yaml"
    preset.write_text("stage: dpo\nvalues:\n  beta: 0.2\n  lerning_rate: 1.0e-5\n")
    with pytest.raises(InputError, match=r"unknown key 'lerning_rate' for dpo; did you mean 'learning_rate'\?"):
        stages.resolve("dpo", preset=str(preset))


def test_missing_config_file(tmp_path, tiny_lm, cli):
    err = fails_writing_nothing(
        cli, tmp_path, "dpo", "--data", write_prefs(tmp_path), "--model", tiny_lm, "--config", tmp_path / "nope.yaml"
    )
    assert "nope.yaml: file not found" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["dpo", "--data", "p.jsonl", "--beta", "abc"], "Invalid value for '--beta'"),
        (["dpo", "--data", "p.jsonl", "--betta", "0.1"], "No such option: --betta"),
        (["dpo"], "Missing option '--data'"),
        (["validate", "p.jsonl", "--kind", "prefs"], "--kind prefs: expected one of prompts, candidates, preferences"),
    ],
)
def test_usage_errors(argv, message, tmp_path, cli):
    write_prefs(tmp_path).rename(tmp_path / "p.jsonl")
    err = fails_writing_nothing(cli, tmp_path, *argv)
    assert message in err, err
