"""Multi-round iterative training: collect → label → DPO → eval, round after round.

    alignctl iterate --prompts prompts.jsonl --model smollm2-135m --by rm:runs/rm --rounds 3 -o runs/it
    alignctl iterate -p examples/qa/train.jsonl --by rule:qa --eval-by rule:qa_strict \\
        --eval-prompts examples/qa/held.jsonl --preset iterate-cpu -o runs/it

The chapter's "多轮迭代训练" (Llama 3, Tulu 3): after DPO, the model answers the questions again
(several samples, a higher temperature), a human, a reward model or a judge picks better and
worse answers, the pairs join the training data, and training runs again. Each round:

1. `collect`: the current policy samples `num_samples` answers per training prompt,
2. `label`: the reward source (`--by`: rm:, rule:, judge: or human) turns them into pairs,
3. the round's pairs are added to those of earlier rounds (`accumulate`, on by default),
4. `dpo` from the current policy: the previous round's model is the new reference,
5. `eval` of the new model against the previous round's on held-out prompts (`--eval-prompts`,
   or an `eval_split` fraction of `--prompts`), and against the base model.

Layout: `OUT/round-N/{candidates.jsonl, prefs.jsonl, train.jsonl, model/, eval.json,
eval-base.json}` (each with its manifest), and `OUT/alignctl.json`, which records every finished
round and its results (what `alignctl report OUT` plots). Every step is a stage's own `run()`,
with its own up-to-date check: rerun after a crash or a kill with the same arguments, finished
stages say "up to date" and are skipped, the interrupted one starts again cleanly.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from alignctl import io, options
from alignctl.config import Resolved, resolve
from alignctl.console import console, info, note
from alignctl.errors import InputError, OutputError

STAGE = "iterate"


@dataclass
class Settings:
    """Built-in defaults; the `iterate` preset layers the chapter's values on top."""

    rounds: int = field(default=3, metadata={"help": "Rounds of collect → label → dpo → eval."})
    num_samples: int = field(default=4, metadata={"help": "Answers sampled per prompt each round."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of collect (higher: diverse)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass of collect."})
    top_k: int = field(default=0, metadata={"help": "Top-k of collect (0 = off)."})
    max_new_tokens: int = field(default=256, metadata={"help": "Most tokens per sampled answer."})
    batch_size: int = field(default=32, metadata={"help": "Sequences per generate call (collect and eval)."})
    backend: str = field(default="auto", metadata={"help": "Generation backend: auto | hf | vllm."})
    seed: int = field(default=42, metadata={"help": "Seed; round N samples with seed + N - 1."})
    accumulate: bool = field(default=True, metadata={"help": "Train each round on all pairs so far (else: new only)."})
    dpo_preset: str = field(default="dpo", metadata={"help": "Preset of the DPO step (e.g. dpo-cpu)."})
    dpo_set: list[str] | None = field(default=None, metadata={"help": "key=value settings over the DPO preset."})
    label_set: list[str] | None = field(default=None, metadata={"help": "key=value settings of label (pairs...)."})
    eval_split: float | None = field(
        default=None, metadata={"help": "Fraction of --prompts held out for eval when no --eval-prompts (0.1)."}
    )
    eval_by: str | None = field(default=None, metadata={"help": "Reward source of eval (default: --by)."})
    eval_temperature: float = field(default=0.0, metadata={"help": "Eval decoding temperature; 0 = greedy."})
    eval_max_new_tokens: int = field(default=256, metadata={"help": "Most tokens per eval answer."})
    eval_vs_base: bool = field(default=True, metadata={"help": "Also compare each round with the base model."})


DEFAULT_EVAL_SPLIT = 0.1


# ---------------------------------------------------------------------------------------------
# Inputs


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


def _stage_settings(stage: str, *, preset: str | None, sets: list[str] | None, flags: dict[str, Any]) -> Resolved:
    return resolve(stage, preset=preset, sets=sets, flags={k: (v, f"iterate {k}") for k, v in flags.items()})


def _check(resolved: Resolved) -> None:
    problems = []
    if resolved["rounds"] < 1:
        problems.append(f"rounds must be >= 1, got {resolved['rounds']}")
    if resolved["num_samples"] < 2:
        problems.append(f"num_samples must be >= 2 (a pair needs two answers), got {resolved['num_samples']}")
    if problems:
        raise InputError("iterate: " + "; ".join(problems))


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
    dpo: Resolved
    eval: Resolved
    rounds: int
    accumulate: bool
    vs_base: bool


def plan(
    resolved: Resolved, prompts: Path, model: str | None, by: str, output: Path, eval_prompts: Path | None
) -> Plan:
    from alignctl import models, runs
    from alignctl.rewards import resolve_source
    from alignctl.stages import collect as collect_stage
    from alignctl.stages import eval as eval_stage
    from alignctl.stages import label as label_stage

    _check(resolved)
    records = io.load(prompts, "prompts")
    eval_by = resolved["eval_by"] or by
    resolve_source(by)  # a bad spec fails here, not after round 1's sampling
    resolve_source(eval_by)
    seed = resolved["seed"]
    collect = _stage_settings(
        "collect",
        preset=None,
        sets=None,
        flags={k: resolved[k] for k in ("num_samples", "temperature", "top_p", "top_k", "max_new_tokens", "batch_size")}
        | {"backend": resolved["backend"], "seed": seed},
    )
    collect_stage.check_settings(collect)
    label = _stage_settings("label", preset=None, sets=resolved["label_set"], flags={})
    label_stage.check_settings(label)
    dpo = _stage_settings("dpo", preset=resolved["dpo_preset"], sets=resolved["dpo_set"], flags={"seed": seed})
    eval_flags = {
        "temperature": resolved["eval_temperature"],
        "max_new_tokens": resolved["eval_max_new_tokens"],
        "batch_size": resolved["batch_size"],
        "backend": resolved["backend"],
        "seed": seed,
    }
    evals = _stage_settings("eval", preset=None, sets=None, flags=eval_flags)
    eval_stage._check(evals)
    model_name = model or models.DEFAULT_MODEL
    models.resolve_model(model_name)

    output = Path(output)
    if output.exists() and not output.is_dir():
        raise OutputError(f"{output}: exists and is not a directory")
    manifest = runs.read_manifest(output)
    if output.is_dir() and any(output.iterdir()) and (manifest or {}).get("stage") != STAGE:
        raise OutputError(f"{output}: exists and is not an iterate run; choose another -o")
    output.mkdir(parents=True, exist_ok=True)
    if manifest is None:  # claim the dir first, so a run killed in round 1 is still known as ours
        runs.claim(output, STAGE, complete=False, rounds=[])
    if eval_prompts is not None:
        if resolved.sources.get("eval_split", "default") != "default" and resolved["eval_split"]:
            raise InputError("give --eval-prompts or an eval_split, not both")
        io.load(eval_prompts, "prompts")
        train_path, eval_path = Path(prompts), Path(eval_prompts)
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
    )


# ---------------------------------------------------------------------------------------------
# Rounds


def round_dir(out: Path, n: int) -> Path:
    return out / f"round-{n}"


def _eval_brief(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    keep = ("wins", "ties", "losses", "n", "win_rate", "low", "high", "reward_delta", "by")
    return {
        "model": {k: data["model"].get(k) for k in ("name", "mean_reward", "mean_length")},
        "baseline": {k: data["baseline"].get(k) for k in ("name", "mean_reward", "mean_length")},
        **{k: data.get(k) for k in keep},
    }


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


def one_round(p: Plan, n: int, *, overwrite: bool, force: bool, trust_remote_code: bool) -> dict[str, Any]:
    """Run (or skip, where up to date) every stage of round n; returns its manifest entry."""
    from alignctl.stages import collect, dpo, label
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

    collect_settings = _reseeded(p.collect, p.collect["seed"] + n - 1)
    cands = stage("collect", collect.run, collect_settings, p.train_prompts, policy, rdir / "candidates.jsonl", **flags)
    prefs = stage("label", label.run, p.label, cands, p.by, rdir / "prefs.jsonl", **flags)
    train, n_train = accumulate(p.out, n, p.accumulate)
    model_dir = stage("dpo", dpo.run, _copy(p.dpo), train, policy, rdir / "model", **flags)
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
        "candidates": len(io.load(cands, "candidates")),
        "pairs": len(io.load(prefs, "preferences")),
        "train_pairs": n_train,
        "eval": _eval_brief(rdir / "eval.json"),
    }
    if p.vs_base and n > 1:
        args = (_copy(p.eval), str(model_dir), p.model, p.eval_prompts, p.eval_by, rdir / "eval-base.json")
        stage("eval vs base", eval_stage.run, *args, **evals)
        entry["eval_vs_base"] = _eval_brief(rdir / "eval-base.json")
    elif p.vs_base:
        entry["eval_vs_base"] = entry["eval"]
    entry["seconds"] = seconds
    return entry


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
        stage=STAGE,
        started=started,
        resolved=resolved,
        inputs=inputs,
        fingerprint=fingerprint,
        parent_model=p.model,
        final_metrics=_final(entries),
        extra={
            "by": p.by,
            "eval_by": p.eval_by,
            "rounds_planned": p.rounds,
            "complete": len(entries) == p.rounds,
            "rounds": entries,
        },
    )


