"""The four PPO roles on as few backbones as they need (chapter: "PPO 训练时会启动 4 个模型").

The chapter's four models are the policy (actor, trained), the reference (frozen SFT model), the
reward model (frozen) and the value model (critic, trained, "基于奖励模型初始化"). With LoRA (the
chapter's preset) they sit on two backbones:

- reference = the policy with its LoRA adapter disabled ("如果使用 LoRA 训练，策略模型和参考模型可以共享参数");
- value     = the reward model's backbone with its own LoRA adapter and its own value head,
              initialised as a copy of the reward model's score head (so the critic starts as the
              reward model, as the chapter says);
- reward    = that same backbone with the adapter disabled and the original score head.

With a rule reward there is no reward model, so the value model starts from a copy of the
policy's backbone with a zero-initialised head (values start at 0). Full fine-tuning
(`use_peft: false`) keeps separate copies: four backbones, as the chapter's TRL code does.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignctl.console import note
from alignctl.errors import ModelError

HEAD_NAMES = ("score", "classifier")


def _backbone(model) -> Any:
    """The transformer body of a HF model with a head (`model.model` for Llama, Qwen2, ...)."""
    body = getattr(model, model.base_model_prefix, None)
    if body is None:
        raise ModelError(f"{type(model).__name__}: no backbone at .{model.base_model_prefix}")
    return body


def _score_head(model, where: str) -> tuple[str, Any]:
    """(attribute name, module) of a sequence classifier's one-output linear head."""
    import torch

    for name in HEAD_NAMES:
        head = getattr(model, name, None)
        if isinstance(head, torch.nn.Linear) and head.out_features == 1:
            return name, head
    raise ModelError(f"{where}: cannot find a one-output score head (looked for .{' / .'.join(HEAD_NAMES)})")


def _seq_cls_shell(config):
    """A sequence-classification model of `config`'s architecture with no real weights (meta)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(config)
    config.num_labels = 1
    with torch.device("meta"):
        return AutoModelForSequenceClassification.from_config(config)


def _no_dropout(module) -> None:
    # PPO's ratio must be exactly 1 on the first minibatch: the rollout's log-probs and the
    # update's must come from the same deterministic network (arXiv 2403.17031, "disable dropout").
    import torch

    for m in module.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0


def _freeze(module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


@dataclass
class Roles:
    """The models of one PPO run. `ref`/`reward_body` are None where they share a backbone."""

    policy: Any  # causal LM; a peft model with LoRA
    critic: Any  # value backbone (transformer body); a peft model with LoRA
    value_head: Any  # Linear(hidden, 1), trainable
    ref: Any = None  # full fine-tuning only; with LoRA the adapter-disabled policy
    reward_body: Any = None  # full fine-tuning with a reward model; with LoRA the adapter-disabled critic
    reward_head: Any = None  # the reward model's score head (frozen); None for rule rewards
    value_config: Any = None  # the config the value model is saved with
    peft: bool = True

    @property
    def has_reward_model(self) -> bool:
        return self.reward_head is not None

    @contextmanager
    def reference(self) -> Iterator[Any]:
        """The reference model: the frozen copy, or the policy with its adapter switched off."""
        if self.ref is not None:
            yield self.ref
        else:
            with self.policy.disable_adapter():
                yield self.policy

    @contextmanager
    def reward_model(self) -> Iterator[Any]:
        """The reward model's backbone: the frozen copy, or the critic with its adapter switched off."""
        if self.reward_body is not None:
            yield self.reward_body
        else:
            with self.critic.disable_adapter():
                yield self.critic


