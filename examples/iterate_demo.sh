#!/usr/bin/env bash
# Two rounds of the chapter's iterative training ("多轮迭代训练") on the demo task, on a CPU:
# each round samples 4 answers per training question from the current model, labels best vs
# worst with rule:qa and trains DPO on them from the current model (preset iterate-cpu: dpo-cpu
# inside, each round on its own pairs; --set accumulate=true adds the earlier rounds' pairs), then
# evaluates on the 40 held-out questions with the strict task reward against the previous round
# and against the base model. Measured: docs/performance.md ("iterate, 2 rounds").
#
#   bash examples/iterate_demo.sh [OUT]      # default OUT=runs/iterate-demo; rerun: up to date
set -euo pipefail

QA="$(cd "$(dirname "$0")" && pwd)/qa"
OUT="${1:-runs/iterate-demo}"

alignctl iterate --prompts "$QA/train-nohint.jsonl" --eval-prompts "$QA/held-nohint.jsonl" \
    --model smollm2-135m --by rule:qa --eval-by rule:qa_strict --preset iterate-cpu -o "$OUT"
alignctl report "$OUT" -o "$OUT/report"
