"""Plain-Python statistics for `eval`: pairwise win rates and means with 95% intervals.

No torch and no numpy: `eval` reports on a few dozen to a few thousand comparisons, and these
are closed-form formulas. The chapter reports Online DPO as "60% 更好，30% 打平" in a pairwise
comparison (section "Online DPO 优化"); `win_rate` gives that kind of number with an interval,
so a 40-prompt eval is not read as more certain than it is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["Z_95", "mean_ci", "win_rate"]

# Two-sided 95% quantile of the standard normal distribution.
Z_95 = 1.959964


def _check_finite(values: Sequence[float], name: str) -> None:
    for i, v in enumerate(values):
        if not math.isfinite(v):
            # A NaN score compares False both ways and would be counted silently as a loss.
            raise ValueError(f"{name}[{i}] is {v!r}; scores must be finite numbers")


def win_rate(scores_a: Sequence[float], scores_b: Sequence[float], tie_eps: float = 1e-9) -> dict[str, float | int]:
    r"""Win rate of A over B on paired scores, with a Wilson 95% interval.

    Pair i is a win for A if `scores_a[i] - scores_b[i] > tie_eps`, a loss if it is below
    `-tie_eps`, else a tie. Ties count half, so the rate is :math:`p = (W + T/2) / n`: 0.5 means
    "no better, no worse". The interval is Wilson's score interval on p with z = 1.959964:

    .. math::
        \frac{p + \frac{z^2}{2n} \pm z\sqrt{\frac{p(1-p)}{n} + \frac{z^2}{4n^2}}}{1 + \frac{z^2}{n}}

    Wilson rather than the normal approximation because eval sets are small and win rates
    often sit near 0 or 1, where p ± z·sqrt(p(1-p)/n) leaves [0, 1] or collapses to a point.
    (Counting ties as half a win makes p a slightly less variable quantity than a pure
    proportion, so the interval is, if anything, a little conservative.)

    Returns `{"wins", "ties", "losses", "n", "win_rate", "low", "high"}`.
    """
    if len(scores_a) != len(scores_b):
        raise ValueError(f"scores_a has {len(scores_a)} items but scores_b has {len(scores_b)}")
    n = len(scores_a)
    if n == 0:
        raise ValueError("win_rate needs at least one pair of scores")
    _check_finite(scores_a, "scores_a")
    _check_finite(scores_b, "scores_b")
    wins = ties = losses = 0
    for a, b in zip(scores_a, scores_b, strict=True):
        diff = a - b
        if diff > tie_eps:
            wins += 1
        elif diff < -tie_eps:
            losses += 1
        else:
            ties += 1
    p = (wins + 0.5 * ties) / n
    z2 = Z_95 * Z_95
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = Z_95 * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n)) / denom
    return {
        "wins": wins,
        "ties": ties,
        "losses": losses,
        "n": n,
        "win_rate": p,
        # Clamped only against float rounding: mathematically Wilson stays inside [0, 1].
        "low": max(0.0, center - half),
        "high": min(1.0, center + half),
    }


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    r"""Mean and the half-width of its normal-approximation 95% interval.

    .. math:: \bar{x} \pm z \frac{s}{\sqrt{n}}, \qquad s^2 = \frac{1}{n-1}\sum (x_i - \bar{x})^2

    Returns `(mean, half_width)`. With a single value the spread is unknown and the half-width
    is NaN (reported as such rather than as a falsely precise 0).
    """
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    _check_finite(values, "values")
    mean = math.fsum(values) / n
    if n == 1:
        return mean, math.nan
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, Z_95 * math.sqrt(var / n)
