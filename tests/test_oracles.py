"""The test oracles in oracles.py (the chapter's DPO / reward-model losses, GRPO advantages)
against numbers worked out by hand, as test_rlmath.py does for alignctl.rlmath."""

from __future__ import annotations

import pytest

from oracles import dpo_loss, group_advantages, reward_model_loss
from test_rlmath import close, t  # the same tensor helpers as the rlmath tests

# ---------------------------------------------------------------------------------- DPO / RM


def test_dpo_loss_hand_values() -> None:
    """beta = 0.5, three pairs; z = beta * ((pc - rc) - (pr - rr)).

    pair 0: pc=-1, rc=-1 (ratio 0); pr=-2, rr=-2 (ratio 0) -> z = 0 -> loss = -ln σ(0) = ln 2
            = 0.693147; rewards 0.5*0 = 0, 0.
    pair 1: pc=-1, rc=-3 (ratio +2); pr=-4, rr=-2 (ratio -2) -> z = 0.5*4 = 2
            -> loss = ln(1 + e^-2) = 0.126928; chosen reward 0.5*2 = 1, rejected 0.5*(-2) = -1.
    pair 2: the same pair swapped (chosen ratio -2, rejected +2) -> z = -2
            -> loss = ln(1 + e^2) = 2 + ln(1 + e^-2) = 2.126928; rewards -1, +1.
    """
    pc = t([-1.0, -1.0, -4.0]).requires_grad_()
    pr = t([-2.0, -4.0, -1.0]).requires_grad_()
    rc = t([-1.0, -3.0, -2.0])
    rr = t([-2.0, -2.0, -3.0])
    losses, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta=0.5)
    close(losses, [0.693147, 0.126928, 2.126928])
    close(chosen, [0.0, 1.0, -1.0])
    close(rejected, [0.0, -1.0, 1.0])
    assert not chosen.requires_grad and not rejected.requires_grad


def test_dpo_loss_gradient_pushes_chosen_up() -> None:
    """d/d pc [-ln σ(z)] = -σ(-z) * beta. At z = 0 (pair 0 above): -0.5 * 0.5 = -0.25, and for
    the rejected answer +0.25: descending the loss raises chosen and lowers rejected log-probs."""
    pc = t([-1.0]).requires_grad_()
    pr = t([-2.0]).requires_grad_()
    losses, _, _ = dpo_loss(pc, pr, t([-1.0]), t([-2.0]), beta=0.5)
    losses.sum().backward()
    close(pc.grad, [-0.25])
    close(pr.grad, [0.25])


def test_reward_model_loss_hand_values() -> None:
    """rc - rr = [2, 0] -> per-pair -ln σ = [ln(1 + e^-2), ln 2] = [0.126928, 0.693147];
    mean = 0.820075 / 2 = 0.410038. Shapes [B, 1] like the reward model's logits."""
    loss = reward_model_loss(t([[2.0], [0.0]]), t([[0.0], [0.0]]))
    assert loss.dim() == 0
    close(loss, 0.410038)


# ---------------------------------------------------------------------------------------- GRPO


def test_group_advantages_hand_values() -> None:
    """Two groups of 3.

    group [1, 2, 3]: mean 2, deviations -1, 0, 1, unbiased var (1 + 0 + 1) / (3 - 1) = 1, std 1
        -> A = (-1, 0, 1) / (1 + 1e-4) = -0.999900, 0, 0.999900.
    group [5, 5, 5]: std 0 -> A = 0 / 1e-4 = 0 (no signal, no NaN).
    """
    adv = group_advantages(t([1.0, 2.0, 3.0, 5.0, 5.0, 5.0]), num_generations=3)
    close(adv, [-0.999900, 0.0, 0.999900, 0.0, 0.0, 0.0])


def test_group_advantages_pairs_and_eps() -> None:
    """Group of 2 [0, 1]: mean 0.5, unbiased var (0.25 + 0.25) / 1 = 0.5, std 0.707107.
    eps=0 -> A = ±0.5 / 0.707107 = ±0.707107. Consecutive entries form a group: [4, 0] is the
    second group, mean 2, var (4 + 4) / 1 = 8, std 2.828427 -> ±2 / 2.828427 = ±0.707107."""
    adv = group_advantages(t([0.0, 1.0, 4.0, 0.0]), num_generations=2, eps=0.0)
    close(adv, [-0.707107, 0.707107, 0.707107, -0.707107])


def test_group_advantages_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="divisible"):
        group_advantages(t([1.0, 2.0, 3.0]), num_generations=2)
    with pytest.raises(ValueError, match=">= 2"):
        group_advantages(t([1.0, 2.0]), num_generations=1)
