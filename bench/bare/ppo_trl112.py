"""TRL 1.12's experimental PPOTrainer doing the work of `alignctl ppo` in bench/ppo.py (no alignctl code).

    bench/.venv-trl112/bin/python bench/bare/ppo_trl112.py MODEL_DIR RM_DIR PROMPTS.jsonl OUT_DIR UPDATES

Runs in its own venv (TRL 1.13+ has no PPOTrainer). The models are set up the way TRL's own
`examples/scripts/ppo/ppo.py` (the chapter's command) sets them up: policy from the SFT model with
a LoRA adapter (so the reference is the adapter-disabled policy), value model and reward model each
loaded from the reward-model dir. No stop token, so every answer is 32 tokens (the same work as
alignctl's side with `stop_token: null`). Writes `OUT_DIR/update_times.json`: the wall-clock
time at the end of each update, for per-update timing.
"""

import json
import sys
import time

import torch

torch.set_flush_denormal(True)  # the CPU setting alignctl applies too; without it both crawl

from datasets import Dataset  # noqa: E402
from peft import LoraConfig  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    TrainerCallback,
)
from trl.experimental.ppo import PPOConfig, PPOTrainer  # noqa: E402

model_dir, rm_dir, prompts, out, updates = sys.argv[1:6]
updates = int(updates)
BATCH, RESPONSE = 4, 32

tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
tok.pad_token = tok.pad_token or tok.eos_token
rows = [json.loads(line) for line in open(prompts, encoding="utf-8") if line.strip()]
ids = [tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False) for r in rows]
dataset = Dataset.from_dict({"input_ids": [tok(t, add_special_tokens=False)["input_ids"] for t in ids]})

policy = AutoModelForCausalLM.from_pretrained(model_dir)
value_model = AutoModelForSequenceClassification.from_pretrained(rm_dir, num_labels=1)
reward_model = AutoModelForSequenceClassification.from_pretrained(rm_dir, num_labels=1)
args = PPOConfig(
    output_dir=out,
    per_device_train_batch_size=BATCH,
    gradient_accumulation_steps=1,
    num_ppo_epochs=1,
    num_mini_batches=1,
    learning_rate=3e-6,
    total_episodes=BATCH * updates,
    response_length=RESPONSE,
    temperature=0.7,
    kl_coef=0.2,
    lam=0.96,
    missing_eos_penalty=1.0,
    stop_token=None,  # every answer is RESPONSE tokens long: both sides do exactly the same work
    local_rollout_forward_batch_size=BATCH,
    num_sample_generations=0,
    gradient_checkpointing=False,
    bf16=False,
    use_cpu=True,
    save_strategy="no",
    report_to="none",
    logging_steps=1,
    disable_tqdm=True,
    seed=42,
)
peft = LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


class Times(TrainerCallback):
    def __init__(self):
        self.ends = []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())


times = Times()
start = time.perf_counter()
trainer = PPOTrainer(
    args=args,
    processing_class=tok,
    model=policy,
    ref_model=None,
    reward_model=reward_model,
    value_model=value_model,
    train_dataset=dataset,
    peft_config=peft,
    callbacks=[times],
)
trainer.train()
trainer.save_model(out)
json.dump({"start": start, "update_ends": times.ends}, open(f"{out}/update_times.json", "w"))
