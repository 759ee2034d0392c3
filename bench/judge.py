"""The local judge (`label --by judge:smollm2-135m`): verdicts/s before and after it was batched.

Same judge model (SmolLM2-135M, fp32), same default template, same 3 prompts x 4 answers (6 pairs
per prompt, each asked in both orders: 36 verdicts, one letter each):

- before: what `label` did until now: each verdict a serial greedy generation of up to 16 tokens
  at batch 1, its reply parsed for a letter;
- batched generation: the same generations, all of a prompt's questions in one batch (what a
  custom template, which may ask the judge to reason first, still does);
- after: the verdict read from the next-token scores of "A" and "B" at the first reply position,
  all of a prompt's questions in one forward pass (no decoding).

Model load time is excluded; each figure is the median of REPEATS interleaved runs (BENCH_REPEATS,
default 1: the serial path takes minutes on a loaded 2-core machine). "before" judges the first
prompt only (12 verdicts), the others all three; the rates compare. Target: after >= 10x before.
Also reports how often the two ways agree on the letters of the first prompt.
"""

from __future__ import annotations

import os
import statistics
import time

REPEATS = int(os.environ.get("BENCH_REPEATS", "1"))
PROMPTS = {
    "What is the capital of France?": ["Paris.", "The capital of France is Paris.", "Lyon.", "I do not know."],
    "What is 2 + 2?": ["4", "2 + 2 = 4.", "5", "It depends on what you mean by two."],
    "Name a primary color.": ["Red.", "Blue is a primary color.", "Green... or maybe purple?", "Colors are nice."],
}


def main() -> list[dict]:
    import itertools

    from alignctl import models
    from alignctl.rewards.judge import PairwiseJudge
    from alignctl.rewards.local_chat import LocalChatClient

    torch = models.setup_torch()
    if os.environ.get("BENCH_THREADS"):
        torch.set_num_threads(int(os.environ["BENCH_THREADS"]))
    client = LocalChatClient("smollm2-135m", max_new_tokens=16)
    client._load()
    work = [(p, list(itertools.combinations(answers, 2))) for p, answers in PROMPTS.items()]
    scope = {"before": work[:1], "batched": work, "after": work}
    questions = {k: 2 * sum(len(pairs) for _, pairs in w) for k, w in scope.items()}

    def serial(messages):  # a plain callable: the judge asks it one question at a time, as before
        return client(messages)

    judges = {
        "before": PairwiseJudge(serial, verdict_by="generate"),
        "batched": PairwiseJudge(client, verdict_by="generate"),
        "after": PairwiseJudge(client),
    }
    seconds: dict[str, list[float]] = {k: [] for k in judges}
    letters: dict[str, list] = {}
    for _ in range(REPEATS):
        for name, judge in judges.items():
            t0 = time.perf_counter()
            verdicts = [v for p, pairs in scope[name] for v in judge.judge_pairs(p, pairs)]
            seconds[name].append(time.perf_counter() - t0)
            letters[name] = [v.orders for v in verdicts]
    rate = {k: questions[k] / statistics.median(v) for k, v in seconds.items()}
    first = len(letters["before"])
    same = sum(a == b for a, b in zip(letters["before"], letters["after"][:first], strict=True))
    what = {
        "before": "serial 16-token greedy generation per verdict (batch 1)",
        "batched": "greedy generation, a prompt's verdicts in one batch",
        "after": "next-token scores of A/B, a prompt's verdicts in one forward pass",
    }
    rows = []
    for k in judges:
        row = {"what": what[k], "verdicts": questions[k], "seconds": statistics.median(seconds[k]),
               "verdicts_per_s": rate[k], "vs_before": rate[k] / rate["before"], "threads": torch.get_num_threads(),
               "load_avg": round(os.getloadavg()[0], 1)}  # fmt: skip
        if k == "after":
            row.update(target=">= 10x before", pairs_same_letters_as_before=f"{same} of {first}")
        rows.append(row)
    return rows
