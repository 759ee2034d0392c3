"""Train a policy with PPO against a reward model or a rule (alignctl's own PPO; the chapter's RLHF).

    alignctl ppo --prompts prompts.jsonl --model SFT --reward-model RM -o out/ppo
    alignctl ppo --prompts qa.jsonl --reward rule:qa --total-episodes 256 --learning-rate 1e-4

The chapter's section "PPO 训练细节及超参数", implemented on torch + transformers + peft +
accelerate (TRL removed its PPOTrainer in 1.13). Per batch of prompts: sample answers
(`response_length` tokens, `temperature`, top_k 0, top_p 1) and cut each after its first EOS; score
them with the reward model at the last token (minus `missing_eos_penalty` when an answer never
ended); per-token rewards are -kl_coef x KL(policy || reference) plus the score on the last
token; GAE (`gamma`, `lam`) gives advantages (whitened) and returns; then `num_ppo_epochs` x
`num_mini_batches` updates of the clipped policy loss + `vf_coef` x the clipped value loss.

With LoRA (the default, as in the chapter's code) the four models sit on two backbones: the
reference is the policy with its adapter off, and the value model is the reward model's backbone
with an adapter (on its top half of layers: `value_trainable_layers`) and a head of its own.
`--no-peft` trains full copies. Writes the policy (LoRA
merged unless --no-merge) with its tokenizer, `value/` (the trained value model),
`metrics.jsonl` (one line per update, TRL's metric names) and `alignctl.json`.

Simplifications, stated plainly: one reward source per run; no reward whitening by default
(`whiten_rewards`), no adaptive KL controller (a fixed `kl_coef`, as in the chapter).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from alignctl.config import Resolved
from alignctl.errors import InputError
from alignctl.flags import Opts, Prompts, Rewards, Split
from alignctl.settings import RolloutSettings, setting

NAME = "ppo"
PPO = "PPO"  # help panel


@dataclass
class Settings(RolloutSettings):
    """Built-in defaults (TRL 1.12 PPOConfig's names and defaults); the `ppo` preset is the chapter's.
    The sampler (`backend`, hf or alignctl's vLLM rollout engine) comes from RolloutSettings."""

    response_length: int = setting(53, "Tokens sampled per answer (chapter: 53).", flag=True, panel=PPO)
    temperature: float = setting(
        0.7, "Sampling temperature (log-probs use the same; chapter: 0.7).", flag=True, panel=PPO
    )
    top_k: int = setting(0, "0 = no top-k cut (the chapter's generation config).", flag=True, panel=PPO)
    top_p: float = setting(1.0, "1.0 = off (chapter).", flag=True, panel=PPO)
    kl_coef: float = setting(0.05, "Per-token KL penalty weight (chapter: 0.2).", flag=True, panel=PPO)
    kl_estimator: str = setting(
        "k1", "k1 = logp - ref_logp; k3 = Schulman's (r-1)-log r.", flag=True, panel=PPO, choices=("k1", "k3")
    )
    gamma: float = setting(1.0, "GAE discount (chapter: 1.0).", flag=True, panel=PPO)
    lam: float = setting(0.95, "GAE lambda (chapter: 0.96).", flag=True, panel=PPO)
    cliprange: float = setting(0.2, "Policy ratio clipped to 1 +/- cliprange (0.2).", flag=True, panel=PPO)
    cliprange_value: float = setting(0.2, "Values clipped to old +/- cliprange_value (0.2).", flag=True, panel=PPO)
    vf_coef: float = setting(0.1, "loss = policy loss + vf_coef * value loss.", flag=True, panel=PPO)
    num_ppo_epochs: int = setting(4, "Passes over each rollout's experience (chapter: 4).", flag=True, panel=PPO)
    num_mini_batches: int = setting(1, "Optimizer steps per PPO epoch (1).", flag=True, panel=PPO)
    whiten_rewards: bool = False
    missing_eos_penalty: float | None = setting(
        None, "Subtracted from the score of an answer with no EOS (chapter: 1.0).", flag=True, panel=PPO
    )
    stop_token: str | None = field(
        default="eos",
        metadata={
            "help": "eos: an answer ends at its first EOS, the rest is cut; null: always response_length tokens."
        },
    )
    stop_token_id: int | None = field(default=None, metadata={"help": "Token that ends an answer (instead of EOS)."})
    total_episodes: int | None = setting(
        None, "Answers to sample in all (default: num_train_epochs x prompts; chapter: 10000).", flag=True, panel=PPO
    )
    num_train_epochs: float = 1.0
    max_steps: int = setting(-1, "Stop after this many PPO updates (-1: total_episodes decides).")
    max_minutes: float | None = setting(None, "Stop after the PPO update at which this many minutes have passed.")
    local_rollout_forward_batch_size: int = setting(
        64, "Rows per generate/forward call during rollout (memory vs speed).", flag=True, panel=PPO
    )
    learning_rate: float = 3e-6
    value_learning_rate: float | None = field(
        default=None, metadata={"help": "Value model's learning rate (OpenRLHF's critic lr); default: learning_rate."}
    )
    per_device_train_batch_size: int = 1
    gradient_accumulation_steps: int = setting(
        1, "Micro-batches per optimizer step (chapter: 16).", flag=True, panel=PPO
    )
    lr_scheduler_type: str = "linear"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    adam_epsilon: float = 1e-8
    max_grad_norm: float | None = 1.0
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Off by default: slower on CPU."})
    chat_template: bool = field(
        default=True, metadata={"help": "Send plain-text prompts as user messages through the chat template."}
    )
    max_prompt_length: int | None = field(
        default=512,
        metadata={"help": "Tokens of the rendered prompt (chat template included); longer ones are cut from the left."},
    )
    seed: int = 42
    save_steps: int | None = setting(50, "Checkpoint every N updates (for --resume).", flag=True, panel=PPO)
    report_to: str = setting("none", "Also log metrics to: none, tensorboard, wandb (accelerate trackers).")
    save_total_limit: int | None = 2
    use_peft: bool = setting(
        True, "LoRA on policy and value model; --no-peft: full fine-tuning, separate copies.", flag="--peft/--no-peft"
    )
    lora_r: int = 16
    lora_alpha: int = 16
    lora_dropout: float = field(default=0.0, metadata={"help": "PPO runs with dropout off (arXiv 2403.17031)."})
    lora_target_modules: list[str] | None = None
    value_trainable_layers: float = field(
        default=0.5,
        metadata={
            "help": "With LoRA: share of the value model's top layers that get its adapter; the frozen layers "
            "below run once, shared with the reward pass (1.0: every layer)."
        },
    )


def check(resolved: Resolved) -> None:
    """Every problem with the settings at once, as one InputError."""
    v = resolved.values
    problems = []

    def need(ok: bool, text: str) -> None:
        if not ok:
            problems.append(text)

    for key in ("response_length", "num_ppo_epochs", "num_mini_batches", "per_device_train_batch_size"):
        need(v[key] >= 1, f"{key} must be >= 1, got {v[key]}")
    for key in ("gradient_accumulation_steps", "local_rollout_forward_batch_size"):
        need(v[key] >= 1, f"{key} must be >= 1, got {v[key]}")
    need(
        v["gradient_accumulation_steps"] % max(1, v["num_mini_batches"]) == 0,
        "gradient_accumulation_steps must be a multiple of num_mini_batches (each mini-batch is whole micro-batches)",
    )
    need(v["stop_token"] in ("eos", None), f"stop_token must be eos or null, got {v['stop_token']!r}")
    need(v["kl_estimator"] in ("k1", "k3"), f"kl_estimator must be k1 or k3, got {v['kl_estimator']!r}")
    need(v["temperature"] > 0, f"temperature must be > 0, got {v['temperature']}")
    need(0 < v["top_p"] <= 1, f"top_p must be in (0, 1], got {v['top_p']}")
    need(v["top_k"] >= 0, f"top_k must be >= 0, got {v['top_k']}")
    need(0 <= v["gamma"] <= 1 and 0 <= v["lam"] <= 1, f"gamma and lam must be in [0, 1], got {v['gamma']}, {v['lam']}")
    need(v["cliprange"] > 0 and v["cliprange_value"] > 0, "cliprange and cliprange_value must be > 0")
    need(v["kl_coef"] >= 0 and v["vf_coef"] >= 0, "kl_coef and vf_coef must be >= 0")
    need(v["total_episodes"] is None or v["total_episodes"] >= 1, "total_episodes must be >= 1")
    need(v["num_train_epochs"] > 0, "num_train_epochs must be > 0")
    need(v["learning_rate"] > 0, "learning_rate must be > 0")
    need(not v["use_peft"] or v["lora_r"] >= 1, "lora_r must be >= 1")
    need(0 < v["value_trainable_layers"] <= 1, "value_trainable_layers must be in (0, 1]")
    if problems:
        raise InputError("invalid ppo settings: " + "; ".join(problems))


def reward_source(reward_model: str | None, reward: str | None) -> tuple[str | None, Any]:
    """(reward model dir, rule source): exactly one is set. Checked here, before any model loads.

    `--reward rm:DIR` is the same as `--reward-model DIR`: PPO loads it itself, because with LoRA
    its backbone doubles as the value model's (two backbones in memory, not four).
    """
    from alignctl import models
    from alignctl.rewards import resolve_source

    if reward_model and reward:
        raise InputError("give either --reward-model or --reward, not both")
    if reward and reward.strip().startswith("rm:"):
        reward_model, reward = reward.strip()[len("rm:") :], None
    if reward_model:
        models.check_reward_model(reward_model, reward_model)
        return models.resolve_model(reward_model), None
    if not reward:
        raise InputError("PPO needs a reward: --reward-model RM_DIR or --reward rule:NAME / rule:file.py:func")
    spec = reward.strip()
    source = None if spec.startswith("judge") or spec == "human" else resolve_source(spec)
    if source is None or source.pairwise:
        raise InputError(f"--reward {reward}: PPO needs a score per answer; a pairwise judge or a human gives none")
    return None, source


def _check_vocab(tokenizer, rm_path: str) -> None:
    # The value model reads the policy's tokens through the reward model's backbone, and the score is
    # read from the same ids: one vocabulary is a must (TRL's PPO assumed it silently).
    from alignctl import models

    if not any((Path(rm_path) / f).is_file() for f in models.TOKENIZER_FILES):
        return
    rm_tok = models.load_tokenizer(rm_path)
    if rm_tok.get_vocab() != tokenizer.get_vocab():
        from alignctl.errors import ModelError

        raise ModelError(f"{rm_path}: the reward model's tokenizer differs from the policy's; PPO needs one vocabulary")


def run(
    resolved: Resolved,
    prompts: Path,
    model: str | None,
    output: Path,
    *,
    reward_model: str | None = None,
    reward: str | None = None,
    trust_remote_code: bool = False,
    split: str | None = None,
    **switches: bool,
) -> Path:
    """Train and save; returns the output dir. Validates everything before any model loads.
    `switches`: overwrite, force, resume, merge (flags.Opts.switches())."""
    from alignctl import models, readers, runs, training

    switches = training.fit.SWITCHES | switches
    merge = switches["merge"]
    from alignctl.prompts import prepare, prompt_ids, read_prompts
    from alignctl.rewards import check_columns

    check(resolved)
    records = read_prompts(prompts, split)
    rm_path, source = reward_source(reward_model, reward)
    check_columns([source] if source else [], records, prompts)
    model_path = models.resolve_model(model)
    from alignctl.training.engine_hooks import Sampler

    sampler = Sampler(resolved, cuda=models.has_cuda(), trl=False)  # a missing vllm: one line, before loading
    run_ = training.begin_run(
        NAME,
        resolved,
        output,
        model,
        model_path,
        inputs={"prompts": readers.fingerprint(prompts, split), "reward": rm_path or source.describe()},
        **switches,
    )
    if run_.up_to_date:
        return run_.out

    torch = models.setup_torch()
    from accelerate import Accelerator
    from transformers import set_seed

    from alignctl.training.budget import Budget

    from . import roles as roles_mod
    from . import rollout, trainer

    # cpu=True is what lets accelerate run several CPU processes (torchrun, gloo) as one job.
    report_to = [t for t in str(resolved["report_to"] or "none").split(",") if t.strip() not in ("", "none")]
    acc = Accelerator(cpu=not torch.cuda.is_available(), log_with=report_to or None, project_dir=run_.work)
    if report_to:
        acc.init_trackers("ppo", config={k: v for k, v in resolved.values.items() if isinstance(v, int | float | str)})
    set_seed(int(resolved["seed"]))  # same LoRA and head init on every process
    tokenizer = models.load_tokenizer(model_path, trust_remote_code=trust_remote_code)
    if rm_path:
        _check_vocab(tokenizer, rm_path)
    stop_id = resolved["stop_token_id"]
    if stop_id is None and resolved["stop_token"] == "eos":
        stop_id = tokenizer.eos_token_id
        if stop_id is None:
            raise InputError(f"{model_path}: the tokenizer has no EOS token; set stop_token_id")
    prepare(records, tokenizer, resolved, strict=None, path=prompts)
    encoded = [prompt_ids(tokenizer, r["prompt"]) for r in records]
    roles = roles_mod.build(model_path, rm_path, resolved.values, trust_remote_code=trust_remote_code)
    for m in (roles.policy, roles.critic, roles.value_head):
        m.to(acc.device)
    tok = rollout.Tokens(tokenizer, stop_id, int(tokenizer.pad_token_id))
    budget = Budget(resolved["max_minutes"])
    engine = sampler.start(model_path, roles.policy, resolved, trust_remote_code=trust_remote_code)
    try:
        final = trainer.train(
            acc, roles, encoded, records, resolved.values, tok, run_, source=source, budget=budget, engine=engine
        )
    finally:
        sampler.close()
    described = sampler.describe()
    if engine is not None:
        final.update(engine.metrics())
        described["logprobs"] = rollout.logprob_source(engine, roles.policy)
    acc.wait_for_everyone()
    acc.end_training()  # closes the --report-to trackers and the process group (every rank exits clean)
    if runs.is_main_process():
        training.remove_checkpoints(run_)
        roles_mod.save_value(roles, run_.work / "value", tokenizer, merge=merge)
        models.save_model(roles.policy, tokenizer, run_.work, merge=merge)
    extra = {
        "records": {"prompts": len(records)},
        "value_model": "value",
        "training": budget.summary(),
        "sampler": described,
    }
    return run_.finish(final, extra=extra)


def command(
    prompts: Prompts,
    reward_model: Annotated[
        str | None,
        typer.Option("--reward-model", help="Reward model dir (e.g. train-rm's output); the same as --reward rm:DIR."),
    ] = None,
    reward: Rewards = None,
    split: Split = None,
    *,
    resolved: Resolved,
    opts: Opts,
) -> Path:
    """Train a policy with PPO against a reward model or a rule."""
    if reward and len(reward) > 1:
        raise InputError(f"ppo takes one --reward (its score at the answer's end), got {len(reward)}")
    rewards = {"reward_model": reward_model, "reward": reward[0] if reward else None}
    return run(resolved, prompts, opts.model, opts.output, split=split, **rewards, **opts.switches())
