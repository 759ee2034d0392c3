"""The CLI surface: fast help without heavy imports, --version, python -m, one-line errors, docs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO, run_cli

HEAVY = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "matplotlib", "vllm")


def _commands() -> list[str]:
    import typer.main

    from alignctl.cli import app

    group = typer.main.get_command(app)
    return sorted(group.commands)


def test_help_lists_stages():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for name in ("dpo", "presets", "report"):
        assert name in proc.stdout


@pytest.mark.parametrize("argv", [["--help"]] + [[c, "--help"] for c in _commands()])
def test_help_imports_no_heavy_module(argv):
    """`alignctl --help` and every `alignctl STAGE --help` must not import torch & co (style.md #5)."""
    code = (
        "import sys\n"
        "from alignctl.cli import app\n"
        f"try:\n    app({argv!r})\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in proc.stdout, proc.stdout[-500:] + proc.stderr[-500:]


def test_version_and_python_m():
    proc = run_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith("alignctl ")


def test_error_is_one_red_line_without_traceback(tmp_path):
    proc = run_cli("dpo", "--data", tmp_path / "missing.jsonl", "-o", tmp_path / "out")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "missing.jsonl: file not found" in lines[0]
    assert not (tmp_path / "out").exists()


def test_debug_shows_traceback(tmp_path):
    proc = run_cli("--debug", "dpo", "--data", tmp_path / "missing.jsonl", "-o", tmp_path / "out")
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr


def test_docs_cli_md_is_current():
    """docs/cli.md is generated from --help (make docs); this fails when it drifts from the code."""
    from alignctl.tools.docgen import render

    current = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    assert current == render(), "docs/cli.md is stale: run `make docs`"


def test_docs_presets_md_is_current():
    from alignctl.tools.docgen import render_presets

    current = (REPO / "docs" / "presets.md").read_text(encoding="utf-8")
    assert current == render_presets(), "docs/presets.md is stale: run `make docs`"


@pytest.mark.parametrize("words, cword, expected", [("alignctl dp", 1, "dpo"), ("alignctl dpo --be", 2, "--beta")])
def test_shell_completion_without_heavy_imports(words, cword, expected):
    """Typer's completion (`alignctl --install-completion`) completes stages and their flags; it
    imports no heavy module (`-X importtime` lists every import on stderr)."""
    env = {**os.environ, "_ALIGNCTL_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    code = "from alignctl.cli import app; app(prog_name='alignctl')"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], env=env, capture_output=True, text=True)
    assert expected in proc.stdout.split(), proc.stdout + proc.stderr[-1000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert not imported & set(HEAVY)
