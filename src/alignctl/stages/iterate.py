"""Multi-round iterative training: collect → label → DPO → eval, round after round.

    alignctl iterate --prompts prompts.jsonl --model smollm2-135m --by rm:runs/rm --rounds 3 -o runs/it
    alignctl iterate -p examples/qa/train.jsonl --by rule:qa --eval-by rule:qa_strict \\
        --eval-prompts examples/qa/held.jsonl --preset iterate-cpu -o runs/it

The chapter's "多轮迭代训练" (Llama 3, Tulu 3): after DPO, the model answers the questions again
(several samples, a higher temperature), a human, a reward model or a judge picks better and
worse answers, the pairs join the training data, and training runs again. Each round:

1. `collect`: the current policy samples `num_samples` answers per training prompt,
2. `label`: the reward source (`--by`: rm:, rule:, judge: or human) turns them into pairs; with
   `--by human` the round stops at the labelling screens, and a rerun continues where the person
   left off; with `--retrain-rm` (Llama 3) the reward model is first retrained on every pair of
   the earlier rounds, starting from the last one (round 1 labels with `--by rm:PATH` itself),
3. the round's pairs are added to those of earlier rounds (`accumulate`, on by default); with
   `--sft-first` (Llama 3's rejection-sampling step) the policy is first fine-tuned on the round's
   chosen answers (`sft --from-prefs`, into `round-N/sft/`), and the preference step starts there,
4. the round's `trainer` from the current policy: `dpo` (default; its reference is the round's
   starting model, or with `reference=initial` the first model), any other stage that trains a
   policy on pairs (`kto`: each pair as a good and a bad answer; a wrong `--trainer` names them
   all), or `online-dpo` (no collect/label: it samples and labels with `--by` itself),
5. `eval` of the new model against the previous round's on held-out prompts (`--eval-prompts`,
   or an `eval_split` fraction of `--prompts`), and against the base model.

Layout: `OUT/round-N/{rm/, candidates.jsonl, prefs.jsonl, train.jsonl, sft/, model/, eval.json,
eval-base.json}` (each with its manifest; rm/ with --retrain-rm, sft/ with --sft-first), and
`OUT/alignctl.json`, which records every finished round and its results (what `alignctl report
OUT` plots). Every step is a stage's own `run()`,
with its own up-to-date check: rerun after a crash or a kill with the same arguments, finished
stages say "up to date" and are skipped, the interrupted one starts again cleanly. The settings
of every inner stage are resolved and checked up front (`iterate_plan.py`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from alignctl import io
from alignctl.comparison import eval_brief, rounds_final, rounds_table
from alignctl.config import Resolved
from alignctl.console import console, info
from alignctl.errors import InputError, OutputError
from alignctl.flags import By, Opts, Prompts, Split
from alignctl.settings import setting
from alignctl.stages.iterate_plan import NAME, ONLINE, Plan, plan, write_if_changed


@dataclass
class Settings:
    """Built-in defaults; the `iterate` preset layers the chapter's values on top."""

    rounds: int = setting(3, "Rounds of collect → label → dpo → eval (chapter: repeat until good enough).", flag=True)
    num_samples: int = setting(
        4, "Answers sampled per prompt each round (a pair needs two).", flag=("--num-samples", "-n"), domain=">= 2"
    )
    temperature: float = setting(1.0, "Sampling temperature of collect (higher: diverse).", flag=True, domain=">= 0")
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass of collect."})
    top_k: int = field(default=0, metadata={"help": "Top-k of collect (0 = off)."})
    max_new_tokens: int = setting(256, "Most tokens per sampled answer.", flag=True)
    batch_size: int = field(default=32, metadata={"help": "Sequences per generate call (collect and eval)."})
    backend: str = field(default="auto", metadata={"help": "Generation backend: auto | hf | vllm."})
    seed: int = setting(42, "Seed; round N samples with seed + N - 1.", flag=True)
    # the common training options reach each round's trainer; unset, the trainer's preset decides
    max_steps: int | None = setting(None, "Optimizer steps of each round's training (default: the trainer preset's).")
    max_minutes: float | None = setting(
        None, "Training time budget of each round's trainer, per round (not sampling, labelling or eval)."
    )
    num_train_epochs: float | None = setting(None, "Epochs of each round's training (default: the trainer preset's).")
    learning_rate: float | None = setting(None, "Learning rate of each round's training (default: the preset's).")
    per_device_train_batch_size: int | None = setting(None, "Batch of each round's training (default: the preset's).")
    report_to: str | None = setting(None, "Where each round's training also logs (default: the preset's).")
    accumulate: bool = field(default=True, metadata={"help": "Train each round on all pairs so far (else: new only)."})
    trainer: str = setting(
        "dpo", "What trains each round: a stage that trains a policy on pairs (dpo, kto, ...) or online-dpo.", flag=True
    )
    reference: str = setting(
        "previous", "DPO's reference: previous (the round's starting model) or initial.", flag=True
    )
    retrain_rm: bool = setting(False, "Retrain the --by rm: reward model on all pairs so far each round.", flag=True)
    sft_first: bool = setting(
        False, "Each round: fine-tune on the round's chosen answers (sft --from-prefs) before the trainer.", flag=True
    )
    sft_preset: str = field(default="sft", metadata={"help": "Preset of the SFT step (--sft-first)."})
    sft_set: list[str] | None = field(default=None, metadata={"help": "key=value settings of sft (--sft-first)."})
    dpo_preset: str = setting("dpo", "Preset of the DPO step (e.g. dpo-cpu).", flag=True)
    trainer_preset: str | None = field(default=None, metadata={"help": "Preset of a kto / online-dpo trainer."})
    dpo_set: list[str] | None = field(default=None, metadata={"help": "key=value settings of the round's trainer."})
    rm_preset: str = field(default="train-rm", metadata={"help": "Preset of the reward model's retraining."})
    rm_set: list[str] | None = field(default=None, metadata={"help": "key=value settings of train-rm (--retrain-rm)."})
    label_set: list[str] | None = field(default=None, metadata={"help": "key=value settings of label (pairs...)."})
    eval_split: float | None = setting(
        None, "Fraction of --prompts held out for eval when no --eval-prompts (0.1).", flag=True
    )
    eval_by: str | None = setting(None, "Reward source of eval (default: --by).", flag=True)
    eval_temperature: float = field(default=0.0, metadata={"help": "Eval decoding temperature; 0 = greedy."})
    eval_max_new_tokens: int = field(default=256, metadata={"help": "Most tokens per eval answer."})
    eval_vs_base: bool = field(default=True, metadata={"help": "Also compare each round with the base model."})


