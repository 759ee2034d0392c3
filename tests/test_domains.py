"""Every setting's domain, listed here apart from the code (src/alignctl/domains.py) so a change on
either side fails, and a property test: a value drawn outside a setting's declared domain stops
`config.resolve` with one line naming where the value came from; a value drawn inside passes.

The domains, by TRL name (one table for every stage and every TRL field `--set` reaches):

> 0                learning_rate, value_learning_rate, num_train_epochs, max_minutes, adam_epsilon,
                   logging_steps, request_timeout, lora_alpha, beta, desirable_weight, undesirable_weight,
                   epsilon, cliprange, cliprange_value, temperature, repetition_penalty, vllm_server_timeout
>= 0               warmup_steps, weight_decay, max_grad_norm, neftune_noise_alpha, dataloader_num_workers,
                   save_steps, eval_steps, save_total_limit, max_retries, kl_coef, vf_coef,
                   center_rewards_coefficient, missing_eos_penalty, min_margin, tie_margin, eval_temperature,
                   top_k
>= 1               per_device_train_batch_size, per_device_eval_batch_size, batch_size,
                   gradient_accumulation_steps, generation_batch_size, local_rollout_forward_batch_size,
                   precompute_ref_batch_size, eval_accumulation_steps, dataset_num_proc, num_iterations,
                   num_ppo_epochs, num_mini_batches, total_episodes, num_samples, rounds, max_concurrency,
                   max_length, max_prompt_length, max_completion_length, max_new_tokens, eval_max_new_tokens,
                   response_length, judge_max_tokens, lora_r, vllm_tensor_parallel_size
>= 2               num_generations
-1 or >= 1         max_steps
[0, 1]             gamma, lam, min_p
(0, 1]             top_p, value_trainable_layers, vllm_gpu_memory_utilization
[0, 1)             adam_beta1, adam_beta2, label_smoothing_factor, lora_dropout
[0, 0.5)           label_smoothing
[0, 4294967295]    seed, data_seed
[1, 65535]         vllm_server_port
[0, 1) or a file   eval_split
a model            ref_model
a file             deepspeed, fsdp_config, accelerator_config
a dir              resume_from_checkpoint
a preset           dpo_preset, trainer_preset, rm_preset

Where a stage's field says otherwise (`STAGE_DOMAINS`): grpo's and rloo's beta >= 0 (no KL term at 0); the
temperature of collect, eval and iterate >= 0 (0 is greedy); iterate's num_samples >= 2 (a pair).
Choices (`CHOICES`): TRL's own where TRL declares them (an Enum in the type such as optim's
OptimizerNames, or `choices` in the field's metadata such as KTO's loss_type), and the lists
alignctl keeps where TRL 1.16's config declares none (dpo's and grpo's loss_type, checked against
the trainers' source below, grpo's scale_rewards, vllm_mode).
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alignctl import config, domains, stages
from alignctl.errors import InputError

POS, NONNEG, COUNT = "> 0", ">= 0", ">= 1"
LISTED = {
    **dict.fromkeys(
        "learning_rate value_learning_rate num_train_epochs max_minutes adam_epsilon logging_steps request_timeout "
        "lora_alpha beta desirable_weight undesirable_weight epsilon cliprange cliprange_value temperature "
        "repetition_penalty vllm_server_timeout".split(),
        POS,
    ),
    **dict.fromkeys(
        "warmup_steps weight_decay max_grad_norm neftune_noise_alpha dataloader_num_workers save_steps eval_steps "
        "save_total_limit max_retries kl_coef vf_coef center_rewards_coefficient missing_eos_penalty min_margin "
        "tie_margin eval_temperature top_k".split(),
        NONNEG,
    ),
    **dict.fromkeys(
        "per_device_train_batch_size per_device_eval_batch_size batch_size gradient_accumulation_steps "
        "generation_batch_size local_rollout_forward_batch_size precompute_ref_batch_size eval_accumulation_steps "
        "dataset_num_proc num_iterations num_ppo_epochs num_mini_batches total_episodes num_samples rounds "
        "max_concurrency max_length max_prompt_length max_completion_length max_new_tokens eval_max_new_tokens "
        "response_length judge_max_tokens lora_r vllm_tensor_parallel_size".split(),
        COUNT,
    ),
    "num_generations": ">= 2",
    "max_steps": "-1 or >= 1",
    **dict.fromkeys(["gamma", "lam", "min_p"], "[0, 1]"),
    **dict.fromkeys(["top_p", "value_trainable_layers", "vllm_gpu_memory_utilization"], "(0, 1]"),
    **dict.fromkeys(["adam_beta1", "adam_beta2", "label_smoothing_factor", "lora_dropout"], "[0, 1)"),
    "label_smoothing": "[0, 0.5)",
    **dict.fromkeys(["seed", "data_seed"], "[0, 4294967295]"),
    "vllm_server_port": "[1, 65535]",
    "eval_split": "[0, 1) or a file",
    "ref_model": "a model",
    **dict.fromkeys(["deepspeed", "fsdp_config", "accelerator_config"], "a file"),
    "resume_from_checkpoint": "a dir",
    **dict.fromkeys(["dpo_preset", "trainer_preset", "rm_preset"], "a preset"),
}
STAGE_DOMAINS = {
    ("grpo", "beta"): ">= 0",
    ("rloo", "beta"): ">= 0",
    ("collect", "temperature"): ">= 0",
    ("eval", "temperature"): ">= 0",
    ("iterate", "temperature"): ">= 0",
    ("iterate", "num_samples"): ">= 2",
}
CHOICES = {  # (stage, key) -> a value that is not one of them, and one that is
    ("dpo", "loss_type"): ("sigmod", "ipo"),
    ("kto", "loss_type"): ("sigmoid", "apo_zero_unpaired"),  # TRL's metadata choices
    ("online-dpo", "loss_type"): ("hinge", "ipo"),
    ("grpo", "loss_type"): ("ppo", "dr_grpo"),
    ("grpo", "scale_rewards"): ("std", "batch"),
    ("grpo", "vllm_mode"): ("remote", "server"),
    ("ppo", "kl_estimator"): ("k2", "k3"),
    ("dpo", "optim"): ("adam", "adamw_torch"),  # transformers' OptimizerNames
    ("train-rm", "lr_scheduler_type"): ("cosin", "cosine"),  # transformers' SchedulerType
    ("dpo", "truncation_mode"): ("keep_middle", "keep_end"),  # a TRL field only --set reaches
}


def _where(key: str) -> list[tuple[str, object]]:
    """(stage, field) pairs that hold `key`: every stage's Settings field, else one TRL field."""
    found = []
    for name in stages.names():
        module = stages.load(name)
        if key in config.schema(module):
            found.append((name, config.schema(module)[key]))
    if found:
        return found
    for name in stages.names():
        module = stages.load(name)
        if key in domains.trl_config_fields(module):
            return [(name, domains.trl_config_fields(module)[key])]
    return []


