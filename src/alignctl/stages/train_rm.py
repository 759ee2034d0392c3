"""Train a reward model on preference pairs (TRL's RewardTrainer), the chapter's "训练奖励模型".

    alignctl train-rm --data prefs.jsonl -o runs/rm
    alignctl train-rm --data prefs.jsonl --eval-split 0.1 --max-steps 200 --lr 1e-4 -o runs/rm

Reads any of the three preference shapes (docs/formats.md). The model is the base model with a
one-output score head (`AutoModelForSequenceClassification`, `num_labels=1`), trained with the
chapter's pairwise loss L = -log σ(r(x, y_chosen) - r(x, y_rejected)). With LoRA (the chapter's
preset, r 32 / alpha 16) the new score head is trained in full next to the adapters (peft
`modules_to_save`), and both are merged into the saved dir, which `label --by rm:`, `grpo`,
`online-dpo` and `ppo` load directly. `--eval-split` holds pairs out; the final metrics report
the held-out pair accuracy: the share of pairs scored r(chosen) > r(rejected).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from alignctl import io, options
from alignctl.config import Resolved, adjust_for_device

STAGE = "train-rm"


@dataclass
class Settings:
    """Built-in defaults (TRL's names); the `train-rm` preset layers the chapter's values on top."""

    learning_rate: float = field(default=1e-5, metadata={"help": "Optimizer learning rate (chapter: 1e-5)."})
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    num_train_epochs: float = field(default=1.0, metadata={"help": "Chapter: one epoch, to avoid overfitting."})
    max_steps: int = -1
    optim: str = "adamw_torch"
    warmup_steps: int = 0
    lr_scheduler_type: str = "linear"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    bf16: bool = False
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "The chapter turns it on; alignctl turns it off on CPU (design.md)."}
    )
    max_length: int | None = field(
        default=1024, metadata={"help": "Pairs whose chosen or rejected text is longer are dropped (TRL)."}
    )
    center_rewards_coefficient: float | None = field(
        default=None, metadata={"help": "Pull rewards towards mean zero (TRL; 0.01 recommended)."}
    )
    logging_steps: int = 10
    eval_steps: int | None = 50
    save_steps: int | None = 500
    save_total_limit: int | None = 2
    seed: int = 42
    report_to: str = "none"
    eval_split: str | float | None = field(default=None, metadata={"help": "Held-out fraction (0.1) or a prefs file."})
    use_peft: bool = False
    lora_r: int = 32
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | None = None


def read_prefs(path: str | Path) -> list[dict]:
    """Preference records trimmed to the fields a reward model trains on."""
    return [{k: r[k] for k in ("prompt", "chosen", "rejected") if k in r} for r in io.load(path, "preferences")]


def pair_accuracy(trainer, dataset) -> dict[str, float]:
    """Held-out metrics computed on the final model: pair accuracy, mean margin, mean loss.

    TRL's own `eval_accuracy` averages per-batch accuracies (a short last batch weighs as much
    as a full one) and is only as fresh as the last `eval_steps`; this is the exact share of
    held-out pairs with r(chosen) > r(rejected) (a tie counts as wrong).
    """
    import torch
    import torch.nn.functional as F

    model = trainer.model
    was_training = model.training
    model.eval()
    loader = trainer.get_eval_dataloader(dataset)
    margins = []
    with torch.no_grad():
        for batch in loader:
            batch = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")}
            logits = model(**batch, use_cache=False).logits.squeeze(-1).float()
            chosen, rejected = torch.chunk(logits, 2)
            margins.append(chosen - rejected)
    model.train(was_training)
    if not margins:
        return {}
    m = torch.cat(margins)
    return {
        "eval_accuracy": (m > 0).float().mean().item(),
        "eval_margin": m.mean().item(),
        "eval_loss": (-F.logsigmoid(m)).mean().item(),
        "eval_pairs": int(m.numel()),
    }


def trl_config() -> type:
    """TRL's RewardConfig: its other fields are settings too (`--set key=value`, presets, --config)."""
    from trl import RewardConfig

    return RewardConfig


