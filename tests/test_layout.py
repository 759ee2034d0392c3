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
    """Module -> the alignctl modules it imports. Importing `a.b.c` runs the `__init__` of `a.b` first,
    so an import is an edge to the module and to each package above it."""
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        deps = set()
        for m in _imports(path):
            parts = m.split(".")
            deps |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)}
        graph[name] = {m for m in deps if m in files and m != name}
    return graph


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in graph[todo.pop()]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def _path(graph: dict[str, set[str]], start: str, goal: str) -> list[str]:
    """A shortest import path from `start` to `goal` (breadth first)."""
    parents, todo = {start: start}, [start]
    while todo:
        node = todo.pop(0)
        for dep in sorted(graph[node]):
            if dep not in parents:
                parents[dep] = node
                todo.append(dep)
    path = [goal]
    while path[-1] != start:
        path.append(parents[path[-1]])
    return path[::-1]


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
    """Every import counts (inside functions too), and so does the edge from a package to the
    submodules its `__init__` imports. A package and its own submodules may import each other (the
    `__init__` re-exports their names); a cycle that leaves the package is a cycle of layers."""
    graph = _graph()
    reach = {mod: _reach(graph, mod) for mod in graph}
    cycles = set()
    for mod in sorted(graph):
        tangled = sorted(m for m in reach[mod] if mod in reach[m])  # mod's strongly connected component
        if tangled and not any(all(m == p or m.startswith(p + ".") for m in tangled) for p in tangled):
            top = lambda m: m.split(".")[1]  # noqa: E731
            far = ([m for m in tangled if top(m) != top(mod)] or [m for m in tangled if m != mod])[0]
            cycles.add(" -> ".join(_path(graph, mod, far) + _path(graph, far, mod)[1:]))
    assert sorted(cycles) == []


def test_config_knows_no_trl_module():
    """config (and all it imports) reaches no module of training/: a stage hands config its TRL
    trainer's declaration, and config asks that object for the trainer's settings."""
    graph = _graph()
    below = sorted(m for m in _reach(graph, "alignctl.config") if m.startswith("alignctl.training"))
    assert below == [], " -> ".join(_path(graph, "alignctl.config", below[0]))


def test_no_python_file_over_400_lines():
    """The package, its tests, the examples and the benchmarks (not the venvs bench/ keeps)."""
    files = [*SRC.rglob("*.py"), *(REPO / "tests").glob("*.py"), *(REPO / "examples").rglob("*.py"),
             *(REPO / "bench").glob("*.py"), *(REPO / "bench" / "bare").glob("*.py")]  # fmt: skip
    long = {str(p.relative_to(REPO)): n for p in files if (n := len(p.read_text().splitlines())) > 400}
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


def test_readme_lists_the_options_every_training_stage_takes():
    """The README's list of shared training options is what every training stage's command takes."""
    import re

    from alignctl.cli import commands

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    paragraph = readme.split("Options every training stage", 1)[1].split("(for ppo", 1)[0]
    listed = {opt for item in re.findall(r"`(--[a-z-]+(?:/-[a-z])?)", paragraph) for opt in item.split("/")}
    common = {d for c in flags.ALWAYS + flags.TRAINING for d in c.decls if d.startswith("--") and d != "--lr"}
    assert listed == common | {"-m", "-o"}
    built = commands()
    training = [s.name for s in stages.REGISTRY if s.training]
    for name in training:
        opts = {o for p in built[name].params for o in getattr(p, "opts", [])}
        assert listed <= opts, (name, listed - opts)


def test_readme_names_the_training_stages_without_a_trl_trainer():
    """The README says which training stages are not TRL-backed instead of listing the TRL-backed
    ones (that list went stale); the exceptions it names are the registry's."""
    import re

    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    named = re.search(r"The TRL-backed stages \(every training stage but ([a-z-]+) and ([a-z-]+)\)", readme)
    assert named, "README: the TRL-backed stages sentence moved"
    without = {s.name for s in stages.REGISTRY if s.training and getattr(stages.load(s.name), "TRAINER", None) is None}
    assert set(named.groups()) == without


def test_every_trl_trainer_declaration_is_complete():
    """A stage's TRAINER says where TRL keeps the trainer, what records it reads (a reader exists
    for them) and what it trains; the shared tests run every such stage (tests/stage_cases.py)."""
    from alignctl.training.data import READERS
    from alignctl.training.trainers import TRLTrainer
    from stage_cases import CASES, trl_stages

    for name in trl_stages():
        trainer = stages.load(name).TRAINER
        assert isinstance(trainer, TRLTrainer), name
        assert trainer.where.split(".")[0] == "trl" and trainer.records in READERS, name
        assert trainer.trains in ("policy", "reward model"), name
    assert set(CASES) == trl_stages()


def test_inputs_stages_share_mean_one_thing_everywhere():
    """--prompts, --reward, --by and --strict are declared once (flags.py): one help text each; and a
    short option names the same long option in every command (-r is --reward everywhere)."""
    from alignctl.cli import commands

    helps: dict[str, set[str]] = {}
    shorts: dict[str, set[str]] = {}
    for command in commands().values():
        for param in command.params:
            opts = [o for o in getattr(param, "opts", []) if o.startswith("-")]
            longs = [o for o in opts if o.startswith("--")]
            for short in (o for o in opts if not o.startswith("--")):
                shorts.setdefault(short, set()).add(longs[0] if longs else "")
            if longs and longs[0] in ("--prompts", "--reward", "--by", "--strict"):
                helps.setdefault(longs[0], set()).add(param.help)
    assert set(helps) == {"--prompts", "--reward", "--by", "--strict"}
    assert {k: v for k, v in helps.items() if len(v) > 1} == {}
    assert {k: v for k, v in shorts.items() if len(v) > 1} == {}
    assert shorts["-r"] == {"--reward"} and shorts["-p"] == {"--prompts"}