def test_the_listed_domains_are_the_codes():
    assert domains.DOMAINS == LISTED
    declared = {}
    for name in stages.names():
        for key, f in config.schema(stages.load(name)).items():
            if f.metadata.get("domain"):
                declared[(name, key)] = f.metadata["domain"]
    assert declared == STAGE_DOMAINS
    assert all(_where(key) for key in LISTED), [k for k in LISTED if not _where(k)]


@pytest.mark.parametrize("preset", [None, *config.list_presets()])
def test_every_default_and_shipped_preset_lies_in_its_domains(preset):
    """Built-in defaults and shipped presets are not checked at run time (no TRL import for them):
    here instead, TRL's choices included."""
    stage = (config.load_preset(preset)[2].get("stage") or preset) if preset else None
    for name in [stage] if stage else stages.names():
        module = stages.load(name)
        resolved = stages.resolve(name, preset=preset)
        fields, trl = config.schema(module), domains.trl_config_fields(module)
        for key, value in resolved.values.items():
            f, t = fields.get(key), trl.get(key)
            d = domains.domain_of(key, f, t.type if t else None, t)
            assert d is None or d.contains(value), (name, preset, key, value, d)


@pytest.mark.parametrize("stage, key", sorted(CHOICES))
def test_choices_come_from_the_field_or_from_trl(stage, key):
    bad, good = CHOICES[(stage, key)]
    with pytest.raises(InputError, match=rf"^--set {key}={bad}: {key} must be one of .*got '{bad}'"):
        stages.resolve(stage, sets=[f"{key}={bad}"])
    assert stages.resolve(stage, sets=[f"{key}={good}"])[key] == good


