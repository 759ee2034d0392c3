"""alignctl.stats against numbers worked out by hand (derivations in the docstrings).

z = 1.959964, z^2 = 3.841459 (1.959964^2 = 3.8416 - 2*1.96*0.000036 + 0.000036^2 = 3.84145888).
"""

from __future__ import annotations

import math

import pytest

from alignctl.stats import mean_ci, win_rate


def test_win_rate_12_wins_28_ties() -> None:
    """n = 40, W = 12, T = 28, L = 0 -> p = (12 + 14) / 40 = 0.65.

    z^2/n = 0.0960365, so denom = 1.0960365; z^2/(2n) = 0.0480182.
    center = (0.65 + 0.0480182) / 1.0960365 = 0.6980182 / 1.0960365 = 0.6368568.
    p(1-p)/n = 0.2275 / 40 = 0.0056875; z^2/(4n^2) = 3.841459 / 6400 = 0.0006002;
    sqrt(0.0062877) = 0.0792952; half = 1.959964 * 0.0792952 / 1.0960365 = 0.1554157 / 1.0960365
    = 0.1417979. low = 0.4950589, high = 0.7786547.
    """
    scores_a = [1.0] * 12 + [0.5] * 28
    scores_b = [0.0] * 12 + [0.5] * 28
    r = win_rate(scores_a, scores_b)
    assert (r["wins"], r["ties"], r["losses"], r["n"]) == (12, 28, 0, 40)
    assert r["win_rate"] == pytest.approx(0.65)
    assert r["low"] == pytest.approx(0.4950589, abs=1e-5)
    assert r["high"] == pytest.approx(0.7786547, abs=1e-5)


def test_win_rate_all_wins_reaches_one() -> None:
    """n = 10, p = 1: p(1-p) = 0, so half = z * (z / 20) / denom = (z^2/20) / denom and
    high = (1 + z^2/20 + z^2/20) / (1 + z^2/10) = 1 exactly; low = 1 / (1 + z^2/10)
    = 1 / 1.3841459 = 0.7224671. The interval is not the degenerate [1, 1] of the normal
    approximation."""
    r = win_rate([1.0] * 10, [0.0] * 10)
    assert r["win_rate"] == 1.0
    assert r["high"] == pytest.approx(1.0, abs=1e-12)
    assert r["low"] == pytest.approx(0.7224671, abs=1e-5)


def test_win_rate_counts_ties_within_eps_and_losses() -> None:
    """Pairs: (1, 1 + 1e-12) -> |diff| <= 1e-9, tie; (2, 3) -> loss; (3, 2) -> win; (0, 0) ->
    tie. p = (1 + 0.5 * 2) / 4 = 0.5."""
    r = win_rate([1.0, 2.0, 3.0, 0.0], [1.0 + 1e-12, 3.0, 2.0, 0.0])
    assert (r["wins"], r["ties"], r["losses"], r["n"]) == (1, 2, 1, 4)
    assert r["win_rate"] == 0.5
    # Symmetric around 0.5 when p = 0.5: center = (0.5 + z^2/8) / (1 + z^2/4) = 0.5.
    assert r["low"] + r["high"] == pytest.approx(1.0)


def test_win_rate_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="items"):
        win_rate([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="at least one"):
        win_rate([], [])
    with pytest.raises(ValueError, match="finite"):
        win_rate([math.nan], [0.0])


def test_mean_ci_hand_values() -> None:
    """[1, 2, 3, 4]: mean 2.5; squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5, s^2 = 5/3,
    s = 1.2909944; se = s / sqrt(4) = 0.6454972; half = 1.959964 * 0.6454972
    = 1.2909944 - 0.6454972 * 0.040036 = 1.2909944 - 0.0258431 = 1.2651513."""
    mean, half = mean_ci([1.0, 2.0, 3.0, 4.0])
    assert mean == pytest.approx(2.5)
    assert half == pytest.approx(1.2651513, abs=1e-6)


def test_mean_ci_edge_cases() -> None:
    """One value: mean is itself, spread unknown -> NaN half-width. Constant values: 0."""
    mean, half = mean_ci([3.0])
    assert mean == 3.0 and math.isnan(half)
    assert mean_ci([2.0, 2.0, 2.0]) == (2.0, 0.0)
    with pytest.raises(ValueError, match="at least one"):
        mean_ci([])