def _final(entries: list[dict]) -> dict[str, Any]:
    if not entries:
        return {}
    last = entries[-1]
    out = {"rounds": len(entries), "train_pairs": last["train_pairs"]}
    out["mean_reward"] = last["eval"]["model"]["mean_reward"]
    if "eval_vs_base" in last:
        out["base_mean_reward"] = last["eval_vs_base"]["baseline"]["mean_reward"]
        out["win_rate_vs_base"] = last["eval_vs_base"]["win_rate"]
    return out


def rounds_table(entries: list[dict], title: str = "iterate") -> None:
    """Round by round: pairs, reward vs the previous round and vs base, W/T/L, win rate."""
    from rich.table import Table

    def r(x: Any) -> str:
        return "—" if x is None else f"{x:.3f}"

    table = Table(title=title, title_justify="left")
    for col in ("round", "pairs (new/train)", "reward", "vs previous", "W/T/L", "win rate", "vs base", "length"):
        table.add_column(col, justify="right")
    for e in entries:
        ev, base = e["eval"], e.get("eval_vs_base") or {}
        table.add_row(
            str(e["round"]),
            f"{e['pairs']}/{e['train_pairs']}",
            r(ev["model"]["mean_reward"]),
            r(ev["baseline"]["mean_reward"]),
            f"{ev['wins']}/{ev['ties']}/{ev['losses']}",
            f"{ev['win_rate']:.2f} [{ev['low']:.2f}, {ev['high']:.2f}]",
            r((base.get("baseline") or {}).get("mean_reward")),
            f"{ev['model']['mean_length']:.1f}",
        )
    console.print(table)


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
    trust_remote_code: bool = False,
) -> Path:
    """Run every round (skipping finished stages); returns the output dir."""
    from alignctl import runs

    p = plan(resolved, prompts, model, by, output, eval_prompts)
    inputs = {
        "prompts": runs.input_fingerprint(p.train_prompts),
        "eval_prompts": runs.input_fingerprint(p.eval_prompts),
        "model": runs.input_fingerprint(p.model),
    }
    fingerprint = runs.fingerprint(STAGE, inputs, resolved, {"by": p.by, "eval_by": p.eval_by})
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
        entries.append(one_round(p, n, overwrite=overwrite, force=force, trust_remote_code=trust_remote_code))
        _write_manifest(p, resolved, fingerprint, inputs, entries, started)
        rounds_table(entries, title=f"iterate: {p.out} (round {n} of {p.rounds})")
    return p.out


