"""The chapter's formulas that alignctl leaves to TRL: test oracles, not library code.

DPO and reward-model losses and GRPO advantages are computed inside TRL's trainers; these small
torch functions are the chapter's formulas (the chapter "对齐训练", docs/design.md), hand-checked in
`test_oracles.py` and compared with what TRL computes in `test_dpo.py`, `test_train_rm.py` and
`test_grpo.py`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Per-pair DPO loss and implicit rewards (chapter section "DPO 偏好训练").

    .. math::
        \mathcal{L}_\text{DPO} = -\log \sigma\left(
            \beta \log \frac{\pi_\theta(y_w|x)}{\pi_{ref}(y_w|x)}
          - \beta \log \frac{\pi_\theta(y_l|x)}{\pi_{ref}(y_l|x)} \right)

    Each `*_logps` is `[B]`: the summed log-probability of the whole answer under that model.
    Returns `(losses, chosen_rewards, rejected_rewards)`, all `[B]`; the losses are not reduced
    (the chapter's `dpo_loss` returns them per pair too). The rewards are the chapter's
    `beta * (pi_logps - ref_logps).detach()`: they are for logging (reward margins and accuracy),
    never for gradients.
    """
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    # logsigmoid instead of log(sigmoid(.)): stays finite when the margin is very negative.
    losses = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))
    chosen_rewards = beta * chosen_logratios.detach()
    rejected_rewards = beta * rejected_logratios.detach()
    return losses, chosen_rewards, rejected_rewards


def reward_model_loss(rewards_chosen: torch.Tensor, rewards_rejected: torch.Tensor) -> torch.Tensor:
    r"""Pairwise (Bradley-Terry) reward-model loss (chapter section "训练奖励模型的方法和原理").

    .. math::
        L(r_\phi) = -\log \sigma(r_\phi(x, y_c) - r_\phi(x, y_r))

    averaged over the batch, exactly the chapter's
    `-nn.functional.logsigmoid(rewards_chosen - rewards_rejected).mean()`. Inputs are the reward
    model's scalar outputs for the chosen and rejected answers, `[B]` or `[B, 1]`.
    """
    return -F.logsigmoid(rewards_chosen - rewards_rejected).mean()


def group_advantages(rewards: torch.Tensor, num_generations: int, eps: float = 1e-4) -> torch.Tensor:
    r"""GRPO advantages: each reward normalised within its group (chapter "强化学习 GRPO 训练").

    .. math::
        A_i = \frac{r_i - \mathrm{mean}(\{r_1, \dots, r_G\})}{\mathrm{std}(\{r_1, \dots, r_G\})}

    with the chapter's code adding `1e-4` to the std ("避免标准差为 0 的情况"). `rewards` is `[N]`
    with the `num_generations` answers to one prompt consecutive, so `N` must be a multiple of it.
    The std is unbiased (`torch.std`'s default), as in the chapter's code. A group whose answers
    all score the same gets advantage 0: it carries no signal about which answer is better.
    """
    if num_generations < 2:
        # An unbiased std of one sample is undefined (NaN): GRPO needs at least two answers per
        # prompt to compare them, which is also why TRL rejects num_generations < 2.
        raise ValueError(f"num_generations must be >= 2, got {num_generations}")
    if rewards.dim() != 1 or rewards.numel() % num_generations != 0:
        raise ValueError(
            f"rewards must be 1-D with a length divisible by num_generations={num_generations}, "
            f"got shape {tuple(rewards.shape)}"
        )
    grouped = rewards.reshape(-1, num_generations)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, keepdim=True)
    return ((grouped - mean) / (std + eps)).reshape(rewards.shape)
