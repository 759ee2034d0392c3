"""Reward sources: one idea serving `label`, `grpo`, `online-dpo`, `ppo` and `eval`.

See design.md ("One idea of a reward source"): a reward model dir, a rule
(`rules.py`: built-ins or a user's `file.py:func`), a pairwise LLM judge (`judge.py`), or a
human. Nothing heavy is imported here; import the submodule you need.
"""