def run(
    resolved: Resolved,
    data: Path,
    model: str | None,
    output: Path,
    *,
    overwrite: bool = False,
    force: bool = False,
    resume: bool = False,
    merge: bool = True,
    trust_remote_code: bool = False,
) -> Path:
    """Train and save a reward model; returns the output dir. Validates inputs before any model loads."""
    from alignctl import models, runs, training
    from alignctl.console import note

    run_, model_path, train_recs, eval_recs = training.begin_on_prefs(
        STAGE, resolved, data, read_prefs, model, output, overwrite=overwrite, force=force, resume=resume, merge=merge
    )
    if run_.up_to_date:
        runs.say_up_to_date(run_)
        return run_.out

    torch = models.setup_torch()
    cuda = torch.cuda.is_available()
    adjust_for_device(resolved, cuda=cuda)
    training.adjust_checkpointing(resolved, cuda=cuda)
    from datasets import Dataset
    from transformers import set_seed
    from trl import RewardConfig, RewardTrainer

    # right padding: a sequence classifier scores the last non-pad token either way, and TRL's
    # reward scoring in grpo/online-dpo pads on the right too
    tokenizer = models.load_tokenizer(model_path, padding_side="right", trust_remote_code=trust_remote_code)
    # the score head is new, initialised at load: seed it (TRL seeds only later, in the trainer)
    set_seed(int(resolved["seed"]))
    rm = models.load_reward_model(model_path, trust_remote_code=trust_remote_code)
    rm.config.pad_token_id = tokenizer.pad_token_id  # the head finds each sequence's last real token by it
    peft_config = None
    if resolved["use_peft"]:
        peft_config = models.lora_config(resolved.values, task_type="SEQ_CLS")
        # the score head is new (random): it must be trained in full and saved, not frozen
        peft_config.modules_to_save = ["score"]
    has_eval = bool(eval_recs)
    args = RewardConfig(
        **training.trl_kwargs(
            RewardConfig,
            resolved,
            run_,
            eval_strategy="steps" if has_eval and resolved["eval_steps"] else "no",
            eval_steps=resolved["eval_steps"] if has_eval else None,
        )
    )
    trainer = RewardTrainer(
        model=rm,
        args=args,
        train_dataset=Dataset.from_list(train_recs),
        eval_dataset=Dataset.from_list(eval_recs) if has_eval else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=training.callbacks(run_),
    )
    dropped = len(train_recs) - len(trainer.train_dataset)
    if dropped:
        limit = resolved["max_length"]
        note(f"{dropped} of {len(train_recs)} training pairs are longer than max_length={limit}: skipped")
    final = training.train(trainer, run_)
    if has_eval:
        held = pair_accuracy(trainer, trainer.eval_dataset)
        if held.get("eval_pairs", 0) < len(eval_recs):
            note(f"{len(eval_recs) - held.get('eval_pairs', 0)} held-out pairs longer than max_length: not scored")
        final.update(held)
    training.save_final(trainer, tokenizer, run_, merge=merge)
    return run_.finish(final, extra={"records": {"train": len(train_recs), "eval": len(eval_recs)}})


def command(
    data: Annotated[Path, typer.Option("--data", "-d", help="Preference JSONL (any of the three shapes).")],
    eval_split: Annotated[
        str | None, typer.Option("--eval-split", help="Held-out fraction (e.g. 0.1) or a preference file.")
    ] = None,
    max_length: Annotated[
        int | None, typer.Option("--max-length", help="Max tokens of prompt+answer (longer pairs are skipped).")
    ] = None,
    lora_r: Annotated[int | None, typer.Option("--lora-r", help="LoRA rank (chapter: 32).")] = None,
    lora_alpha: Annotated[int | None, typer.Option("--lora-alpha", help="LoRA alpha (chapter: 16).")] = None,
    model: options.Model = None,
    output: options.Output = None,
    overwrite: options.Overwrite = False,
    force: options.Force = False,
    preset: options.Preset = None,
    config_file: options.ConfigFile = None,
    set_: options.Set = None,
    seed: options.Seed = None,
    max_steps: options.MaxSteps = None,
    epochs: options.Epochs = None,
    learning_rate: options.LearningRate = None,
    batch_size: options.BatchSize = None,
    resume: options.Resume = False,
    no_merge: options.NoMerge = False,
    report_to: options.ReportTo = None,
    trust_remote_code: options.TrustRemoteCode = False,
) -> None:
    """Train a reward model on preference pairs (TRL RewardTrainer)."""
    resolved = options.settings(
        STAGE,
        locals(),
        eval_split=(eval_split, "--eval-split"),
        max_length=(max_length, "--max-length"),
        lora_r=(lora_r, "--lora-r"),
        lora_alpha=(lora_alpha, "--lora-alpha"),
    )
    out = run(
        resolved,
        data,
        model,
        output or Path("runs") / STAGE,
        **options.run_switches(locals()),
    )
    print(out)
