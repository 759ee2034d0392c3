"""`alignctl label` with every kind of reward source, pair selection by hand, resume, and bad input."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from alignctl import io
from conftest import run_cli
from tiny import write_jsonl

CANDS = [
    {
        "id": "q1",
        "prompt": "Is the sky blue?",
        "completions": [" yes", " yes it is blue today", " no the sky is green and big"],
        "answer": "yes",
    },
    {"id": "q2", "prompt": "Is paris in france?", "completions": [" yes paris", " no", " yes"], "answer": "yes"},
    {"id": "q3", "prompt": "Is rome hot?", "completions": [" ok", " ok"], "answer": "yes"},
]


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and immune to a loaded machine
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cands(tmp_path) -> Path:
    return write_jsonl(tmp_path / "cands.jsonl", CANDS)


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------------------------------
# Pair selection, by hand


def test_pairs_from_scores_by_hand():
    from alignctl.rewards.pairs import pairs_from_scores

    comps = ["a", "b", "c", "a"]
    out = pairs_from_scores([0.1, 0.9, 0.5, 0.1], comps, "best-worst", 0.0)
    assert [(p.chosen, p.rejected, p.score_chosen, p.score_rejected) for p in out.pairs] == [(1, 0, 0.9, 0.1)]
    assert pairs_from_scores([0.1, 0.9, 0.5, 0.1], comps, "best-worst", 0.9).dropped == 1
    both = pairs_from_scores([0.1, 0.9, 0.5, 0.1], comps, "all", 0.0)  # the duplicate "a" is not paired again
    assert sorted((p.chosen, p.rejected) for p in both.pairs) == [(1, 0), (1, 2), (2, 0)]
    assert pairs_from_scores([0.3, 0.3], ["x", "y"], "best-worst", 0.0).ties == 1
    assert pairs_from_scores([0.3, 0.4], ["x", "x"], "best-worst", 0.0).dropped == 1


def test_pairs_from_comparisons_by_hand():
    """Three answers; 1 beats 0, 1 beats 2, 0 and 2 tie: win rates 0.25, 1.0, 0.25 -> best 1, worst 0.
    A cycle (0>1, 1>2, 2>0) gives equal win rates: a tie."""
    from alignctl.rewards import Choice
    from alignctl.rewards.pairs import pairs_from_comparisons, win_rates

    comps = ["a", "b", "c"]
    d = {(0, 1): Choice(1, {"reason": "agree"}), (1, 2): Choice(0), (0, 2): Choice(None)}
    assert win_rates([0, 1, 2], d) == {0: 0.25, 1: 1.0, 2: 0.25}
    out = pairs_from_comparisons(comps, d, "best-worst", 0.0)
    assert [(p.chosen, p.rejected, p.score_chosen, p.score_rejected) for p in out.pairs] == [(1, 0, 1.0, 0.25)]
    assert out.pairs[0].verdict == {"first": 0, "second": 1, "reason": "agree"}
    every = pairs_from_comparisons(comps, d, "all", 0.0)
    assert sorted((p.chosen, p.rejected) for p in every.pairs) == [(1, 0), (1, 2)] and every.ties == 1
    cycle = {(0, 1): Choice(0), (1, 2): Choice(0), (0, 2): Choice(1)}
    assert pairs_from_comparisons(comps, cycle, "best-worst", 0.0).ties == 1
    skipped = {(0, 1): Choice(None, {"skipped": True})}
    assert pairs_from_comparisons(["a", "b"], skipped, "best-worst", 0.0).skipped == 1


def test_journal_replay_with_undo():
    from alignctl.rewards.pairs import State

    events = [
        {"t": "scores", "id": "x", "scores": [1.0, 2.0]},
        {"t": "cmp", "id": "a", "i": 0, "j": 1, "w": 0, "d": {}},
        {"t": "cmp", "id": "b", "i": 0, "j": 1, "w": 1, "d": {}},
        {"t": "undo"},
        {"t": "cmp", "id": "b", "i": 0, "j": 1, "w": None, "d": {"key": "t"}},
    ]
    state = State.replay(events)
    assert state.scores == {"x": [1.0, 2.0]}
    assert state.decisions["a"][(0, 1)].winner == 0 and state.decisions["b"][(0, 1)].winner is None
    assert state.history == [("a", 0, 1), ("b", 0, 1)]


# ---------------------------------------------------------------------------------------------
# Pointwise sources


def test_rule_builtin_best_worst_all_and_margin(tmp_path, cands, cli):
    out = tmp_path / "prefs.jsonl"
    code, stdout, err = cli("label", "-c", cands, "--by", "rule:length", "-o", out)
    assert code == 0, err
    assert stdout.strip() == str(out)
    rows = read(out)
    assert [r["id"] for r in rows] == ["q1", "q2"]  # q3's two answers are identical: dropped
    assert rows[0]["prompt"] == "Is the sky blue?" and rows[0]["chosen"] == " yes"
    assert rows[0]["rejected"] == " no the sky is green and big"
    assert (rows[0]["score_chosen"], rows[0]["score_rejected"]) == (-0.01, -0.07)
    assert rows[0]["label"]["kind"] == "rule" and rows[0]["label"]["source"]["name"] == "length"
    assert "pairs written" in err and "mean chosen length (words)" in err
    from alignctl.training.data import read_prefs

    assert len(read_prefs(out)) == 2  # dpo reads the file as it is

    code, _, err = cli("label", "-c", cands, "--by", "rule:length", "--pairs", "all", "-o", tmp_path / "all.jsonl")
    assert code == 0, err
    stats = json.loads((tmp_path / "all.jsonl.alignctl.json").read_text())["final_metrics"]
    assert (stats["pairs"], stats["ties"], stats["dropped"]) == (5, 1, 1)
    m = tmp_path / "m.jsonl"
    code, _, err = cli("label", "-c", cands, "--by", "rule:length", "--min-margin", "0.05", "-o", m)
    assert code == 0 and [r["id"] for r in read(m)] == ["q1"]
    assert json.loads((tmp_path / "m.jsonl.alignctl.json").read_text())["final_metrics"]["dropped"] == 2


def test_rule_user_file_resumes_after_a_failure(tmp_path, cands, cli, monkeypatch):
    """A user rule with TRL's signature gets the `answer` column; when it fails part-way the scores
    so far stay in the journal and the rerun scores only what is left."""
    rule = tmp_path / "myrule.py"
    rule.write_text(
        "import os\n"
        "def has_answer(prompts, completions, answer, **columns):\n"
        "    if os.environ.get('RULE_FAIL') and any('rome' in p for p in prompts):\n"
        "        raise RuntimeError('boom')\n"
        "    with open(os.environ['RULE_LOG'], 'a') as fh:\n"
        "        fh.write(' '.join(sorted(set(prompts))) + '\\n')\n"
        "    return [float(a in c) - len(c.split()) / 100 for c, a in zip(completions, answer)]\n",
        encoding="utf-8",
    )
    log = tmp_path / "calls.log"
    monkeypatch.setenv("RULE_LOG", str(log))
    monkeypatch.setenv("RULE_FAIL", "1")
    out = tmp_path / "prefs.jsonl"
    args = ("label", "-c", cands, "--by", f"rule:{rule}:has_answer", "--batch-size", "1", "-o", out)
    code, _, err = cli(*args)
    assert code == 1 and "has_answer raised RuntimeError: boom" in err
    assert not out.exists() and (tmp_path / "prefs.jsonl.partial").exists()
    monkeypatch.delenv("RULE_FAIL")
    log.write_text("")
    code, _, err = cli(*args)
    assert code == 0, err
    assert "resuming: 2 of 3 prompts already labelled" in err
    assert log.read_text().splitlines() == ["Is the sky blue?", "Is rome hot?"]  # the check, then q3 only
    rows = read(out)
    assert rows[0]["chosen"] == " yes" and rows[0]["score_chosen"] == pytest.approx(0.99)
    assert rows[0]["label"]["source"]["path"] == str(rule) and rows[0]["label"]["source"]["sha256"]
    code, _, err = cli(*args)
    assert code == 0 and "up to date" in err


def test_reward_model_scores_conversational_candidates(tmp_path, tiny_rm, cli):
    """Candidates sampled through a chat template become conversational pairs, scored via the template."""
    from alignctl.rewards.reward_model import RewardModelSource

    chat = [{**c, "generator": {"chat_template": True}} for c in CANDS]
    path = write_jsonl(tmp_path / "c.jsonl", chat)
    out = tmp_path / "prefs.jsonl"
    code, _, err = cli("label", "-c", path, "--by", f"rm:{tiny_rm}", "-o", out)
    assert code == 0, err
    rows = io.load(out, "preferences")
    assert rows and all(io.preference_shape(r) == "explicit/conversational" for r in rows)
    source = RewardModelSource(str(tiny_rm))
    for r in rows:
        s_c, s_r = source.score([r["prompt"], r["prompt"]], [r["chosen"], r["rejected"]])
        assert (r["score_chosen"], r["score_rejected"]) == pytest.approx((s_c, s_r), abs=1e-5)
        assert s_c > s_r
    assert rows[0]["label"]["kind"] == "reward_model" and rows[0]["label"]["source"]["model"] == str(tiny_rm)


# ---------------------------------------------------------------------------------------------
# Judges


class _Judge(BaseHTTPRequestHandler):
    """/v1/chat/completions: answers with the letter of the shorter answer (or always "A")."""

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server = self.server
        server.seen.append({"auth": self.headers.get("Authorization"), "body": body})
        text = body["messages"][-1]["content"]
        if server.always_a:
            letter = "A"
        else:
            a, b = re.search(r"Answer A:\n(.*?)\n\nAnswer B:\n(.*?)\n\nWhich", text, re.S).groups()
            letter = "A" if len(a.split()) < len(b.split()) else "B"
        reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": letter}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


@pytest.fixture
def judge_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    server.seen, server.always_a = [], False
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_endpoint_judge_both_orders_and_no_key_in_outputs(tmp_path, cands, cli, judge_server, monkeypatch):
    secret = "sk-test-do-not-write-7f3a"
    monkeypatch.setenv("JUDGE_KEY", secret)
    url = f"http://127.0.0.1:{judge_server.server_port}/v1"
    out = tmp_path / "prefs.jsonl"
    args = ("label", "-c", cands, "--by", "judge:tiny-judge", "--judge-url", url, "--judge-key-env", "JUDGE_KEY")
    code, _, err = cli(*args, "-o", out)
    assert code == 0, err
    # q1 and q2 have three distinct answers (3 comparisons each), q3 none: 6 pairs x 2 orders
    assert len(judge_server.seen) == 12
    assert {s["auth"] for s in judge_server.seen} == {f"Bearer {secret}"}
    assert {s["body"]["model"] for s in judge_server.seen} == {"tiny-judge"}
    rows = io.load(out, "preferences")
    assert [(r["id"], r["chosen"], r["rejected"]) for r in rows] == [
        ("q1", " yes", " no the sky is green and big"),
        ("q2", " no", " yes paris"),  # " no" vs " yes": same length, "A" both times, a tie
    ]
    verdict = rows[0]["label"]["verdict"]
    assert verdict["reason"] == "agree" and sorted(verdict["orders"]) == ["A", "B"]
    assert rows[0]["label"]["source"]["client"]["api_key_env"] == "JUDGE_KEY"
    for f in tmp_path.iterdir():
        assert secret not in f.read_text(), f


def test_judge_that_always_says_a_gives_only_ties(tmp_path, cands, cli, judge_server):
    judge_server.always_a = True
    url = f"http://127.0.0.1:{judge_server.server_port}/v1"
    out = tmp_path / "prefs.jsonl"
    code, _, err = cli("label", "-c", cands, "--by", "judge:x", "--judge-url", url, "--pairs", "all", "-o", out)
    assert code == 0, err
    assert out.read_text() == ""
    stats = json.loads((tmp_path / "prefs.jsonl.alignctl.json").read_text())["final_metrics"]
    assert (stats["pairs"], stats["ties"]) == (0, 6)
    assert "no pairs written" in err


def build_counting_judge(out: Path, tokenizer_dir: Path) -> Path:
    """A 1-layer Llama whose first token is "A" when its input holds more "yes" than "no" tokens
    and "B" otherwise: q = k = 0 makes attention a plain average, v carries +1 for "yes" and -1
    for "no" in one channel, and the head reads that channel's sign. With the template below
    (answer A twice, answer B once) it prefers the "yes" answer in both orders."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=8,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=4,
        tie_word_embeddings=False,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        emb = model.model.embed_tokens.weight
        emb[:, 0] = 1.0
        for token_id in range(len(tok)):
            word = tok.decode([token_id]).strip().lower()
            emb[token_id, 1] = {"yes": 1.0, "no": -1.0}.get(word, 0.0)
        layer = model.model.layers[0]
        layer.input_layernorm.weight.fill_(1.0)
        layer.self_attn.v_proj.weight[0, 1] = 1.0
        layer.self_attn.o_proj.weight[1, 0] = 1.0
        model.model.norm.weight[1] = 1.0
        model.lm_head.weight[tok.convert_tokens_to_ids("A"), 1] = 1.0
        model.lm_head.weight[tok.convert_tokens_to_ids("B"), 1] = -1.0
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_local_model_judge(tmp_path, tiny_lm, cli):
    judge = build_counting_judge(tmp_path / "judge", tiny_lm)
    template = tmp_path / "judge.txt"
    template.write_text("{prompt} {answer_a} {answer_a} {answer_b}", encoding="utf-8")
    cands = [{"id": f"q{i}", "prompt": p, "completions": [" no", " yes"]} for i, p in enumerate(["Is it", "Sky"])]
    cands.append({"id": "q9", "prompt": "Sun", "completions": [" yes", " no"]})
    path = write_jsonl(tmp_path / "c.jsonl", cands)
    out = tmp_path / "prefs.jsonl"
    code, _, err = cli(
        "label", "-c", path, "--by", f"judge:{judge}", "--judge-template", template,
        "--set", "judge_max_tokens=1", "-o", out,
    )  # fmt: skip
    assert code == 0, err
    rows = io.load(out, "preferences")
    assert [(r["chosen"], r["rejected"]) for r in rows] == [(" yes", " no")] * 3
    label = rows[0]["label"]
    assert label["verdict"]["reason"] == "agree" and label["source"]["client"]["kind"] == "local"
    assert label["source"]["default_template"] is False


