"""Recipe files users already have, through `--config`: TRL's CLI configs (`trl dpo --config`,
shaped like TRL's examples/cli_configs) and the alignment handbook's (shaped like its
recipes/zephyr-7b-beta/dpo/config_full.yaml, in its older `dataset_mixer` and newer
`dataset_mixture` forms). Model and dataset are local here (no hub); every other key is as those
projects publish it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignctl import stages
from alignctl.errors import InputError
from tiny import toy_preferences, write_jsonl

# TRL's CLI config for DPO: the keys of `trl dpo`'s documented command, as YAML
TRL_DPO = """\
# trl dpo --config dpo.yaml
model_name_or_path: {model}
dataset_name: {data}
learning_rate: 5.0e-4
num_train_epochs: 1
per_device_train_batch_size: 2
max_steps: 2
gradient_accumulation_steps: 1
eval_strategy: "no"
logging_steps: 1
output_dir: {out}
remove_unused_columns: false
report_to: none
lr_scheduler_type: cosine
use_peft: true
lora_r: 8
lora_alpha: 16
"""

# the alignment handbook's zephyr-7b-beta DPO recipe (its 2023-24 form), key for key
HANDBOOK_DPO = """\
# Model arguments
model_name_or_path: {model}
torch_dtype: null

# Data training arguments
# For definitions, see: src/h4/training/config.py
dataset_mixer:
  {data}: 1.0
dataset_splits:
- train_prefs
{test_split}preprocessing_num_workers: 1

# DPOTrainer arguments
bf16: true
beta: 0.01
do_eval: true
evaluation_strategy: steps
eval_steps: 100
gradient_accumulation_steps: 1
gradient_checkpointing: true
gradient_checkpointing_kwargs:
  use_reentrant: False
hub_model_id: zephyr-7b-dpo-full
learning_rate: 5.0e-4
log_level: info
logging_steps: 1
lr_scheduler_type: cosine
max_length: 128
{max_prompt_length}max_steps: 2
num_train_epochs: 1
optim: adamw_torch
output_dir: {out}
per_device_train_batch_size: 2
per_device_eval_batch_size: 2
push_to_hub: {push}
save_strategy: "steps"
save_steps: 100
save_total_limit: 1
seed: 42
warmup_ratio: 0.1
"""

# its newer form (2025): a dataset mixture with a held-out fraction
HANDBOOK_MIXTURE = """\
model_name_or_path: {model}
torch_dtype: null
dataset_mixture:
  datasets:
    - id: {data}
      config: default
      split: train_prefs
      columns:
        - prompt
        - chosen
        - rejected
      weight: 1.0
  seed: 0
  test_split_size: 0.25
