"""How a stage declares the TRL trainer behind it: `TRAINER = TRLTrainer("DPO", reference=True)`.

The declaration says everything the shared code needs, so `training/` holds no per-method branch:

- `name`: TRL's `<name>Config` and `<name>Trainer`;
- `where`: the module TRL keeps them in (`trl`, or `trl.experimental.orpo` for the trainers TRL
  ships as experimental; they move between minor releases, and TRL is pinned `>=1.16,<1.17` in
  pyproject.toml, so when the pin moves the stages' `where` are the lines to check);
- `reference`: whether the trainer takes a reference model (`ref_model`);
- `records`: what it trains on (`training.data.READERS`: preferences, unpaired, completions,
  prompts);
- `trains`: what comes out, a policy or a reward model;
- `adapt`: a function from TRL's trainer class to the one alignctl runs, where TRL needs a fix
  (its reason beside it).

`config.resolve` asks the declaration for the config's fields (`settable()`: every other field of
TRL's config becomes a setting, checked against TRL's type hints, `MANAGED` ones refused), so config
imports no TRL module and nothing from here. `OWN_KEYS` are settings that never go into a TRL config.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# TRL config fields alignctl sets itself, and what to do instead (config.resolve refuses them)
MANAGED = {
    "output_dir": "use --output",
    "disable_tqdm": "alignctl shows its own progress bar",
    "save_strategy": "set save_steps (null: no checkpoints)",
    "logging_first_step": "alignctl always logs the first step",
    "use_cpu": "alignctl sets it from the machine",
    "use_vllm": "use --backend vllm (on CUDA it turns TRL's use_vllm on)",
}
# settings that are ours (LoRA, data split, ...) and never go into a TRL config
OWN_KEYS = {
    "use_peft",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "lora_target_modules",
    "eval_split",
    "max_prompt_length",
    "merge",
}


@dataclass(frozen=True)
class TRLTrainer:
    """The TRL trainer behind a stage (module docstring)."""

    name: str
    where: str = "trl"
    reference: bool = False
    records: str = "preferences"
    trains: str = "policy"  # or "reward model"
    adapt: Callable[[type], type] | None = None

    def classes(self) -> tuple[type, type]:
        """`(config class, trainer class)`, imported from `where` (trl is imported here, not before)."""
        return _classes(self)

    def settable(self) -> tuple[str, dict[str, Any], dict[str, str]]:
        """(config class name, {field: type} of the fields a user may set, {field: why not} of MANAGED ones)."""
        return _settable(self)


@functools.cache
def _classes(trainer: TRLTrainer) -> tuple[type, type]:
    if trainer.where.startswith("trl.experimental"):
        # TRL warns at import that experimental trainers may change; the stage's `where` is that acknowledgement
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    module = importlib.import_module(trainer.where)
    config_cls, trainer_cls = getattr(module, f"{trainer.name}Config"), getattr(module, f"{trainer.name}Trainer")
    return config_cls, trainer.adapt(trainer_cls) if trainer.adapt else trainer_cls


@functools.cache
def _settable(trainer: TRLTrainer) -> tuple[str, dict[str, Any], dict[str, str]]:
    cls = trainer.classes()[0]
    hints = typing.get_type_hints(cls)
    fields = {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init and f.name not in MANAGED}
    return cls.__name__, fields, dict(MANAGED)


def masked_online_dpo_stats(base: type) -> type:
    """TRL's OnlineDPOTrainer with its logged objective/kl and objective/entropy over the answers' own
    tokens: TRL 1.16 sums them over the padding after EOS too (huggingface/trl#6803), which made the
    KL we logged swing from -10 to +110 with the amount of padding in a batch. Zero log-probs at
    padding; the loss masks padding itself, so training is unchanged."""

    class MaskedStatsOnlineDPOTrainer(base):
        def _forward(self, model, prompt_ids, prompt_mask, completion_ids, completion_mask, *rest, **kw):
            logprobs = super()._forward(model, prompt_ids, prompt_mask, completion_ids, completion_mask, *rest, **kw)
            return logprobs * completion_mask.to(logprobs.dtype)

    return MaskedStatsOnlineDPOTrainer
