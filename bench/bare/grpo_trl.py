"""A bare TRL GRPO script doing the same work as `alignctl grpo` in bench/grpo.py (no alignctl code).

    python bench/bare/grpo_trl.py MODEL_DIR PROMPTS.jsonl OUT_DIR MAX_STEPS

The grpo preset as alignctl runs it on CPU (beta 0.04, temperature 0.9, HF generation, fp32, full
fine-tuning) with the bench's 4 generations x 2 prompts x 32 new tokens; reward: -words/100.
"""

import json
import sys

import torch

torch.set_flush_denormal(True)  # the CPU setting alignctl applies too

from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402


def length(prompts, completions, **kwargs):
    return [-len(c[-1]["content"].split()) / 100 for c in completions]


model_dir, prompts, out, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rows = [json.loads(line) for line in open(prompts, encoding="utf-8") if line.strip()]
tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
tok.pad_token = tok.pad_token or tok.eos_token
model = AutoModelForCausalLM.from_pretrained(model_dir)
args = GRPOConfig(
    output_dir=out,
    num_generations=4,
    per_device_train_batch_size=8,
    max_completion_length=32,
    temperature=0.9,
    beta=0.04,
    learning_rate=1e-6,
    max_steps=steps,
    optim="adamw_torch",
    bf16=False,
    gradient_checkpointing=False,
    logging_steps=1,
    save_strategy="no",
    report_to="none",
    use_cpu=True,
    seed=42,
    disable_tqdm=True,
    logging_first_step=True,
)
trainer = GRPOTrainer(
    model=model, reward_funcs=length, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok
)
result = trainer.train()
trainer.model.save_pretrained(out)
tok.save_pretrained(out)
print(json.dumps({"train_runtime": result.metrics["train_runtime"]}))
