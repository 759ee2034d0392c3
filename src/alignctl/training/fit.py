"""The opening and the whole of a training stage's run, shared by the stages: `begin_run` (every
training stage), `begin_on_prefs` (train-rm, dpo, kto), `fit_policy_on_pairs` (dpo, kto) and
`fit_online` (grpo, online-dpo)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alignctl.errors import InputError

if TYPE_CHECKING:
    from alignctl.config import Resolved
    from alignctl.runs import Run

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


def begin_on_prefs(
    stage: str,
    resolved: Resolved,
    data: Path,
    read,
    model: str | None,
    output: Path,
    *,
    split: str | None = None,
    **switches: bool,
) -> tuple[Run, Path, list, list]:
    """Start a stage that trains on a file of pairs or labelled answers (train-rm, dpo, kto).

    Reads and splits the records (errors here come before any model loads), then `begin_run`.
    Returns (run, model dir, train records, eval records); the caller stops when `run.up_to_date`.
    """
    from alignctl import models, readers
    from alignctl.console import note

    records = read(data, split=split)
    train_recs, eval_recs = split_records(records, resolved["eval_split"], resolved["seed"], read)
    if not eval_recs and resolved.get("eval_steps"):
        note(f"eval_steps={resolved['eval_steps']} does nothing without eval data (--eval-split 0.1 or a file)")
    model_path = models.resolve_model(model)
    inputs: dict[str, Any] = {"data": readers.fingerprint(data, split)}
    if resolved["eval_split"] and Path(str(resolved["eval_split"])).exists():
        inputs["eval_data"] = readers.fingerprint(resolved["eval_split"])
    run = begin_run(stage, resolved, output, model, model_path, inputs=inputs, **switches)
    return run, model_path, train_recs, eval_recs


def fit_policy_on_pairs(
    stage: str,
    trainer_name: str,
    read,
    resolved: Resolved,
    data: Path,
    model: str | None,
    output: Path,
    *,
    trust_remote_code: bool = False,
    count=None,
    split: str | None = None,
    **switches: bool,
) -> Path:
    """A whole run of a policy trained on a file of pairs or labelled answers with a reference model
    (dpo, kto): read and split, open the run, load, train, evaluate held-out, save. With LoRA the
    reference is the policy with its adapter off (TRL's `ref_model=None`); without it TRL copies the
    policy. `count(train_records)` adds stage-specific counts to the manifest's `records`."""
    from alignctl import models
    from alignctl.config import adjust_for_device
    from alignctl.console import status
    from alignctl.training import finish, held_out_metrics, make_trainer

    switches = SWITCHES | switches
    run, model_path, train, held = begin_on_prefs(stage, resolved, data, read, model, output, split=split, **switches)
    if run.up_to_date:
        return run.out
    torch = models.setup_torch()
    adjust_for_device(resolved, cuda=torch.cuda.is_available())
    tokenizer = models.load_tokenizer(model_path, trust_remote_code=trust_remote_code)
    policy = models.load_causal_lm(model_path, trust_remote_code=trust_remote_code)
    n = len(train) + len(held)
    with status(resolved.get("precompute_ref_log_probs") and f"reference log-probs of {n} records..."):
        # TRL computes precomputed reference log-probs here, before the first step
        # iterate's reference=initial names the reference model (`ref_model`); None is TRL's default:
        # the adapter-disabled policy with LoRA, a copy of the policy without
        ref_path = resolved.get("ref_model")
        ref = (
            models.load_causal_lm(models.resolve_model(ref_path), trust_remote_code=trust_remote_code)
            if ref_path
            else None
        )
        trainer = make_trainer(trainer_name, run, resolved, policy, tokenizer, train, held, ref_model=ref)
    counts = {"train": len(train), "eval": len(held), **(count(train) if count else {})}
    evaluate = held_out_metrics if held else None
    return finish(trainer, tokenizer, run, merge=switches["merge"], evaluate=evaluate, extra={"records": counts})


def fit_online(
    stage: str,
    trainer_name: str,
    resolved: Resolved,
    prompts: Path,
    model: str | None,
    output: Path,
    *,
    reward_funcs,
    described: list[dict],
    strict: bool = False,
    trust_remote_code: bool = False,
    stats=None,
    split: str | None = None,
    **switches: bool,
) -> Path:
    """A whole run of a policy that samples answers while it trains (grpo, online-dpo): the prompts
    read, rendered and cut to max_prompt_length (prompts.prepare), the run opened, TRL's trainer
    given `reward_funcs(run)`, trained and saved. `stats()` adds metrics of the reward functions."""
    from alignctl import models, readers
    from alignctl.config import adjust_for_device
    from alignctl.prompts import prepare, prompts_dataset, read_prompts
    from alignctl.training import adjust_checkpointing, finish, make_trainer
    from alignctl.training.engine_hooks import Sampler

    switches = SWITCHES | switches
    records = read_prompts(prompts, split)
    model_path = models.resolve_model(model)
    torch = models.setup_torch()  # flush-denormal before torch starts any thread (design.md)
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
    trainer = make_trainer(
        trainer_name, run, resolved, policy, tokenizer, dataset, reward_funcs=reward_funcs(run), engine=engine
    )
    counts = {"prompts": len(records), "truncated": truncated}

    def evaluate(_trainer) -> dict:
        return {**(stats() if stats else {}), **(engine.metrics() if engine is not None else {})}

    try:
        return finish(
            trainer,
            tokenizer,
            run,
            merge=switches["merge"],
            evaluate=evaluate,
            extra={"records": counts, "rewards": described, "sampler": sampler.describe()},
        )
    finally:
        sampler.close()
