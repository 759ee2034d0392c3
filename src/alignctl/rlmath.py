"""The math of alignment training as small pure torch functions.

Every function here is a formula from the chapter alignctl implements ("对齐训练") or from the
public PPO-for-RLHF descriptions it points to ("The N+ Implementation Details of RLHF with PPO",
arXiv 2403.17031; "Secrets of RLHF", arXiv 2307.04964). They hold no state, touch no model and
are unit-tested against hand-computed numbers in `tests/test_rlmath.py`.

Conventions shared by all functions:

- Token-level tensors are `[B, T]`: B sequences (responses), T response positions.
- `mask` is `[B, T]`, 1 (or True) on real response tokens and 0 on padding. Responses are
  right-padded, so the real tokens of a row are a prefix of it. Bool and 0/1 integer or float
  masks are all accepted.
- Padding positions never contribute to a mean, a variance, a loss or an advantage, whatever
  garbage (even inf/NaN) they hold.

torch is imported at module top on purpose: only training code imports this module, never the
CLI's import path (`alignctl --help` must not import torch).
"""

from __future__ import annotations

import torch

__all__ = [
    "entropy_from_logits",
    "first_true_indices",
    "gae",
    "kl_penalty",
    "logprobs_from_logits",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "policy_loss",
    "shaped_rewards",
    "truncate_after_eos",
    "value_loss",
]

# Added to the variance before the square root in `masked_whiten`, so a batch whose real values
# are all equal whitens to zeros instead of NaN.
_WHITEN_EPS = 1e-8

# The chapter's generation config samples with `temperature=(args.temperature + 1e-7)`
# (section "PPO 训练细节及超参数"); log-probabilities must use the same divisor to describe the
# distribution the tokens were really drawn from.
_TEMPERATURE_EPS = 1e-7


