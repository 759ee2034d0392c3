"""Scale-out: the shipped accelerate configs load, and two ranks train with only rank 0 writing.

The configs are checked the way `accelerate launch` reads them (its config class, its launch
arguments, the environment it hands each rank). Training runs on CPU over gloo, two ranks:
`torchrun --nproc_per_node 2` per stage (rank-0-only output dirs, manifests, metrics and stdout),
`accelerate launch` with cpu-2proc.yaml, repeated (every rank exits 0), and with fsdp.yaml (FSDP2
gathers the full weights before the save). DeepSpeed needs GPUs: its save path has a stand-in test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from stage_cases import CASES, write_inputs
from tiny import toy_preferences, write_jsonl

ACCEL = REPO / "presets" / "accelerate"
EXPECTED = {  # file -> (distributed type, processes, environment the launcher must hand each rank)
    "ddp.yaml": ("MULTI_GPU", 8, {}),
    "deepspeed-zero2.yaml": (
        "DEEPSPEED",
        8,
        {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"},
    ),
    "deepspeed-zero3.yaml": (
        "DEEPSPEED",
        8,
        {"ACCELERATE_DEEPSPEED_ZERO_STAGE": "3", "ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL": "true"},
    ),
    "fsdp.yaml": (
        "FSDP",
        8,
        {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_STATE_DICT_TYPE": "FULL_STATE_DICT"},
    ),
    "cpu-2proc.yaml": ("MULTI_GPU", 2, {}),
}


def test_every_shipped_config_is_checked():
    assert sorted(p.name for p in ACCEL.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_accelerate_config_loads(name, monkeypatch):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    path = ACCEL / name
    kind, procs, env_expected = EXPECTED[name]
    cfg = ClusterConfig.from_yaml_file(str(path))  # raises on any key accelerate does not know
    assert load_config_from_file(str(path)).distributed_type.value == kind == cfg.distributed_type.value
    assert cfg.num_processes == procs and cfg.mixed_precision == "no"  # alignctl's bf16 setting decides
    first = path.read_text().splitlines()[0]
    assert first.startswith(f"# accelerate launch --config_file presets/accelerate/{name} -m alignctl ")

    # the nested settings are launch arguments: an unknown one would be silently ignored by accelerate
    parser = launch_command_parser()
    known = vars(parser.parse_args(["x.py"]))
    for key in cfg.deepspeed_config or {}:
        assert key in known, key
    for key in cfg.fsdp_config or {}:
        assert (key if key.startswith("fsdp") else f"fsdp_{key}") in known, key
    args = parser.parse_args(["--config_file", str(path), "--main_process_port", "0", "-m", "alignctl", "dpo"])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    assert {k: env.get(k) for k in env_expected} == env_expected
    if kind == "FSDP":  # the plugin the Trainer's Accelerator builds from that environment
        from accelerate.utils import FullyShardedDataParallelPlugin

        for k, v in env.items():
            if k.startswith(("ACCELERATE_", "FSDP_")):
                monkeypatch.setenv(k, v)
        plugin = FullyShardedDataParallelPlugin()
        assert plugin.fsdp_version == 2 and plugin.cpu_ram_efficient_loading


# The default run keeps dpo's two ranks (and ppo's, tests/test_ppo.py); the other stages' take
# another two minutes of subprocesses and run with make test-slow.
DEFAULT_RUN = {"dpo"}


@pytest.mark.parametrize(
    "stage",
    [
        pytest.param(s, marks=() if s in DEFAULT_RUN else pytest.mark.long)
        for s, c in sorted(CASES.items())
        if c.torchrun
    ],
)
def test_torchrun_two_ranks_only_rank0_writes(tmp_path, tiny_lm, stage):
    """`torchrun --nproc_per_node 2 -m alignctl STAGE` on CPU (gloo): one output, written once
    (the stages tests/stage_cases.py marks; ppo has its own in tests/test_ppo.py)."""
    write_inputs(tmp_path)
    args = [stage, *CASES[stage].args, "--model", tiny_lm]
    inputs = {p.name for p in tmp_path.iterdir()}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "alignctl"]
    cmd += [*map(str, args), "--max-steps", "2", "--set", "save_steps=1", "--set", "logging_steps=1", "-o", "out"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    log = f"stdout:\n{proc.stdout[-1000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, log
    assert proc.stdout.splitlines() == ["out"], log  # the path once: rank 1 prints nothing on stdout
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note:")]
    assert notes and len(notes) == len(set(notes)), log  # each note once, from rank 0

    out = tmp_path / "out"
    left = {p.name for p in tmp_path.iterdir()} - {"__pycache__"}  # importing rules.py may cache bytecode
    assert left == inputs | {"out"}, log  # no out.partial, no stray runs/ dir
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if n.startswith(("checkpoint-", ".")) or n.endswith((".tmp", ".partial"))], names
    manifest = json.loads((out / "alignctl.json").read_text())  # written once, whole, parseable
    assert manifest["stage"] == stage and manifest["world_size"] == 2
    assert manifest["final_metrics"]["global_step"] == 2
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == [1, 2], steps  # one line per logging step, not one per rank
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as fh:  # a complete weights file
        assert len(list(fh.keys())) > 0


def test_save_final_on_a_sharded_engine_merges_the_gathered_adapter(tmp_path, tiny_lm):
    """DeepSpeed/FSDP path of training.save_final, with a stand-in trainer (the engines need GPUs):
    the trainer's gathered adapter is merged into the parent on rank 0, checkpoints are dropped."""
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignctl import runs, training

    torch.manual_seed(0)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)  # non-zero B
    policy = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_lm), lora)

    class ShardedTrainer:  # what save_final uses of transformers' Trainer
        is_fsdp_enabled = True
        model = policy

        class accelerator:  # noqa: N801
            @staticmethod
            def wait_for_everyone():
                pass

        def save_model(self, out):  # rank 0's part of Trainer.save_model for a peft model: the adapter
            self.model.save_pretrained(out)

    run_ = runs.begin("dpo", tmp_path / "out", inputs={}, resolved=None)
    (run_.work / "checkpoint-1").mkdir()
    training.save_final(ShardedTrainer(), AutoTokenizer.from_pretrained(tiny_lm), run_, merge=True)
    names = sorted(p.name for p in run_.work.iterdir())
    assert "model.safetensors" in names and "tokenizer.json" in names
    assert not [n for n in names if n.startswith(("adapter_", "checkpoint-"))], names
    saved = load_file(run_.work / "model.safetensors")
    expected = policy.merge_and_unload().state_dict()
    assert saved.keys() <= expected.keys() and "model.layers.0.self_attn.q_proj.weight" in saved
    for key, tensor in saved.items():
        assert torch.allclose(tensor, expected[key], atol=1e-6), key
    base = load_file(tiny_lm / "model.safetensors")
    assert not torch.equal(
        saved["model.layers.0.self_attn.q_proj.weight"], base["model.layers.0.self_attn.q_proj.weight"]
    )


