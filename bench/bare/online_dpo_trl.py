"""A bare TRL Online DPO script doing the same work as `alignctl online-dpo` in bench/online_dpo.py.

    python bench/bare/online_dpo_trl.py MODEL_DIR PROMPTS.jsonl OUT_DIR MAX_STEPS

The online-dpo preset as alignctl runs it on CPU (beta 0.1, gradient checkpointing off so
generation keeps the KV cache, fp32, full fine-tuning) with 4 prompts x 2 samples x 32 new tokens;
reward: -words/100.
"""

import json
import os
import sys

import torch

torch.set_flush_denormal(True)  # the CPU setting alignctl applies too
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer  # noqa: E402


def length(prompts, completions, **kwargs):
    return [-len(c[-1]["content"].split()) / 100 for c in completions]


model_dir, prompts, out, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rows = [json.loads(line) for line in open(prompts, encoding="utf-8") if line.strip()]
tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
tok.pad_token = tok.pad_token or tok.eos_token
model = AutoModelForCausalLM.from_pretrained(model_dir)
gc = len(sys.argv) > 5 and sys.argv[5] == "gc"
args = OnlineDPOConfig(
    output_dir=out,
    beta=0.1,
    max_new_tokens=32,
    per_device_train_batch_size=4,
    temperature=0.9,
    learning_rate=5e-7,
    max_steps=steps,
    optim="adamw_torch",
    bf16=False,
    gradient_checkpointing=gc,
    logging_steps=1,
    save_strategy="no",
    report_to="none",
    use_cpu=True,
    seed=42,
    disable_tqdm=True,
    logging_first_step=True,
)
trainer = OnlineDPOTrainer(
    model=model, reward_funcs=length, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok
)
result = trainer.train()
trainer.model.save_pretrained(out)
tok.save_pretrained(out)
print(json.dumps({"train_runtime": result.metrics["train_runtime"]}))
