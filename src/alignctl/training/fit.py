"""The opening and the whole of a training stage's run, shared by the stages: `begin_run` (every
training stage), `begin_offline` (a stage that trains on a file of records: train-rm and every
`fit_offline` stage), `fit_offline` (a policy trained on a file: dpo, kto, ...) and `fit_online` (a
policy that samples while it trains: grpo, online-dpo, ...; `fit_on_rewards` for those that learn
from `--reward` scores of groups of answers: grpo, rloo). Every argument is named: what a run
reads is spelled out at the call (`prompts=prompts`), and what differs between trainers comes from
the stage's `TRLTrainer` declaration (`training.trainers`), never from a branch here."""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alignctl.errors import InputError

if TYPE_CHECKING:
    from alignctl.config import Resolved
    from alignctl.runs import Run
    from alignctl.training.trainers import TRLTrainer

SWITCHES = {"overwrite": False, "force": False, "resume": False, "merge": True}


def split_records(records: list[dict], eval_split: str | float | None, seed: int, read) -> tuple[list, list]:
    """(train, eval): `eval_split` is a fraction in (0, 1) or a second file read with `read`."""
    if eval_split in (None, "", 0, 0.0):
        return records, []
    try:
        frac = float(eval_split)
    except (TypeError, ValueError):
        return records, read(str(eval_split))
    if not 0 < frac < 1:
        raise InputError(f"--eval-split {eval_split}: a fraction must be between 0 and 1 (or give a file)")
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(len(records) * frac))
    if n_eval >= len(records):
        raise InputError(f"--eval-split {eval_split}: leaves no training records out of {len(records)}")
    held = set(order[:n_eval])
    return [r for i, r in enumerate(records) if i not in held], [records[i] for i in sorted(held)]


def whole_groups(resolved: Resolved, stage: str, world_size: int | None = None) -> None:
    """Make the generation batch hold whole groups, with a printed note instead of TRL's ValueError.

    A stage that samples groups of answers per prompt (grpo, rloo): TRL needs `generation_batch_size`
    (default: batch x processes x grad-accum) divisible by `num_generations` and by the global batch.
    The smallest such size is their least common multiple; gradient accumulation stays as the user
    set it. `world_size`: the processes (default: torchrun's / accelerate's WORLD_SIZE).
    """
    import math
    import os

    from alignctl.console import note

    world_size = world_size or int(os.environ.get("WORLD_SIZE", "1"))
    g = resolved["num_generations"]
    if g < 2:
        raise InputError(f"num_generations={g}: {stage} compares answers within a group, it needs at least 2")
    global_batch = resolved["per_device_train_batch_size"] * world_size
    gen = resolved["generation_batch_size"] or global_batch * resolved["gradient_accumulation_steps"]
    step = math.lcm(g, global_batch)
    if gen % step == 0:
        return
    fixed = math.ceil(gen / step) * step
    resolved.override("generation_batch_size", fixed, "auto: a multiple of num_generations and the batch")
    note(
        f"generation_batch_size {gen} -> {fixed}: it must hold whole groups of num_generations={g} "
        f"and be a multiple of the batch ({global_batch})"
    )


def idle_eval_steps(resolved: Resolved) -> str | None:
    """The line saying `eval_steps` does nothing, for a run without eval data: only where a preset,
    config file or flag chose it (the chapter's presets do); the built-in default is nobody's choice."""
    if not resolved.get("eval_steps") or resolved.sources.get("eval_steps", "default") == "default":
        return None
    return f"eval_steps={resolved['eval_steps']} does nothing without eval data (--eval-split 0.1 or a file)"


def begin_run(
    stage: str,
    resolved: Resolved,
    output: Path,
    model: str | None,
    model_path: str,
    *,
    inputs: dict[str, Any],
    overwrite: bool,
    force: bool,
    resume: bool,
    merge: bool,
    extra: dict | None = None,
) -> Run:
    """Open a training stage's run (runs.begin): every input file (or a source's description) and
    the model fingerprinted, the parent model recorded; says "up to date" when the run is."""
    from alignctl import models, runs
    from alignctl.training import budget

    budget.check(resolved.get("max_minutes"))  # before any model loads
    prints = {k: v if isinstance(v, dict) else runs.input_fingerprint(v) for k, v in inputs.items()}
    run = runs.begin(
        stage,
        output,
        inputs={**prints, "model": runs.input_fingerprint(model_path)},
        resolved=resolved,
        overwrite=overwrite,
        force=force,
        resume=resume,
        parent_model=model or models.DEFAULT_MODEL,
        extra={"merge": merge, **(extra or {})},
    )
    if run.up_to_date:
        runs.say_up_to_date(run)
    return run


