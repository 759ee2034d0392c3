"""What a new user reads: `--help` of every command at 80 columns, and the presets screens.

Help shows types as words (TEXT, INTEGER, PATH), none on a flag, and never Python's annotations
(`<bool>`, `<list[str]>`); every option name is whole at 80 columns; a screen shows a user's text
and a preset's text as they are, square brackets included (rich markup escaped)."""

from __future__ import annotations

import re

import pytest

from conftest import run_cli


def _flat(text: str) -> str:
    """Help text as one line: the table's borders and wrapping gone."""
    return " ".join(text.replace("│", " ").split())


def _commands() -> list[tuple[str, ...]]:
    from alignctl.cli import commands

    out = []
    for name, command in sorted(commands().items()):
        subs = getattr(command, "commands", None)
        out += [(name, sub) for sub in sorted(subs)] if subs else [(name,)]
    return out


def _options(argv: tuple[str, ...]) -> list[str]:
    from alignctl.cli import commands

    command = commands()[argv[0]]
    for sub in argv[1:]:
        command = command.commands[sub]
    return [o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")]


@pytest.mark.parametrize("argv", _commands(), ids=" ".join)
def test_help_at_80_columns_shows_every_option_whole_and_no_python_type(argv):
    proc = run_cli(*argv, "--help", env={"COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr[-1000:]
    text = proc.stdout
    assert not re.search(r"<(bool|int|float|str|path|list|dict)\b", text, re.IGNORECASE), text
    assert "…" not in text, text
    words = set(re.findall(r"--[\w-]+", text))
    assert set(_options(argv)) <= words, set(_options(argv)) - words


def test_root_help_shows_no_python_type():
    proc = run_cli("--help", env={"COLUMNS": "80"})
    assert proc.returncode == 0 and "<bool>" not in proc.stdout and "--install-completion" in proc.stdout


def test_train_rm_model_is_the_reward_models_base_not_a_policy():
    text = _flat(run_cli("train-rm", "--help", env={"COLUMNS": "200"}).stdout)
    assert "Base model the reward model starts from" in text and "Policy model" not in text
    assert "Policy model" in _flat(run_cli("dpo", "--help", env={"COLUMNS": "200"}).stdout)


def test_presets_help_offers_no_shell_completion():
    proc = run_cli("presets", "--help")
    assert proc.returncode == 0 and "completion" not in proc.stdout


def test_label_help_names_every_human_mode_and_the_better_answer_key():
    from alignctl.labelling.core import HUMAN_MODES

    text = _flat(run_cli("label", "--help", env={"COLUMNS": "200"}).stdout)
    for mode in HUMAN_MODES:
        assert f"{mode} (" in text, mode
    assert "e writes a better answer in $EDITOR, which becomes the chosen one" in text


def test_presets_show_of_an_unknown_name_names_no_flag(cli):
    code, out, err = cli("presets", "show", "dpo-cpx")
    assert code == 2 and out == ""
    assert err.startswith("dpo-cpx: neither a stage nor a preset; did you mean 'dpo-cpu'?") and "--" not in err


def test_presets_screens_show_square_brackets(cli):
    """The dpo preset's departure says `--set 'lora_target_modules=[q_proj, v_proj]'`; a --set with
    brackets shows its whole source; a preset file's `about` with brackets stays whole in the list."""
    code, out, _ = cli("presets", "show", "dpo", "--set", "lora_target_modules=[q_proj, v_proj]")
    assert code == 0
    flat = "".join(out.replace("│", " ").split())  # the table wraps long cells: compare without them
    assert "--set'lora_target_modules=[q_proj,v_proj]'" in flat  # the departure's advice
    assert "--setlora_target_modules=[q_proj,v_proj]" in flat  # the value's source
    assert "['q_proj','v_proj']" in flat  # the value itself
