"""Each stage's preset against the chapter's runs: every value the chapter ran with is the preset's,
or the preset states a departure (the chapter's value and why) that `presets show` displays.

The table is kept here, apart from presets/, so a preset edit cannot move both sides. A value the
chapter's command does not set is the default of the TRL it ran on (docs/design.md "Presets").
"""

from __future__ import annotations

import json

import pytest

from alignctl import stages
from alignctl.tools.presets import departures

PEFT_DEFAULT = "peft's default targets"  # the chapter's --use_peft runs set no target modules
TEST_SPLIT = "the dataset's test split"

CHAPTER = {
    "train-rm": {  # 训练奖励模型: reward_modeling.py
        "per_device_train_batch_size": 8,
        "num_train_epochs": 1,
        "gradient_accumulation_steps": 1,
        "gradient_checkpointing": True,
        "learning_rate": 1e-5,
        "logging_steps": 25,
        "eval_steps": 50,
        "max_length": 2048,
        "use_peft": True,
        "lora_r": 32,
        "lora_alpha": 16,
        "lora_target_modules": PEFT_DEFAULT,
        "eval_split": TEST_SPLIT,
    },
    "dpo": {  # DPO 偏好训练: dpo.py
        "beta": 0.1,
        "per_device_train_batch_size": 4,
        "learning_rate": 1e-5,
        "gradient_accumulation_steps": 1,
        "logging_steps": 10,
        "eval_steps": 500,
        "optim": "rmsprop",
        "warmup_steps": 150,
        "bf16": True,
        "use_peft": True,
        "lora_r": 16,
        "lora_alpha": 16,
        "lora_target_modules": PEFT_DEFAULT,
        "num_train_epochs": 3,  # not set: TrainingArguments' default
        "loss_type": "sigmoid",
    },
    "grpo": {  # 强化学习 GRPO 训练: grpo.py on TRL 0.14/0.15
        "max_prompt_length": 512,
        "num_generations": 8,
        "temperature": 0.9,
        "max_completion_length": 256,
        "beta": 0.04,
        "backend": "auto",  # --use_vllm True: vLLM wherever it can run (TRL's use_vllm on CUDA)
        "vllm_dtype": "auto",  # alignctl's engine samples in the policy's own dtype, as the policy itself would
        "loss_type": "grpo",  # per-answer token mean, then the mean over answers (before TRL PR #2881)
        "scale_rewards": "group",
        "learning_rate": 1e-6,
        "num_train_epochs": 3,
        "per_device_train_batch_size": 8,
        "use_peft": False,
    },
    "ppo": {  # PPO 训练细节及超参数 + its ppo.py command
        "response_length": 53,
        "temperature": 0.7,
        "top_k": 0,
        "top_p": 1.0,
        "kl_coef": 0.2,
        "gamma": 1.0,
        "lam": 0.96,
        "cliprange": 0.2,
        "cliprange_value": 0.2,
        "vf_coef": 0.1,
        "num_ppo_epochs": 1,  # the command's --num_ppo_epochs 1 (the section's table says 4)
        "num_mini_batches": 1,
        "learning_rate": 3e-6,
        "per_device_train_batch_size": 1,
        "gradient_accumulation_steps": 16,
        "total_episodes": 10000,
        "local_rollout_forward_batch_size": 1,
        "missing_eos_penalty": 1.0,
        "use_peft": False,  # the command has no --use_peft
        # alignctl-only settings, at the value that trains what the chapter's run trained
        "value_trainable_layers": 1.0,  # TRL's value model is a full copy: every layer trains
        "value_learning_rate": None,  # TRL trains policy and value with one optimizer, one rate
        "vllm_dtype": "auto",  # an engine samples in the policy's own dtype, as the policy itself would
    },
}
CHAPTER["ppo-full"] = CHAPTER["ppo"]  # the chapter's PPO run with no departure
# 训练奖励模型: "其它超参数和 SFT 训练是一样的，不过通常只训练一个轮次": the RM command's values are SFT's,
# but for its one epoch (SFT's command set none: TrainingArguments' default 3)
CHAPTER["sft"] = {**CHAPTER["train-rm"], "num_train_epochs": 3}

# Settings that only alignctl has (no field of the TRL config the chapter's run used) and that do
# not change what is trained, each with why; every other alignctl-only setting is in CHAPTER above,
# so a preset that changes it must state a departure. TRL 1.12's PPOConfig (the chapter's PPO) is
# gone from TRL 1.16, so its fields are listed here.
NEUTRAL = {
    "max_minutes": "a time budget the user sets (none in any chapter preset)",
    "chat_template": "renders a plain-text prompt as one user message; the chapter's datasets hold messages",
    "max_prompt_length": "cuts only prompts over it, with a printed count (ppo: 512 tokens; grpo: the chapter's 512)",
    "ref_model": "unset: the reference is the starting policy, as in TRL",
    "eval_split": "which records are held out for evaluation, not how training runs",
    "backend": "which engine samples the answers (transformers or vLLM): the same policy and sampling settings",
    "vllm_kv_cache_gib": "the engine's memory, not what it samples",
    "vllm_gpu_memory_utilization": "the engine's memory, not what it samples",
    "vllm_enable_sleep_mode": "frees the engine's memory while the policy trains",
}
PPO_1_12 = set(
    "response_length temperature kl_coef kl_estimator gamma lam cliprange cliprange_value vf_coef num_ppo_epochs "
    "num_mini_batches whiten_rewards missing_eos_penalty stop_token stop_token_id total_episodes "
    "local_rollout_forward_batch_size num_train_epochs max_steps learning_rate per_device_train_batch_size "
    "gradient_accumulation_steps lr_scheduler_type warmup_steps weight_decay adam_epsilon max_grad_norm "
    "gradient_checkpointing seed save_steps report_to save_total_limit "
    "use_peft lora_r lora_alpha lora_dropout lora_target_modules".split()  # the last: TRL's ModelConfig
)


