"""bench/gpu_check.py, the script for the day a GPU machine is at hand: its CPU-only parts (inputs,
every alignctl command it runs, reading the figures, the results file) run here with --dry-run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.long  # a minute: every stage of the GPU plan, each a subprocess
def test_gpu_check_dry_run_on_cpu(tmp_path, tiny_lm):
    out = tmp_path / "gpu.jsonl"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--dry-run", "--model", str(tiny_lm), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:] + out.with_suffix(".log").read_text()[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    what = [r["what"] for r in rows]
    assert what == ["install", "collect --backend hf", "collect --backend hf", "dpo bf16 (LoRA, dpo preset)",
                    "grpo --backend vllm (TRL use_vllm colocate)", "ppo --backend hf",
                    "ppo --backend vllm"]  # fmt: skip
    assert all(r["dry_run"] is True and r["gpu"] == "no CUDA" for r in rows)
    assert rows[1]["tok_per_s"] > 0 and rows[2]["vs_hf"] > 0
    assert rows[3]["s_per_step"] > 0 and rows[4]["s_per_step"] > 0
    assert rows[5]["updates"] == rows[6]["updates"] == 2 and rows[6]["s_per_update"] > 0
    log = out.with_suffix(".log").read_text()
    assert "sampler: hf" in log and "bf16" in log  # the stages said which sampler runs and what they turned off
