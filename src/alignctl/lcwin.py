r"""Length-controlled win rate: what the win rate would be if both answers were equally long.

A judge or a rule with a length term (the demo's `qa` rules reward brevity) can hand a model a
high win rate for being shorter alone. AlpacaEval 2's answer (Dubois et al. 2024, "Length-Controlled
AlpacaEval", arXiv 2404.04475) is to explain each verdict by a quality term and a length
term, then read off the quality term alone. Per prompt i, with target :math:`y_i` (win 1, tie 1/2,
loss 0) and :math:`d_i` = model words - baseline words:

.. math::
    P(\text{model wins } i) = \sigma(\theta + \phi\, \tanh(d_i / s)), \qquad
    s = \operatorname{std}(d), \qquad \text{LC win rate} = \sigma(\theta)

:math:`s` only scales (no centring, as in the paper): zero must keep meaning "equally long", so
:math:`\sigma(\theta)` is the win probability at equal length. tanh bounds the feature, so one
answer ten times longer does not dominate the fit. :math:`\phi` (`length_coef`) says how much the
source rewards length: below 0, shorter answers win (logit change at a difference of one s:
:math:`\phi \tanh 1 \approx 0.76\phi`). The paper's GLM also has a per-instruction difficulty term
fitted across many models; with two models and one verdict per prompt we keep the intercept and the
length term. Ties enter as a fractional target 1/2 (quasi-likelihood: the same Bernoulli
log-likelihood with y = 0.5), so pointwise and pairwise evals are fitted alike.

A limit to keep in mind: when length decides every verdict exactly (each win shorter, each loss
longer) the fitted curve tends to a step, and its value at zero is left to the ridge penalty and
the balance of wins and losses (sigma(ln(W/L) / 2) in the limit, for two length gaps): below the
raw rate, with a large negative `length_coef`, but not exactly one half.

numpy (a dependency of transformers) rather than plain Python as in `stats.py`: the interval refits
the model on 1000 bootstrap resamples, which numpy does together in one array per Newton step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = ["L2", "RESAMPLES", "SEED", "fit_length_logistic", "length_controlled_win_rate", "length_feature"]

# A small ridge penalty on both coefficients keeps the fit finite when the verdicts are separable:
# all wins (the intercept alone would run to +inf) or every win shorter and every loss longer (the
# length coefficient would). Its pull is tiny next to n prompts' worth of log-likelihood: with equal
# lengths the optimum satisfies n (p_hat - sigma(theta)) = L2 * theta, a shift of L2 * |theta| / n.
L2 = 1e-3
RESAMPLES = 1000
SEED = 0
_TARGETS = {"win": 1.0, "tie": 0.5, "loss": 0.0}


def _target(outcome: str | float, i: int) -> float:
    if isinstance(outcome, str):
        if outcome not in _TARGETS:
            raise ValueError(f"outcomes[{i}] is {outcome!r}; expected 'win', 'tie' or 'loss'")
        return _TARGETS[outcome]
    y = float(outcome)
    if not 0.0 <= y <= 1.0:  # also rejects NaN
        raise ValueError(f"outcomes[{i}] is {outcome!r}; a preference target lies in [0, 1]")
    return y


def length_feature(
    model_lengths: Sequence[float], baseline_lengths: Sequence[float]
) -> tuple[list[float], float] | None:
    """`(tanh(d_i / s) per prompt, s)` with d = model - baseline and s their sample std (n - 1).

    All differences zero: the features are all 0 (nothing for length to explain), s = 0.
    None when the differences are all equal but not zero (or n = 1 with d != 0): length and quality
    move together on every prompt and no fit can tell them apart.
    """
    d = [float(m) - float(b) for m, b in zip(model_lengths, baseline_lengths, strict=True)]
    n = len(d)
    mean = math.fsum(d) / n
    s = math.sqrt(math.fsum((x - mean) ** 2 for x in d) / (n - 1)) if n > 1 else 0.0
    if s == 0.0:
        return ([0.0] * n, 0.0) if all(x == 0.0 for x in d) else None
    return [math.tanh(x / s) for x in d], s


def fit_length_logistic(
    features: np.ndarray,
    targets: np.ndarray,
    weights: np.ndarray,
    l2: float = L2,
    start: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Maximise :math:`\sum_i w_{ri}[y_i z_{ri} - \log(1 + e^{z_{ri}})] - \tfrac{\lambda}{2}(\theta_r^2 + \phi_r^2)`,
    :math:`z_{ri} = \theta_r + \phi_r f_i`, for every row r of `weights` at once (numpy arrays:
    features and targets shape (n,), weights (R, n)); returns `(theta, phi)`, each shape (R,).

    Newton's method on the two coefficients (IRLS), from `start` or 0, with step halving so the
    penalised objective never rises; it is strictly concave (the ridge term), so this converges
    to the one optimum, separable data included.
    """
    import numpy as np

    f, y, w = features, targets, weights
    rows = w.shape[0]
    theta = np.zeros(rows) if start is None else np.full(rows, start[0], dtype=float)
    phi = np.zeros(rows) if start is None else np.full(rows, start[1], dtype=float)

    def loss(t, p):  # the negative penalised log-likelihood, per row
        z = t[:, None] + p[:, None] * f
        return (w * (np.logaddexp(0.0, z) - y * z)).sum(axis=1) + 0.5 * l2 * (t * t + p * p)

    current = loss(theta, phi)
    for _ in range(100):
        z = theta[:, None] + phi[:, None] * f
        prob = 0.5 * (1.0 + np.tanh(0.5 * z))  # sigmoid without overflow
        resid, curv = w * (y - prob), w * prob * (1.0 - prob)
        g_t, g_p = resid.sum(axis=1) - l2 * theta, resid @ f - l2 * phi
        h_tt, h_tp, h_pp = curv.sum(axis=1) + l2, curv @ f, curv @ (f * f) + l2
        det = h_tt * h_pp - h_tp * h_tp
        step_t, step_p = (h_pp * g_t - h_tp * g_p) / det, (h_tt * g_p - h_tp * g_t) / det
        size = np.ones(rows)
        new_t, new_p = theta + step_t, phi + step_p
        new = loss(new_t, new_p)
        for _ in range(60):
            worse = new > current + 1e-12 * np.abs(current)
            if not worse.any():
                break
            size = np.where(worse, size / 2, size)
            new_t, new_p = theta + size * step_t, phi + size * step_p
            new = loss(new_t, new_p)
        moved = np.maximum(np.abs(new_t - theta), np.abs(new_p - phi)).max()
        theta, phi, current = new_t, new_p, new
        if moved < 1e-10:
            break
    return theta, phi