dataset_num_proc: 1
beta: 0.01
eval_strategy: steps
eval_steps: 1
learning_rate: 5.0e-4
max_steps: 2
per_device_train_batch_size: 2
output_dir: {out}
push_to_hub: false
"""


def _ultrafeedback_like(tmp: Path) -> Path:
    """A `save_to_disk` dir shaped like HuggingFaceH4/ultrafeedback_binarized: splits train_prefs /
    test_prefs, a prompt string and whole conversations that repeat it."""
    import datasets

    def rows(n: int) -> list[dict]:
        out = []
        for r in toy_preferences(n):
            user = {"role": "user", "content": r["prompt"]}
            out.append(
                {
                    "prompt": r["prompt"],
                    "prompt_id": str(len(out)),
                    "chosen": [user, {"role": "assistant", "content": r["chosen"]}],
                    "rejected": [user, {"role": "assistant", "content": r["rejected"]}],
                    "score_chosen": 8.0,
                    "score_rejected": 3.0,
                }
            )
        return out

    splits = {"train_prefs": rows(8), "test_prefs": rows(4)}
    datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()}).save_to_disk(tmp / "uf")
    return tmp / "uf"


def _recipe(tmp: Path, template: str, **fields) -> Path:
    path = tmp / "recipe.yaml"
    path.write_text(template.format(**fields))
    return path


def _ran(proc, out: Path) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == str(out)
    return json.loads((out / "alignctl.json").read_text())


def test_a_trl_recipe_runs_alignctl_dpo(tmp_path, tiny_lm, run):
    data = write_jsonl(tmp_path / "prefs.jsonl", toy_preferences(8))
    out = tmp_path / "Qwen2-0.5B-DPO"
    recipe = _recipe(tmp_path, TRL_DPO, model=tiny_lm, data=data, out=out)
    manifest = _ran(run("dpo", "--config", recipe, cwd=tmp_path), out)
    config = manifest["config"]
    assert config["learning_rate"] == {"value": 5e-4, "source": f"config {recipe}"}
    assert config["lr_scheduler_type"]["value"] == "cosine" and config["lora_r"]["value"] == 8
    assert config["remove_unused_columns"]["value"] is False  # a TRL field, passed through
    assert manifest["inputs"]["data"]["path"] == str(data) and manifest["parent_model"] == str(tiny_lm)
    assert manifest["training"]["steps"] == 2


def test_a_handbook_recipe_runs_alignctl_dpo(tmp_path, tiny_lm, run):
    data = _ultrafeedback_like(tmp_path)
    out = tmp_path / "zephyr-dpo"
    fields = {"model": tiny_lm, "data": data, "out": out, "test_split": "", "max_prompt_length": "", "push": "false"}
    recipe = _recipe(tmp_path, HANDBOOK_DPO, **fields)
    proc = run("dpo", "--config", recipe, cwd=tmp_path)
    manifest = _ran(proc, out)
    config = manifest["config"]
    assert config["beta"]["value"] == 0.01 and config["optim"]["value"] == "adamw_torch"
    assert config["warmup_steps"]["value"] == 0.1  # warmup_ratio, under transformers 5's name
    assert config["dataset_num_proc"]["value"] == 1  # preprocessing_num_workers
    assert config["gradient_checkpointing_kwargs"]["value"] == {"use_reentrant": False}
    assert manifest["inputs"]["data"]["split"] == "train_prefs"
    assert "warmup_ratio read as warmup_steps" in proc.stderr and "bf16 off" in proc.stderr


def test_a_handbook_mixture_recipe_holds_out_its_test_split_size(tmp_path, tiny_lm, run):
    data = _ultrafeedback_like(tmp_path)
    out = tmp_path / "zephyr-dpo"
    manifest = _ran(run("dpo", "--config", _recipe(tmp_path, HANDBOOK_MIXTURE, model=tiny_lm, data=data, out=out)), out)
    assert manifest["config"]["eval_split"]["value"] == 0.25
    assert manifest["records"] == {"train": 6, "eval": 2}


def test_what_a_recipe_asks_that_alignctl_cannot_do_is_listed_in_one_message(tmp_path, tiny_lm):
    """The handbook recipe as published: its eval split of the same dataset, max_prompt_length (gone
    from TRL 1.16's DPOConfig) and push_to_hub are named together, each with its line."""
    fields = {
        "model": tiny_lm,
        "data": tmp_path,
        "out": tmp_path / "out",
        "test_split": "- test_prefs\n",
        "max_prompt_length": "max_prompt_length: 512\n",
        "push": "true",
    }
    recipe = _recipe(tmp_path, HANDBOOK_DPO, **fields)
    with pytest.raises(InputError) as exc:
        stages.resolve("dpo", config_file=recipe)
    message = str(exc.value)
    assert message.startswith(f"{recipe}: 3 keys alignctl cannot honour: line 9: dataset_splits: 'test_prefs': ")
    assert "line 30: unknown key 'max_prompt_length' for dpo" in message
    assert "line 37: push_to_hub: True: alignctl writes a local model dir" in message
    assert "\n" not in message


def test_the_command_line_wins_over_a_recipe(tmp_path, tiny_lm):
    """A flag beats the file, for settings and for the inputs a recipe names."""
    recipe = _recipe(tmp_path, "model_name_or_path: some-org/model\nbeta: 0.3\noutput_dir: far/away\n")
    resolved = stages.resolve("dpo", config_file=recipe, flags={"beta": (0.2, "--beta")})
    assert resolved["beta"] == 0.2 and resolved.inputs["model"] == ("some-org/model", f"{recipe}:1")


@pytest.mark.parametrize(
    "text, message",
    [
        ("dataset_mixer:\n  a/b: 0.5\n  c/d: 0.5\n", ":1: dataset_mixer: 2 datasets: alignctl trains on one"),
        ("dataset_mixer:\n  a/b: 0.3\n", ":1: dataset_mixer: weight 0.3"),
        ("torch_dtype: bfloat16\n", ":1: torch_dtype: 'bfloat16': alignctl loads float32 weights"),
        ("save_strategy: epoch\n", ":1: save_strategy: 'epoch': alignctl checkpoints every save_steps"),
        ("env:\n  CUDA_VISIBLE_DEVICES: 0\n", ":1: env: alignctl sets no environment variables"),
        ("dataset_test_split: test\n", ":1: dataset_test_split: alignctl holds data out with --eval-split"),
        ("trust_remote_code: true\n", ":1: trust_remote_code: True: pass --trust-remote-code"),
    ],
)
def test_a_recipe_key_alignctl_cannot_honour(text, message, tmp_path):
    recipe = _recipe(tmp_path, text)
    with pytest.raises(InputError, match=None) as exc:
        stages.resolve("dpo", config_file=recipe)
    assert str(exc.value).startswith(f"{recipe}{message}"), str(exc.value)


def test_a_recipe_names_no_data_and_no_flag_does(tmp_path, cli):
    recipe = _recipe(tmp_path, "beta: 0.1\n")
    code, out, err = cli("dpo", "--config", recipe, "-o", tmp_path / "out")
    assert code == 2 and "Missing option '--data' (or a --config recipe's dataset_name)" in err
