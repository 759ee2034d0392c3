"""The repository stands alone: what a user reads (README, docs, presets, `presets show`, messages
and docstrings) refers only to files in the repository, and the README's first commands work as
written on a fresh clone, saying what they do on a CPU."""

from __future__ import annotations

import re

import pytest

from conftest import REPO

# what a clone does not have: the notes beside the repository, the chapter's file, issue numbers
OUTSIDE = re.compile(r"\.\./shared|shared/(design|style|spec)|spec/alignment|(?<![\w/])(design|style)\.md|\bissues? \d")


def _read() -> list:
    globs = ["README.md", "docs/*.md", "presets/*.yaml", "src/alignctl/**/*.py", "examples/**/*", "bench/*.py"]
    return sorted(
        {p for g in globs for p in REPO.glob(g) if p.is_file() and p.suffix in (".md", ".yaml", ".py", ".sh")}
    )


@pytest.mark.parametrize("path", _read(), ids=lambda p: str(p.relative_to(REPO)))
def test_a_document_names_no_file_outside_the_repository(path):
    hits = [
        f"{n}: {line.strip()}"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert hits == [], hits


def test_docs_design_md_holds_the_sections_the_code_cites():
    text = " ".join((REPO / "docs" / "design.md").read_text(encoding="utf-8").replace("*", "").split())
    cited = set()
    for path in _read():
        found = re.findall(r'docs/design\.md[,:]? ["\'“]([^"\'”]+)["\'”]', path.read_text(encoding="utf-8"))
        cited |= {" ".join(c.replace("#", " ").split()) for c in found}
    assert cited and {c for c in cited if c not in text} == set()


def test_readme_activates_the_venv_before_its_first_command_and_says_what_a_cpu_sees():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    first_command = text.index("alignctl dpo --data prefs.jsonl")
    assert text.index(". .venv/bin/activate") < first_command
    usage = text.index("## Usage")
    assert usage < text.index(". .venv/bin/activate", usage) < text.index("\nalignctl collect", usage)
    first_line = text[first_command : text.index("\n", first_command)]
    assert "CPU" in first_line and "dpo-cpu" in first_line


def test_presets_show_names_no_file_outside_the_repository(cli):
    from alignctl import config

    for name in config.list_presets():
        code, out, _ = cli("presets", "show", name)
        assert code == 0 and not OUTSIDE.search(" ".join(out.replace("│", " ").split())), name