def build(
    policy_path: str,
    reward_model_path: str | None,
    values: dict[str, Any],
    *,
    trust_remote_code: bool = False,
) -> Roles:
    """Load the policy (and reward model) once and arrange the four roles on them."""
    import torch

    from alignctl import models

    policy = models.load_causal_lm(policy_path, trust_remote_code=trust_remote_code)
    use_peft = bool(values["use_peft"])
    rm = None
    if reward_model_path:
        rm = models.load_reward_model(reward_model_path, trust_remote_code=trust_remote_code)
        _, rm_head = _score_head(rm, reward_model_path)
        rm_body = _backbone(rm)
        value_config = rm.config
    else:
        value_config = policy.config
    for m in (policy, rm):
        if m is not None:
            _no_dropout(m)
            _freeze(m)

    if rm is not None:
        value_head = copy.deepcopy(rm_head)
        critic = rm_body if use_peft else copy.deepcopy(rm_body)
    else:
        # A fresh head of the shape the saved value model's class expects, zeroed: V = 0 at start.
        _, shell_head = _score_head(_seq_cls_shell(value_config), "value model")
        value_head = shell_head.to_empty(device="cpu")
        with torch.no_grad():
            for p in value_head.parameters():
                p.zero_()
        critic = copy.deepcopy(_backbone(policy))
    value_head.requires_grad_(True)

    roles = Roles(policy=policy, critic=critic, value_head=value_head, value_config=value_config, peft=use_peft)
    if rm is not None:
        roles.reward_head = rm_head
        if not use_peft:
            roles.reward_body = rm_body
    if use_peft:
        from peft import get_peft_model

        roles.policy = get_peft_model(policy, models.lora_config(values, task_type="CAUSAL_LM"))
        roles.critic = get_peft_model(critic, models.lora_config(values, task_type=None))
    else:
        roles.ref = copy.deepcopy(policy)
        for p in list(policy.parameters()) + list(critic.parameters()):
            p.requires_grad_(True)
    for m in (roles.policy, roles.critic, roles.value_head):
        _no_dropout(m)
    if values.get("gradient_checkpointing"):
        for m in (roles.policy, roles.critic):
            m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return roles


def actor_critic(roles: Roles):
    """The trainable part as one module: one forward, one backward per micro-batch (DDP-friendly)."""
    import torch

    class ActorCritic(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.policy = roles.policy
            self.critic = roles.critic
            self.value_head = roles.value_head

        def forward(self, input_ids, attention_mask, position_ids, response_width: int):
            """Logits predicting each response token, `[B, T, V]`, and the value before each, `[B, T]`."""
            keep = response_width + 1
            out = self.policy(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                logits_to_keep=keep,
                use_cache=False,
            )
            hidden = self.critic(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
            ).last_hidden_state[:, -keep:-1]
            return out.logits[:, :-1], self.value_head(hidden).squeeze(-1)

    module = ActorCritic()
    # HF only checkpoints activations in training mode; dropout is already 0, so train() changes
    # nothing else. Without checkpointing, eval() keeps every layer deterministic.
    module.train(bool(getattr(roles.policy, "is_gradient_checkpointing", False)))
    return module


def trainable_parameters(module) -> dict[str, Any]:
    return {n: p for n, p in module.named_parameters() if p.requires_grad}


def save_value(roles: Roles, out: Path, tokenizer, *, merge: bool = True) -> None:
    """Save the value model to `out`: a one-label sequence classifier (LoRA merged), or the adapter.

    The merged dir loads with `AutoModelForSequenceClassification.from_pretrained(out)`, like a
    reward model, so it can start another PPO run's critic.
    """
    import torch
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    critic = roles.critic
    if roles.peft and not merge:
        critic.save_pretrained(out)
        head = {k: v.detach().contiguous() for k, v in roles.value_head.state_dict().items()}
        save_file(head, out / "value_head.safetensors")
        note("--no-merge: value/ holds the critic's LoRA adapter and value_head.safetensors")
        return
    if roles.peft:
        # In place: the reward model and critic are not used after training.
        critic = critic.merge_and_unload()
    shell = _seq_cls_shell(roles.value_config)
    head_name, _ = _score_head(shell, "value model")
    setattr(shell, shell.base_model_prefix, critic)
    setattr(shell, head_name, roles.value_head)
    if tokenizer is not None and tokenizer.pad_token_id is not None:
        shell.config.pad_token_id = tokenizer.pad_token_id
    with torch.no_grad():
        shell.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