def begin_offline(
    *,
    stage: str,
    resolved: Resolved,
    data: Path,
    read,
    model: str | None,
    output: Path,
    split: str | None = None,
    **switches: bool,
) -> tuple[Run, Path, list, list]:
    """Start a stage that trains on a file of records (pairs, labelled answers, completions).

    Reads the records with `read(data, split=)` and splits them (errors here come before any model
    loads), then `begin_run`. Returns (run, model dir, train records, eval records); the caller
    stops when `run.up_to_date`.
    """
    from alignctl import models, readers
    from alignctl.console import note

    records = read(data, split=split)
    train_recs, eval_recs = split_records(records, resolved["eval_split"], resolved["seed"], read)
    if not eval_recs and (line := idle_eval_steps(resolved)):
        note(line)
    model_path = models.resolve_model(model)
    inputs: dict[str, Any] = {"data": readers.fingerprint(data, split)}
    if resolved["eval_split"] and Path(str(resolved["eval_split"])).exists():
        inputs["eval_data"] = readers.fingerprint(resolved["eval_split"])
    run = begin_run(stage, resolved, output, model, model_path, inputs=inputs, **switches)
    return run, model_path, train_recs, eval_recs


def reference_model(trainer: TRLTrainer, resolved: Resolved, *, trust_remote_code: bool) -> dict[str, Any]:
    """The `ref_model` argument of a trainer that takes one (none for the others).

    A `ref_model` setting (iterate's reference=initial) names the model; otherwise None, TRL's own
    default: the policy with its adapter off under LoRA, a copy of the policy without.
    """
    if not trainer.reference:
        return {}
    from alignctl import models

    path = resolved.get("ref_model")
    ref = models.load_causal_lm(models.resolve_model(path), trust_remote_code=trust_remote_code) if path else None
    return {"ref_model": ref}


def fit_offline(
    *,
    stage: str,
    trainer: TRLTrainer,
    resolved: Resolved,
    data: Path,
    model: str | None,
    output: Path,
    read=None,
    count=None,
    trust_remote_code: bool = False,
    split: str | None = None,
    **switches: bool,
) -> Path:
    """A whole run of a policy trained on a file of records: read and split, open the run, load,
    train, evaluate held-out, save. `read(path, split=)`: the records (default: the reader of the
    trainer's declared `records`, `training.data.READERS`); `count(train_records)` adds
    stage-specific counts to the manifest's `records`."""
    from alignctl import models
    from alignctl.config import adjust_for_device
    from alignctl.console import status
    from alignctl.training import adjust_checkpointing, finish, held_out_metrics, make_trainer
    from alignctl.training.data import READERS

    switches = SWITCHES | switches
    read = read or READERS[trainer.records]
    run, model_path, train, held = begin_offline(
        stage=stage, resolved=resolved, data=data, read=read, model=model, output=output, split=split, **switches
    )
    if run.up_to_date:
        return run.out
    torch = models.setup_torch()
    adjust_for_device(resolved, cuda=torch.cuda.is_available())
    adjust_checkpointing(resolved, cuda=torch.cuda.is_available())
    tokenizer = models.load_tokenizer(model_path, trust_remote_code=trust_remote_code)
    policy = models.load_causal_lm(model_path, trust_remote_code=trust_remote_code)
    n = len(train) + len(held)
    precompute = trainer.reference and resolved.get("precompute_ref_log_probs")
    with status(precompute and f"reference log-probs of {n} records..."):  # TRL computes them here, before step 1
        ref = reference_model(trainer, resolved, trust_remote_code=trust_remote_code)
        fitted = make_trainer(trainer, run, resolved, policy, tokenizer, train, held, **ref)
    counts = {"train": len(train), "eval": len(held), **(count(train) if count else {})}
    evaluate = held_out_metrics if held else None
    return finish(fitted, tokenizer, run, merge=switches["merge"], evaluate=evaluate, extra={"records": counts})


