"""Rule rewards (rewards/rules.py, answers.py, text.py): built-ins on hand-made completions, specs, user files."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from alignctl.errors import AlignctlError, InputError
from alignctl.rewards.answers import answers_match, contains_word, parse_number
from alignctl.rewards.rules import RuleReward, list_rules, load_rule
from alignctl.rewards.text import completion_text

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "qa"


def conv(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def score(spec: str, completions: list, **columns) -> list[float]:
    return load_rule(spec)([""] * len(completions), completions, **columns)


# --------------------------------------------------------------------------- text handling


def test_completion_text_takes_last_assistant_message():
    assert completion_text("plain") == "plain"
    assert completion_text(conv("hi")) == "hi"
    turns = [
        {"role": "assistant", "content": "first"},
        {"role": "tool", "content": "42"},
        {"role": "assistant", "content": [{"type": "text", "text": "fin"}, {"type": "text", "text": "al"}]},
    ]
    assert completion_text(turns) == "final"


def test_contains_word_respects_word_boundaries_case_and_accents():
    assert contains_word("The capital is PARIS.", "paris")
    assert not contains_word("Parisian food", "Paris")
    assert contains_word("It has 8 legs", "8")
    assert not contains_word("It has 18 legs", "8")
    assert contains_word("Brasília is the capital", "Brasilia")
    assert contains_word("It is  Buenos\nAires", "Buenos Aires")
    assert not contains_word("anything", "")


@pytest.mark.parametrize(
    ("text", "value"),
    [("42", 42.0), ("-0.5", -0.5), ("1,234", 1234.0), ("3/4", 0.75), ("\\frac{1}{4}", 0.25), ("$12", 12.0)],
)
def test_parse_number(text, value):
    assert parse_number(text) == pytest.approx(value)


def test_parse_number_rejects_words():
    assert parse_number("Paris") is None
    assert parse_number("1/0") is None


# --------------------------------------------------------------------------- built-ins


def test_accuracy_numeric_boxed_and_text():
    completions = [
        "2 + 3 = 5",  # last number
        "First 7, then \\boxed{12}",  # boxed wins over the last number
        conv("I think it is 5.0000001"),  # within tolerance
        "The answer is 6",
        "Paris.",  # text compare, normalized
        "London",
        "The result is 1,000 exactly",
    ]
    answers = ["5", "12", 5, "5", "paris", ["Paris", "Lyon"], "1000"]
    assert score("rule:accuracy", completions, answer=answers) == [1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0]


def test_accuracy_gsm8k_solution_and_tolerance_param():
    assert answers_match("so 72 clips", "She sold 48/2 = 24 ... 48+24 = 72\n#### 72")
    assert score("rule:accuracy?tolerance=0.1", ["about 10.5"], answer=["10"]) == [1.0]
    assert score("rule:accuracy", ["about 10.5"], answer=["10"]) == [0.0]


def test_format_default_and_custom_pattern():
    good = "<think>\nadd them\n</think>\n<answer>5</answer>"
    bad = "The answer is <answer>5</answer>"
    assert score("rule:format", [good, conv(good), bad]) == [1.0, 1.0, 0.0]
    assert score("rule:format?pattern=^\\d+$", ["42", "42 apples"]) == [1.0, 0.0]


def test_length_default_and_target():
    ten, thirty = "w " * 10, "w " * 30
    assert score("rule:length", [ten, thirty]) == [pytest.approx(-0.1), pytest.approx(-0.3)]
    # target 20: full credit up to 20 words, then linear to 0 at 60 words.
    assert score("rule:length?target=20", [ten, thirty, "w " * 60, "w " * 99]) == [1.0, 0.75, 0.0, 0.0]


def test_contains_is_case_insensitive_substring():
    assert score("rule:contains", ["The capital is paris", "Lyon", "Parisian"], answer=["Paris"] * 3) == [
        1.0,
        0.0,
        1.0,
    ]


def test_qa_graded_reward():
    completions = [
        "Paris",  # correct, 1 word -> 0.6 + 0.4
        conv("The capital of France is Paris."),  # correct, 6 words
        "It is Lyon.",  # wrong, brief -> 0.4
        " ".join(["word"] * 23) + " paris",  # correct, 24 words: brief = 1 - 12/24 = 0.5
        " ".join(["word"] * 40),  # wrong, 40 words: brief = max(0, 1 - 28/24) = 0
        "It has eight legs.",  # an alternative spelling in a list
        "It has 18 legs",  # "8" inside "18" does not count
    ]
    answers = ["Paris", "Paris", "Paris", "Paris", "Paris", ["8", "eight"], ["8", "eight"]]
    got = score("rule:qa", completions, answer=answers)
    assert got == pytest.approx([1.0, 1.0, 0.4, 0.8, 0.0, 1.0, 0.4])


def test_qa_strict_is_the_pass_fail_metric():
    completions = ["Paris", "Lyon", " ".join(["word"] * 12) + " Paris", " ".join(["word"] * 11) + " Paris"]
    assert score("rule:qa_strict", completions, answer=["Paris"] * 4) == [1.0, 0.0, 0.0, 1.0]
    assert score("rule:qa_strict?max_words=20", completions, answer=["Paris"] * 4) == [1.0, 0.0, 1.0, 1.0]


def test_rules_ignore_trainer_kwargs():
    extra = {"trainer_state": object(), "log_extra": print, "log_metric": print, "completion_ids": [[1]]}
    assert score("rule:qa", ["Paris"], answer=["Paris"], **extra) == [1.0]


@pytest.mark.parametrize("name", ["accuracy", "contains", "qa", "qa_strict"])
def test_missing_answer_column_names_the_column(name):
    with pytest.raises(InputError, match="needs the `answer` column"):
        score(f"rule:{name}", ["Paris"], solution=["Paris"])


def test_custom_column_and_empty_answer():
    assert score("rule:qa_strict?column=solution", ["Paris"], solution=[["Paris"]]) == [1.0]
    with pytest.raises(InputError, match="empty `answer`"):
        score("rule:qa", ["Paris"], answer=[""])


# --------------------------------------------------------------------------- specs


def test_names_and_specs_are_stable():
    rule = load_rule("rule:length?target=20")
    assert (rule.name, rule.__name__, rule.spec) == ("length(target=20)", "length(target=20)", "rule:length?target=20")
    assert rule.params == {"target": 20}
    assert load_rule("qa").name == "qa"  # the prefix is optional
    assert load_rule("rule:format?pattern=^a&b$").params == {"pattern": "^a&b$"}  # values are literal
    assert load_rule("rule:qa").describe() == {"kind": "rule", "name": "qa", "spec": "rule:qa"}


def test_builtin_rules_pickle():
    rule = load_rule("rule:qa?max_words=8")
    assert pickle.loads(pickle.dumps(rule))(["q"], ["Paris"], answer=["Paris"]) == [1.0]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("rule:acuracy", "unknown rule 'acuracy'"),
        ("rule:length?tagret=3", "has no parameter 'tagret'"),
        ("rule:length?target=abc", "not a valid int"),
        ("rule:length?target=0", "must be a positive integer"),
        ("rule:length?target", "expected key=value"),
        ("rule:format?pattern=(", "bad regex"),
        ("rule:", "empty rule spec"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(InputError, match=message):
        load_rule(spec)


def test_unknown_rule_suggests_close_name():
    with pytest.raises(InputError) as info:
        load_rule("rule:acuracy")
    assert "did you mean rule:accuracy?" in str(info.value)


def test_list_rules_covers_every_builtin():
    names = [info.name for info in list_rules()]
    assert names == ["accuracy", "format", "length", "contains", "qa", "qa_strict"]
    assert "rule:length[?target=...]" in str(list_rules()[2])
    for info in list_rules():
        load_rule(f"rule:{info.name}")


# --------------------------------------------------------------------------- user files

USER_RULES = """\
def brevity(prompts, completions, **kwargs):
    return [1.0 / (1 + len(c.split())) for c in completions]

