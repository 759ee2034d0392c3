"""The chapter's whole pipeline on the embedded SmolLM2-135M-Instruct, on a CPU, in minutes (`make demo`).

    python examples/demo.py            # outputs under runs/demo/; a rerun reuses finished stages
    python examples/demo.py --force    # redo every stage

The task (examples/qa/README.md): short factual questions with known answers, asked plainly (no
"answer briefly" in the prompt). The task's reward is strict: 1 when the answer is right *and* at
most 12 words (`rule:qa_strict`). The base model is often right but wordy; the preference data
(best vs worst of 4 samples under the graded `rule:qa`) is what teaches it the preferred style,
which is the chapter's point: alignment teaches from preferences what the prompt does not say.

Stages, each the same `run()` the CLI calls (so `alignctl <stage> ...` with the same arguments
reports "up to date" on these outputs):

1. collect    102 training questions x 4 samples, temperature 1.0, 48 new tokens
2. label      rule:qa (0.6 x correct + 0.4 x brief) picks the best and worst answer of each question
3. train-rm   a small reward model on those pairs (LoRA); its held-out pair accuracy is reported
4. dpo        preset dpo-cpu: LoRA r16/alpha16, beta 0.1, lr 2e-4, 3 epochs
5. eval       the DPO model vs the base model on 40 held-out questions, greedy, rule:qa_strict
6. report     PNG plots of the training logs and an index page

Simplifications, honestly: the reward model is trained and measured but not used to pick the
DPO pairs (the rule does that; `iterate --by rm:runs/demo/rm` uses one); one seed; 40 held-out
questions give wide intervals (the table prints them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
QA = HERE / "qa"
OUT = Path("runs/demo")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="redo every stage even if up to date")
    parser.add_argument("-o", "--output", type=Path, default=OUT, help="output dir (runs/demo)")
    args = parser.parse_args()

    from alignctl.console import console
    from alignctl.errors import AlignctlError
    from alignctl.stages import collect, dpo, label, resolve, train_rm
    from alignctl.stages import eval as eval_stage

    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    train_prompts, held_prompts = QA / "train-nohint.jsonl", QA / "held-nohint.jsonl"
    model = "smollm2-135m"
    timings: dict[str, float] = {}
    total = time.perf_counter()

    def stage(n: int, name: str, what: str, fn, *fargs, **kwargs):
        console.rule(f"[bold][{n}/6] {name}[/]: {what}")
        start = time.perf_counter()
        result = fn(*fargs, **kwargs)
        timings[name] = time.perf_counter() - start
        console.print(f"[dim]{name}: {timings[name]:.1f} s[/]")
        return result

    force = {"force": args.force}
    try:
        candidates = stage(
            1,
            "collect",
            "4 answers per training question from the base model",
            collect.run,
            resolve("collect", flags=_flags(num_samples=4, temperature=1.0, max_new_tokens=48, batch_size=32)),
            train_prompts,
            model,
            out / "candidates.jsonl",
            **force,
        )
        prefs = stage(
            2,
            "label",
            "best vs worst answer of each question by rule:qa",
            label.run,
            resolve("label"),
            candidates,
            "rule:qa",
            out / "prefs.jsonl",
            **force,
        )
        rm_settings = resolve(
            "train-rm",
            sets=["learning_rate=1e-4", "num_train_epochs=2", "max_length=256", "logging_steps=2", "eval_split=0.2"],
        )
        rm = stage(
            3,
            "train-rm",
            "a reward model on the pairs (LoRA r32)",
            train_rm.run,
            rm_settings,
            prefs,
            model,
            out / "rm",
            **force,
        )
        trained = stage(
            4,
            "dpo",
            "DPO from the base model (preset dpo-cpu)",
            dpo.run,
            resolve("dpo", preset="dpo-cpu"),
            prefs,
            model,
            out / "dpo",
            **force,
        )
        summary_path = stage(
            5,
            "eval",
            "DPO model vs base on 40 held-out questions (greedy, rule:qa_strict)",
            eval_stage.run,
            resolve("eval", flags=_flags(max_new_tokens=64)),
            str(trained),
            model,
            held_prompts,
            "rule:qa_strict",
            out / "eval" / "eval.json",
            **force,
        )
        stage(6, "report", "plots of the training logs", _report, [trained, rm], out / "report")
    except AlignctlError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        return exc.exit_code
    timings["total"] = time.perf_counter() - total
    _final_table(console, json.loads(Path(summary_path).read_text()), rm, timings)
    return 0


def _flags(**values):
    return {k: (v, f"demo {k}") for k, v in values.items()}


def _report(run_dirs: list[Path], out: Path) -> Path:
    from alignctl.tools.report import run_report

    return run_report(run_dirs, out)


def _final_table(console, summary: dict, rm_dir: Path, timings: dict[str, float]) -> None:
    from rich.table import Table

    base, model = summary["baseline"], summary["model"]
    table = Table(title="demo: before / after DPO on 40 held-out questions (greedy)", title_justify="left")
    table.add_column("")
    table.add_column("before (base SmolLM2-135M)", justify="right")
    table.add_column("after (DPO)", justify="right")
    table.add_row("mean reward (rule:qa_strict)", f"{base['mean_reward']:.3f}", f"{model['mean_reward']:.3f}")
    table.add_row("mean length (words)", f"{base['mean_length']:.1f}", f"{model['mean_length']:.1f}")
    table.add_row(
        "wins / ties / losses (after vs before)", "", f"{summary['wins']} / {summary['ties']} / {summary['losses']}"
    )
    table.add_row("win rate [95% CI]", "", f"{summary['win_rate']:.3f} [{summary['low']:.3f}, {summary['high']:.3f}]")
    rm = json.loads((rm_dir / "alignctl.json").read_text()).get("final_metrics", {})
    if "eval_accuracy" in rm:
        table.add_row(
            "reward model held-out pair accuracy", "", f"{rm['eval_accuracy']:.3f} ({rm.get('eval_pairs')} pairs)"
        )
    console.print(table)
    times = ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
    console.print(f"wall time: {times}")
    print(f"{summary['baseline']['mean_reward']:.3f} -> {summary['model']['mean_reward']:.3f}")


if __name__ == "__main__":
    sys.exit(main())
