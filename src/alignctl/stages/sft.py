"""Fine-tune a policy on prompts and their answers with SFT (TRL's SFTTrainer), the chapter's "使用 SFT 训练模型".

    alignctl sft --data sft.jsonl -o runs/sft
    alignctl sft --data prefs.jsonl --from-prefs -o runs/sft      # the chosen answers of a preference file

Step 2 of the chapter's four-step recipe, before a reward model or a preference method takes over.
Records are `{"prompt": ..., "completion": ...}` (strings or messages) or whole conversations
`{"messages": [...]}`, whose last turn is the answer trained on (earlier turns are its context).
The loss covers the answers' tokens only (`completion_only_loss`, TRL's default for such records):
the model learns to answer, not to write prompts. `--from-prefs` reads a preference file instead and
fine-tunes on each pair's chosen answer: rejection-sampling fine-tuning, the step the Llama 3 rounds
add (the best of several samples, picked by a reward model, becomes SFT data; `iterate --sft-first`
runs it every round). The chapter gives SFT's values through its reward-model command ("其它超参数和
SFT 训练是一样的": the same batch, learning rate, LoRA and lengths, more epochs); the preset has them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from alignctl.config import Resolved
from alignctl.flags import Opts, Split
from alignctl.settings import PairSettings, setting
from alignctl.training.trainers import TRLTrainer

NAME = "sft"
# TRL's SFTTrainer on prompt + completion records: the other SFTConfig fields are settings too
TRAINER = TRLTrainer("SFT", records="completions")


@dataclass
class Settings(PairSettings):
    """Built-in defaults (TRL's names); the `sft` preset layers the chapter's values on top."""

    learning_rate: float = setting(2e-5, "Optimizer learning rate (TRL SFTConfig: 2e-5; chapter: 1e-5).")
    completion_only_loss: bool = setting(
        True, "Loss on the answers' tokens only, not the prompt's (off: the whole text).", flag=True
    )
    max_length: int | None = setting(
        1024, "Max tokens of prompt+answer; a longer record is cut at the end (TRL).", flag=True
    )
    packing: bool = setting(False, "Pack several records into each max_length row (TRL).")


def run(
    resolved: Resolved,
    data: Path,
    model: str | None,
    output: Path,
    *,
    from_prefs: bool = False,
    split: str | None = None,
    **switches: bool,
) -> Path:
    """Train and save (training.fit_offline); returns the output dir. `from_prefs`: `data` is a
    preference file, trained on its chosen answers. `switches`: overwrite, force, resume, merge,
    trust_remote_code (flags.Opts.switches())."""
    from alignctl import training
    from alignctl.training.data import read_completions

    return training.fit_offline(
        stage=NAME,
        trainer=TRAINER,
        resolved=resolved,
        data=data,
        model=model,
        output=output,
        read=functools.partial(read_completions, from_prefs=from_prefs),
        count=(lambda train: {"chosen_answers": len(train)}) if from_prefs else None,
        split=split,
        **switches,
    )


def command(
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            "-d",
            help="Prompt + answer records ({prompt, completion} or {messages}), or with --from-prefs preference "
            "pairs: JSONL, Parquet, JSON array, dataset dir, hub id.",
        ),
    ],
    from_prefs: Annotated[
        bool,
        typer.Option("--from-prefs", help="--data is a preference file: fine-tune on each pair's chosen answer."),
    ] = False,
    split: Split = None,
    *,
    resolved: Resolved,
    opts: Opts,
) -> Path:
    """Fine-tune a policy on prompts and their answers (TRL SFTTrainer)."""
    return run(resolved, data, opts.model, opts.output, from_prefs=from_prefs, split=split, **opts.switches())