def uses_column(prompts, completions, difficulty, **kwargs):
    return [float(d) for d in difficulty]

def wrong_length(prompts, completions, **kwargs):
    return [1.0]

def not_numbers(prompts, completions, **kwargs):
    return ["high" for _ in completions]

def returns_none(prompts, completions, **kwargs):
    return [None for _ in completions]

def crashes(prompts, completions, **kwargs):
    raise KeyError("difficulty")

NOT_CALLABLE = 3
"""


@pytest.fixture
def user_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_rules.py"
    path.write_text(USER_RULES)
    return path


def test_user_rule_loads_and_scores(user_file):
    rule = load_rule(f"rule:{user_file}:brevity")
    assert isinstance(rule, RuleReward)
    assert rule.name == rule.__name__ == "my_rules.brevity"
    assert rule(["p", "p"], ["one", "one two three"]) == [0.5, 0.25]
    assert rule.describe()["sha256"] and rule.describe()["path"] == str(user_file)
    assert load_rule(f"rule:{user_file}:uses_column")(["p"], ["x"], difficulty=[3]) == [3.0]


def test_user_rule_relative_path(user_file, monkeypatch):
    monkeypatch.chdir(user_file.parent)
    assert load_rule("rule:my_rules.py:brevity").spec == "rule:my_rules.py:brevity"


@pytest.mark.parametrize(
    ("func", "message"),
    [
        ("wrong_length", "returned 1 rewards for 2 completions"),
        ("not_numbers", "returned 'high' at index 0"),
        ("returns_none", "returned None at index 0"),
        ("crashes", "raised KeyError"),
    ],
)
def test_user_rule_bad_output_names_the_rule(user_file, func, message):
    rule = load_rule(f"rule:{user_file}:{func}")
    with pytest.raises(AlignctlError, match=message) as info:
        rule(["p", "p"], ["a", "b"])
    assert f"{user_file}:{func}" in str(info.value)


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.py"
    with pytest.raises(InputError, match=f"{missing}: no such file"):
        load_rule(f"rule:{missing}:brevity")


def test_missing_function_lists_what_is_there(user_file):
    with pytest.raises(InputError, match="no function 'brevety'") as info:
        load_rule(f"rule:{user_file}:brevety")
    assert str(user_file) in str(info.value)
    assert "brevity" in str(info.value) and "uses_column" in str(info.value)


def test_not_callable(user_file):
    with pytest.raises(InputError, match="'NOT_CALLABLE' is not callable"):
        load_rule(f"rule:{user_file}:NOT_CALLABLE")


def test_syntax_error_names_path_and_line(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("def ok(prompts, completions, **kw):\n    return [1.0]\n\ndef broken(:\n")
    with pytest.raises(InputError, match=f"{path}:4: syntax error"):
        load_rule(f"rule:{path}:ok")


def test_import_error_in_user_file(tmp_path):
    path = tmp_path / "needs_dep.py"
    path.write_text("import not_a_real_module_xyz\n")
    with pytest.raises(InputError, match=f"{path}: importing failed: ModuleNotFoundError"):
        load_rule(f"rule:{path}:f")


def test_user_files_are_not_searched_on_sys_path(tmp_path, monkeypatch):
    (tmp_path / "elsewhere.py").write_text(USER_RULES)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(InputError, match="no such file"):
        load_rule("rule:elsewhere.py:brevity")


# --------------------------------------------------------------------------- the demo task data


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_demo_data_shape_and_disjoint():
    train, held = read_jsonl(EXAMPLES / "train.jsonl"), read_jsonl(EXAMPLES / "held.jsonl")
    assert 90 <= len(train) <= 110 and len(held) == 40
    questions = [r["prompt"][0]["content"] for r in train + held]
    assert len(set(questions)) == len(questions), "duplicate or overlapping questions"
    for record in train + held:
        assert set(record) == {"prompt", "answer"}
        assert record["prompt"][0]["role"] == "user"
        assert record["prompt"][0]["content"].endswith(" Answer briefly.")
        # One type for the whole column: HF datasets (Arrow) cannot mix strings and lists.
        assert isinstance(record["answer"], list) and all(isinstance(a, str) and a for a in record["answer"])


def test_demo_data_scores_its_own_answers():
    records = read_jsonl(EXAMPLES / "train.jsonl") + read_jsonl(EXAMPLES / "held.jsonl")
    prompts = [r["prompt"] for r in records]
    answers = [r["answer"] for r in records]
    right = [conv(f"It is {a[0]}.") for a in answers]
    assert load_rule("rule:qa_strict")(prompts, right, answer=answers) == [1.0] * len(records)
    wrong = [conv("I am not sure.") for _ in answers]
    assert load_rule("rule:qa_strict")(prompts, wrong, answer=answers) == [0.0] * len(records)
