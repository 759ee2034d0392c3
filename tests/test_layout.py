"""The source layout holds (docs/developing.md): one stage registry, layers that import downwards only,
no import cycle, no module over 400 lines, and the stage contract in every stage module."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from alignctl import flags, stages
from conftest import REPO

SRC = REPO / "src" / "alignctl"
# the only modules that may import stage code: the CLI, the tools, and the stages themselves
ABOVE_STAGES = ("alignctl.cli", "alignctl.__main__", "alignctl.tools", "alignctl.stages")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every alignctl module `path` imports, at module level or inside functions."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):  # imports only type checkers run are not imports
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("alignctl")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            if base.startswith("alignctl"):
                out.add(base)
                out |= {f"{base}.{a.name}" for a in node.names}
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        graph[name] = {m for m in _imports(path) if m in files and m != name}
    return graph


def test_nothing_below_the_stages_imports_stage_code():
    offenders = [
        f"{mod} imports {dep}"
        for mod, deps in _graph().items()
        if not mod.startswith(ABOVE_STAGES)
        for dep in deps
        if dep.startswith("alignctl.stages")
    ]
    assert offenders == []


def test_no_import_cycle():
    graph = _graph()
    # a package imports its submodules' names through __init__; that edge is not a cycle of layers
    for mod in graph:
        graph[mod] = {d for d in graph[mod] if not d.startswith(mod + ".")}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(" -> ".join([*path[path.index(dep) :], dep]))
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])
    assert cycles == []


def test_no_source_file_over_400_lines():
    long = {str(p.relative_to(REPO)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


@pytest.mark.parametrize("stage", stages.REGISTRY, ids=lambda s: s.name)
def test_every_stage_fulfils_the_contract(stage):
    module = stages.load(stage.name)
    assert module.NAME == stage.name
    assert dataclasses.is_dataclass(module.Settings)
    assert callable(module.run) and callable(module.command)
    assert callable(getattr(module, "check", lambda resolved: None))
    assert module.__doc__ and module.__doc__.split("\n\n")[0].strip()
    keys = {f.name for f in dataclasses.fields(module.Settings)}
    if stage.training:  # the common training options set these settings
        assert set(flags.TRAINING_KEYS) <= keys, set(flags.TRAINING_KEYS) - keys
    flags.build(stage, module)  # option names are unique and typed


def test_root_help_imports_no_stage_module():
    """`alignctl --help` reads each stage's summary from its source; it imports none of them."""
    code = (
        "import sys\nfrom alignctl.cli import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('LOADED', sorted(m for m in sys.modules if m.startswith('alignctl.stages.')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "LOADED []" in proc.stdout, proc.stdout[-500:] + proc.stderr[-500:]
    for stage in stages.REGISTRY:
        assert stage.name in proc.stdout
