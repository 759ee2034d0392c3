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

from dataclasses import dataclass
from pathlib import Path

from alignctl.config import Resolved, adjust_for_device
from alignctl.flags import Opts, PrefsData, Split
from alignctl.settings import PairSettings, setting
from alignctl.training.trainers import TRLTrainer

NAME = "train-rm"
# TRL's RewardTrainer: the other RewardConfig fields are settings too
TRAINER = TRLTrainer("Reward", trains="reward model")
MODEL_HELP = (
    "Base model the reward model starts from (it gets a new one-output score head): a HF model dir, "
    "a hub id, or the alias smollm2-135m (default)."
)


@dataclass
class Settings(PairSettings):
    """Built-in defaults (TRL's names); the `train-rm` preset layers the chapter's values on top."""

    learning_rate: float = setting(1e-5, "Optimizer learning rate (chapter: 1e-5).")
    num_train_epochs: float = setting(1.0, "Chapter: one epoch, to avoid overfitting.")
    gradient_checkpointing: bool = setting(
        False, "The chapter turns it on; alignctl turns it off on CPU (docs/design.md)."
    )
    max_length: int | None = setting(1024, "Max tokens of prompt+answer: longer pairs are dropped (TRL).", flag=True)
    center_rewards_coefficient: float | None = setting(None, "Pull rewards towards mean zero (TRL; 0.01 recommended).")
    eval_steps: int | None = 50
    lora_r: int = setting(32, "LoRA rank (chapter: 32).", flag=True)
    lora_alpha: int = setting(16, "LoRA alpha (chapter: 16).", flag=True)


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


def run(
    resolved: Resolved,
    data: Path,
    model: str | None,
    output: Path,
    *,
    trust_remote_code: bool = False,
    split: str | None = None,
    **switches: bool,
) -> Path:
    """Train and save a reward model; returns the output dir. Validates inputs before any model loads.

    `switches`: overwrite, force, resume, merge (flags.Opts.switches()).
    """
    from alignctl import models, training
    from alignctl.console import note
    from alignctl.training.data import READERS

    switches = {"overwrite": False, "force": False, "resume": False, "merge": True} | switches
    run_, model_path, train_recs, eval_recs = training.begin_offline(
        stage=NAME,
        resolved=resolved,
        data=data,
        read=READERS[TRAINER.records],
        model=model,
        output=output,
        split=split,
        **switches,
    )
    if run_.up_to_date:
        return run_.out

    torch = models.setup_torch()
    cuda = torch.cuda.is_available()
    adjust_for_device(resolved, cuda=cuda)
    training.adjust_checkpointing(resolved, cuda=cuda)
    from transformers import set_seed

    # right padding: a sequence classifier scores the last non-pad token either way, and TRL's
    # reward scoring in grpo/online-dpo pads on the right too
    tokenizer = models.load_tokenizer(model_path, padding_side="right", trust_remote_code=trust_remote_code)
    # the score head is new, initialised at load: seed it (TRL seeds only later, in the trainer)
    set_seed(int(resolved["seed"]))
    rm = models.load_reward_model(model_path, trust_remote_code=trust_remote_code)
    rm.config.pad_token_id = tokenizer.pad_token_id  # the head finds each sequence's last real token by it
    peft = None
    if resolved["use_peft"]:
        peft = models.lora_config(resolved.values, task_type="SEQ_CLS")
        peft.modules_to_save = ["score"]  # the score head is new (random): trained in full and saved, not frozen
    trainer = training.make_trainer(TRAINER, run_, resolved, rm, tokenizer, train_recs, eval_recs, peft_config=peft)
    dropped = len(train_recs) - len(trainer.train_dataset)
    if dropped:
        limit = resolved["max_length"]
        note(f"{dropped} of {len(train_recs)} training pairs are longer than max_length={limit}: skipped")

    def evaluate(trainer) -> dict[str, float]:
        held = pair_accuracy(trainer, trainer.eval_dataset)
        if held.get("eval_pairs", 0) < len(eval_recs):
            note(f"{len(eval_recs) - held.get('eval_pairs', 0)} held-out pairs longer than max_length: not scored")
        return held

    counts = {"train": len(train_recs), "eval": len(eval_recs)}
    return training.finish(
        trainer,
        tokenizer,
        run_,
        merge=switches["merge"],
        evaluate=evaluate if eval_recs else None,
        extra={"records": counts},
    )


def command(data: PrefsData, split: Split = None, *, resolved: Resolved, opts: Opts) -> Path:
    """Train a reward model on preference pairs (TRL RewardTrainer)."""
    return run(resolved, data, opts.model, opts.output, split=split, **opts.switches())
