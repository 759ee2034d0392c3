"""The file's chosen answer is the one training comes to prefer, for every stage that trains on
preference pairs (train-rm, dpo, kto, orpo, simpo: every stage whose TRL trainer reads
preferences or unpaired answers, so a new one is tested by being registered).

TRL's own metrics (rewards/accuracies, margins) are computed on the pairs as the stage handed them
over, so a reader that swapped `chosen` and `rejected` still shows them rising. These tests measure
against the file instead: the mean margin of the file's chosen answer over its rejected one,
log π(chosen|prompt) − log π(rejected|prompt) for a policy and r(prompt, chosen) − r(prompt,
rejected) for a reward model, must rise with training; a swapped reader makes it fall.
"""

from __future__ import annotations

import pytest

from alignctl import stages
from tiny import toy_preferences, write_jsonl

LEARN = ["learning_rate=5e-3", "max_steps=16", "warmup_steps=0", "optim=adamw_torch", "logging_steps=4"]
LEARN += ["per_device_train_batch_size=4", "gradient_checkpointing=false", "save_steps=0"]


def _pair_stages() -> list[str]:
    """Every registered stage whose TRL trainer trains on a file of pairs (or of unpaired answers)."""
    out = []
    for name in stages.names():
        trainer = getattr(stages.load(name), "TRAINER", None)
        if trainer is not None and trainer.records in ("preferences", "unpaired"):
            out.append(name)
    return out


def _policy_margin(model_dir, records: list[dict]) -> float:
    """Mean of log π(chosen|prompt) − log π(rejected|prompt), the answer tokens after the prompt's."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()

    def logp(prompt: str, answer: str) -> float:
        p = tok(prompt)["input_ids"]
        ids = torch.tensor([p + tok(answer, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            logits = model(ids).logits[0, :-1].log_softmax(-1)
        picked = logits.gather(1, ids[0, 1:, None])[:, 0]
        return float(picked[len(p) - 1 :].sum())

    margins = [logp(r["prompt"], r["chosen"]) - logp(r["prompt"], r["rejected"]) for r in records]
    return sum(margins) / len(margins)


def _reward_margin(model_dir, records: list[dict], seed: int = 42) -> float:
    """Mean of r(prompt, chosen) − r(prompt, rejected); a causal LM gets the score head train-rm
    starts from (the same seed)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

    tok = AutoTokenizer.from_pretrained(model_dir)
    set_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1).eval()
    model.config.pad_token_id = tok.pad_token_id or tok.eos_token_id

    def score(prompt: str, answer: str) -> float:
        with torch.no_grad():
            return float(model(**tok(prompt + answer, return_tensors="pt")).logits[0, 0])

    margins = [score(r["prompt"], r["chosen"]) - score(r["prompt"], r["rejected"]) for r in records]
    return sum(margins) / len(margins)


@pytest.mark.parametrize("stage", _pair_stages())
def test_training_comes_to_prefer_the_files_chosen_answer(stage, tmp_path, tiny_lm, torch_one_thread):
    records = toy_preferences(16)
    data = write_jsonl(tmp_path / "prefs.jsonl", records)
    module = stages.load(stage)
    margin = _reward_margin if module.TRAINER.trains == "reward model" else _policy_margin
    before = margin(tiny_lm, records)
    out = module.run(stages.resolve(stage, sets=LEARN), data, str(tiny_lm), tmp_path / "out")
    after = margin(out, records)
    print(f"{stage}: margin {before:.2f} -> {after:.2f}")
    assert after > before + 1.0, (stage, before, after)
