"""Where alignctl's rollout engine (generation/engine.py) plugs into TRL's trainers, for the runs
where TRL's own vLLM path cannot run (`use_vllm` needs CUDA): the one place that knows how TRL
1.16 generates.

Two kinds of place, found by what the trainer offers, not by its name:
- a `rollout_func(prompts, trainer)` argument (GRPOTrainer, RLOOTrainer): TRL calls it with this
  process's prompts and takes prompt ids, completion ids and log-probs back. With `use_vllm` off
  TRL syncs nothing, so the function pushes the weights when `trainer.state.global_step` moved.
- a `_generate(model, prompts, images)` method (OnlineDPOTrainer, which has no hook): a subclass
  returns the engine's two samples per prompt in the tensors TRL's own `_generate` returns.

Seeds: each prompt's request is seeded from (seed, global step, process, position), so a run
resumed from a checkpoint at step k samples what the uninterrupted run sampled after step k,
as far as vLLM's per-request seeds and the restored weights are bitwise the same.
"""

from __future__ import annotations

import inspect
from typing import Any

from alignctl.errors import ModelError
from alignctl.generation.sampling import row_seed


def plug(trainer_cls: type, engine) -> tuple[type, dict[str, Any]]:
    """(trainer class, extra trainer keyword arguments) that make `trainer_cls` sample through `engine`."""
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func's warning: this module is why
    if "rollout_func" in inspect.signature(trainer_cls.__init__).parameters:
        return trainer_cls, {"rollout_func": RolloutFunc(engine)}
    generate = getattr(trainer_cls, "_generate", None)
    if generate is not None and list(inspect.signature(generate).parameters)[1:3] == ["model", "prompts"]:
        return _pair_sampler(trainer_cls, engine), {}
    raise ModelError(f"{trainer_cls.__name__}: TRL gives alignctl's rollout engine no place to generate")


def _seeds(trainer, n: int, tag: str) -> list[int]:
    base = int(trainer.args.seed)
    step, rank = int(trainer.state.global_step), int(trainer.accelerator.process_index)
    return [row_seed(base, f"{tag}:{step}:{rank}", i) for i in range(n)]


def _sync(engine, trainer, last: list[int]) -> None:
    """Push the policy's weights into the engine once per optimizer step (before sampling)."""
    step = int(trainer.state.global_step)
    if step != last[0]:
        engine.sync(trainer.accelerator.unwrap_model(trainer.model))
        last[0] = step


def _top_k(value) -> int:
    return int(value) if value else 0


class RolloutFunc:
    """GRPO/RLOO's `rollout_func`: TRL's own tokenization of the prompts, the engine's samples.

    TRL hands over this process's slice of the generation batch, each prompt repeated
    `num_generations` times in a row (its RepeatSampler); the engine samples each distinct
    prompt once with n = its count, in the same order.
    """

    def __init__(self, engine) -> None:
        self.engine = engine
        self.last = [0]

    def __call__(self, prompts: list, trainer) -> dict[str, list]:
        _sync(self.engine, trainer, self.last)
        prompt_ids = trainer._tokenize_prompts(prompts)[0]
        groups: list[list] = []  # [ids, how many in a row, prompt]
        for ids, prompt in zip(prompt_ids, prompts, strict=True):
            if groups and groups[-1][2] == prompt:
                groups[-1][1] += 1
            else:
                groups.append([list(ids), 1, prompt])
        counts = {count for _, count, _ in groups}
        n = counts.pop() if len(counts) == 1 else 1
        if n == 1:  # not in whole groups: one request per row
            groups = [[list(ids), 1, p] for ids, p in zip(prompt_ids, prompts, strict=True)]
        samples = self.engine.generate(
            [ids for ids, _, _ in groups],
            n=n,
            temperature=float(trainer.temperature),
            top_p=float(trainer.top_p),
            top_k=_top_k(trainer.top_k),
            max_tokens=int(trainer.max_completion_length),
            repetition_penalty=float(trainer.repetition_penalty),
            stop_token_ids=list(trainer.eos_token_ids),
            seeds=_seeds(trainer, len(groups), "grpo"),
        )
        out: dict[str, list] = {"prompt_ids": [], "completion_ids": [], "logprobs": []}
        for (ids, _, _), group in zip(groups, samples, strict=True):
            for s in group:
                out["prompt_ids"].append(ids)
                out["completion_ids"].append(s.token_ids)
                out["logprobs"].append(s.logprobs)
        return out