# ---------------------------------------------------------------------------------------------
# A person at the terminal


def test_human_needs_a_terminal(tmp_path, cands):
    proc = run_cli("label", "-c", cands, "--by", "human", "-o", tmp_path / "p.jsonl")
    assert proc.returncode == 2 and "needs an interactive terminal" in proc.stderr


# ---------------------------------------------------------------------------------------------
# Bad input


def test_malformed_candidates_name_the_line_and_write_nothing(tmp_path):
    bad = tmp_path / "c.jsonl"
    bad.write_text(
        json.dumps(CANDS[0]) + "\n" + json.dumps({"id": "z", "prompt": "x", "completions": []}) + "\n",
        encoding="utf-8",
    )
    proc = run_cli("label", "-c", bad, "--by", "rule:length", "-o", tmp_path / "p.jsonl")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f'error: {bad}:2: "completions" must be a non-empty list']
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl"]


@pytest.mark.parametrize(
    ("by", "message"),
    [
        ("length", "unknown reward source 'length'"),
        ("rule:lenght", "unknown rule 'lenght'"),
        ("rm:/nonexistent/rm", "model dir not found"),
        ("judge", "judge needs a model"),
    ],
)
def test_bad_source_specs(tmp_path, cands, cli, by, message):
    code, _, err = cli("label", "-c", cands, "--by", by, "-o", tmp_path / "p.jsonl")
    assert code == 2 and message in err
    assert not (tmp_path / "p.jsonl").exists() and not (tmp_path / "p.jsonl.partial").exists()