def test_alignctl_loss_type_lists_match_trl_1_16():
    """TRL's configs declare no choices for these; its trainers name them in code: the same set."""
    from trl import DPOTrainer, GRPOTrainer

    from alignctl.stages import dpo, grpo

    source = inspect.getsource(DPOTrainer)
    listed = source[source.index("Unknown loss type") :].split(")", 1)[0]
    assert set(re.findall(r"'([a-z_]+)'", listed)) == set(dpo.LOSS_TYPES)
    source = inspect.getsource(GRPOTrainer)
    used = set(re.findall(r'loss_type == "([a-z_]+)"', source))
    for group in re.findall(r"loss_type in \[([^\]]*)\]", source):
        used |= set(re.findall(r'"([a-z_]+)"', group))
    assert used == set(grpo.LOSS_TYPES)


# ---------------------------------------------------------------------------------------------
# The property: outside -> one line naming the key and where it came from; inside -> accepted


def _numbers(integer: bool, lo: float | None = None, hi: float | None = None):
    if integer:
        return st.integers(min_value=None if lo is None else int(lo), max_value=None if hi is None else int(hi)).filter(
            lambda v: abs(v) < 10**12
        )
    return st.floats(min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False, allow_subnormal=False).filter(
        lambda v: abs(v) < 1e12
    )


def _not_numbers():
    return st.from_regex(r"[a-z]{1,8}", fullmatch=True).map(lambda s: f"no-such-{s}")


# each domain's outside and inside, written from its text (not computed by domains.py)
EPS = 1e-9
OUTSIDE = {
    POS: lambda i: _numbers(i, hi=0),
    NONNEG: lambda i: _numbers(i, hi=-1 if i else -EPS),
    COUNT: lambda i: _numbers(i, hi=0 if i else 1 - EPS),
    ">= 2": lambda i: _numbers(i, hi=1 if i else 2 - EPS),
    "-1 or >= 1": lambda i: st.one_of(_numbers(i, hi=-2), st.just(0)),
    "[0, 1]": lambda i: st.one_of(_numbers(i, hi=-1 if i else -EPS), _numbers(i, lo=2 if i else 1 + EPS)),
    "(0, 1]": lambda i: st.one_of(_numbers(i, hi=0), _numbers(i, lo=2 if i else 1 + EPS)),
    "[0, 1)": lambda i: st.one_of(_numbers(i, hi=-1 if i else -EPS), _numbers(i, lo=1)),
    "[0, 0.5)": lambda i: st.one_of(_numbers(i, hi=-EPS), _numbers(i, lo=0.5)),
    "[0, 4294967295]": lambda i: st.one_of(_numbers(i, hi=-1), _numbers(i, lo=4294967296)),
    "[1, 65535]": lambda i: st.one_of(_numbers(i, hi=0), _numbers(i, lo=65536)),
    "[0, 1) or a file": lambda i: st.one_of(_numbers(False, hi=-EPS), _numbers(False, lo=1), _not_numbers()),
    "a model": lambda i: _not_numbers().map(lambda s: f"./{s}"),
    "a file": lambda i: _not_numbers().map(lambda s: f"{s}.json"),
    "a dir": lambda i: _not_numbers(),
    "a preset": lambda i: _not_numbers(),
}
INSIDE = {
    POS: lambda i: _numbers(i, lo=1 if i else EPS, hi=1e6),
    NONNEG: lambda i: _numbers(i, lo=0, hi=1e6),
    COUNT: lambda i: _numbers(True, lo=1, hi=10**6),
    ">= 2": lambda i: _numbers(True, lo=2, hi=10**6),
    "-1 or >= 1": lambda i: st.one_of(st.just(-1), _numbers(True, lo=1, hi=10**6)),
    "[0, 1]": lambda i: _numbers(i, lo=0, hi=1),
    "(0, 1]": lambda i: _numbers(i, lo=EPS, hi=1),
    "[0, 1)": lambda i: _numbers(i, lo=0, hi=1 - EPS),
    "[0, 0.5)": lambda i: _numbers(i, lo=0, hi=0.5 - EPS),
    "[0, 4294967295]": lambda i: _numbers(True, lo=0, hi=4294967295),
    "[1, 65535]": lambda i: _numbers(True, lo=1, hi=65535),
    "[0, 1) or a file": lambda i: _numbers(False, lo=0, hi=1 - EPS),
    "a model": lambda i: st.sampled_from(["smollm2-135m", "some-org/some-model"]),
}


