"""Startup, side by side in one run: `alignctl --help` vs `trl --help`, `alignctl dpo --help` vs `trl dpo --help`.

The four commands run in turn, N rounds, order rotated each round so drift on a shared machine
hits every side alike; the figures are medians and the ratios of medians. Targets:
`alignctl --help` <= 1.5x `trl --help`; `alignctl dpo --help` < 0.1x `trl dpo --help`.
"""

from __future__ import annotations

import statistics

from common import VENV_BIN, timed

N = 9
COMMANDS = {
    "alignctl --help": [str(VENV_BIN / "alignctl"), "--help"],
    "trl --help": [str(VENV_BIN / "trl"), "--help"],
    "alignctl dpo --help": [str(VENV_BIN / "alignctl"), "dpo", "--help"],
    "trl dpo --help": [str(VENV_BIN / "trl"), "dpo", "--help"],
}


def main() -> list[dict]:
    names = list(COMMANDS)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(N):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            times[name].append(timed(COMMANDS[name])["seconds"])
    med = {n: statistics.median(t) for n, t in times.items()}
    rows = [{"what": n, "median_s": med[n], "min_s": min(times[n]), "max_s": max(times[n])} for n in names]
    rows[0].update(ratio=med["alignctl --help"] / med["trl --help"], target="<= 1.5x trl --help")
    rows[2].update(ratio=med["alignctl dpo --help"] / med["trl dpo --help"], target="< 0.1x trl dpo --help")
    return rows
