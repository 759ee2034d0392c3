"""iterate's plan: every round's settings resolved and checked, and the prompts split, before any work.

`plan()` resolves the settings of collect, label, dpo and eval from iterate's own (one preset
and `--set` list per inner stage) and checks them with each stage's own checks, so a bad value
fails before round 1 samples anything. It also claims the output dir (`runs.claim`) and, without
`--eval-prompts`, holds out `eval_split` of the prompts, written only when they change so that
the stages reading them stay up to date.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignctl import io
from alignctl.config import Resolved
from alignctl.console import note
from alignctl.errors import InputError, OutputError

NAME = "iterate"  # the stage whose runs plan() prepares (iterate.py takes its name from here)
# iterate's common training options that go to each round's trainer when given
TRAINER_KEYS = (
    "max_steps",
    "max_minutes",
    "num_train_epochs",
    "learning_rate",
    "per_device_train_batch_size",
    "report_to",
)
DEFAULT_EVAL_SPLIT = 0.1
ONLINE = "online-dpo"  # the round's trainer that samples and labels with --by itself (no collect, no label)


def trainers() -> tuple[str, ...]:
    """What can train each round, in the registry's order: every stage whose TRL trainer trains a
    policy on pairs (`records` preferences, or unpaired: each pair as a good and a bad answer), then
    online-dpo. Derived from the registry, so a new preference method is a round's trainer too."""
    from alignctl import stages

    def on_pairs(name: str) -> bool:
        trainer = getattr(stages.load(name), "TRAINER", None)
        return trainer is not None and trainer.trains == "policy" and trainer.records in ("preferences", "unpaired")

    return (*(s.name for s in stages.REGISTRY if on_pairs(s.name)), ONLINE)


def takes_a_reference(trainer: str) -> bool:
    """The round's trainer has a `ref_model` setting (reference=initial names the first model there)."""
    from alignctl import config, stages

    return "ref_model" in config.schema(stages.load(trainer))


