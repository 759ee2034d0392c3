"""`alignctl --help` wall time (median of 5) vs `trl --help`. Target (issue 2): <= 0.5 s."""

from __future__ import annotations

import statistics

from common import VENV_BIN, timed

N = 5


def main() -> list[dict]:
    rows = []
    for what, cmd in [
        ("alignctl --help", [str(VENV_BIN / "alignctl"), "--help"]),
        ("alignctl dpo --help", [str(VENV_BIN / "alignctl"), "dpo", "--help"]),
        ("trl --help", [str(VENV_BIN / "trl"), "--help"]),
        ("trl dpo --help", [str(VENV_BIN / "trl"), "dpo", "--help"]),
    ]:
        times = [timed(cmd)["seconds"] for _ in range(N)]
        rows.append({"what": what, "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)})
    rows[0]["target"] = "<= 0.5 s"
    return rows
