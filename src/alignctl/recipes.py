"""`--config FILE`: alignctl's own `key: value` files, and the recipe files TRL and the alignment
handbook publish (`trl dpo --config recipe.yaml`, the handbook's `recipes/*/dpo/config_*.yaml`).

A recipe's training keys are TRL config fields, which alignctl takes under the same names. The
keys that name the run's inputs go to the stage's options instead (an option given on the
command line wins over the file):

| recipe key | alignctl |
|---|---|
| `model_name_or_path` | `--model` |
| `output_dir` | `--output` |
| `dataset_name`, `dataset_mixer` / `dataset_mixture` of one dataset at weight 1 | `--data` (`--prompts`) |
| `dataset_train_split`, `dataset_splits`' first, a mixture entry's `split` | `--split` |
| a mixture's `test_split_size` | `eval_split` (the fraction held out) |

Older names still found in published recipes are read as TRL 1.16's (`RENAMED`, one printed line
each). Keys that say what alignctl does anyway (`push_to_hub: false`, `torch_dtype: null`,
`save_strategy: steps`, ...) are accepted and set nothing. Every key alignctl cannot honour is
listed in one message, each with its line and why, rather than stopping at the first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INPUTS = {"model_name_or_path": "model", "output_dir": "output", "dataset_name": "data", "dataset_train_split": "split"}
RENAMED = {  # an older name -> the TRL 1.16 / transformers 5 field with the same meaning
    "evaluation_strategy": "eval_strategy",
    "warmup_ratio": "warmup_steps",  # transformers 5 reads warmup_steps below 1 as that fraction of the steps
    "preprocessing_num_workers": "dataset_num_proc",  # the handbook's name for TRL's dataset workers
}
# keys whose value is what alignctl does anyway, with the values that say so; any other value of
# them is a key alignctl cannot honour, for the reason given
AS_ALIGNCTL_DOES: dict[str, tuple[tuple[Any, ...], str]] = {
    "push_to_hub": ((False,), "alignctl writes a local model dir; upload it yourself (hf upload)"),
    "torch_dtype": ((None, "float32"), "alignctl loads float32 weights (bf16: true trains in bf16 autocast on CUDA)"),
    "dtype": ((None, "float32"), "alignctl loads float32 weights (bf16: true trains in bf16 autocast on CUDA)"),
    "attn_implementation": ((None,), "alignctl loads the model's default attention"),
    "model_revision": ((None, "main"), "alignctl loads a hub model's main revision (or download the one you want)"),
    "trust_remote_code": ((False,), "pass --trust-remote-code on the command line"),
    "dataset_config": ((None, "default"), "alignctl reads a hub dataset's default config"),
    "dataset_streaming": ((False,), "alignctl reads the whole dataset"),
    "save_strategy": (("steps",), "alignctl checkpoints every save_steps (save_steps: null for none)"),
    "eval_strategy": (("steps",), "alignctl evaluates every eval_steps when it has held-out data (--eval-split)"),
    "load_in_4bit": ((False,), "alignctl does not quantize"),
    "load_in_8bit": ((False,), "alignctl does not quantize"),
    "use_bnb_nested_quant": ((False,), "alignctl does not quantize"),
    "use_rslora": ((False,), "alignctl's LoRA is plain LoRA"),
    "use_dora": ((False,), "alignctl's LoRA is plain LoRA"),
    "lora_modules_to_save": ((None,), "alignctl decides which modules train in full (a reward model's score head)"),
    "lora_task_type": ((None, "CAUSAL_LM", "SEQ_CLS"), "alignctl sets the task type from the stage"),
}
EVAL_ELSEWHERE = "alignctl holds data out with --eval-split (a fraction or a file), not a split of the same dataset"


@dataclass
class Recipe:
    """A --config file read: settings to apply, the inputs it names, notes, and what it cannot do."""

    settings: list[tuple[str, Any, str]] = field(default_factory=list)  # (key, value, where)
    inputs: dict[str, tuple[Any, str]] = field(default_factory=dict)  # "model" -> (value, where)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "file:line: key: why"


def read(path: Path, data: dict[str, Any], lines: dict[str, int]) -> Recipe:
    """Sort a --config file's keys (`data`, read by config) into settings, inputs and problems."""
    recipe = Recipe()

    def where(key: str) -> str:
        return f"{path}:{lines[key]}" if key in lines else str(path)

    def cannot(key: str, why: str) -> None:
        recipe.problems.append(f"{where(key)}: {key}: {why}")

    for raw_key, value in data.items():
        key = str(raw_key)
        if key in INPUTS:
            recipe.inputs[INPUTS[key]] = (value, where(key))
        elif key in ("dataset_mixer", "dataset_mixture"):
            _mixture(recipe, key, value, where(key), cannot)
        elif key == "dataset_splits":
            splits = value if isinstance(value, list) else [value]
            recipe.inputs.setdefault("split", (splits[0], where(key)))
            if len(splits) > 1:
                cannot(key, f"{splits[1]!r}: {EVAL_ELSEWHERE}")
        elif key == "dataset_test_split":
            cannot(key, EVAL_ELSEWHERE)
        elif key == "env":
            cannot(key, "alignctl sets no environment variables from a file: set them in the shell")
        elif key in ("save_strategy", "eval_strategy", "evaluation_strategy") and value == "no":
            target = "save_steps" if key == "save_strategy" else "eval_steps"
            recipe.settings.append((target, None, where(key)))
            recipe.notes.append(f"{where(key)}: {key}: no, read as {target}: null")
        elif RENAMED.get(key, key) in AS_ALIGNCTL_DOES:
            accepted, why = AS_ALIGNCTL_DOES[RENAMED.get(key, key)]
            if value not in accepted:
                cannot(key, f"{value!r}: {why}")
        elif key in RENAMED:
            recipe.settings.append((RENAMED[key], value, where(key)))
            recipe.notes.append(f"{where(key)}: {key} read as {RENAMED[key]} (its name in TRL 1.16)")
        else:
            recipe.settings.append((key, value, where(key)))
    return recipe