# --------------------------------------------------------------------------------------------
# Masked statistics
# --------------------------------------------------------------------------------------------


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    r"""Mean of `x` over real tokens only: :math:`\sum m x / \sum m`.

    This is the `masked_mean` the chapter's PPO code uses for every loss and statistic (section
    "PPO 训练细节及超参数"), so padding never dilutes a mean. With `dim=None` the mean is over all
    real tokens of the batch; with `dim` it is per slice along that dimension. A slice with no
    real token has no mean and comes back NaN, loudly, rather than as a made-up 0.
    """
    real = mask.bool()
    # torch.where instead of x * mask: 0 * inf and 0 * NaN are NaN, and padding positions can
    # hold either (e.g. the exp of a garbage log-ratio).
    total = torch.where(real, x, torch.zeros_like(x))
    if dim is None:
        return total.sum() / real.sum()
    return total.sum(dim) / real.sum(dim)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of `x` over all real tokens (mask=1) of the batch.

    Used by `masked_whiten` to whiten PPO advantages and rewards over real tokens only ("The N+
    Implementation Details of RLHF with PPO", arXiv 2403.17031, details on advantage whitening).
    `unbiased=True` applies Bessel's correction n/(n-1), n being the number of real tokens.
    """
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = int(mask.bool().sum())
        if n < 2:
            # Bessel's correction divides by n - 1: with one real token the variance is
            # undefined, and silently returning inf or NaN would poison every later step.
            raise ValueError(f"unbiased masked_var needs at least 2 real tokens, got {n}")
        var = var * n / (n - 1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    r"""Whiten `x` with the mean and (unbiased) std of its real tokens: :math:`(x - \mu)/\sigma`.

    PPO whitens its advantages this way before the policy loss (arXiv 2403.17031; "Secrets of
    RLHF", arXiv 2307.04964), which keeps the loss scale independent of the reward scale.
    `shift_mean=False` rescales but keeps the original mean (used for rewards, where the sign of
    the mean matters). Padding positions come back 0 so nothing downstream can pick them up.
    """
    mean = masked_mean(x, mask)
    var = masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + _WHITEN_EPS)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask.bool(), whitened, torch.zeros_like(whitened))


# --------------------------------------------------------------------------------------------
# PPO: rewards and advantages
# --------------------------------------------------------------------------------------------


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    r"""Per-token estimate of KL(policy || reference) from the sampled tokens' log-probabilities.

    The chapter's PPO loop subtracts `kl_coef * (logprobs - ref_logprobs)` from the rewards
    (section "PPO 训练细节及超参数"); that is `kind="k1"`:

    .. math:: k_1 = \log \pi_\theta(a_t|s_t) - \log \pi_{ref}(a_t|s_t)

    `kind="k3"` is Schulman's lower-variance, always non-negative estimator ("Approximating KL
    Divergence", 2020), with :math:`r = \pi_{ref} / \pi_\theta`:

    .. math:: k_3 = (r - 1) - \log r

    Both are unbiased for KL when tokens are sampled from the policy.
    """
    if kind == "k1":
        return logprobs - ref_logprobs
    if kind == "k3":
        log_ratio = ref_logprobs - logprobs
        # expm1 keeps (r - 1) precise when the policy is still close to the reference, which is
        # most of training: exp(x) - 1 would cancel catastrophically for tiny x.
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"unknown KL estimator kind {kind!r}; expected 'k1' or 'k3'")


def shaped_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    kind: str = "k1",
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Per-token PPO rewards: a KL penalty on every token, the reward-model score at the end.

    The chapter's loop (section "PPO 训练细节及超参数") computes `rewards = rewards - kl_coef *
    (logprobs - ref_logprobs)` with the reward model's score for the whole response; the score
    goes on the response's last real token (the EOS when there is one), since only the complete
    answer can be judged:

    .. math:: r_t = -\beta_{KL}\,\mathrm{KL}_t + [t = t_{last}]\,\mathrm{score}

    `scores` is `[B]`; `logprobs`, `ref_logprobs`, `mask` are `[B, T]`. Returns `(rewards, kl)`,
    both `[B, T]` and 0 on padding (`kl` is kept for logging the policy's drift).
    """
    real = mask.bool()
    kl = kl_penalty(logprobs, ref_logprobs, kind)
    kl = torch.where(real, kl, torch.zeros_like(kl))
    rewards = -kl_coef * kl
    T = real.size(1)
    # Index of the last real token = T - 1 - (first real token of the row read backwards); this
    # does not rely on counting, so it is right for any mask whose last 1 ends the answer.
    last = T - 1 - first_true_indices(real.flip(1))
    if bool((last < 0).any()):
        raise ValueError("every response needs at least one real token to carry its score")
    rows = torch.arange(real.size(0), device=rewards.device)
    rewards[rows, last] += scores.to(rewards.dtype)
    return rewards, kl


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Generalised Advantage Estimation, the chapter's backwards loop (section "PPO 训练细节及超参数").

    .. math::
        \delta_t = r_t + \gamma V_{t+1} - V_t, \qquad
        \hat{A}_t = \delta_t + \gamma\lambda \hat{A}_{t+1}

    with :math:`V_T = 0` past the last position, and returns :math:`R_t = \hat{A}_t + V_t` (the
    value model's target). Values and rewards are zeroed on padding first, so the last real
    token bootstraps from 0 (the episode ended) rather than from a padding value, and padding
    positions get advantage and return 0. Returns `(advantages, returns)`, both `[B, T]`.
    """
    real = mask.bool()
    zeros = torch.zeros_like(values)
    values = torch.where(real, values, zeros)
    rewards = torch.where(real, rewards, torch.zeros_like(rewards))
    T = rewards.size(1)
    lastgaelam = torch.zeros_like(values[:, 0])
    advantages_reversed = []
    for t in reversed(range(T)):
        nextvalues = values[:, t + 1] if t < T - 1 else torch.zeros_like(lastgaelam)
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam = delta + gamma * lam * lastgaelam
        advantages_reversed.append(lastgaelam)
    advantages = torch.stack(advantages_reversed[::-1], dim=1)
    # With right padding the loop already leaves 0 on padding; the explicit mask keeps that true
    # for any mask shape, so nothing downstream depends on the padding layout.
    advantages = torch.where(real, advantages, zeros)
    returns = advantages + values
    return advantages, returns


# --------------------------------------------------------------------------------------------
# PPO: losses
# --------------------------------------------------------------------------------------------


def policy_loss(
    new_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""PPO clipped policy loss (chapter section "PPO 训练细节及超参数").

    .. math::
        L_{policy} = \frac{1}{T}\sum \max\left(-\rho_t \hat{A}_t,\;
            -\mathrm{clip}(\rho_t, 1-\epsilon, 1+\epsilon)\,\hat{A}_t\right),
        \qquad \rho_t = \frac{\pi_\theta(a_t|s_t)}{\pi_{\theta_{old}}(a_t|s_t)}

    averaged over real tokens (`masked_mean`). Returns `(loss, clipfrac, approxkl)`: `clipfrac`
    is the share of real tokens where the clipped term won (`pg_losses2 > pg_losses` in the
    chapter's code) and `approxkl` is :math:`\tfrac12 \mathbb{E}[(\log\rho)^2]`; both are
    detached diagnostics.
    """
    real = mask.bool()
    # Zero the log-ratio (and advantage) on padding before exp: a garbage padding log-prob could
    # overflow exp to inf, and even though masked_mean ignores that position, backprop would
    # multiply its zero gradient by inf and turn every gradient into NaN.
    log_ratio = torch.where(real, new_logprobs - old_logprobs, torch.zeros_like(new_logprobs))
    advantages = torch.where(real, advantages, torch.zeros_like(advantages))
    ratio = torch.exp(log_ratio)
    pg_losses = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(pg_losses, pg_losses2), mask)
    with torch.no_grad():
        clipfrac = masked_mean((pg_losses2 > pg_losses).to(ratio.dtype), mask)
        approxkl = 0.5 * masked_mean(log_ratio**2, mask)
    return loss, clipfrac, approxkl


def value_loss(
    vpred: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""PPO clipped value loss (chapter section "PPO 训练细节及超参数", its TRL excerpt).

    .. math::
        L_V = \tfrac12\,\mathbb{E}\left[\max\left((V - R)^2,\;
            (\mathrm{clip}(V, V_{old} - c, V_{old} + c) - R)^2\right)\right]

    averaged over real tokens. Clipping keeps the value model from moving further than
    `cliprange_value` from the rollout's values in one PPO epoch. Returns `(loss, clipfrac)`,
    `clipfrac` (detached) being the share of real tokens where the clipped term was larger.
    """
    real = mask.bool()
    # The chapter's TRL excerpt masked_fills vpred with 0 on padding first; doing it to all three
    # inputs also keeps an inf/NaN padding value from reaching the backward pass as 0 * inf.
    vpred = torch.where(real, vpred, torch.zeros_like(vpred))
    old_values = torch.where(real, old_values, torch.zeros_like(old_values))
    returns = torch.where(real, returns, torch.zeros_like(returns))
    vpredclipped = torch.clamp(vpred, old_values - cliprange_value, old_values + cliprange_value)
    vf_losses1 = (vpred - returns) ** 2
    vf_losses2 = (vpredclipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(vf_losses1, vf_losses2), mask)
    with torch.no_grad():
        clipfrac = masked_mean((vf_losses2 > vf_losses1).to(vpred.dtype), mask)
    return loss, clipfrac


# --------------------------------------------------------------------------------------------
# Logits, log-probabilities and EOS handling
# --------------------------------------------------------------------------------------------


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    r"""Entropy of softmax(logits) at each position, over the last (vocabulary) dimension.

    .. math:: H = \log\sum_j e^{z_j} - \sum_j p_j z_j

    (the same as :math:`-\sum p \log p`, without materialising :math:`\log p`). Logged by PPO and
    GRPO to watch for collapse (arXiv 2403.17031). Tokens with probability 0 (e.g. logits of
    -inf from a vocabulary mask) contribute 0 instead of 0 * -inf = NaN.
    """
    probs = torch.softmax(logits, dim=-1)
    safe_logits = logits.masked_fill(probs == 0, 0.0)
    return torch.logsumexp(logits, dim=-1) - (probs * safe_logits).sum(dim=-1)


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    r"""Log-probability of each label under softmax(logits / (temperature + 1e-7)).

    `logits` is `[..., V]`, `labels` is `[...]` (token ids); returns `[...]`. The divisor matches
    the chapter's generation config, `temperature=(args.temperature + 1e-7)` (section "PPO
    训练细节及超参数"): PPO's ratios and KL must be computed on the distribution the responses
    were sampled from (arXiv 2403.17031, "dividing logits by sampling temperature").

    .. math:: \log p(y) = z_y / \tau - \log\sum_j e^{z_j / \tau}
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        # Half-precision log-sum-exp over a 150k vocabulary loses several digits, which then
        # show up as a spurious ratio != 1 between two identical policies.
        logits = logits.float()
    scaled = logits / (temperature + _TEMPERATURE_EPS)
    # Gather-minus-logsumexp rather than log_softmax + gather: never holds a second [.., V]
    # tensor of log-probabilities.
    picked = torch.gather(scaled, -1, labels.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(scaled, dim=-1)


def first_true_indices(bools: torch.Tensor) -> torch.Tensor:
    """Index of the first True along the last dimension, or that dimension's length if none.

    Used to find each response's first EOS (everything after it is truncated, arXiv 2403.17031)
    and, on a flipped mask, each response's last real token.
    """
    length = bools.size(-1)
    if length == 0:
        # min() over an empty dimension raises; "no True" in a row of length 0 is index 0.
        return torch.zeros(bools.shape[:-1], dtype=torch.long, device=bools.device)
    positions = torch.arange(length, device=bools.device).expand_as(bools)
    # Rows without a True see only `length`, so the min is the "not found" answer.
    candidates = torch.where(bools.bool(), positions, torch.full_like(positions, length))
    return candidates.min(dim=-1).values


def truncate_after_eos(
    responses: torch.Tensor, eos_token_id: int, pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep each response up to and including its first EOS; pad everything after it.

    Sampling runs on for a whole batch until the longest answer stops, so tokens after a row's
    first EOS are not part of its answer and must not be scored or trained on (arXiv 2403.17031;
    the chapter's `missing_eos_penalty` relies on knowing which answers ended). Works when
    `pad_token_id == eos_token_id` too. Returns `(responses, mask)`; the mask is a long tensor of
    0/1, the dtype of Hugging Face attention masks, so it can be concatenated with the prompt's.
    """
    first_eos = first_true_indices(responses == eos_token_id)
    positions = torch.arange(responses.size(-1), device=responses.device).expand_as(responses)
    keep = positions <= first_eos.unsqueeze(-1)
    truncated = torch.where(keep, responses, torch.full_like(responses, pad_token_id))
    return truncated, keep.long()
