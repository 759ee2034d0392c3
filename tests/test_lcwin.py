"""alignctl.lcwin (length-controlled win rate, arXiv 2404.04475) against numbers worked out by hand.

The fit is sigma(theta + phi * tanh(d / s)); the LC win rate is sigma(theta). The ridge penalty
L2 = 1e-3 moves the optimum by about L2 * |coefficient| / curvature, which bounds the tolerances.
"""

from __future__ import annotations

import math

import pytest

from alignctl.lcwin import length_controlled_win_rate, length_feature


def test_equal_lengths_give_the_raw_rate_with_ties_as_half() -> None:
    """W, W, T, L, W at equal lengths: every feature is 0, so only theta is fitted, and its
    optimum solves n (p_hat - sigma(theta)) = L2 * theta with p_hat = 3.5 / 5 = 0.7.
    theta ~ logit(0.7) = ln(7/3) = 0.847298, so sigma(theta) = 0.7 - 1e-3 * 0.847298 / 5
    = 0.7 - 0.000169 = 0.699831 (the second-order change is below 1e-6)."""
    r = length_controlled_win_rate(["win", "win", "tie", "loss", "win"], [10] * 5, [10] * 5)
    assert r["win_rate"] == pytest.approx(0.699831, abs=1e-6)
    assert r["length_coef"] == 0.0 and r["length_scale"] == 0.0
    low, high = r["ci"]
    assert 0.0 < low < r["win_rate"] < high < 1.0
    # numeric targets are the same thing as the words
    assert length_controlled_win_rate([1, 1, 0.5, 0, 1], [10] * 5, [10] * 5) == r


def _two_groups():
    """16 prompts where the model is 4 words shorter (12 wins, 4 losses) and 4 where it is 4
    words longer (1 win, 3 losses): raw win rate 13 / 20 = 0.65."""
    outcomes = ["win"] * 12 + ["loss"] * 4 + ["win"] + ["loss"] * 3
    return outcomes, [6] * 16 + [14] * 4, [10] * 20


def test_a_win_rate_explained_by_length_controls_to_one_half() -> None:
    """The feature takes two values, -F and +F, so the model is saturated: each group's fitted
    probability is its observed rate. sigma(theta - phi F) = 12/16 = 0.75 and
    sigma(theta + phi F) = 1/4 = 0.25 give theta = (ln 3 - ln 3) / 2 = 0 (LC = 0.5) and
    phi = -ln 3 / F. s: mean d = (16 * -4 + 4 * 4) / 20 = -2.4; squared deviations
    16 * 1.6^2 + 4 * 6.4^2 = 40.96 + 163.84 = 204.8; s = sqrt(204.8 / 19) = 3.283131.
    F = tanh(4 / 3.283131) = tanh(1.218349) = (11.43508 - 1) / (11.43508 + 1) = 0.839164;
    phi = -1.098612 / 0.839164 = -1.309176 (the ridge pulls it about 1e-3 toward 0)."""
    outcomes, model_len, base_len = _two_groups()
    r = length_controlled_win_rate(outcomes, model_len, base_len)
    assert r["length_scale"] == pytest.approx(3.283131, abs=1e-6)
    assert r["win_rate"] == pytest.approx(0.5, abs=1e-3)
    assert r["length_coef"] == pytest.approx(-1.309176, abs=2e-3)
    low, high = r["ci"]
    assert low < 0.5 < high