# ---------------------------------------------------------------------------------------------
# Rounds


def round_dir(out: Path, n: int) -> Path:
    return out / f"round-{n}"


def accumulate(out: Path, n: int, enabled: bool) -> tuple[Path, int]:
    """Round n's training pairs: its own, plus every earlier round's when `enabled`."""
    rounds = range(1, n + 1) if enabled else [n]
    pairs = [p for k in rounds for p in io.load(round_dir(out, k) / "prefs.jsonl", "preferences")]
    if not pairs:
        raise InputError(
            f"round {n}: no preference pairs to train on (every prompt was a tie)",
            hint="sample more answers (num_samples), raise the temperature, or use label_set pairs=all",
        )
    return write_if_changed(round_dir(out, n) / "train.jsonl", pairs), len(pairs)


def one_round(
    p: Plan,
    n: int,
    *,
    overwrite: bool,
    force: bool,
    trust_remote_code: bool = False,
    resume: bool = False,
    merge: bool = True,
) -> dict[str, Any]:
    """Run (or skip, where up to date) every stage of round n; returns its manifest entry."""
    from alignctl.stages import eval as eval_stage

    rdir = round_dir(p.out, n)
    rdir.mkdir(parents=True, exist_ok=True)
    policy = p.model if n == 1 else str(round_dir(p.out, n - 1) / "model")
    flags = {"overwrite": overwrite, "force": force, "trust_remote_code": trust_remote_code}
    seconds: dict[str, float] = {}

    def stage(name: str, fn, *args, **kwargs):
        console.rule(f"[bold]round {n}/{p.rounds}: {name}")
        start = time.perf_counter()
        replace = kwargs.pop("overwrite")
        try:  # --overwrite replaces a stage's output only where it is not up to date: a changed
            # setting redoes the stages it reaches, not the whole run
            result = fn(*args, overwrite=False, **kwargs)
        except OutputError:
            if not replace:
                raise
            result = fn(*args, overwrite=True, **kwargs)
        seconds[name] = round(time.perf_counter() - start, 2)
        return result

    counts, model_dir = train_round(p, n, policy, stage, flags, {"resume": resume, "merge": merge})
    evals = {"overwrite": overwrite, "force": force, "trust_remote_code": trust_remote_code}
    what = "eval vs base" if n == 1 else f"eval vs round {n - 1}"
    stage(
        what,
        eval_stage.run,
        _copy(p.eval),
        str(model_dir),
        policy,
        p.eval_prompts,
        p.eval_by,
        rdir / "eval.json",
        **evals,
    )
    entry: dict[str, Any] = {
        "round": n,
        "dir": rdir.name,
        "policy": policy,
        "model": str(model_dir),
        **counts,
        "eval": eval_brief(rdir / "eval.json"),
    }
    if p.vs_base and n > 1:
        args = (_copy(p.eval), str(model_dir), p.model, p.eval_prompts, p.eval_by, rdir / "eval-base.json")
        stage("eval vs base", eval_stage.run, *args, **evals)
        entry["eval_vs_base"] = eval_brief(rdir / "eval-base.json")
    elif p.vs_base:
        entry["eval_vs_base"] = entry["eval"]
    entry["seconds"] = seconds
    return entry