def _cases() -> list[tuple[str, tuple[tuple[str, bool], ...]]]:
    """(domain text, ((stage, integer-typed), ...)) per setting: each stage that holds it under that
    domain, so every stage's copy of a setting is drawn from."""
    cases: dict[tuple[str, str], list[tuple[str, bool]]] = {}
    for key, text in LISTED.items():
        for stage, f in _where(key):
            types = domains._base_types(f.type)
            cases.setdefault((key, STAGE_DOMAINS.get((stage, key), text)), []).append(
                (stage, int in types and float not in types)
            )
    return [(key, text, tuple(holders)) for (key, text), holders in sorted(cases.items())]


CASES = _cases()
PROPERTY = settings(max_examples=10, deadline=None, database=None, suppress_health_check=list(HealthCheck))


def _resolve_bare(stage: str, item: str):
    """`config.resolve` with no preset files (this test is about the domains, and reading YAML for
    every drawn value would cost most of its time)."""
    with mock.patch.object(config, "presets_dir", lambda: Path("/nonexistent-presets")):
        return stages.resolve(stage, sets=[item])


def _drawn(data, key: str, holders, strategy) -> tuple[str, str]:
    """(stage, `--set` item): one of the stages holding `key`, and a value `strategy` draws."""
    stage, integer = data.draw(st.sampled_from(holders), label="stage")
    value = data.draw(strategy(integer), label="value")
    return stage, f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}"


def _ids(cases: list) -> list[str]:
    return [f"{key} {text}" for key, text, _ in cases]


@pytest.mark.parametrize("key, text, holders", CASES, ids=_ids(CASES))
@PROPERTY
@given(data=st.data())
def test_a_value_outside_its_domain_is_one_line_naming_it(key, text, holders, data):
    stage, item = _drawn(data, key, holders, OUTSIDE[text])
    with pytest.raises(InputError) as exc:
        _resolve_bare(stage, item)
    message = str(exc.value)
    assert message.startswith(f"--set {item}: ") and key in message and "\n" not in message, message


INSIDE_CASES = [c for c in CASES if c[1] in INSIDE]


@pytest.mark.parametrize("key, text, holders", INSIDE_CASES, ids=_ids(INSIDE_CASES))
@PROPERTY
@given(data=st.data())
def test_a_value_inside_its_domain_passes(key, text, holders, data):
    stage, item = _drawn(data, key, holders, INSIDE[text])
    assert _resolve_bare(stage, item).sources[key] == f"--set {item}"
