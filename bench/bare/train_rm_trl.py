"""A bare TRL reward-model script doing the same work as `alignctl train-rm` in bench/train_rm.py.

    python bench/bare/train_rm_trl.py MODEL_DIR PREFS.jsonl OUT_DIR MAX_STEPS

The chapter's preset as alignctl runs it on CPU: LoRA r32/alpha16 with the score head trained in
full, lr 1e-5, gradient checkpointing off, fp32; batch 4 and max_length 128 from the bench flags.
"""

import json
import sys

import torch

torch.set_flush_denormal(True)  # the CPU setting alignctl applies too

from datasets import Dataset  # noqa: E402
from peft import LoraConfig  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402
from trl import RewardConfig, RewardTrainer  # noqa: E402

model_dir, prefs, out, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rows = [json.loads(line) for line in open(prefs, encoding="utf-8") if line.strip()]
rows = [{k: r[k] for k in ("prompt", "chosen", "rejected") if k in r} for r in rows]
tok = AutoTokenizer.from_pretrained(model_dir)
tok.pad_token = tok.pad_token or tok.eos_token
model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
model.config.pad_token_id = tok.pad_token_id
args = RewardConfig(
    output_dir=out,
    learning_rate=1e-5,
    per_device_train_batch_size=4,
    gradient_accumulation_steps=1,
    max_steps=steps,
    optim="adamw_torch",
    bf16=False,
    gradient_checkpointing=False,
    max_length=128,
    logging_steps=25,
    save_strategy="no",
    report_to="none",
    use_cpu=True,
    seed=42,
    disable_tqdm=True,
    logging_first_step=True,
)
peft = LoraConfig(
    r=32, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear", task_type="SEQ_CLS", modules_to_save=["score"]
)
trainer = RewardTrainer(
    model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok, peft_config=peft
)
result = trainer.train()
trainer.model.merge_and_unload().save_pretrained(out)
tok.save_pretrained(out)
print(json.dumps({"train_runtime": result.metrics["train_runtime"]}))
