"""alignctl.rlmath against numbers worked out by hand.

Each test states its derivation in the docstring; the expected values are typed in from that
derivation, never recomputed with the formula under test. Constants used below:
ln 2 = 0.693147, ln 3 = 1.098612, ln 4 = 1.386294, ln 1.5 = 0.405465, ln 0.75 = -0.287682,
e = 2.718282, 1/e = 0.367879, ln(1 + e^-2) = ln 1.135335 = 0.126928.
"""

from __future__ import annotations

import math

import pytest
import torch

from alignctl.rlmath import (
    entropy_from_logits,
    first_true_indices,
    gae,
    kl_penalty,
    logprobs_from_logits,
    masked_mean,
    masked_var,
    masked_whiten,
    policy_loss,
    shaped_rewards,
    truncate_after_eos,
    value_loss,
)

ATOL = 1e-5


def t(values: list, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


def close(actual: torch.Tensor, expected: list | float, atol: float = ATOL) -> None:
    torch.testing.assert_close(
        actual.detach().to(torch.float64),
        torch.as_tensor(expected, dtype=torch.float64),
        atol=atol,
        rtol=0,
    )


# ------------------------------------------------------------------------------ masked stats


def test_masked_mean_over_all_and_per_row() -> None:
    """x = [[1, 2, NaN], [4, 99, inf]], mask = [[1, 1, 0], [1, 0, 0]].
    All real tokens: (1 + 2 + 4) / 3 = 2.333333; per row: 3 / 2 = 1.5 and 4 / 1 = 4.
    The NaN and inf sit on padding and must not leak."""
    x = t([[1.0, 2.0, math.nan], [4.0, 99.0, math.inf]])
    mask = t([[1, 1, 0], [1, 0, 0]], dtype=torch.long)
    close(masked_mean(x, mask), 2.333333)
    close(masked_mean(x, mask, dim=1), [1.5, 4.0])
    close(masked_mean(x, mask.bool(), dim=1), [1.5, 4.0])


def test_masked_var_biased_and_unbiased() -> None:
    """Real values 1, 2, 4: mean 7/3; deviations -4/3, -1/3, 5/3; squares 16/9 + 1/9 + 25/9 =
    42/9. Biased: 42/27 = 1.555556. Unbiased: 42/18 = 2.333333."""
    x = t([[1.0, 2.0, 50.0], [4.0, -7.0, 8.0]])
    mask = t([[1, 1, 0], [1, 0, 0]])
    close(masked_var(x, mask, unbiased=False), 1.555556)
    close(masked_var(x, mask), 2.333333)


def test_masked_var_unbiased_needs_two_tokens() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        masked_var(t([[3.0, 1.0]]), t([[1, 0]]))


def test_masked_whiten_hand_values() -> None:
    """Real values 1, 3 (100 is padding): mean 2, unbiased var (1 + 1) / 1 = 2, std 1.414214.
    Whitened: (1 - 2) / 1.414214 = -0.707107 and +0.707107; padding -> 0.
    shift_mean=False adds the mean 2 back: 1.292893, 2.707107, padding 0."""
    x = t([[1.0, 3.0, 100.0]])
    mask = t([[1, 1, 0]])
    close(masked_whiten(x, mask), [[-0.707107, 0.707107, 0.0]])
    close(masked_whiten(x, mask, shift_mean=False), [[1.292893, 2.707107, 0.0]])


def test_masked_whiten_constant_values_give_zeros() -> None:
    """All real values equal: var 0, so (x - mean) = 0 times rsqrt(0 + 1e-8) = 0, not NaN."""
    close(masked_whiten(t([[2.0, 2.0, 2.0]]), t([[1, 1, 1]])), [[0.0, 0.0, 0.0]])


# -------------------------------------------------------------------------- KL and rewards


def test_kl_penalty_k1_and_k3() -> None:
    """logp = [-1, -2, -3], ref = [-2, -1, -3].
    k1 = logp - ref = [1, -1, 0].
    k3: log r = ref - logp = [-1, 1, 0], r = [1/e, e, 1];
        (r - 1) - log r = [0.367879 - 1 + 1, 2.718282 - 1 - 1, 0] = [0.367879, 0.718282, 0].
    """
    logp = t([-1.0, -2.0, -3.0])
    ref = t([-2.0, -1.0, -3.0])
    close(kl_penalty(logp, ref), [1.0, -1.0, 0.0])
    close(kl_penalty(logp, ref, kind="k3"), [0.367879, 0.718282, 0.0])


def test_kl_penalty_unknown_kind() -> None:
    with pytest.raises(ValueError, match="k2"):
        kl_penalty(t([0.0]), t([0.0]), kind="k2")


def test_shaped_rewards_hand_values() -> None:
    """B=2, T=3, kl_coef=0.2, k1.

    row 0: mask [1, 1, 0]; logp [-1, -1, -5], ref [-1.5, -0.5, 0] -> kl [0.5, -0.5, pad 0]
           -> -0.2*kl = [-0.1, 0.1, 0]; score 1 goes on index 1 (last real) -> [-0.1, 1.1, 0].
    row 1: mask [1, 1, 1]; logp [-2, -1, -1], ref [-2, -2, -1] -> kl [0, 1, 0]
           -> [0, -0.2, 0]; score -2 on index 2 -> [0, -0.2, -2].
    """
    logp = t([[-1.0, -1.0, -5.0], [-2.0, -1.0, -1.0]])
    ref = t([[-1.5, -0.5, 0.0], [-2.0, -2.0, -1.0]])
    mask = t([[1, 1, 0], [1, 1, 1]], dtype=torch.long)
    rewards, kl = shaped_rewards(t([1.0, -2.0]), logp, ref, mask, kl_coef=0.2)
    close(kl, [[0.5, -0.5, 0.0], [0.0, 1.0, 0.0]])
    close(rewards, [[-0.1, 1.1, 0.0], [0.0, -0.2, -2.0]])


def test_shaped_rewards_k3() -> None:
    """One row, mask [1, 0]; logp -1, ref -2 -> k3 = 1/e = 0.367879 (see kl test);
    kl_coef 1 -> reward -0.367879 + score 0.5 = 0.132121; padding 0."""
    rewards, kl = shaped_rewards(t([0.5]), t([[-1.0, 3.0]]), t([[-2.0, 0.0]]), t([[1, 0]]), kl_coef=1.0, kind="k3")
    close(kl, [[0.367879, 0.0]])
    close(rewards, [[0.132121, 0.0]])


def test_shaped_rewards_rejects_empty_response() -> None:
    with pytest.raises(ValueError, match="at least one real token"):
        shaped_rewards(t([1.0]), t([[0.0, 0.0]]), t([[0.0, 0.0]]), t([[0, 0]]), kl_coef=0.1)


# --------------------------------------------------------------------------------------- GAE


def test_gae_hand_values_with_padding() -> None:
    """gamma = 1, lam = 0.5; nextvalue past the end (or into padding) is 0.

    row 0: r = [0, 0, 1], V = [0.5, 0.5, 0.5], all real.
      t=2: delta = 1 + 0 - 0.5 = 0.5          A2 = 0.5
      t=1: delta = 0 + 0.5 - 0.5 = 0          A1 = 0 + 0.5 * 0.5 = 0.25
      t=0: delta = 0 + 0.5 - 0.5 = 0          A0 = 0 + 0.5 * 0.25 = 0.125
      returns = A + V = [0.625, 0.75, 1.0]
    row 1: r = [0, 2, 9], V = [1, 1, 7], mask [1, 1, 0] -> zeroed: r = [0, 2, 0], V = [1, 1, 0].
      t=2: delta = 0 + 0 - 0 = 0              A2 = 0
      t=1: delta = 2 + 0 - 1 = 1              A1 = 1
      t=0: delta = 0 + 1 - 1 = 0              A0 = 0 + 0.5 * 1 = 0.5
      returns = [1.5, 2.0, 0.0]
    (Had the padding value 7 leaked, t=1 would see delta = 2 + 7 - 1 = 8.)
    """
    rewards = t([[0.0, 0.0, 1.0], [0.0, 2.0, 9.0]])
    values = t([[0.5, 0.5, 0.5], [1.0, 1.0, 7.0]])
    mask = t([[1, 1, 1], [1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    close(adv, [[0.125, 0.25, 0.5], [0.5, 1.0, 0.0]])
    close(ret, [[0.625, 0.75, 1.0], [1.5, 2.0, 0.0]])


def test_gae_lam_one_is_discounted_return_minus_value() -> None:
    """With lam = 1, GAE telescopes to (discounted return) - V_t, an independent check.
    gamma = 0.5, r = [0, 0, 1], V = [0.5, 0.5, 0.5]:
      G2 = 1, G1 = 0.5 * 1 = 0.5, G0 = 0.25 -> A = [0.25 - 0.5, 0.5 - 0.5, 1 - 0.5]
      = [-0.25, 0, 0.5]. Step by step: t=2 delta 0.5; t=1 delta 0 + 0.25 - 0.5 = -0.25,
      A1 = -0.25 + 0.5 * 0.5 = 0; t=0 delta -0.25, A0 = -0.25 + 0.5 * 0 = -0.25. Agrees.
    """
    adv, ret = gae(t([[0.0, 0.0, 1.0]]), t([[0.5, 0.5, 0.5]]), t([[1, 1, 1]]), gamma=0.5, lam=1.0)
    close(adv, [[-0.25, 0.0, 0.5]])
    close(ret, [[0.25, 0.5, 1.0]])


# ------------------------------------------------------------------------------- PPO losses


def _policy_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Four real tokens and one padding token whose new log-prob is garbage (+inf)."""
    old = t([[-1.0, -1.0, -1.0, -1.0, -1.0]])
    log_ratio = [0.0, math.log(1.5), math.log(0.5), math.log(0.5), math.inf]
    new = (old + t([log_ratio])).requires_grad_()
    adv = t([[2.0, 1.0, 1.0, -1.0, 3.0]])
    mask = t([[1, 1, 1, 1, 0]])
    return new, old, adv, mask


def test_policy_loss_hand_values() -> None:
    """cliprange 0.2, so clip(ratio) lies in [0.8, 1.2].

    tok  ratio  A   -A*ratio  -A*clip        max    clipped term larger?
    0    1.0    2   -2.0      -2.0 (1.0)     -2.0   no (equal)
    1    1.5    1   -1.5      -1.2 (1.2)     -1.2   yes
    2    0.5    1   -0.5      -0.8 (0.8)     -0.5   no
    3    0.5   -1    0.5       0.8 (0.8)      0.8   yes
    loss = (-2 - 1.2 - 0.5 + 0.8) / 4 = -2.9 / 4 = -0.725; clipfrac = 2/4 = 0.5.
    approxkl = 0.5 * (0 + ln1.5^2 + 2 * ln2^2) / 4 = 0.5 * (0.164402 + 0.960906) / 4 = 0.140664.
    """
    new, old, adv, mask = _policy_case()
    loss, clipfrac, approxkl = policy_loss(new, old, adv, mask, cliprange=0.2)
    close(loss, -0.725)
    close(clipfrac, 0.5)
    close(approxkl, 0.140664)
    assert not clipfrac.requires_grad and not approxkl.requires_grad


def test_policy_loss_gradient_is_finite_and_zero_where_clipped() -> None:
    """d loss / d new_logprob_t = (1/4) * d(-A*ratio)/d logp = -A*ratio/4 where the unclipped
    term is the max, 0 where the clipped (constant) term is: tok0 -2*1/4 = -0.5 (both terms
    equal, both with slope -2), tok1 0, tok2 -1*0.5/4 = -0.125, tok3 0, padding 0 -- and not
    NaN: unguarded, the padding's exp(inf) would meet a zero upstream gradient as 0 * inf."""
    new, old, adv, mask = _policy_case()
    loss, _, _ = policy_loss(new, old, adv, mask, cliprange=0.2)
    loss.backward()
    close(new.grad, [[-0.5, 0.0, -0.125, 0.0, 0.0]])


def test_value_loss_hand_values() -> None:
    """cliprange_value 0.2; clipped vpred = clip(vpred, old - 0.2, old + 0.2).

    tok  vpred  old  R    clipped  (v-R)^2  (clip-R)^2  max    clipped larger?
    0    1.5    1    2    1.2      0.25     0.64        0.64   yes
    1    1.1    1    0    1.1      1.21     1.21        1.21   no (equal)
    2    1.0    0    0.1  0.2      0.81     0.01        0.81   no
    3    (padding: vpred 100, old 0, R -100, ignored)
    loss = 0.5 * (0.64 + 1.21 + 0.81) / 3 = 0.5 * 2.66 / 3 = 0.443333; clipfrac = 1/3.
    """
    vpred = t([[1.5, 1.1, 1.0, 100.0]]).requires_grad_()
    old = t([[1.0, 1.0, 0.0, 0.0]])
    returns = t([[2.0, 0.0, 0.1, -100.0]])
    mask = t([[1, 1, 1, 0]])
    loss, clipfrac = value_loss(vpred, old, returns, mask, cliprange_value=0.2)
    close(loss, 0.443333)
    close(clipfrac, 0.333333)
    loss.backward()
    # tok0: clipped branch wins, and clip is flat at 1.2 -> 0. tok1: both branches 2*(1.1-0)
    # = 2.2 (the clamp passes 1.1 through), times 0.5/3 -> 0.366667. tok2: unclipped,
    # 2*(1.0-0.1) = 1.8, times 0.5/3 -> 0.3. Padding: 0.
    close(vpred.grad, [[0.0, 0.366667, 0.3, 0.0]])


# ------------------------------------------------------------------ logits and EOS handling


def test_entropy_from_logits_hand_values() -> None:
    """[0, 0, 0, 0]: uniform over 4 -> ln 4 = 1.386294 (and [5, 5, 5, 5] the same: shift-free).
    [0, ln 3, ...]: p = [1/4, 3/4] -> H = 0.25 ln 4 + 0.75 ln(4/3)
        = 0.25 * 1.386294 + 0.75 * 0.287682 = 0.346574 + 0.215762 = 0.562335.
    [0, 0, -inf]: uniform over 2 -> ln 2 = 0.693147, not NaN."""
    close(entropy_from_logits(t([[0.0, 0.0, 0.0, 0.0], [5.0, 5.0, 5.0, 5.0]])), [1.386294] * 2)
    close(entropy_from_logits(t([0.0, 1.098612])), 0.562335)
    close(entropy_from_logits(t([0.0, 0.0, -math.inf])), 0.693147)


def test_logprobs_from_logits_hand_values() -> None:
    """logits [0, ln 3] -> p = [1/4, 3/4]: label 1 -> ln 0.75 = -0.287682, label 0 -> -ln 4 =
    -1.386294. Temperature 0.5 -> logits / 0.5 = [0, ln 9] -> p = [0.1, 0.9]: label 1 -> ln 0.9 =
    -0.105361, label 0 -> ln 0.1 = -2.302585 (the +1e-7 in the divisor moves these by < 1e-6).
    Shapes: logits [B=1, T=2, V=2], labels [1, 2]."""
    logits = t([[[0.0, 1.098612], [0.0, 1.098612]]])
    labels = torch.tensor([[1, 0]])
    close(logprobs_from_logits(logits, labels), [[-0.287682, -1.386294]])
    close(logprobs_from_logits(logits, labels, temperature=0.5), [[-0.105361, -2.302585]])


def test_logprobs_from_logits_upcasts_half_precision() -> None:
    """bfloat16 logits come back as float32 log-probs. bf16 (7 mantissa bits, step 2^-7 near 1)
    rounds ln 3 = 1.098612 to 1.1015625, so the answer is -ln(1 + e^-1.1015625) = -ln 1.332350
    = -0.286945 instead of -0.287682: within 2e-3 of ln 0.75."""
    logits = torch.tensor([[0.0, 1.098612]], dtype=torch.bfloat16)
    out = logprobs_from_logits(logits, torch.tensor([1]))
    assert out.dtype == torch.float32
    close(out, [-0.287682], atol=2e-3)


def test_first_true_indices() -> None:
    """Rows: first True at 1; no True -> row length 3; first True at 0."""
    bools = torch.tensor([[False, True, True], [False, False, False], [True, False, True]])
    assert first_true_indices(bools).tolist() == [1, 3, 0]
    assert first_true_indices(torch.zeros(2, 0, dtype=torch.bool)).tolist() == [0, 0]


def test_truncate_after_eos() -> None:
    """eos = 2, pad = 0.
    [5, 2, 7, 8] -> keep through the EOS at 1 -> [5, 2, 0, 0], mask [1, 1, 0, 0]
    [5, 6, 7, 8] -> no EOS, keep all           -> unchanged,   mask [1, 1, 1, 1]
    [2, 2, 9, 9] -> first EOS at 0             -> [2, 0, 0, 0], mask [1, 0, 0, 0]"""
    responses = torch.tensor([[5, 2, 7, 8], [5, 6, 7, 8], [2, 2, 9, 9]])
    out, mask = truncate_after_eos(responses, eos_token_id=2, pad_token_id=0)
    assert out.tolist() == [[5, 2, 0, 0], [5, 6, 7, 8], [2, 0, 0, 0]]
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert mask.dtype == torch.long


def test_truncate_after_eos_when_pad_is_eos() -> None:
    """pad == eos == 2 (common for chat models): [5, 2, 2, 2] keeps 5 and the first EOS only."""
    out, mask = truncate_after_eos(torch.tensor([[5, 2, 2, 2]]), eos_token_id=2, pad_token_id=2)
    assert out.tolist() == [[5, 2, 2, 2]]
    assert mask.tolist() == [[1, 1, 0, 0]]