def _comparable(expected) -> bool:
    return expected not in (PEFT_DEFAULT, TEST_SPLIT)


@pytest.mark.parametrize("preset", sorted(CHAPTER))
def test_preset_is_the_chapters_run_or_says_why_not(preset):
    stage = "ppo" if preset == "ppo-full" else preset
    values = stages.resolve(stage, preset=preset).values
    departed = departures(preset)
    for key, expected in CHAPTER[preset].items():
        if _comparable(expected) and values[key] == expected:
            assert key not in departed, f"{preset}: {key} is the chapter's {expected!r}, yet listed as a departure"
            continue
        assert key in departed, f"{preset}: {key} = {values[key]!r}, the chapter ran {expected!r}: no departure"
        assert departed[key]["why"].strip() and str(departed[key]["chapter"]).strip()
    assert set(departed) <= set(values), f"{preset}: a departure names an unknown key"


@pytest.mark.parametrize("preset", ["dpo", "grpo", "ppo", "train-rm", "sft"])
def test_presets_show_lists_every_value_its_source_and_every_departure(cli, preset):
    code, out, _ = cli("presets", "show", preset, "--json")
    assert code == 0
    rows = json.loads(out)
    assert set(rows) == set(stages.resolve(preset).values)
    for key, d in departures(preset).items():
        assert rows[key]["chapter"] == d["chapter"] and rows[key]["why"] == d["why"]
    code, out, _ = cli("presets", "show", preset)
    assert code == 0
    flat = " ".join(out.split())
    for key in CHAPTER[preset]:
        assert key in flat
    if departures(preset):
        assert "departures from the chapter's run" in flat
        for key in departures(preset):
            assert key in flat


def test_ppo_preset_departs_in_lora_and_what_goes_with_it():
    assert set(departures("ppo")) == {
        "use_peft",
        "learning_rate",
        "lora_target_modules",
        "num_ppo_epochs",
        "value_trainable_layers",
    }
    full = stages.resolve("ppo", preset="ppo-full").values
    assert (full["use_peft"], full["learning_rate"], full["num_ppo_epochs"]) == (False, 3e-6, 1)
    assert departures("ppo-full") == {}


@pytest.mark.parametrize("stage", ["train-rm", "dpo", "grpo", "ppo"])
def test_every_alignctl_only_setting_is_the_chapters_or_changes_nothing_trained(stage):
    """A setting TRL's config lacks (value_trainable_layers, ...) is in CHAPTER (so a preset that
    changes it must state a departure) or in NEUTRAL with why it changes nothing trained."""
    from alignctl import config, domains

    module = stages.load(stage)
    trl = PPO_1_12 if stage == "ppo" else set(domains.trl_config_fields(module))
    trl |= {"use_peft", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules"}  # TRL's ModelConfig
    own = [k for k in config.schema(module) if k not in trl]
    unaccounted = [k for k in own if k not in CHAPTER[stage] and k not in NEUTRAL]
    assert unaccounted == [], f"{stage}: alignctl-only settings neither in CHAPTER nor NEUTRAL: {unaccounted}"


def test_cpu_demo_presets_keep_their_measured_values():
    """`make demo` trains with dpo-cpu: whatever the chapter's presets do, these stay as measured."""
    v = stages.resolve("dpo", preset="dpo-cpu").values
    assert (v["learning_rate"], v["num_train_epochs"], v["lora_target_modules"], v["optim"]) == (
        2e-4,
        3,
        None,  # all-linear
        "adamw_torch",
    )


def test_a_bad_departures_block_is_one_error(tmp_path, cli):
    bad = tmp_path / "p.yaml"
    bad.write_text("stage: dpo\nvalues: {beta: 0.2}\ndepartures: {beta: 0.1}\n")
    code, _, err = cli("presets", "show", "dpo", "--preset", str(bad))
    assert code == 2 and "departures must map each key" in err


def test_eval_steps_without_eval_data_is_one_printed_line(tmp_path, tiny_lm, run):
    from tiny import toy_preferences, write_jsonl

    data = write_jsonl(tmp_path / "prefs.jsonl", toy_preferences(8))
    res = run("train-rm", "--data", str(data), "--model", str(tiny_lm), "-o", str(tmp_path / "rm"),
              "--set", "max_steps=1", "--set", "gradient_checkpointing=false")  # fmt: skip
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "eval_steps=50 does nothing" in ln]
    assert len(lines) == 1, res.stderr
