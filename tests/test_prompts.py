"""prompts.py: how a prompt becomes model input (chat template or not) and where it is cut."""

from __future__ import annotations

import copy

import pytest

import tiny
from alignctl import prompts
from alignctl.errors import InputError, ModelError

QUESTION = "what is the capital of france " * 10 + "answer briefly please"
HEAD, TAIL = "<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return tiny.build_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def plain_tok(tok):
    """The same tokenizer without a chat template (a base model's)."""
    bare = copy.deepcopy(tok)
    bare.chat_template = None
    return bare


def text_of(tok, ids: list[int]) -> str:
    return tok.decode(ids, skip_special_tokens=False)


def test_plain_text_goes_through_the_template_of_a_chat_model(tok):
    ids, used = prompts.render(tok, "Is paris big?")
    assert used and text_of(tok, ids) == f"{HEAD}Is paris big?{TAIL}"
    assert (ids, used) == prompts.render(tok, [{"role": "user", "content": "Is paris big?"}])
    assert prompts.render(tok, "Is paris big?", chat_template=True) == (ids, used)


def test_plain_text_is_raw_when_the_template_is_off_or_missing(tok, plain_tok):
    raw = tok("Is paris big?")["input_ids"]
    assert prompts.render(tok, "Is paris big?", chat_template=False) == (raw, False)
    assert prompts.render(plain_tok, "Is paris big?") == (raw, False)
    assert not prompts.uses_template(tok, "Is paris big?", False) and prompts.uses_template(tok, "Is paris big?")


def test_message_lists_always_use_the_template(tok, plain_tok):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Is rome hot?"}]
    ids, used = prompts.render(tok, messages, chat_template=False)  # off concerns plain text only
    assert used and text_of(tok, ids) == f"<|im_start|>system\nBe brief.<|im_end|>\n{HEAD}Is rome hot?{TAIL}"
    with pytest.raises(ModelError, match="message lists but the tokenizer has no chat template"):
        prompts.render(plain_tok, messages, name="base")
    with pytest.raises(ModelError, match="base: chat_template is on but the tokenizer has no chat template"):
        prompts.Encoder(plain_tok, True, "base")


def test_encoder_renders_once_per_key(tok):
    enc = prompts.Encoder(tok, None, "tiny")
    first = enc.encode("q1", "Is paris big?")
    assert enc.encode("q1", "a different prompt under the same key") is first
    assert first == prompts.render(tok, "Is paris big?")
    assert enc.uses_template("Is paris big?") and not prompts.Encoder(tok, False, "tiny").uses_template("x")


def test_max_prompt_length_counts_rendered_tokens(tok):
    """A message's tokens and the template's markup both count: what the model is fed."""
    messages = [{"role": "user", "content": "Is paris big?"}]
    content = len(tok("Is paris big?", add_special_tokens=False)["input_ids"])
    markup = len(tok(HEAD + TAIL, add_special_tokens=False)["input_ids"])
    assert prompts.prompt_tokens(tok, messages) == content + markup
    assert prompts.prompt_ids(tok, messages) == prompts.render(tok, messages)[0]

    def prepared(chat_template: bool, limit: int):
        recs = [{"id": "a", "prompt": "Is paris big?"}]
        settings = {"chat_template": chat_template, "max_prompt_length": limit}
        assert prompts.prepare(recs, tok, settings, strict=True, path="p") == 0
        return recs[0]["prompt"]

    assert prepared(True, content + markup) == messages  # fits exactly: the rendered prompt is what counts
    with pytest.raises(InputError, match="1 prompt is longer than max_prompt_length"):
        prepared(True, content + markup - 1)
    assert prepared(False, content) == "Is paris big?"  # raw text: no markup to count


def test_long_prompts_are_cut_from_the_left_or_rejected(tok, capsys):
    recs = [
        {"id": "long", "prompt": [{"role": "user", "content": QUESTION}]},
        {"id": "text", "prompt": QUESTION},
        {"id": "short", "prompt": [{"role": "user", "content": "hello"}]},
    ]
    limit = 20
    with pytest.raises(InputError, match=r"2 prompts are longer than max_prompt_length=20 tokens \(first: id 'long'"):
        prompts.fit_prompts(recs, tok, limit, strict=True, path="p.jsonl")
    assert prompts.fit_prompts(recs, tok, limit, strict=False, path="p.jsonl") == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "truncated 2 of 3 prompts to max_prompt_length=20" in err and "--strict" in err
    assert all(prompts.prompt_tokens(tok, r["prompt"]) <= limit for r in recs)
    assert recs[0]["prompt"][0]["role"] == "user" and recs[0]["prompt"][0]["content"].endswith("answer briefly please")
    assert recs[1]["prompt"].endswith("answer briefly please")
    assert recs[2]["prompt"][0]["content"] == "hello"
    # the cut takes message text: the template's markup around it stays whole
    rendered = text_of(tok, prompts.prompt_ids(tok, recs[0]["prompt"]))
    assert rendered.startswith(HEAD) and rendered.endswith(f"answer briefly please{TAIL}")


def test_a_stage_without_strict_cuts_without_naming_it(tok, capsys):
    recs = [{"id": "long", "prompt": QUESTION}]
    assert prompts.fit_prompts(recs, tok, 12, strict=None, path="p.jsonl") == 1
    err = capsys.readouterr().err
    assert "truncated 1 of 1 prompts" in err and "--strict" not in err


def test_a_limit_below_the_markup_is_an_input_error(tok):
    with pytest.raises(InputError, match="shorter than the chat template's own markup"):
        prompts.truncate_left(tok, [{"role": "user", "content": QUESTION}], 3)


def test_training_form_follows_how_the_answers_were_sampled():
    rec = {"prompt": "Is rome hot?", "completions": [" yes", " no"]}
    assert prompts.training_form(rec) == ("Is rome hot?", [" yes", " no"])
    chat = prompts.training_form({**rec, "generator": {"chat_template": True}})
    assert chat == (
        [{"role": "user", "content": "Is rome hot?"}],
        [[{"role": "assistant", "content": " yes"}], [{"role": "assistant", "content": " no"}]],
    )
    assert prompts.training_form({**rec, "prompt": [{"role": "user", "content": "Is rome hot?"}]}) == chat