def command(
    prompts: Annotated[Path, typer.Option("--prompts", "-p", help="Training prompts JSONL (sampled each round).")],
    by: Annotated[
        str,
        typer.Option("--by", help="Who picks the pairs: rm:PATH, rule:NAME, rule:file.py:func, judge:MODEL, human."),
    ],
    rounds: Annotated[int | None, typer.Option("--rounds", help="Rounds (chapter: repeat until good enough).")] = None,
    eval_prompts: Annotated[
        Path | None, typer.Option("--eval-prompts", help="Held-out prompts for each round's eval.")
    ] = None,
    eval_split: Annotated[
        float | None, typer.Option("--eval-split", help="Else: hold out this fraction of --prompts (default 0.1).")
    ] = None,
    eval_by: Annotated[str | None, typer.Option("--eval-by", help="Reward source of eval (default: --by).")] = None,
    num_samples: Annotated[int | None, typer.Option("--num-samples", "-n", help="Answers per prompt.")] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", help="Sampling temperature.")] = None,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens", help="Tokens per answer.")] = None,
    dpo_preset: Annotated[str | None, typer.Option("--dpo-preset", help="Preset of the DPO step.")] = None,
    model: options.Model = None,
    output: options.Output = None,
    overwrite: options.Overwrite = False,
    force: options.Force = False,
    preset: options.Preset = None,
    config_file: options.ConfigFile = None,
    set_: options.Set = None,
    seed: options.Seed = None,
    trust_remote_code: options.TrustRemoteCode = False,
) -> None:
    """Rounds of collect → label → DPO → eval (the chapter's iterative training)."""
    resolved = options.settings(
        STAGE,
        locals(),
        common=("seed",),
        rounds=(rounds, "--rounds"),
        eval_split=(eval_split, "--eval-split"),
        eval_by=(eval_by, "--eval-by"),
        num_samples=(num_samples, "--num-samples"),
        temperature=(temperature, "--temperature"),
        max_new_tokens=(max_new_tokens, "--max-new-tokens"),
        dpo_preset=(dpo_preset, "--dpo-preset"),
    )
    out = run(
        resolved,
        prompts,
        model,
        by,
        output or Path("runs") / STAGE,
        eval_prompts=eval_prompts,
        overwrite=overwrite,
        force=force,
        trust_remote_code=trust_remote_code,
    )
    print(out)