def apply(path: Path, data: dict[str, Any], lines: dict[str, int], setter) -> dict[str, tuple[Any, str]]:
    """Apply a --config file's settings through `setter(key, value, source, where)` (config.resolve's
    merge); every problem, the file's own and the setter's, in one InputError. Returns its inputs."""
    from alignctl.console import info
    from alignctl.errors import InputError

    recipe = read(path, data, lines)
    problems = list(recipe.problems)
    for key, value, where in recipe.settings:
        try:
            setter(key, value, f"config {path}", where)
        except InputError as exc:
            problems.append(str(exc))
    if len(problems) == 1:
        raise InputError(problems[0])
    if problems:
        problems.sort(key=lambda p: _line_of(p, path))
        shown = "; ".join(f"line {p[len(str(path)) + 1 :]}" if _line_of(p, path) else p for p in problems)
        raise InputError(f"{path}: {len(problems)} keys alignctl cannot honour: {shown}")
    for text in recipe.notes:
        info(text)
    return recipe.inputs


def _line_of(problem: str, path: Path) -> int:
    head = problem[len(str(path)) + 1 :].split(":", 1)[0] if problem.startswith(f"{path}:") else ""
    return int(head) if head.isdigit() else 0


def _mixture(recipe: Recipe, key: str, value: Any, at: str, cannot) -> None:
    """The handbook's dataset lists: `dataset_mixer: {id: weight}` (2023-24) or `dataset_mixture:
    {datasets: [{id, config, split, columns, weight}], seed, test_split_size}` (2025); alignctl
    trains on one dataset, whole."""
    if key == "dataset_mixer":
        entries = [{"id": k, "weight": v} for k, v in value.items()] if isinstance(value, dict) else None
        extra: dict[str, Any] = {}
    else:
        entries = value.get("datasets") if isinstance(value, dict) else None
        extra = {k: v for k, v in value.items() if k != "datasets"} if isinstance(value, dict) else {}
    if not isinstance(entries, list) or len(entries) != 1 or not isinstance(entries[0], dict):
        count = len(entries) if isinstance(entries, list) else "no"
        cannot(key, f"{count} datasets: alignctl trains on one (mix them into one file first)")
        return
    entry = entries[0]
    if entry.get("weight", 1) not in (1, 1.0):
        cannot(key, f"weight {entry['weight']}: alignctl trains on the whole dataset (weight 1)")
    if entry.get("config") not in (None, "default"):
        cannot(key, f"config {entry['config']!r}: alignctl reads a hub dataset's default config")
    recipe.inputs["data"] = (entry.get("id"), at)
    if entry.get("split"):
        recipe.inputs["split"] = (entry["split"], at)
    if extra.get("test_split_size"):
        recipe.settings.append(("eval_split", extra["test_split_size"], at))