def _pair_sampler(trainer_cls: type, engine) -> type:
    """Online DPO's trainer sampling its two answers per prompt through `engine`."""
    last = [0]

    class EngineSampled(trainer_cls):
        def _generate(self, model, prompts, images=None):
            import torch
            from trl.data_utils import maybe_apply_chat_template

            if images is not None:
                raise ModelError("alignctl's rollout engine samples text prompts only (no images)")
            _sync(engine, self, last)
            texts = [maybe_apply_chat_template({"prompt": p}, self.processing_class)["prompt"] for p in prompts]
            ids = [self.processing_class(text=t, add_special_tokens=False)["input_ids"] for t in texts]
            ids = [row[0] if row and isinstance(row[0], list) else row for row in ids]
            config = self.generation_config
            samples = engine.generate(
                ids,
                n=2,
                temperature=float(config.temperature),
                top_p=float(config.top_p if config.top_p is not None else 1.0),
                top_k=_top_k(config.top_k),
                max_tokens=int(config.max_new_tokens),
                repetition_penalty=float(config.repetition_penalty or 1.0),
                stop_token_ids=list(self.eos_token_ids),
                seeds=_seeds(self, len(ids), "online-dpo"),
            )
            pad = self._tokenizer.pad_token_id
            device = next(model.parameters()).device
            # TRL's layout: rows 0..B-1 are every prompt's first answer, rows B..2B-1 the second
            prompt_rows = ids + ids
            answers = [group[0].token_ids for group in samples] + [group[1].token_ids for group in samples]
            width_p = max(len(r) for r in prompt_rows)
            width_c = max(1, max(len(a) for a in answers))
            prompt_ids = torch.tensor([[pad] * (width_p - len(r)) + r for r in prompt_rows], device=device)
            prompt_mask = torch.tensor([[0] * (width_p - len(r)) + [1] * len(r) for r in prompt_rows], device=device)
            completion_ids = torch.tensor([a + [pad] * (width_c - len(a)) for a in answers], device=device)
            completion_mask = torch.tensor([[1] * len(a) + [0] * (width_c - len(a)) for a in answers], device=device)
            return prompt_ids, prompt_mask, completion_ids, completion_mask, None

    EngineSampled.__name__ = EngineSampled.__qualname__ = f"EngineSampled{trainer_cls.__name__}"
    return EngineSampled


class Sampler:
    """Which engine samples a TRL stage's answers, chosen from `--backend` before any model loads:
    transformers generate (hf), TRL's own vLLM (`use_vllm`, CUDA only), or alignctl's engine."""

    def __init__(self, resolved, *, cuda: bool, trl: bool = True) -> None:
        from alignctl.generation.engine import choose_backend

        self.backend, self.why = choose_backend(str(resolved["backend"]), cuda=cuda)
        self.trl_vllm = trl and self.backend == "vllm" and cuda
        self.engine = None
        if trl:  # TRL's own switch follows --backend (one setting; `use_vllm` is not one of ours)
            resolved.override("use_vllm", self.trl_vllm, f"auto: --backend {resolved['backend']}")

    @property
    def ours(self) -> bool:
        return self.backend == "vllm" and not self.trl_vllm

    def start(self, model_path: str, policy, resolved, *, trust_remote_code: bool = False):
        """Start alignctl's engine where it is the sampler (else None), saying in one line which samples."""
        from alignctl.console import info

        if self.ours:
            from alignctl.generation.engine import EngineSettings, RolloutEngine

            self.engine = RolloutEngine(
                model_path,
                policy_dtype=policy.dtype,
                settings=EngineSettings.from_settings(resolved.values),
                seed=int(resolved["seed"]),
                trust_remote_code=trust_remote_code,
            )
            d = self.engine.describe()
            where = f"{d['device']}, {d['dtype']}"
            info(f"sampler: [bold]vllm[/] (alignctl's rollout engine in this process on {where}; {self.why})")
        elif self.trl_vllm:
            info(f"sampler: [bold]vllm[/] (TRL's use_vllm, {resolved.get('vllm_mode')} mode; {self.why})")
        else:
            info(f"sampler: [bold]hf[/] (transformers generate; {self.why})")
        return self.engine

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()

    def describe(self) -> dict[str, Any]:
        """What the manifest records: which engine sampled."""
        if self.engine is not None:
            return {"backend": "vllm", "by": "alignctl rollout engine", **self.engine.describe()}
        if self.trl_vllm:
            return {"backend": "vllm", "by": "TRL use_vllm"}
        return {"backend": "hf", "by": "transformers generate"}
