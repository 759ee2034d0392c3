"""The sampler/trainer mismatch of the rollout engine, by engine dtype: SmolLM2-135M as
the policy in fp32 (how alignctl trains on CPU), alignctl's vLLM engine in bf16 and in fp32.

For each dtype: the engine samples 8 QA prompts x 4 answers x 48 tokens at temperature 0.7
(ppo's), returning each sampled token's log-prob after temperature; the fp32 policy scores the
same tokens (log softmax(logits / 0.7)); rows give the mean and max |difference| over tokens,
the mean difference, the share of tokens whose importance ratio exp(policy - engine) leaves
[0.5, 2] (where a truncated-IS correction would clip), the engine's tokens per second (one
thread), and the seconds to push the 272 policy tensors into it (`RolloutEngine.sync`). Which
log-probs PPO uses is decided from this (stages/ppo/rollout.py, docs/performance.md).
"""

from __future__ import annotations

import json
import os
import time

from common import REPO

PROMPTS, SAMPLES, TOKENS, TEMPERATURE = 8, 4, 48, 0.7


def measure(dtype: str, model_path: str, policy, tok, prompts) -> dict:
    import torch

    from alignctl.generation.engine import EngineSettings, RolloutEngine

    engine = RolloutEngine(model_path, policy_dtype=policy.dtype, settings=EngineSettings(dtype=dtype), seed=0)
    try:
        engine.generate(prompts[:1], n=1, temperature=TEMPERATURE, max_tokens=4)  # warm-up
        t0 = time.perf_counter()
        groups = engine.generate(prompts, n=SAMPLES, temperature=TEMPERATURE, max_tokens=TOKENS,
                                 stop_token_ids=[tok.eos_token_id], seeds=list(range(len(prompts))))  # fmt: skip
        gen_s = time.perf_counter() - t0
        sync_s = engine.sync(policy)
    finally:
        engine.close()
    diffs = []
    for p, group in zip(prompts, groups, strict=True):
        for s in group:
            seq = torch.tensor([p + s.token_ids])
            with torch.no_grad():
                logits = policy(seq).logits[0, len(p) - 1 : -1].float() / TEMPERATURE
            own = torch.log_softmax(logits, -1).gather(-1, torch.tensor(s.token_ids)[:, None])[:, 0]
            diffs.append(own - torch.tensor(s.logprobs))
    d = torch.cat(diffs)
    ratio = d.exp()
    tokens = int(d.numel())
    return {
        "what": f"engine {dtype} vs fp32 policy",
        "tokens": tokens,
        "mean_abs": float(d.abs().mean()),
        "max_abs": float(d.abs().max()),
        "mean": float(d.mean()),
        "outside_0.5_2": round(float(((ratio < 0.5) | (ratio > 2)).float().mean()), 4),
        "tok_per_s": round(tokens / gen_s, 1),
        "sync_s": round(sync_s, 2),
    }


def main() -> list[dict]:
    from alignctl import models

    torch = models.setup_torch()
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    path = models.resolve_model("smollm2-135m")
    tok = models.load_tokenizer(path)
    policy = models.load_causal_lm(path)
    rows = [json.loads(x) for x in (REPO / "examples" / "qa" / "train-nohint.jsonl").read_text().splitlines()]
    prompts = []
    for r in rows[:PROMPTS]:
        messages = r["prompt"] if isinstance(r["prompt"], list) else [{"role": "user", "content": r["prompt"]}]
        ids = tok.apply_chat_template(messages, add_generation_prompt=True)
        prompts.append(ids if isinstance(ids, list) else ids["input_ids"])
    return [measure(dtype, path, policy, tok, prompts) for dtype in ("bfloat16", "float32")]
