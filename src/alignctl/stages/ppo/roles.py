"""The four PPO roles on as few backbones as they need (chapter: "PPO 训练时会启动 4 个模型").

The chapter's four models are the policy (actor, trained), the reference (frozen SFT model), the
reward model (frozen) and the value model (critic, trained, "基于奖励模型初始化"). With LoRA (the
chapter's preset) they sit on two backbones:

- reference = the policy with its LoRA adapter disabled ("如果使用 LoRA 训练，策略模型和参考模型可以共享参数");
- value     = the reward model's backbone with its own LoRA adapter and its own value head,
              initialised as a copy of the reward model's score head (so the critic starts as the
              reward model, as the chapter says);
- reward    = that same backbone with the adapter disabled and the original score head.

The value model's adapter sits on its top `value_trainable_layers` share of layers (half by
default). The layers below are the reward model's own, frozen, so their output is the same in
the reward pass and the value pass: the rollout's reward forward hands its hidden state at that
depth (the "trunk") to the value model, which runs only its top layers, forward and backward.
That halves the critic's compute and activation memory; 1.0 trains an adapter on every layer.

With a rule reward there is no reward model, so the value model starts from a copy of the
policy's backbone with a zero-initialised head (values start at 0), and the trunk comes from
the reference pass (the policy's frozen weights, the same as the copy's). Full fine-tuning
(`use_peft: false`) keeps separate copies: four backbones, as the chapter's TRL code does, and
trains the whole value model.
"""

from __future__ import annotations

import copy
import math
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
    trunk: int = 0  # layers below the value model's adapter, run in the reward/reference pass; 0: none

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
    def top_layers_only(self, body) -> Iterator[None]:
        """While active, `body` (the critic) skips its bottom `trunk` layers: fed the trunk's hidden
        state as `inputs_embeds`, it runs only the layers that carry its adapter."""
        layers = _layer_list(body)
        if not self.trunk or layers is None:
            yield
            return
        saved = [layers[i] for i in range(self.trunk)]
        for i in range(self.trunk):  # same positions: per-layer settings (attention types) still line up
            layers[i] = _Pass()
        try:
            yield
        finally:
            for i, layer in enumerate(saved):
                layers[i] = layer

    @contextmanager
    def reward_model(self) -> Iterator[Any]:
        """The reward model's backbone: the frozen copy, or the critic with its adapter switched off."""
        if self.reward_body is not None:
            yield self.reward_body
        else:
            with self.critic.disable_adapter():
                yield self.critic


def _layer_list(body):
    """The decoder layers (`.layers`, a ModuleList) of a transformer body, peft-wrapped or not."""
    import torch

    model = body.get_base_model() if hasattr(body, "get_base_model") else body
    layers = getattr(model, "layers", None)
    return layers if isinstance(layers, torch.nn.ModuleList) else None


def _Pass():
    """A decoder layer stand-in that returns its input (for the layers the trunk already ran)."""
    import torch

    class Pass(torch.nn.Module):
        def forward(self, hidden_states, *args, **kwargs):
            return hidden_states

    return Pass()


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
        import dataclasses

        from peft import get_peft_model

        roles.policy = get_peft_model(policy, models.lora_config(values, task_type="CAUSAL_LM"))
        value_lora = models.lora_config(values, task_type=None)
        layers = _layer_list(critic)
        share = float(values.get("value_trainable_layers") or 1.0)
        if layers is not None and share < 1.0:
            n = len(layers)
            roles.trunk = n - max(1, math.ceil(share * n))
            if roles.trunk:
                targets = value_lora.target_modules
                if isinstance(targets, str):  # "all-linear": peft needs the names to pick layers
                    targets = sorted(
                        {
                            name.rsplit(".", 1)[-1]
                            for name, m in critic.named_modules()
                            if isinstance(m, torch.nn.Linear)
                        }
                    )
                value_lora = dataclasses.replace(
                    value_lora,
                    target_modules=targets,
                    layers_to_transform=list(range(roles.trunk, n)),
                    layers_pattern="layers",
                )
        elif share < 1.0:
            note("value_trainable_layers: the value model has no .layers list; its adapter covers every layer")
        roles.critic = get_peft_model(critic, value_lora)
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


def values(roles: Roles, input_ids, attention_mask, position_ids, response_width: int, trunk=None):
    """The value model on prompt + response: from the tokens, or from the trunk's hidden state."""
    common = {"attention_mask": attention_mask, "position_ids": position_ids, "use_cache": False}
    if trunk is None:
        hidden = roles.critic(input_ids=input_ids, **common).last_hidden_state
    else:
        with roles.top_layers_only(roles.critic):
            hidden = roles.critic(inputs_embeds=trunk, **common).last_hidden_state
    return roles.value_head(hidden[:, -response_width - 1 : -1]).squeeze(-1)


def trainable_modules(roles: Roles):
    """`(actor, critic, both)`: the two trained networks as modules of their own, and a container.

    Each gets its own forward and backward per micro-batch (and its own DDP wrapper): the policy
    loss and the value loss touch disjoint weights, so backpropagating them one after the other
    gives the gradients of the chapter's `loss_p + vf_coef * loss_v` while only one network's
    activations are held at a time. `both` names the trainable weights for checkpoints.
    """
    import torch

    class Actor(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.policy = roles.policy

        def forward(self, input_ids, attention_mask, position_ids, response_width: int):
            """Logits predicting each of the last `response_width` tokens, `[B, T, V]`."""
            out = self.policy(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                logits_to_keep=response_width + 1,  # no vocabulary projection for the prompt
                use_cache=False,
            )
            return out.logits[:, :-1]

    class Critic(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = roles.critic
            self.value_head = roles.value_head

        def forward(self, input_ids, attention_mask, position_ids, response_width: int, trunk=None):
            """The value of the state before each of the last `response_width` tokens, `[B, T]`."""
            return values(roles, input_ids, attention_mask, position_ids, response_width, trunk)

    actor, critic = Actor(), Critic()
    both = torch.nn.ModuleDict({"actor": actor, "critic": critic})
    # HF only checkpoints activations in training mode; dropout is already 0, so train() changes
    # nothing else. Without checkpointing, eval() keeps every layer deterministic.
    both.train(bool(getattr(roles.policy, "is_gradient_checkpointing", False)))
    return actor, critic, both


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