@pytest.mark.parametrize(
    ("cuda", "local_rank", "expected"),
    [(False, "1", "cpu"), (True, None, "cuda:0"), (True, "0", "cuda:0"), (True, "1", "cuda:1"), (True, "-1", "cuda:0")],
)
def test_each_rank_computes_on_its_own_device(monkeypatch, cuda, local_rank, expected):
    """Reward models and generation place themselves with models.device(): under torchrun every
    rank on its own GPU, not all of them on cuda:0."""
    from alignctl import models

    monkeypatch.setattr(models, "has_cuda", lambda: cuda)
    if local_rank is None:
        monkeypatch.delenv("LOCAL_RANK", raising=False)
    else:
        monkeypatch.setenv("LOCAL_RANK", local_rank)
    assert models.device() == expected


def _accelerate(tmp: Path, config: str, *args, extra_launch: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCEL / config),
           "--main_process_port", "0", *extra_launch, "-m", "alignctl", *map(str, args)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.long  # three launches: a flake that came 1 run in 9
def test_accelerate_launch_exits_clean_every_time(tmp_path, tiny_lm):
    """`accelerate launch --config_file presets/accelerate/cpu-2proc.yaml -m alignctl dpo ...`, three
    times: every rank exits 0 (rank 1 used to abort at interpreter exit, 1 run in 9, with the
    process group still open), and each run writes one complete output."""
    write_jsonl(tmp_path / "prefs.jsonl", toy_preferences(8))
    for i in range(3):
        proc = _accelerate(tmp_path, "cpu-2proc.yaml", "dpo", "--data", "prefs.jsonl", "--model", tiny_lm,
                           "--batch-size", "2", "--max-steps", "2", "-o", f"out{i}")  # fmt: skip
        log = f"run {i}\nstdout:\n{proc.stdout[-1000:]}\nstderr:\n{proc.stderr[-3000:]}"
        assert proc.returncode == 0, log
        assert "terminate called" not in proc.stderr and "SIGABRT" not in proc.stderr, log
        assert proc.stdout.splitlines() == [f"out{i}"], log
        assert json.loads((tmp_path / f"out{i}" / "alignctl.json").read_text())["world_size"] == 2


@pytest.mark.long  # two processes, full fine-tuning, half a minute
def test_fsdp2_on_cpu_saves_full_loadable_changed_weights(tmp_path, tiny_lm):
    """FSDP2 (presets/accelerate/fsdp.yaml, 2 processes on CPU over gloo), full fine-tuning: the
    sharded weights are gathered before the save, so the output is a whole HF dir that loads and
    differs from the parent."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    write_jsonl(tmp_path / "prefs.jsonl", toy_preferences(8))
    proc = _accelerate(tmp_path, "fsdp.yaml", "dpo", "--data", "prefs.jsonl", "--model", tiny_lm, "--batch-size", "2",
                       "--max-steps", "2", "--set", "use_peft=false", "--set", "learning_rate=1e-3", "-o", "out",
                       extra_launch=("--num_processes", "2"))  # fmt: skip
    log = f"stdout:\n{proc.stdout[-1000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, log
    saved = load_file(tmp_path / "out" / "model.safetensors")
    base = load_file(tiny_lm / "model.safetensors")
    assert set(base) <= set(saved) or set(saved) <= set(base), (sorted(saved)[:5], sorted(base)[:5])
    assert all(saved[k].shape == base[k].shape for k in saved.keys() & base.keys())  # full, not shards
    assert any(not torch.equal(saved[k], base[k]) for k in saved.keys() & base.keys())
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_lm).parameters()
    )
