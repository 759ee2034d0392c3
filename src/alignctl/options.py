"""The flags every training stage shares, defined once (same names, same meaning everywhere).

A stage command lists them as parameters typed with these aliases, then calls `settings()`
to resolve them (with --preset/--config/--set) through `config.resolve`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

COMMON = "Common training options"

Model = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Policy model: a HF model dir, a hub id, or the alias smollm2-135m (default).",
        rich_help_panel=COMMON,
    ),
]
Output = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        help="Output dir (default: runs/<stage>). Never overwritten without --overwrite.",
        rich_help_panel=COMMON,
    ),
]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output dir.", rich_help_panel=COMMON)]
Force = Annotated[
    bool, typer.Option("--force", help="Redo the work even if the output is up to date.", rich_help_panel=COMMON)
]
Preset = Annotated[
    str | None,
    typer.Option(
        "--preset",
        help="Preset name (alignctl presets list) or YAML file. Default: the stage's own.",
        rich_help_panel=COMMON,
    ),
]
ConfigFile = Annotated[
    Path | None, typer.Option("--config", help="YAML file of key: value settings (TRL names).", rich_help_panel=COMMON)
]
Set = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override one setting: --set key=value (repeatable).", rich_help_panel=COMMON),
]
Seed = Annotated[int | None, typer.Option("--seed", help="Random seed.", rich_help_panel=COMMON)]
MaxSteps = Annotated[
    int | None, typer.Option("--max-steps", help="Stop after this many optimizer steps.", rich_help_panel=COMMON)
]
Epochs = Annotated[float | None, typer.Option("--epochs", help="num_train_epochs.", rich_help_panel=COMMON)]
LearningRate = Annotated[
    float | None, typer.Option("--learning-rate", "--lr", help="learning_rate.", rich_help_panel=COMMON)
]
BatchSize = Annotated[
    int | None, typer.Option("--batch-size", help="per_device_train_batch_size.", rich_help_panel=COMMON)
]
Resume = Annotated[
    bool,
    typer.Option("--resume", help="Continue from the last checkpoint of an interrupted run.", rich_help_panel=COMMON),
]
NoMerge = Annotated[
    bool, typer.Option("--no-merge", help="Save the LoRA adapter instead of merging it.", rich_help_panel=COMMON)
]
ReportTo = Annotated[
    str | None, typer.Option("--report-to", help="Also log to: none, tensorboard, wandb, ...", rich_help_panel=COMMON)
]
TrustRemoteCode = Annotated[
    bool,
    typer.Option(
        "--trust-remote-code", help="Allow model repos' own Python code (off by default).", rich_help_panel=COMMON
    ),
]

# common flag -> settings key (TRL's names)
FLAG_KEYS = {
    "seed": ("seed", "--seed"),
    "max_steps": ("max_steps", "--max-steps"),
    "epochs": ("num_train_epochs", "--epochs"),
    "learning_rate": ("learning_rate", "--learning-rate"),
    "batch_size": ("per_device_train_batch_size", "--batch-size"),
    "report_to": ("report_to", "--report-to"),
}


def common_flags(given: dict[str, Any], common=None, **stage_flags: tuple[Any, str]) -> dict[str, tuple[Any, str]]:
    """Settings from explicit flags: the common ones (by parameter name) plus a stage's own.

    `common` names which common flags the stage has (default: all of FLAG_KEYS); a stage whose
    `--batch-size` means something else (collect's generation batch) lists only the ones it shares.
    """
    names = FLAG_KEYS if common is None else {n: FLAG_KEYS[n] for n in common}
    out = {key: (given[name], flag) for name, (key, flag) in names.items() if given.get(name) is not None}
    out.update({k: v for k, v in stage_flags.items() if v[0] is not None})
    return out


def settings(stage: str, given: dict[str, Any], common=None, **stage_flags: tuple[Any, str]):
    """A stage's resolved settings from its command's parameters (`locals()`): defaults < --preset <
    --config < --set < explicit flags (config.resolve)."""
    from alignctl.config import resolve

    flags = common_flags(given, common, **stage_flags)
    return resolve(stage, preset=given["preset"], config_file=given["config_file"], sets=given["set_"], flags=flags)


def run_switches(given: dict[str, Any]) -> dict[str, bool]:
    """The run-control flags every training stage passes on to its `run()`, from `locals()`."""
    return {
        "overwrite": given["overwrite"],
        "force": given["force"],
        "resume": given["resume"],
        "merge": not given["no_merge"],
        "trust_remote_code": given["trust_remote_code"],
    }