def split_prompts(records: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held-out): a seeded shuffle, held-out kept in file order."""
    if not 0 < fraction < 1:
        raise InputError(f"eval_split {fraction}: a fraction must be between 0 and 1")
    n_held = max(1, round(len(records) * fraction))
    if n_held >= len(records):
        raise InputError(f"eval_split {fraction}: leaves no training prompts out of {len(records)}")
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_held])
    return [r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held]


def write_if_changed(path: Path, records: list[dict]) -> Path:
    """Write a JSONL file only if its content would change: an unchanged file keeps its hash and
    mtime, so the stages reading it stay up to date."""
    text = "".join(io.dumps(r) + "\n" for r in records)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return path
    io.write_jsonl(path, records)
    return path


def stage_settings(stage: str, *, preset: str | None, sets: list[str] | None, flags: dict[str, Any]) -> Resolved:
    from alignctl import stages

    return stages.resolve(stage, preset=preset, sets=sets, flags={k: (v, f"iterate {k}") for k, v in flags.items()})


def check(resolved: Resolved) -> None:
    from alignctl.training import budget

    budget.check(resolved["max_minutes"])  # each round's trainer checks it too, but only in its round
    problems = []
    known = trainers()
    if resolved["trainer"] not in known:
        problems.append(f"trainer must be one of {', '.join(known)}, got {resolved['trainer']!r}")
    if resolved["reference"] not in ("previous", "initial"):
        problems.append(f"reference must be previous or initial, got {resolved['reference']!r}")
    elif resolved["reference"] == "initial" and not (
        resolved["trainer"] in known and takes_a_reference(resolved["trainer"])
    ):
        problems.append("reference=initial needs trainer=dpo (the others use their starting model)")
    for need_pairs in ("retrain_rm", "sft_first"):
        if resolved[need_pairs] and resolved["trainer"] == ONLINE:
            problems.append(f"{need_pairs} needs pairs: a trainer on pairs such as dpo (online-dpo labels its own)")
    if problems:
        raise InputError("iterate: " + "; ".join(problems))


def check_source(resolved: Resolved, by: str) -> None:
    """What the reward source must be for the trainer and --retrain-rm."""
    if resolved["retrain_rm"] and not by.startswith("rm:"):
        raise InputError(f"--retrain-rm: --by must be the reward model to start from (rm:PATH), got {by!r}")
    if resolved["trainer"] == ONLINE and not by.startswith(("rm:", "rule:", "judge")):
        raise InputError(f"trainer online-dpo labels its own samples: --by rm:, rule: or judge:, got {by!r}")


@dataclass
class Plan:
    """Everything a round needs, resolved and checked before the first model loads."""

    out: Path
    train_prompts: Path
    eval_prompts: Path
    model: str
    by: str
    eval_by: str
    collect: Resolved
    label: Resolved
    dpo: Resolved  # the round's trainer's settings (dpo, kto or online-dpo)
    eval: Resolved
    rounds: int
    accumulate: bool
    vs_base: bool
    trainer: str = "dpo"
    reference: str = "previous"
    rm: Resolved | None = None  # train-rm's settings with --retrain-rm
    sft: Resolved | None = None  # sft's settings with --sft-first


def plan(
    resolved: Resolved,
    prompts: Path,
    model: str | None,
    by: str,
    output: Path,
    eval_prompts: Path | None,
    split: str | None = None,
) -> Plan:
    from alignctl import models, runs
    from alignctl.rewards import check_columns, resolve_source
    from alignctl.stages import collect as collect_stage
    from alignctl.stages import eval as eval_stage
    from alignctl.stages import label as label_stage

    check(resolved)
    records = io.load(prompts, "prompts", split=split)
    eval_by = resolved["eval_by"] or by
    check_source(resolved, by)
    # a bad spec, or a column the source reads and the prompts lack, fails here, not after round 1's sampling
    check_columns([resolve_source(by)], records, prompts)
    eval_source = resolve_source(eval_by)
    seed = resolved["seed"]
    collect = stage_settings(
        "collect",
        preset=None,
        sets=None,
        flags={k: resolved[k] for k in ("num_samples", "temperature", "top_p", "top_k", "max_new_tokens", "batch_size")}
        | {"backend": resolved["backend"], "seed": seed},
    )
    collect_stage.check(collect)
    label = stage_settings("label", preset=None, sets=resolved["label_set"], flags={})
    label_stage.check(label)
    trainer = resolved["trainer"]
    own = resolved["dpo_preset"] if trainer == "dpo" else resolved["trainer_preset"] or trainer
    given = {k: resolved[k] for k in TRAINER_KEYS if resolved[k] is not None}  # --learning-rate etc.
    dpo = stage_settings(trainer, preset=own, sets=resolved["dpo_set"], flags={"seed": seed} | given)
    rm = sft = None
    if resolved["retrain_rm"]:
        rm = stage_settings("train-rm", preset=resolved["rm_preset"], sets=resolved["rm_set"], flags={"seed": seed})
    if resolved["sft_first"]:
        sft = stage_settings("sft", preset=resolved["sft_preset"], sets=resolved["sft_set"], flags={"seed": seed})
    eval_flags = {
        "temperature": resolved["eval_temperature"],
        "max_new_tokens": resolved["eval_max_new_tokens"],
        "batch_size": resolved["batch_size"],
        "backend": resolved["backend"],
        "seed": seed,
    }
    evals = stage_settings("eval", preset=None, sets=None, flags=eval_flags)
    eval_stage.check(evals)
    model_name = model or models.DEFAULT_MODEL
    models.resolve_model(model_name)
    held = io.load(eval_prompts, "prompts") if eval_prompts is not None else records
    check_columns([eval_source], held, eval_prompts or prompts)

    output = Path(output)
    if output.exists() and not output.is_dir():
        raise OutputError(f"{output}: exists and is not a directory")
    manifest = runs.read_manifest(output)
    if output.is_dir() and any(output.iterdir()) and (manifest or {}).get("stage") != NAME:
        raise OutputError(f"{output}: exists and is not an iterate run; choose another -o")
    output.mkdir(parents=True, exist_ok=True)
    if manifest is None:  # claim the dir first, so a run killed in round 1 is still known as ours
        runs.claim(output, NAME, complete=False, rounds=[])
    if eval_prompts is not None:
        if resolved.sources.get("eval_split", "default") != "default" and resolved["eval_split"]:
            raise InputError("give --eval-prompts or an eval_split, not both")
        eval_path = Path(eval_prompts)
        # a split of a dataset is written out once: the inner stages read a plain file
        train_path = Path(prompts) if split is None else write_if_changed(output / "prompts.train.jsonl", records)
    else:
        fraction = resolved["eval_split"] or DEFAULT_EVAL_SPLIT
        if not resolved["eval_split"]:
            note(f"no --eval-prompts: holding out {fraction:g} of {prompts} for eval (eval_split)")
        train_recs, held = split_prompts(records, fraction, seed)
        train_path = write_if_changed(output / "prompts.train.jsonl", train_recs)
        eval_path = write_if_changed(output / "prompts.eval.jsonl", held)
    return Plan(
        output,
        train_path,
        eval_path,
        model_name,
        by,
        eval_by,
        collect,
        label,
        dpo,
        evals,
        resolved["rounds"],
        resolved["accumulate"],
        resolved["eval_vs_base"],
        trainer,
        resolved["reference"],
        rm,
        sft,
    )
