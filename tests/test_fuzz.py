"""Property tests: on any input, the readers and the preset merger raise only alignctl's own errors.

A user's broken file must end as one `file:line: what` message (an `AlignctlError`), never as a
traceback from json, yaml or our own checks. Hypothesis throws arbitrary bytes, arbitrary JSON
values per line and arbitrary YAML mappings / `--set` strings at them.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from alignctl import config, io, stages
from alignctl.errors import AlignctlError

FUZZ = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
KINDS = [*io.KINDS, None]

# JSON values, biased towards the shapes the readers look for so the checks past json.loads run
# allow_subnormal=False: torch.set_flush_denormal(True) (models.setup_torch, run by earlier tests in
# the same process) puts the CPU in flush-to-zero mode, where hypothesis refuses subnormal floats.
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_subnormal=False) | st.text(max_size=8)
json_values = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3),
    max_leaves=12,
)
roles = st.sampled_from(["user", "assistant", "system", "tool", "robot", ""]) | json_values
messages = st.lists(st.fixed_dictionaries({"role": roles, "content": st.text(max_size=6) | json_values}), max_size=3)
fields = st.text(max_size=6) | messages | json_values
record = st.fixed_dictionaries(
    {},
    optional={
        "prompt": fields,
        "chosen": fields,
        "rejected": fields,
        "completions": st.lists(fields, max_size=3) | json_values,
        "scores": st.lists(scalars, max_size=3) | json_values,
        "id": json_values,
        "score_chosen": scalars,
    },
)
lines = st.lists(record | json_values, min_size=0, max_size=5)

_TMP = Path(tempfile.mkdtemp(prefix="alignctl-fuzz-"))


def _file(data: bytes, name: str = "f.jsonl") -> Path:
    path = _TMP / name
    path.write_bytes(data)
    return path


def _read_all_kinds(path: Path) -> None:
    for kind in KINDS:
        try:
            result = io.read_jsonl(path, kind)
        except AlignctlError:
            continue
        for p in result.problems:  # problems always render as one `path:line: message` line
            assert "\n" not in p.render(path)
        for rec in result.records:  # what the reader accepts, the writers can write
            io.dumps(rec).encode("utf-8")
        if kind is not None:
            try:
                io.load(path, kind)
            except AlignctlError:
                pass


@FUZZ
@given(st.binary(max_size=400))
@example(b"\xef\xbb\xbf\r\n\r\n")
@example(b'{"prompt": "\\ud800"}\n')
@example(b'{"prompt": 1' + b"1" * 5000 + b"}\n")
@example(b"[" * 100_000)
def test_arbitrary_bytes(data):
    _read_all_kinds(_file(data))


@FUZZ
@given(lines, st.sampled_from(["\n", "\r\n"]), st.booleans())
def test_arbitrary_json_lines(values, newline, trailing):
    text = newline.join(json.dumps(v) for v in values) + (newline if trailing else "")
    _read_all_kinds(_file(text.encode("utf-8")))


@FUZZ
@given(st.lists(st.text(max_size=30), max_size=6))
def test_arbitrary_text_lines(texts):
    _read_all_kinds(_file("\n".join(texts).encode("utf-8", "surrogatepass")))


@FUZZ
@given(st.lists(record | json_values, max_size=5))
@example([])
def test_arbitrary_json_arrays(values):
    _read_all_kinds(_file(json.dumps(values).encode("utf-8"), "f.json"))


def _parquet_blob() -> bytes:
    import io as bytes_io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = bytes_io.BytesIO()
    rows = [{"prompt": "q", "chosen": "yes", "rejected": "no", "score_chosen": 1.5}] * 3
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


@FUZZ
@given(st.binary(min_size=1, max_size=40), st.integers(min_value=0), st.booleans())
def test_damaged_parquet(noise, at, cut):
    """A Parquet file with bytes overwritten or cut off: one message, never pyarrow's traceback."""
    blob = _parquet_blob()
    at %= len(blob)
    blob = blob[:at] if cut else blob[:at] + noise + blob[at + len(noise) :]
    _read_all_kinds(_file(blob, "f.parquet"))


# ---------------------------------------------------------------------------------------------
# Presets and --set

keys = st.sampled_from(["beta", "learning_rate", "lora_r", "use_peft", "lora_target_modules", "max_length"]) | st.text(
    max_size=8
)
yaml_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_subnormal=False) | st.text(max_size=10)
yaml_values = st.recursive(
    yaml_scalars,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
    max_leaves=8,
)
mappings = st.dictionaries(keys | st.integers() | st.booleans(), yaml_values, max_size=4)
preset_docs = mappings | st.fixed_dictionaries(
    {"values": mappings}, optional={"stage": yaml_values, "extends": yaml_values, "sources": yaml_values}
)


def _only_ours(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except AlignctlError:
        pass


@FUZZ
@given(preset_docs)
@example({"values": {"beta": 10**400}})
@example({"values": {1: 2}})
@example({"values": {"beta": 0.1}, "sources": 3})
@example({"values": {}, "extends": ["dpo"]})
def test_arbitrary_yaml_mappings(doc):
    path = _file(yaml.safe_dump(doc, allow_unicode=True).encode("utf-8"), "preset.yaml")
    _only_ours(config.load_preset, str(path), "dpo")
    _only_ours(stages.resolve, "dpo", preset=str(path))
    _only_ours(stages.resolve, "dpo", config_file=path)


@FUZZ
@given(st.text(max_size=200))
@example("beta: !!timestamp 2001-02-30")
@example("a: !!int abc")
@example("[" * 10_000)
@example("x: !!python/object:os.system {}")
def test_arbitrary_yaml_text(text):
    path = _file(text.encode("utf-8", "surrogatepass"), "c.yaml")
    _only_ours(config.load_preset, str(path), "dpo")
    _only_ours(stages.resolve, "dpo", config_file=path)


set_items = st.builds(lambda k, v: f"{k}={v}", keys, st.text(max_size=20)) | st.text(max_size=30)


@FUZZ
@given(st.lists(set_items, max_size=4))
@example(["beta=!!timestamp 2001-02-30"])
@example(["lora_r=!!int x"])
@example(["beta=1e999"])
@example(["beta=nan"])
@example(["beta=" + "9" * 5000])
def test_arbitrary_set_strings(items):
    _only_ours(config.parse_set, items)
    _only_ours(stages.resolve, "dpo", sets=items)


@pytest.mark.parametrize("item", ["beta=nan", "beta=inf", "beta=1e999", "learning_rate=.inf"])
def test_non_finite_numbers_are_rejected(item):
    with pytest.raises(AlignctlError, match="must be a finite number"):
        stages.resolve("dpo", sets=[item])