def test_swapping_model_and_baseline_mirrors_the_result() -> None:
    """Swapping the sides negates d (so the feature) and turns y into 1 - y: theta -> -theta with
    phi unchanged, hence LC -> 1 - LC; the same seed draws the same resamples, so the interval
    mirrors too (percentiles 2.5 and 97.5 of 1000 are at mirrored positions)."""
    outcomes = ["win", "win", "loss", "tie", "win", "loss", "win", "win", "tie", "loss", "win", "win"]
    model_len = [3, 9, 20, 7, 4, 15, 6, 12, 8, 30, 5, 9]
    base_len = [10, 11, 8, 7, 12, 9, 10, 10, 13, 12, 6, 4]
    flipped = [{"win": "loss", "loss": "win", "tie": "tie"}[o] for o in outcomes]
    a = length_controlled_win_rate(outcomes, model_len, base_len)
    b = length_controlled_win_rate(flipped, base_len, model_len)
    assert b["win_rate"] == pytest.approx(1 - a["win_rate"], abs=1e-9)
    assert b["length_coef"] == pytest.approx(a["length_coef"], abs=1e-9)
    assert b["ci"] == pytest.approx([1 - a["ci"][1], 1 - a["ci"][0]], abs=1e-9)
    assert a["length_coef"] < 0  # in these rows the shorter answer usually wins


def test_every_win_shorter_every_loss_longer() -> None:
    """8 wins where the model is 5 words shorter, 2 losses where it is 5 longer: raw 0.8, and
    the verdicts are separable by length. Without the penalty phi runs to -inf; along that path
    the loss is about 8 e^{-(theta + m)} + 2 e^{-(m - theta)} (m = |phi| F), smallest at
    8 e^{-theta} = 2 e^{theta}, theta = ln(4) / 2: LC -> sigma(ln 2) = 2/3. The penalty stops
    phi at a finite value, which leaves LC a little below 2/3, well under the raw 0.8."""
    outcomes = ["win"] * 8 + ["loss"] * 2
    r = length_controlled_win_rate(outcomes, [5] * 8 + [15] * 2, [10] * 10)
    assert 0.6 < r["win_rate"] < 2 / 3
    assert r["length_coef"] < -5  # large: length alone decides every verdict
    assert all(math.isfinite(x) for x in r["ci"])


def test_all_wins_stay_finite() -> None:
    """10 wins, equal lengths: theta solves 10 (1 - sigma(theta)) = 1e-3 theta, i.e.
    10 / (1 + e^theta) = 1e-3 theta. theta = 7.2311: e^7.2311 = 1381.9, 10 / 1382.9 = 0.0072312
    = 1e-3 * 7.2311. LC = 1 - 0.00072312 = 0.999277, not the infinite logit of an unpenalised fit."""
    r = length_controlled_win_rate(["win"] * 10, [7] * 10, [7] * 10)
    assert r["win_rate"] == pytest.approx(0.999277, abs=2e-6)
    assert r["ci"] == pytest.approx([r["win_rate"]] * 2)  # every resample is all wins


def test_deterministic_and_seeded() -> None:
    outcomes, model_len, base_len = _two_groups()
    a = length_controlled_win_rate(outcomes, model_len, base_len)
    assert length_controlled_win_rate(outcomes, model_len, base_len) == a
    other = length_controlled_win_rate(outcomes, model_len, base_len, seed=1)
    assert other["win_rate"] == a["win_rate"] and other["ci"] != a["ci"]


def test_same_nonzero_gap_everywhere_is_not_identifiable() -> None:
    """Every model answer 3 words shorter: tanh(d / s) is the same on every prompt (s = 0), so the
    length term and the intercept are one parameter. No number, and a note saying why."""
    assert length_feature([7, 7, 7], [10, 10, 10]) is None
    assert length_feature([10], [10]) == ([0.0], 0.0)
    r = length_controlled_win_rate(["win", "win", "loss"], [7, 7, 7], [10, 10, 10])
    assert r["win_rate"] is None and r["ci"] is None and r["length_coef"] is None
    assert "cannot be told apart" in r["note"]


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one"):
        length_controlled_win_rate([], [], [])
    with pytest.raises(ValueError, match="lengths"):
        length_controlled_win_rate(["win"], [1, 2], [1])
    with pytest.raises(ValueError, match="'draw'"):
        length_controlled_win_rate(["draw"], [1], [1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        length_controlled_win_rate([1.5], [1], [1])
    with pytest.raises(ValueError, match="finite"):
        length_controlled_win_rate(["win"], [math.nan], [1])
    with pytest.raises(ValueError, match="resamples"):
        length_controlled_win_rate(["win"], [1], [1], resamples=0)
