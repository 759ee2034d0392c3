"""collect -> label -> dpo chained in a shell script, as users run them (docs/design.md: "shell scripts
chaining stages, Makefile-driven experiments"): on the tiny model by default, on SmolLM2 in `slow`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alignctl import io
from conftest import REPO
from tiny import write_jsonl

SCRIPT = """\
set -euo pipefail
MODEL="$1"; SAMPLES="$2"; TOKENS="$3"; BY="$4"
alignctl collect --prompts prompts.jsonl --model "$MODEL" --num-samples "$SAMPLES" \\
    --max-new-tokens "$TOKENS" -o candidates.jsonl
alignctl label --candidates candidates.jsonl --by "$BY" -o prefs.jsonl
alignctl dpo --data prefs.jsonl --model "$MODEL" --max-steps 2 --batch-size 2 -o runs/dpo
"""


def run_script(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    (cwd / "pipeline.sh").write_text(SCRIPT, encoding="utf-8")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    return subprocess.run(["bash", "pipeline.sh", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def check_chain(cwd: Path, proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["candidates.jsonl", "prefs.jsonl", "runs/dpo"]  # stdout: paths only
    cands = io.load(cwd / "candidates.jsonl", "candidates")
    prefs = io.load(cwd / "prefs.jsonl", "preferences")
    assert prefs and {p["id"] for p in prefs} <= {c["id"] for c in cands}
    manifest = json.loads((cwd / "runs" / "dpo" / "alignctl.json").read_text())
    # provenance runs through the chain: dpo trained on exactly the file label wrote
    assert manifest["inputs"]["data"]["sha256"] == io.sha256_file(cwd / "prefs.jsonl")
    label_manifest = json.loads((cwd / "prefs.jsonl.alignctl.json").read_text())
    assert label_manifest["inputs"]["candidates"]["sha256"] == io.sha256_file(cwd / "candidates.jsonl")
    assert manifest["final_metrics"]["global_step"] == 2


def test_collect_label_dpo_in_a_shell_script(tmp_path, tiny_lm):
    prompts = [{"prompt": f"Is {w} {c}?"} for w in ("paris", "rome", "the sky") for c in ("red", "big")]
    write_jsonl(tmp_path / "prompts.jsonl", prompts)
    proc = run_script(tmp_path, str(tiny_lm), "3", "8", "rule:length")
    check_chain(tmp_path, proc)
    # rerun: every stage is up to date and does no work (what a Makefile relies on)
    again = run_script(tmp_path, str(tiny_lm), "3", "8", "rule:length")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("up to date") == 3


@pytest.mark.slow
def test_collect_label_dpo_on_smollm2(tmp_path):
    """The embedded SmolLM2-135M, kept small: 4 QA prompts x 2 samples x 16 tokens, 2 DPO steps;
    then the same candidates judged by SmolLM2 itself as a local pairwise judge."""
    lines = (REPO / "examples" / "qa" / "train.jsonl").read_text().splitlines()[:4]
    (tmp_path / "prompts.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    proc = run_script(tmp_path, "smollm2-135m", "2", "16", "rule:qa")
    check_chain(tmp_path, proc)
    cands = io.load(tmp_path / "candidates.jsonl", "candidates")
    assert all(len(c["completions"]) == 2 for c in cands) and "backend: hf" in proc.stderr
    from conftest import run_cli

    judged = run_cli(
        "label", "-c", "candidates.jsonl", "--by", "judge:smollm2-135m", "-o", "judged.jsonl", cwd=tmp_path
    )
    assert judged.returncode == 0, judged.stderr[-3000:]
    stats = json.loads((tmp_path / "judged.jsonl.alignctl.json").read_text())["final_metrics"]
    assert stats["pairs"] + stats["ties"] + stats["dropped"] == 4
