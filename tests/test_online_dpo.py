"""`alignctl online-dpo` on a tiny local model: with a reward model, with a judge, chosen = the judge's pick."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from alignctl import stages
from tiny import write_jsonl

ONE_THREAD = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from a second thread, and on a busy 2-core machine torch's OpenMP
    threads spin at barriers (a step ran 5x slower with 2 threads than with 1): use one, then restore."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


PROMPTS = [
    {"prompt": f"Is {s} {c}?"} for s in ("paris", "rome", "the sky", "tokyo") for c in ("red", "big", "hot", "blue")
]


def prefer_shorter(messages: list[dict]) -> str:
    """A judge client with a known preference: the shorter answer (the default template's layout)."""
    text = messages[-1]["content"]
    a = re.search(r"Answer A:\n(.*?)\n\nAnswer B:", text, re.S).group(1)
    b = re.search(r"Answer B:\n(.*?)\n\nWhich answer", text, re.S).group(1)
    return "B" if len(b) < len(a) else "A"  # equal lengths: always "A", so the two orders disagree -> a tie


def _answer_length(completion) -> int:
    return len(completion[0]["content"] if isinstance(completion, list) else completion)


def test_judge_reward_maps_verdicts_to_trls_pairs():
    """Completion i and i + B answer the same prompt; the judge's winner gets 1.0, a tie 0.5 each."""
    from alignctl.rewards.judge import PairwiseJudge
    from alignctl.rewards.trl_adapters import JudgeReward

    reward = JudgeReward(PairwiseJudge(prefer_shorter))
    prompts = ["q1", "q2", "q3"] * 2
    completions = ["a long answer", "ok", "same", "short", "a longer answer", "emas"]
    assert reward(prompts, completions) == [0.0, 1.0, 0.5, 1.0, 0.0, 0.5]
    assert reward.stats() == {"judge_pairs": 3, "judge_tie_rate": pytest.approx(1 / 3)}


def test_logged_kl_counts_the_answers_tokens_not_the_padding(tiny_lm):
    """TRL 1.16 logs objective/kl summed over padding after EOS too (huggingface/trl#6803): the
    trainer we use zeroes log-probs there, so a sum over a row is a sum over its answer's tokens."""
    import torch
    from transformers import AutoModelForCausalLM

    trainer_cls = stages.load("online-dpo").TRAINER.classes()[1]
    trainer = object.__new__(trainer_cls)  # _forward needs only max_length from the trainer
    trainer.max_length = 64
    model = AutoModelForCausalLM.from_pretrained(tiny_lm)
    prompt = torch.tensor([[5, 6, 7], [5, 6, 7]])
    answers = torch.tensor([[8, 9, 10, 11], [8, 9, 0, 0]])
    answer_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    with torch.no_grad():
        logprobs = trainer._forward(model, prompt, torch.ones_like(prompt), answers, answer_mask)
    assert logprobs.shape == (2, 4)
    assert torch.equal(logprobs[1, 2:], torch.zeros(2))  # padding: nothing
    assert bool((logprobs[:, :2] < 0).all()) and bool((logprobs[0] < 0).all())  # the answers' tokens: their log-probs


def test_judge_run_chooses_the_judged_winner_and_learns(tmp_path, tiny_lm):
    """The judge prefers shorter answers. Every pair TRL trained on has the judge's pick as chosen,
    and the policy's answers get shorter (measured: 29 -> 16 characters, first vs last 4 steps)."""
    import torch
    from safetensors.torch import load_file

    from alignctl.rewards.judge import PairwiseJudge
    from alignctl.stages import online_dpo

    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    resolved = stages.resolve(
        "online-dpo",
        sets=[
            "max_steps=20",
            "learning_rate=3e-2",
            "lr_scheduler_type=constant",
            "per_device_train_batch_size=8",
            "max_new_tokens=16",
        ],  # fmt: skip
    )
    out = online_dpo.run(resolved, prompts, str(tiny_lm), tmp_path / "out", judge=PairwiseJudge(prefer_shorter))

    judged = [json.loads(x) for x in (out / online_dpo.JUDGE_LOG).read_text().splitlines()]
    assert len(judged) == 20 * 8
    for row in judged:  # the rewards handed to TRL favour the answer the judge prefers
        la, lb = (_answer_length(c) for c in row["completions"])
        expected = [0.5, 0.5] if la == lb else ([1.0, 0.0] if la < lb else [0.0, 1.0])
        assert row["rewards"] == expected, row
    # TRL keeps the higher-reward answer as chosen: its logged margin of chosen over rejected
    # equals the mean |difference| of our rewards at every step, which holds only if it did so
    # for every pair of that step.
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    margins = {r["step"]: r["objective/scores_margin"] for r in metrics if "objective/scores_margin" in r}
    assert len(margins) == 20
    for step, margin in margins.items():
        pairs = [r for r in judged if r["call"] == step - 1]
        assert margin == pytest.approx(sum(abs(a - b) for a, b in (p["rewards"] for p in pairs)) / len(pairs))

    def mean_length(calls):
        lengths = [_answer_length(c) for r in judged if r["call"] in calls for c in r["completions"]]
        return sum(lengths) / len(lengths)

    first, last = mean_length(range(4)), mean_length(range(16, 20))
    assert last < 0.75 * first, (first, last)
    before, after = load_file(tiny_lm / "model.safetensors"), load_file(out / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    final = json.loads((out / "alignctl.json").read_text())["final_metrics"]
    assert final["judge_pairs"] == 160 and final["global_step"] == 20


def test_cli_run_with_a_reward_model(tmp_path, tiny_lm, tiny_rm, cli, monkeypatch):
    """TRL's logged margin is mean |r(a) - r(b)| over the step's pairs, computed from the scores our
    reward-model source returned: the pairs were ranked by the reward model, not by anything else."""
    from alignctl.rewards import trl_adapters

    scored = []
    real_call = trl_adapters.ScoreReward.__call__

    def spy(self, prompts, completions, **kwargs):
        scores = real_call(self, prompts, completions, **kwargs)
        scored.append(list(scores))
        return scores

    monkeypatch.setattr(trl_adapters.ScoreReward, "__call__", spy)
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "p.jsonl", PROMPTS[:4])
    code, stdout, stderr = cli(
        "online-dpo", "--prompts", "p.jsonl", "--reward", f"rm:{tiny_rm}", "--model", tiny_lm, "--max-steps", "2",
        "--batch-size", "2", "--max-new-tokens", "8", "--lr", "1e-3", "-o", "out",
    )  # fmt: skip
    assert code == 0, stderr[-2000:]
    assert stdout.strip() == "out"
    out = tmp_path / "out"
    manifest = json.loads((out / "alignctl.json").read_text())
    assert manifest["stage"] == "online-dpo" and manifest["rewards"][0]["kind"] == "reward_model"
    assert manifest["config"]["beta"]["value"] == 0.1 and manifest["config"]["gradient_checkpointing"]["value"] is False
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "objective/scores_margin" in r]
    margins = [r["objective/scores_margin"] for r in logged]
    assert len(logged) == 2 and len(scored) == 2
    for row, scores in zip(logged, scored, strict=True):
        # completions i and i + 2 answer the same prompt (batch size 2)
        assert len(scores) == 4 and row["objective/scores"] == pytest.approx(sum(scores) / 4, abs=1e-5)
        margin = sum(abs(scores[i] - scores[i + 2]) for i in range(2)) / 2
        assert row["objective/scores_margin"] == pytest.approx(margin, abs=1e-5)
    assert any(m > 0 for m in margins)  # the reward model told the answers apart
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out)
    before, after = load_file(tiny_lm / "model.safetensors"), load_file(out / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)