def length_controlled_win_rate(
    outcomes: Sequence[str | float],
    model_lengths: Sequence[float],
    baseline_lengths: Sequence[float],
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    l2: float = L2,
) -> dict[str, Any]:
    """The length-controlled win rate (module docstring) with a bootstrap 95% interval.

    `outcomes`: "win" / "tie" / "loss" per prompt, for the model (or preference targets in
    [0, 1]); lengths in words. The interval: `resamples` resamples of the prompts (seeded, so a
    rerun gives the same numbers), each refitted with the features fixed at the full sample's s,
    and the 2.5th and 97.5th percentiles of their sigma(theta).

    Returns `{"win_rate", "ci": [low, high], "length_coef", "length_scale"}` (length_scale: s,
    in words). With equal lengths throughout, win_rate is (wins + ties/2) / n, up to the ridge
    penalty's shift (`L2`). When every prompt has the same non-zero difference, the split between
    length and quality is not identifiable: win_rate, ci and length_coef are None and `note` says why.
    """
    n = len(outcomes)
    if n == 0:
        raise ValueError("length_controlled_win_rate needs at least one outcome")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not l2 > 0:  # without it an all-zero length feature leaves the Newton system singular
        raise ValueError(f"l2 must be > 0, got {l2}")
    if len(model_lengths) != n or len(baseline_lengths) != n:
        raise ValueError(f"{n} outcomes but {len(model_lengths)} model and {len(baseline_lengths)} baseline lengths")
    for name, lengths in (("model_lengths", model_lengths), ("baseline_lengths", baseline_lengths)):
        for i, v in enumerate(lengths):
            if not math.isfinite(v):
                raise ValueError(f"{name}[{i}] is {v!r}; lengths must be finite numbers")
    targets = [_target(o, i) for i, o in enumerate(outcomes)]
    feature = length_feature(model_lengths, baseline_lengths)
    if feature is None:
        note = "every answer pair differs in length by the same amount: length and quality cannot be told apart"
        return {"win_rate": None, "ci": None, "length_coef": None, "length_scale": 0.0, "note": note}
    import numpy as np

    f, y = np.array(feature[0]), np.array(targets)
    theta, phi = fit_length_logistic(f, y, np.ones((1, n)), l2)
    start = (float(theta[0]), float(phi[0]))
    rng = np.random.default_rng(seed)
    rates = []
    chunk = max(1, 2_000_000 // n)  # bounds the (resamples, n) arrays at a few tens of MB
    for begin in range(0, resamples, chunk):
        rows = min(chunk, resamples - begin)
        picks = rng.integers(0, n, size=(rows, n))
        counts = np.stack([np.bincount(p, minlength=n) for p in picks]).astype(float)
        t, _ = fit_length_logistic(f, y, counts, l2, start)
        rates.append(0.5 * (1.0 + np.tanh(0.5 * t)))
    low, high = np.percentile(np.concatenate(rates), [2.5, 97.5])
    return {
        "win_rate": 1.0 / (1.0 + math.exp(-start[0])),
        "ci": [float(low), float(high)],
        "length_coef": start[1],
        "length_scale": feature[1],
    }
