#!/usr/bin/env bash
# The demo's pipeline as a user writes it: one alignctl command per stage, files in between.
#
#   bash examples/pipeline.sh [OUT]        # default OUT=runs/pipeline
#
# Every stage checks its inputs and settings against the manifest of its output: rerun this
# script and finished stages print "up to date" and do no work; edit a file or a flag and only
# the stages downstream of the change run again (pass --overwrite to those to replace them).
set -euo pipefail

QA="$(cd "$(dirname "$0")" && pwd)/qa"
OUT="${1:-runs/pipeline}"
MODEL="${MODEL:-smollm2-135m}"
mkdir -p "$OUT"

# 1. sample 4 answers per training question from the base model (the chapter: a higher temperature)
alignctl collect --prompts "$QA/train-nohint.jsonl" --model "$MODEL" \
    --num-samples 4 --temperature 1.0 --max-new-tokens 48 -o "$OUT/candidates.jsonl"

# 2. best vs worst answer of each question by the task's graded rule
alignctl label --candidates "$OUT/candidates.jsonl" --by rule:qa -o "$OUT/prefs.jsonl"

# 3. a reward model on the pairs, 20% held out to measure it
alignctl train-rm --data "$OUT/prefs.jsonl" --model "$MODEL" --eval-split 0.2 \
    --lr 1e-4 --epochs 2 --max-length 256 --set logging_steps=2 -o "$OUT/rm"

# 4. DPO from the base model with the CPU preset (lr 2e-4, 3 epochs, LoRA r16/alpha16, beta 0.1)
alignctl dpo --data "$OUT/prefs.jsonl" --model "$MODEL" --preset dpo-cpu -o "$OUT/dpo"

# 5. the trained model against the base model on held-out questions, greedy, strict task reward
alignctl eval --model "$OUT/dpo" --baseline "$MODEL" --prompts "$QA/held-nohint.jsonl" \
    --by rule:qa_strict --max-new-tokens 64 -o "$OUT/eval"

# 6. plots of the training logs
alignctl report "$OUT/dpo" "$OUT/rm" -o "$OUT/report"