def train_round(p: Plan, n: int, policy: str, stage, flags: dict, trains: dict) -> tuple[dict[str, Any], Path]:
    """Round n's sampling, labelling and training; returns its counts and the new model dir. `trains`:
    resume / merge, for the round's trainer."""
    from alignctl import stages
    from alignctl.stages import collect, label, online_dpo, sft, train_rm

    rdir = round_dir(p.out, n)
    if p.trainer == ONLINE:  # samples and labels itself, with the same reward source
        judge = p.by.startswith("judge")
        source = {"judge": _judge(p.by)} if judge else {"rewards": [p.by]}
        model_dir = stage(
            "online-dpo",
            online_dpo.run,
            _copy(p.dpo),
            p.train_prompts,
            policy,
            rdir / "model",
            **flags,
            **trains,
            **source,
        )
        return {"trainer": p.trainer, "candidates": 0, "pairs": 0, "train_pairs": 0}, model_dir
    by, extra = p.by, {}
    if p.rm is not None:  # Llama 3: the reward model learns every pair so far before it labels
        start = p.by[len("rm:") :]
        if n > 1:
            previous = [r for k in range(1, n) for r in io.load(round_dir(p.out, k) / "prefs.jsonl", "preferences")]
            data = write_if_changed(rdir / "rm-train.jsonl", previous)
            start = str(round_dir(p.out, n - 1) / "rm") if n > 2 else start
            stage("train-rm", train_rm.run, _copy(p.rm), data, start, rdir / "rm", **flags)
            by = f"rm:{rdir / 'rm'}"
        extra["reward_model"] = by[len("rm:") :]
    collect_settings = _reseeded(p.collect, p.collect["seed"] + n - 1)
    cands = stage("collect", collect.run, collect_settings, p.train_prompts, policy, rdir / "candidates.jsonl", **flags)
    prefs = stage("label", label.run, p.label, cands, by, rdir / "prefs.jsonl", **flags)
    train, n_train = accumulate(p.out, n, p.accumulate)
    if p.sft is not None:  # Llama 3: the round's best answers as SFT data, then the preference step from there
        tuned = stage("sft", sft.run, _copy(p.sft), prefs, policy, rdir / "sft", from_prefs=True, **flags, **trains)
        policy = extra["sft"] = str(tuned)
    settings = _copy(p.dpo)
    trainer = stages.load(p.trainer)
    if trainer.TRAINER.records == "unpaired":  # each pair as a desirable and an undesirable answer
        rows = [u for r in io.load(train, "preferences") for u in io.unpair(r)]
        train = write_if_changed(rdir / f"train.{p.trainer}.jsonl", rows)
    elif p.reference == "initial" and n > 1:
        settings.override("ref_model", p.model, "iterate reference=initial")
    model_dir = stage(p.trainer, trainer.run, settings, train, policy, rdir / "model", **flags, **trains)
    counts = {"candidates": len(io.load(cands, "candidates")), "pairs": len(io.load(prefs, "preferences"))}
    return {"trainer": p.trainer, **counts, "train_pairs": n_train, **extra}, model_dir


