"""The pairwise judge (src/alignctl/rewards/judge.py): both orders, reply parsing, templates,
Chinese, verdicts from scores (its HTTP client: tests/test_judge_http.py)."""

from __future__ import annotations

import re

import pytest

from alignctl.errors import AlignctlError, InputError
from alignctl.rewards.judge import (
    DEFAULT_TEMPLATE,
    PairwiseJudge,
    Verdict,
    load_template,
    parse_verdict,
    render,
)

KEY = "sk-test-5ecret-4f9a1c"
KEY_ENV = "ALIGNCTL_TEST_JUDGE_KEY"

_SHOWN = re.compile(r"Answer A:\n(.*)\n\nAnswer B:\n(.*)\n\nWhich answer", re.DOTALL)


def shown_answers(messages: list[dict[str, str]]) -> tuple[str, str]:
    """The two answers as the default template shows them to the judge model."""
    match = _SHOWN.search(messages[-1]["content"])
    assert match, messages
    return match.group(1), match.group(2)


def always_a(messages):
    return "A"


def prefers_longer(messages):
    a, b = shown_answers(messages)
    return "A" if len(a) > len(b) else "B"


PROMPTS = ["What is the capital of France?", "What is the opposite of hot?", "How many legs does a spider have?"]
PAIRS = [
    ("Paris", "The capital of France is Paris."),
    ("The opposite of hot is cold.", "Cold"),
    ("8", "A spider has eight legs."),
]


# --------------------------------------------------------------------------- both orders


def test_position_biased_judge_only_ties():
    verdicts = PairwiseJudge(always_a).judge_many(PROMPTS, PAIRS)
    assert [v.winner for v in verdicts] == [None, None, None]
    assert all(v.orders == ["A", "A"] and v.reason == "disagree" for v in verdicts)


def test_consistent_judge_picks_the_same_answer_in_both_orders():
    verdicts = PairwiseJudge(prefers_longer).judge_many(PROMPTS, PAIRS)
    assert [v.winner for v in verdicts] == [1, 0, 1]
    assert verdicts[0].orders == ["B", "A"]  # 1st order shows answer 1 as A; 2nd shows answer 2 as A
    assert verdicts[1].orders == ["A", "B"]
    assert all(v.reason == "agree" for v in verdicts)


def test_unparseable_reply_is_a_tie():
    verdict = PairwiseJudge(lambda m: "Both answers are equally good.").judge("q", "x", "y")
    assert verdict == Verdict(None, [None, None], ["Both answers are equally good."] * 2, "unparsed")
    assert verdict.to_dict()["reason"] == "unparsed"


def test_both_orders_are_asked_and_conversational_inputs_are_flattened():
    seen: list[tuple[str, str]] = []

    def record(messages):
        seen.append(shown_answers(messages))
        assert messages[0] == {"role": "system", "content": "Be fair."}
        assert "What is 2+2?" in messages[-1]["content"]
        return "B"

    judge = PairwiseJudge(record, system="Be fair.")
    prompt = [{"role": "user", "content": "What is 2+2?"}]
    judge.judge(prompt, [{"role": "assistant", "content": "4"}], [{"role": "assistant", "content": "five"}])
    assert seen == [("4", "five"), ("five", "4")]


def test_judge_many_reports_progress_and_checks_lengths():
    calls: list[tuple[int, int]] = []
    judge = PairwiseJudge(prefers_longer)
    judge.judge_many(PROMPTS, PAIRS, progress=lambda done, total: calls.append((done, total)), chunk=1)
    assert calls == [(1, 3), (2, 3), (3, 3)]
    calls.clear()
    judge.judge_many(PROMPTS, PAIRS, progress=lambda done, total: calls.append((done, total)), chunk=2)
    assert calls == [(2, 3), (3, 3)]
    with pytest.raises(AlignctlError, match="3 prompts but 2 pairs"):
        PairwiseJudge(prefers_longer).judge_many(PROMPTS, PAIRS[:2])


