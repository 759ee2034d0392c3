"""A bare TRL KTO script doing the same work as `alignctl kto` in bench/kto.py (no alignctl code).

python bench/bare/kto_trl.py MODEL_DIR PREFS.jsonl OUT_DIR MAX_STEPS

The preference pairs are unpaired the way TRL documents it (chosen -> label true, rejected ->
false, in file order), which is what `alignctl kto` does with a preference file.
"""

import json
import sys

import torch

torch.set_flush_denormal(True)  # the CPU setting alignctl applies too; without it both crawl

from datasets import Dataset  # noqa: E402
from peft import LoraConfig  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from trl import KTOConfig, KTOTrainer  # noqa: E402

model_dir, prefs, out, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
pairs = [json.loads(line) for line in open(prefs, encoding="utf-8") if line.strip()]
rows = []
for p in pairs:
    rows.append({"prompt": p["prompt"], "completion": p["chosen"], "label": True})
    rows.append({"prompt": p["prompt"], "completion": p["rejected"], "label": False})
tok = AutoTokenizer.from_pretrained(model_dir)
tok.pad_token = tok.pad_token or tok.eos_token
model = AutoModelForCausalLM.from_pretrained(model_dir)
args = KTOConfig(
    output_dir=out,
    beta=0.1,
    learning_rate=2e-4,
    per_device_train_batch_size=4,
    gradient_accumulation_steps=1,
    max_steps=steps,
    optim="adamw_torch",
    warmup_steps=0,
    bf16=False,
    gradient_checkpointing=False,
    max_length=256,
    logging_steps=2,
    save_strategy="no",
    report_to="none",
    use_cpu=True,
    seed=42,
    disable_tqdm=True,
    logging_first_step=True,
)
peft = LoraConfig(r=16, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
trainer = KTOTrainer(
    model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok, peft_config=peft
)
result = trainer.train()
trainer.model.merge_and_unload().save_pretrained(out)
tok.save_pretrained(out)
print(json.dumps({"train_runtime": result.metrics["train_runtime"]}))