def _judge(by: str):
    from alignctl.rewards import resolve_source

    return resolve_source(by).judge


def _copy(resolved: Resolved) -> Resolved:
    """A fresh copy: stages adjust settings for the device in place (bf16 off on CPU...)."""
    return Resolved(resolved.stage, resolved.preset, dict(resolved.values), dict(resolved.sources), resolved.help)


def _reseeded(resolved: Resolved, seed: int) -> Resolved:
    out = _copy(resolved)
    out.override("seed", seed, "iterate: seed + round - 1")
    return out


def _write_manifest(p: Plan, resolved: Resolved, fingerprint: str, inputs: dict, entries: list[dict], started: float):
    from alignctl import runs

    runs.write_manifest(
        p.out / runs.MANIFEST,
        stage=NAME,
        started=started,
        resolved=resolved,
        inputs=inputs,
        fingerprint=fingerprint,
        parent_model=p.model,
        final_metrics=rounds_final(entries),
        extra={
            "by": p.by,
            "eval_by": p.eval_by,
            "rounds_planned": p.rounds,
            "complete": len(entries) == p.rounds,
            "rounds": entries,
        },
    )


def run(
    resolved: Resolved,
    prompts: Path,
    model: str | None,
    by: str,
    output: Path,
    *,
    eval_prompts: Path | None = None,
    overwrite: bool = False,
    force: bool = False,
    split: str | None = None,
    **switches: bool,
) -> Path:
    """Run every round (skipping finished stages); returns the output dir. `split`: the dataset split
    of `prompts`; `switches`: trust_remote_code, and resume / merge for each round's training."""
    from alignctl import readers, runs

    p = plan(resolved, prompts, model, by, output, eval_prompts, split)
    inputs = {
        "prompts": readers.fingerprint(p.train_prompts),
        "eval_prompts": readers.fingerprint(p.eval_prompts),
        "model": runs.input_fingerprint(p.model),
    }
    fingerprint = runs.fingerprint(NAME, inputs, resolved, {"by": p.by, "eval_by": p.eval_by})
    manifest = runs.read_manifest(p.out) or {}
    done = manifest.get("rounds") or []
    if (
        manifest.get("fingerprint") == fingerprint
        and manifest.get("complete")
        and not (force or overwrite)
        and all((p.out / e["dir"] / "eval.json").is_file() for e in done)
    ):
        info(f"[green]up to date:[/] {p.out} (same inputs and config; --force to redo)")
        rounds_table(done, title=f"iterate: {p.out}")
        return p.out
    started = time.time()
    entries: list[dict] = []
    for n in range(1, p.rounds + 1):
        entries.append(one_round(p, n, overwrite=overwrite, force=force, **switches))
        _write_manifest(p, resolved, fingerprint, inputs, entries, started)
        rounds_table(entries, title=f"iterate: {p.out} (round {n} of {p.rounds})")
    return p.out


def command(
    prompts: Prompts,
    by: By,
    eval_prompts: Annotated[
        Path | None, typer.Option("--eval-prompts", help="Held-out prompts for each round's eval.")
    ] = None,
    split: Split = None,
    *,
    resolved: Resolved,
    opts: Opts,
) -> Path:
    """Rounds of collect → label → DPO → eval (the chapter's iterative training)."""
    switches = opts.switches()
    return run(resolved, prompts, opts.model, by, opts.output, eval_prompts=eval_prompts, split=split, **switches)