def test_non_text_reply_is_an_error():
    with pytest.raises(AlignctlError, match="returned NoneType"):
        PairwiseJudge(lambda m: None).judge("q", "a", "b")


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("reply", "letter"),
    [
        ("A", "A"),
        ("b", "B"),
        (" B.\n", "B"),
        ("(A)", "A"),
        ("**Answer B**", "B"),
        ("[[A]]", "A"),
        ("Final answer: B", "B"),
        ("The answer is A because it is shorter.", "A"),
        ("Answer B is more concise.", "B"),
        ("A is better.", "A"),
        ("B\n\nExplanation: A is too long.", "B"),
        ("A better answer is B.", "B"),
        ("I prefer B", "B"),
        ("Both are correct.", None),
        ("", None),
        ("I cannot decide.", None),
    ],
)
def test_parse_verdict(reply, letter):
    assert parse_verdict(reply) == letter


# --------------------------------------------------------------------------- templates


def test_render_substitutes_once_and_leaves_other_braces():
    template = 'Q: {prompt}\n1: {answer_a}\n2: {answer_b}\nReply as {"winner": "A"}'
    out = render(template, "p", "{answer_b}", "b")
    assert out == 'Q: p\n1: {answer_b}\n2: b\nReply as {"winner": "A"}'
    assert "{prompt}" in DEFAULT_TEMPLATE and "{answer_a}" in DEFAULT_TEMPLATE and "{answer_b}" in DEFAULT_TEMPLATE


def test_default_template_is_neutral_and_concise_is_named(tmp_path, monkeypatch):
    """The chapter's labellers pick the better answer: the default asks for no brevity; the old
    concision prompt stays available by name, and a file of that name still wins."""
    from pathlib import Path

    from alignctl.rewards.judge import TEMPLATES

    assert DEFAULT_TEMPLATE is TEMPLATES["neutral"] and "concise" not in DEFAULT_TEMPLATE.lower()
    assert "harmless" in DEFAULT_TEMPLATE and "more concise" in TEMPLATES["concise"]
    assert load_template("concise") == TEMPLATES["concise"] and load_template("neutral") == DEFAULT_TEMPLATE
    monkeypatch.chdir(tmp_path)
    (tmp_path / "concise").write_text("mine: {prompt} {answer_a} {answer_b}")
    assert load_template("concise").startswith("mine:")
    assert PairwiseJudge(always_a, TEMPLATES["concise"]).describe()["template"] == "concise"
    formats = (Path(__file__).resolve().parent.parent / "docs" / "formats.md").read_text(encoding="utf-8")
    assert DEFAULT_TEMPLATE in formats, "docs/formats.md shows the default judge prompt: update it"


