"""Shared fixtures: isolated user state (ALIGNCTL_HOME), tiny local models, CLI runners."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import tiny  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_home(request, tmp_path_factory, monkeypatch):
    """Every test gets its own ALIGNCTL_HOME, except slow tests, which share the user's cache so the
    embedded SmolLM2 is materialised once."""
    if request.node.get_closest_marker("slow") is None:
        monkeypatch.setenv("ALIGNCTL_HOME", str(tmp_path_factory.mktemp("alignctl-home")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    return tiny.build_causal_lm(tmp_path_factory.mktemp("models") / "tiny-lm")


@pytest.fixture(scope="session")
def tiny_rm(tmp_path_factory) -> Path:
    return tiny.build_reward_model(tmp_path_factory.mktemp("models") / "tiny-rm")


@pytest.fixture
def cli():
    """Run alignctl in-process: returns (exit_code, stdout, stderr)."""
    from typer.testing import CliRunner

    from alignctl import cli as cli_mod

    def invoke(*args: str):
        runner = CliRunner()
        result = runner.invoke(cli_mod.app, [str(a) for a in args], catch_exceptions=True)
        code = result.exit_code
        err = result.stderr if hasattr(result, "stderr") else ""
        exc = result.exception
        if exc is not None and not isinstance(exc, SystemExit):
            from alignctl.errors import AlignctlError

            if isinstance(exc, AlignctlError):
                return exc.exit_code, result.stdout, str(exc)
            raise exc
        return code, result.stdout, err

    return invoke


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600):
    """Run `python -m alignctl` in a subprocess (the real entry point, errors and all)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "alignctl", *[str(a) for a in args]],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def run():
    return run_cli


@pytest.fixture
def torch_one_thread():
    """Tiny models gain nothing from a second torch thread, and on a busy 2-core machine OpenMP
    threads spin at barriers (several times slower): one thread, then restore."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
