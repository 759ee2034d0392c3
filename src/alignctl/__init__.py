"""alignctl: the LLM alignment pipeline (collect, label, train-rm, dpo, grpo, online-dpo, ppo, iterate)
as one command-line toolkit."""

__version__ = "0.1.0"