def test_template_file_and_missing_placeholders(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("{prompt} | {answer_a} | {answer_b} -> letter?")
    judge = PairwiseJudge.from_template_file(always_a, good)
    assert judge.template == load_template(good)
    bad = tmp_path / "bad.txt"
    bad.write_text("{prompt} and {answer_a} only")
    with pytest.raises(InputError, match=rf"{bad}: missing placeholder\(s\) \{{answer_b\}}"):
        load_template(bad)
    with pytest.raises(InputError, match=r"absent\.txt: file not found \(judge template\)"):
        load_template(tmp_path / "absent.txt")
    with pytest.raises(InputError, match=r"\{prompt\}"):
        PairwiseJudge(always_a, template="{answer_a} {answer_b}")


def test_judge_describe_hashes_template():
    info = PairwiseJudge(always_a).describe()
    assert info["kind"] == "judge" and info["default_template"] is True and len(info["template_sha256"]) == 64


# --------------------------------------------------------------------------- Chinese


@pytest.mark.parametrize(
    ("reply", "letter"),
    [
        ("B", "B"),
        ("答案是B", "B"),
        ("A更好。", "A"),
        ("我选择Ｂ", "B"),  # a full-width letter
        ("最终答案：A", "A"),
        ("回答A和回答B都正确，但回答B更简洁。", "B"),
        ("更好的是回答 A", "A"),
        ("两个回答都不好。", None),
    ],
    ids=["letter", "answer-is", "a-better", "full-width", "final", "both-then-b", "better-is", "neither"],
)
def test_parse_chinese_verdicts(reply, letter):
    assert parse_verdict(reply) == letter


def test_a_chinese_question_is_asked_in_chinese():
    asked = []

    def judge_model(messages):
        asked.append(messages[-1]["content"])
        return "A" if "北京" in messages[-1]["content"].split("回答 B")[0] else "B"

    verdict = PairwiseJudge(judge_model).judge("中国的首都是哪里？", "上海。", "北京。")
    assert verdict.winner == 1 and verdict.reason == "agree"
    assert all("问题：\n中国的首都是哪里？" in a and "只回复一个字母" in a for a in asked)
    PairwiseJudge(judge_model).judge("What is the capital of China?", "北京", "上海")
    assert asked[-1].startswith("You are judging two answers")  # the language of the question decides
    PairwiseJudge(judge_model, "{prompt} {answer_a} {answer_b}").judge("中国的首都？", "北京", "上海")
    assert asked[-1] == "中国的首都？ 上海 北京"  # a template of the user's own is used as given


def test_a_local_judge_model_honours_trust_remote_code(tiny_lm):
    from alignctl.rewards import resolve_source
    from alignctl.rewards.trl_adapters import build_judge

    for trusted in (True, False):
        source = resolve_source(f"judge:{tiny_lm}", trust_remote_code=trusted)
        assert source.judge.complete.trust_remote_code is trusted
        assert build_judge(str(tiny_lm), None, None, trust_remote_code=trusted).complete.trust_remote_code is trusted


# ---------------------------------------------------------------------------------------------
# Verdicts at forward-pass speed, and requests in flight


def test_verdict_by_auto_picks_scores_only_for_a_local_model_on_the_default_template():
    from alignctl.errors import InputError
    from alignctl.rewards.judge import DEFAULT_TEMPLATE, PairwiseJudge

    class Scorer:
        def __call__(self, messages):
            return "A"

        def letters(self, conversations, allowed=("A", "B")):
            return ["A"] * len(conversations)

    assert PairwiseJudge(Scorer()).verdict_by == "scores"
    assert PairwiseJudge(Scorer(), DEFAULT_TEMPLATE + " Think first: {prompt}").verdict_by == "generate"
    assert PairwiseJudge(lambda m: "A").verdict_by == "generate"
    with pytest.raises(InputError, match="local judge model"):
        PairwiseJudge(lambda m: "A", verdict_by="scores")


def test_letter_scores_match_generation_and_are_batch_invariant(tmp_path, tiny_lm):
    """One batched forward pass gives the letters a greedy one-token generation gives, and each
    row's letter is the one it gets alone."""
    from alignctl.rewards.judge import PairwiseJudge
    from alignctl.rewards.local_chat import LocalChatClient
    from test_label import build_counting_judge

    client = LocalChatClient(str(build_counting_judge(tmp_path / "judge", tiny_lm)), max_new_tokens=1)
    template = "{prompt} {answer_a} {answer_a} {answer_b}"
    pairs = [(" yes", " no"), (" no", " yes"), (" yes yes", " no"), (" no no no", " yes")]
    by_scores = PairwiseJudge(client, template, verdict_by="scores").judge_pairs("Sun", pairs)
    by_generation = PairwiseJudge(client, template, verdict_by="generate").judge_pairs("Sun", pairs)
    assert [v.winner for v in by_scores][:2] == [v.winner for v in by_generation][:2] == [0, 1]
    for s, g in zip(by_scores, by_generation, strict=True):  # scores always name a letter; a reply may not
        assert None not in s.orders
        assert s.orders == g.orders or None in g.orders
    judge = PairwiseJudge(client, template, verdict_by="scores")
    conversations = [judge._messages("Sun", a, b) for a, b in pairs]
    assert client.letters(conversations) == [client.letters([c])[0] for c in conversations]
