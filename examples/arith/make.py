"""Write the arithmetic task's prompt files (seeded, so the files are the same on every machine).

    python examples/arith/make.py          # train.jsonl (200) and held.jsonl (60) next to this file

Each record: {"id", "prompt": [one user message], "answer": "<integer>"}. The questions are short
word problems with two numbers and one operation (add, take away, or groups of); see README.md
for why this shape and what the base model scores on it.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAMES = ["Tom", "Anna", "Li Wei", "Sara", "Omar", "Mia", "Ken", "Lena", "Ravi", "Zoe"]
THINGS = ["apples", "books", "marbles", "stickers", "pencils", "cookies", "coins", "cards"]


def question(rng: random.Random) -> tuple[str, int]:
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    kind = rng.choice(["add", "sub", "mul"])
    if kind == "add":
        a, b = rng.randint(3, 40), rng.randint(3, 40)
        return f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?", a + b
    if kind == "sub":
        a = rng.randint(15, 60)
        b = rng.randint(2, a - 3)
        return f"{name} has {a} {thing} and gives away {b}. How many {thing} are left?", a - b
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    return f"{name} has {a} bags with {b} {thing} in each bag. How many {thing} does {name} have?", a * b


def write(path: Path, n: int, seed: int, prefix: str, avoid: set[str]) -> set[str]:
    """`n` distinct questions, none of them in `avoid` (held-out questions never seen in training)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    with open(path, "w", encoding="utf-8") as fh:
        while len(seen) < n:
            text, value = question(rng)
            if text in seen or text in avoid:
                continue
            row = {"id": f"{prefix}{len(seen)}", "prompt": [{"role": "user", "content": text}], "answer": str(value)}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            seen.add(text)
    return seen


def main() -> int:
    train = write(HERE / "train.jsonl", 200, seed=1, prefix="t", avoid=set())
    write(HERE / "held.jsonl", 60, seed=2, prefix="h", avoid=train)
    return 0


if __name__ == "__main__":
    sys.exit(main())
