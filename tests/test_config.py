"""config.py: the precedence chain, provenance, unknown keys with suggestions, bad values."""

from __future__ import annotations

import pytest

from alignctl import config, stages
from alignctl.errors import InputError


def test_precedence_and_sources(tmp_path):
    cfg = tmp_path / "my.yaml"
    cfg.write_text("beta: 0.3\nlearning_rate: 2.0e-5\nlora_r: 8\n")
    r = stages.resolve(
        "dpo",
        preset="dpo-cpu",
        config_file=cfg,
        sets=["lora_r=4", "beta=0.4"],
        flags={"beta": (0.5, "--beta")},
    )
    assert r["per_device_eval_batch_size"] == 8 and r.sources["per_device_eval_batch_size"] == "default"
    assert r["warmup_steps"] == 0 and r.sources["warmup_steps"].startswith("preset dpo-cpu")
    assert r["optim"] == "adamw_torch"  # dpo-cpu overrides its parent dpo (rmsprop)
    assert r["per_device_train_batch_size"] == 4 and r.sources["per_device_train_batch_size"].startswith("preset dpo")
    assert r["learning_rate"] == 2e-5 and r.sources["learning_rate"] == f"config {cfg}"
    assert r["lora_r"] == 4 and r.sources["lora_r"] == "--set lora_r=4"
    assert r["beta"] == 0.5 and r.sources["beta"] == "flag --beta"


def test_default_preset_is_the_chapter():
    r = stages.resolve("dpo")
    assert (r["beta"], r["learning_rate"], r["optim"], r["warmup_steps"]) == (0.1, 1e-5, "rmsprop", 150)
    assert (r["lora_r"], r["lora_alpha"], r["per_device_train_batch_size"]) == (16, 16, 4)
    assert "DPO 偏好训练" in r.sources["beta"]


def test_unknown_key_suggests(tmp_path):
    with pytest.raises(InputError, match="unknown key 'betta' for dpo; did you mean 'beta'"):
        stages.resolve("dpo", sets=["betta=0.2"])
    cfg = tmp_path / "c.yaml"
    cfg.write_text("learning_rat: 1\n")
    with pytest.raises(InputError, match="did you mean 'learning_rate'"):
        stages.resolve("dpo", config_file=cfg)


@pytest.mark.parametrize(
    "item, message",
    [("beta=abc", "beta must be a number"), ("lora_r=1.5", "lora_r must be an integer"), ("beta", "key=value")],
)
def test_bad_set_values(item, message):
    with pytest.raises(InputError, match=message):
        stages.resolve("dpo", sets=[item])


def test_scientific_notation_in_set():
    assert stages.resolve("dpo", sets=["learning_rate=1e-4"])["learning_rate"] == 1e-4


def test_missing_preset_suggests():
    with pytest.raises(InputError, match="did you mean 'dpo-cpu'"):
        stages.resolve("dpo", preset="dpo-cpuu")


def test_every_shipped_preset_resolves():
    """Each shipped preset names only keys its stage knows, with values of the right type."""
    names = config.list_presets()
    assert len(names) >= 9  # every stage's own preset plus the -cpu ones: the loop below is not vacuous
    resolved = []
    for name in names:
        _, _, meta = config.load_preset(name)
        assert meta["stage"] in stages.names(), (name, meta["stage"])  # no preset for a stage this build lacks
        resolved.append(stages.resolve(meta["stage"], preset=name).preset)
    assert resolved == names


def test_adjust_for_device_turns_bf16_off_with_a_line(capsys):
    r = stages.resolve("dpo")
    config.adjust_for_device(r, cuda=False)
    assert r["bf16"] is False and r.sources["bf16"] == "auto: no CUDA device"
    assert "bf16 off" in capsys.readouterr().err


def test_presets_cli(cli):
    code, out, _ = cli("presets", "list")
    assert code == 0 and "dpo-cpu" in out
    code, out, _ = cli("presets", "show", "dpo")
    assert code == 0 and "rmsprop" in out and "DPO 偏好训练" in out


def test_any_field_of_the_trl_config_is_a_setting():
    """dpo runs on TRL's DPOConfig: its fields alignctl does not list are settable too, typed by TRL."""
    r = stages.resolve("dpo", sets=["precompute_ref_log_probs=true", "label_smoothing=0.1"])
    assert r["precompute_ref_log_probs"] is True and r["label_smoothing"] == 0.1
    assert r.sources["label_smoothing"] == "--set label_smoothing=0.1"
    assert r.help["label_smoothing"] == "TRL DPOConfig field"
    with pytest.raises(InputError, match="label_smoothing must be a number"):
        stages.resolve("dpo", sets=["label_smoothing=abc"])
    with pytest.raises(InputError, match="did you mean 'precompute_ref_log_probs'"):
        stages.resolve("dpo", sets=["precompute_ref_logprobs=true"])
    with pytest.raises(InputError, match="neither an alignctl setting nor a DPOConfig field"):
        stages.resolve("dpo", sets=["zzzz_qqq=1"])
    grpo = stages.resolve("grpo", sets=["scale_rewards=batch"])
    assert grpo["scale_rewards"] == "batch"


def test_trl_fields_alignctl_sets_itself_are_refused():
    with pytest.raises(InputError, match="output_dir is set by alignctl; use --output"):
        stages.resolve("dpo", sets=["output_dir=/tmp/x"])


def test_a_stage_without_a_trl_trainer_takes_only_its_own_keys():
    with pytest.raises(InputError, match=r"unknown key 'precompute_ref_log_probs' for collect$"):
        stages.resolve("collect", sets=["precompute_ref_log_probs=true"])


def test_trl_only_settings_reach_the_trl_config(tmp_path):
    from trl import DPOConfig

    from alignctl import training
    from alignctl.runs import Run

    r = stages.resolve("dpo", sets=["label_smoothing=0.25", "padding_free=true"])
    run = Run(stage="dpo", out=tmp_path / "o", work=tmp_path / "w", fingerprint="x", resolved=r, inputs={})
    kwargs = training.trl_kwargs(DPOConfig, r, run)
    assert kwargs["label_smoothing"] == 0.25 and kwargs["padding_free"] is True


def test_preset_name_wins_over_a_directory_of_that_name(tmp_path, monkeypatch, cli):
    """`alignctl dpo -o dpo` makes a dir `dpo`; `--preset dpo` afterwards still means the preset."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dpo").mkdir()
    assert config.find_preset("dpo") == config.presets_dir() / "dpo.yaml"
    assert stages.resolve("dpo", preset="dpo")["optim"] == "rmsprop"
    code, out, err = cli("presets", "show", "dpo")
    assert code == 0 and "rmsprop" in out, err
    own = tmp_path / "mine"  # a YAML file without a suffix is still a file path
    own.write_text("beta: 0.3\n")
    assert config.find_preset("mine").resolve() == own


def test_idle_eval_steps_is_said_where_someone_chose_it():
    """Without eval data a run says eval_steps does nothing when the chapter's preset (dpo), a config
    or a --set chose it; orpo's is the built-in default, nobody's choice, and gets no line."""
    from alignctl.training.fit import idle_eval_steps

    assert "eval_steps=500" in idle_eval_steps(stages.resolve("dpo"))
    assert idle_eval_steps(stages.resolve("orpo")) is None
    assert "eval_steps=20" in idle_eval_steps(stages.resolve("orpo", sets=["eval_steps=20"]))
    assert idle_eval_steps(stages.resolve("dpo", sets=["eval_steps=0"])) is None