class _JudgeServer:
    """An OpenAI-compatible /v1/chat/completions endpoint on 127.0.0.1 answering with `prefer_shorter`."""

    def __enter__(self):
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                reply = json.dumps({"choices": [{"message": {"content": prefer_shorter(body["messages"])}}]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(reply.encode())

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()


def test_cli_run_with_a_judge_endpoint(tmp_path, tiny_lm, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "p.jsonl", PROMPTS[:4])
    with _JudgeServer() as url:
        code, _, stderr = cli(
            "online-dpo", "--prompts", "p.jsonl", "--judge-url", url, "--judge-model", "shorter", "--model", tiny_lm,
            "--max-steps", "2", "--batch-size", "2", "--max-new-tokens", "8", "-o", "out",
        )  # fmt: skip
    assert code == 0, stderr[-2000:]
    out = tmp_path / "out"
    manifest = json.loads((out / "alignctl.json").read_text())
    assert manifest["rewards"][0]["kind"] == "judge" and manifest["rewards"][0]["client"]["model"] == "shorter"
    assert manifest["final_metrics"]["judge_pairs"] == 4
    judged = [json.loads(x) for x in (out / "judged.jsonl").read_text().splitlines()]
    assert len(judged) == 4 and all(len(r["verdict"]["replies"]) == 2 for r in judged)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "online-dpo needs a reward source"),
        (["--reward", "rule:length", "--judge-url", "http://127.0.0.1:9/v1", "--judge-model", "m"], "not both"),
        (["--judge-url", "http://127.0.0.1:9/v1"], "needs a model name"),
        (["--judge-model", "m"], "need --judge-url"),
    ],
)
def test_reward_source_errors(tmp_path, tiny_lm, cli, extra, message):
    write_jsonl(tmp_path / "p.jsonl", PROMPTS[:2])
    code, _, err = cli(
        "online-dpo", "--prompts", tmp_path / "p.jsonl", "--model", tiny_lm, "-o", tmp_path / "o", *extra
    )
    assert code == 2 and message in err
    assert not (tmp_path / "o.partial").exists()


@pytest.mark.slow
def test_smollm2_two_steps(tmp_path, run):
    write_jsonl(tmp_path / "p.jsonl", [{"prompt": "What is the capital of France?"}, {"prompt": "Name a colour."}])
    proc = run(
        "online-dpo", "--prompts", "p.jsonl", "--reward", "rule:length", "--model", "smollm2-135m", "--max-steps",
        "2", "--batch-size", "2", "--max-new-tokens", "12", "--set", "use_peft=true", "-o", "out", cwd=tmp_path,
        timeout=300, env=ONE_THREAD,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert json.loads((tmp_path / "out" / "alignctl.json").read_text())["final_metrics"]["global_step"] == 2
