"""Every import from `trl.experimental` lives here, so an API move there is a one-file change.

design.md ("Decisions already taken"): TRL moves experimental trainers between minor releases
(1.13 removed PPO from `trl.experimental.ppo`). TRL is pinned `>=1.16,<1.17` in pyproject.toml;
when the pin moves, this module is the one to check.
"""

from __future__ import annotations


def online_dpo() -> tuple[type, type]:
    """`(OnlineDPOConfig, OnlineDPOTrainer)` from `trl.experimental.online_dpo` (TRL 1.16)."""
    import os

    # the one acknowledged use of trl.experimental: its import-time warning says what this module is for
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    return OnlineDPOConfig, OnlineDPOTrainer