def fit_online(
    *,
    stage: str,
    trainer: TRLTrainer,
    resolved: Resolved,
    prompts: Path,
    model: str | None,
    output: Path,
    reward_funcs,
    described: list[dict],
    sources: list = (),
    strict: bool = False,
    trust_remote_code: bool = False,
    stats=None,
    split: str | None = None,
    **switches: bool,
) -> Path:
    """A whole run of a policy that samples answers while it trains (grpo, online-dpo, ...): the
    prompts read, rendered and cut to max_prompt_length (prompts.prepare), the run opened, TRL's
    trainer given `reward_funcs(run)`, trained and saved. `stats()` adds metrics of the reward functions;
    the columns `sources` read (rule:accuracy: `answer`) are checked on the records first."""
    from alignctl import models, readers
    from alignctl.config import adjust_for_device
    from alignctl.prompts import prepare, prompts_dataset
    from alignctl.rewards import check_columns
    from alignctl.training import adjust_checkpointing, finish, make_trainer
    from alignctl.training.data import READERS
    from alignctl.training.engine_hooks import Sampler

    switches = SWITCHES | switches
    records = READERS[trainer.records](prompts, split)
    check_columns(sources, records, prompts)
    model_path = models.resolve_model(model)
    torch = models.setup_torch()  # flush-denormal before torch starts any thread (docs/design.md)
    cuda = torch.cuda.is_available()
    sampler = Sampler(resolved, cuda=cuda)  # a missing vllm is one line, before any model loads
    tokenizer = models.load_tokenizer(model_path, trust_remote_code=trust_remote_code)
    truncated = prepare(records, tokenizer, resolved, strict=strict, path=prompts)
    dataset = prompts_dataset(records, prompts)
    extra = {"rewards": described, "strict": strict}
    inputs = {"prompts": readers.fingerprint(prompts, split)}
    run = begin_run(stage, resolved, output, model, model_path, inputs=inputs, extra=extra, **switches)
    if run.up_to_date:
        return run.out
    adjust_for_device(resolved, cuda=cuda)
    adjust_checkpointing(resolved, cuda=cuda)
    policy = models.load_causal_lm(model_path, trust_remote_code=trust_remote_code)
    engine = sampler.start(model_path, policy, resolved, trust_remote_code=trust_remote_code)
    ref = reference_model(trainer, resolved, trust_remote_code=trust_remote_code)
    fitted = make_trainer(
        trainer, run, resolved, policy, tokenizer, dataset, reward_funcs=reward_funcs(run), engine=engine, **ref
    )
    counts = {"prompts": len(records), "truncated": truncated}

    def evaluate(_trainer) -> dict:
        return {**(stats() if stats else {}), **(engine.metrics() if engine is not None else {})}

    try:
        return finish(
            fitted,
            tokenizer,
            run,
            merge=switches["merge"],
            evaluate=evaluate,
            extra={"records": counts, "rewards": described, "sampler": sampler.describe()},
        )
    finally:
        sampler.close()


def fit_on_rewards(
    *,
    stage: str,
    trainer: TRLTrainer,
    resolved: Resolved,
    prompts: Path,
    rewards: list[str],
    model: str | None,
    output: Path,
    strict: bool = False,
    trust_remote_code: bool = False,
    split: str | None = None,
    **switches: bool,
) -> Path:
    """`fit_online` for a policy that samples a group of answers per prompt and learns from their
    `--reward` scores (grpo, rloo): the reward specs checked (no model loads), one weight per source,
    the generation batch made of whole groups (`whole_groups`)."""
    from alignctl.rewards import trl_adapters

    sources = trl_adapters.parse_rewards(rewards, trust_remote_code=trust_remote_code)
    trl_adapters.check_weights(resolved["reward_weights"], len(sources))
    whole_groups(resolved, stage)
    return fit_online(
        stage=stage,
        trainer=trainer,
        resolved=resolved,
        prompts=prompts,
        model=model,
        output=output,
        reward_funcs=lambda run: trl_adapters.reward_funcs(sources),
        described=[s.describe() for s in sources],
        sources=sources,
        strict=strict,
        trust_remote_code=trust_remote_code,
        split=split,
        **switches,
    )
