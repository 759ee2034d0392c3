"""Secrets and remote code: API keys never leave the environment; no code runs that the user did not name.

A judge's API key is read from an environment variable (`--judge-key-env`, default
OPENAI_API_KEY). The tests run `label` against an OpenAI-compatible server on 127.0.0.1 with a
unique key set, check the server received it, and grep every file written, the manifest, the
journal and stdout/stderr for it, also when the endpoint fails and echoes the key back.
"""

from __future__ import annotations

import inspect
import json
import re
import secrets
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import REPO
from tiny import write_jsonl

KEY_ENV = "ALIGNCTL_TEST_JUDGE_KEY"


class FakeJudge:
    """An OpenAI-compatible chat endpoint: prefers the answer that says "good"; can fail with 401."""

    def __init__(self, fail_with_echo: bool = False) -> None:
        self.auth: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                outer.auth.append(self.headers.get("Authorization", ""))
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if fail_with_echo:  # a careless server that echoes the credentials it got
                    self._send(401, {"error": f"invalid key {self.headers.get('Authorization')}"})
                    return
                text = body["messages"][-1]["content"]
                a_part = text.split("Answer A:", 1)[1].split("Answer B:", 1)[0]
                verdict = "A" if "good" in a_part else "B"
                self._send(200, {"choices": [{"message": {"role": "assistant", "content": verdict}}]})

            def _send(self, code: int, obj: dict) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep the test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeJudge:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _candidates(tmp: Path) -> Path:
    recs = [
        {"id": f"q{i}", "prompt": f"Is the sky {c}?", "completions": [f"no bad {i}", f"yes good {i}"]}
        for i, c in enumerate(("red", "blue", "green"))
    ]
    return write_jsonl(tmp / "cands.jsonl", recs)


def _files_containing(root: Path, needle: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


def test_label_with_a_judge_never_writes_the_key(tmp_path, run):
    key = f"sk-test-{secrets.token_hex(16)}"
    cands = _candidates(tmp_path)
    with FakeJudge() as judge:
        proc = run(
            "label", "--candidates", cands, "--by", "judge:test-judge", "--judge-url", judge.url,
            "--judge-key-env", KEY_ENV, "-o", tmp_path / "prefs.jsonl", env={KEY_ENV: key},
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert judge.auth and set(judge.auth) == {f"Bearer {key}"}  # the key was used...
    prefs = [json.loads(x) for x in (tmp_path / "prefs.jsonl").read_text().splitlines()]
    assert len(prefs) == 3 and all("good" in p["chosen"] for p in prefs)
    manifest = (tmp_path / "prefs.jsonl.alignctl.json").read_text()
    assert KEY_ENV in manifest  # ...the manifest names the variable...
    assert key not in proc.stdout and key not in proc.stderr  # ...and nothing shows its value
    assert _files_containing(tmp_path, key) == []
    assert _files_containing(tmp_path, key[8:]) == []  # not even without its prefix


@pytest.mark.parametrize("debug", [False, True])
def test_a_failing_endpoint_that_echoes_the_key_is_redacted(tmp_path, run, debug):
    key = f"sk-test-{secrets.token_hex(16)}"
    cands = _candidates(tmp_path)
    with FakeJudge(fail_with_echo=True) as judge:
        proc = run(
            *(["--debug"] if debug else []), "label", "--candidates", cands, "--by", "judge:test-judge",
            "--judge-url", judge.url, "--judge-key-env", KEY_ENV, "-o", tmp_path / "prefs.jsonl",
            env={KEY_ENV: key},
        )  # fmt: skip
    assert proc.returncode != 0 and "HTTP 401" in proc.stderr
    assert f"check the API key in ${KEY_ENV}" in proc.stderr
    assert key not in proc.stdout + proc.stderr
    assert _files_containing(tmp_path, key) == []
    assert not (tmp_path / "prefs.jsonl").exists()


# Words that make a name a credential's, wherever they sit in it (--key, --judge-key, --openai-key,
# hub_token, api_secret...); a tokenizer's own tokens (pad_token, stop_token_id) are not secrets.
CREDENTIAL_WORDS = {"key", "apikey", "secret", "password", "passwd", "token", "credential", "credentials", "auth"}
TOKENIZER_WORDS = {"pad", "eos", "bos", "unk", "sep", "cls", "mask", "stop", "id", "ids"}


def _is_credential_name(name: str) -> bool:
    words = set(re.split(r"[-_]+", name.lower().strip("-")))
    return bool(words & CREDENTIAL_WORDS) and not words & TOKENIZER_WORDS and "env" not in words


def test_credential_names_are_recognised_whatever_they_are():
    for name in ("--key", "--judge-key", "--openai-key", "--api-key", "--hf-token", "hub_token", "db_password"):
        assert _is_credential_name(name), name
    for name in ("--judge-key-env", "--max-new-tokens", "pad_token", "stop_token_id", "--monkey", "--keyword"):
        assert not _is_credential_name(name), name


def _commands():
    from alignctl.cli import commands

    def walk(cmd, path):
        yield path, cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, f"{path} {name}".strip())

    return [item for name, cmd in commands().items() for item in walk(cmd, name)]


def test_no_flag_takes_a_credential():
    """Keys come from the environment only (a flag naming the variable, `--judge-key-env`): a flag
    value lands in shell history, in `command` in every manifest and in error messages."""
    found = [
        f"{path} {opt}"
        for path, cmd in _commands()
        for param in cmd.params
        for opt in getattr(param, "opts", [])
        if _is_credential_name(opt)
        or (re.search(r"api key|secret|password", param.help or "", re.I) and not opt.endswith("-env"))
    ]
    assert found == []
    # the -env flags exist and are what the check lets through
    env_flags = {
        opt for _, cmd in _commands() for p in cmd.params for opt in getattr(p, "opts", []) if opt.endswith("-key-env")
    }
    assert env_flags == {"--judge-key-env"}


def test_no_setting_takes_a_credential_and_its_value_is_never_echoed():
    """Every key a stage accepts (its settings and every field of its TRL config, e.g. TrainingArguments'
    hub_token) is checked by name: a credential is refused, and the message never shows the value."""
    from alignctl import config, stages
    from alignctl.errors import InputError

    secret = f"sk-test-{secrets.token_hex(8)}"
    refused = []
    for stage in stages.names():
        module = stages.load(stage)
        trainer = getattr(module, "TRAINER", None)
        names = [*config.schema(module), *(trainer.settable()[1] if trainer else ())]
        for name in [n for n in names if _is_credential_name(n)] + ["judge_key", "key", "openai_key", "api_key"]:
            with pytest.raises(InputError) as err:
                stages.resolve(stage, sets=[f"{name}={secret}"])
            assert secret not in str(err.value), (stage, name)
            refused.append(name)
    assert "hub_token" in refused  # TRL's configs have one, so the check above is not vacuous


@pytest.mark.parametrize(
    "stage, args",
    [
        ("label", ["--judge-key", "{s}"]),
        ("label", ["--key", "{s}"]),
        ("label", ["--openai-key={s}"]),
        ("label", ["--set", "openai_key={s}"]),
        ("dpo", ["--set", "hub_token={s}"]),  # a real TRL field: accepted, it would train and write the manifest
    ],
)
def test_a_key_given_under_any_name_is_refused_unseen(tmp_path, tiny_lm, run, stage, args):
    """A key on the command line, under a flag that does not exist or as a setting: exit 2, the value
    nowhere in the output, nothing written."""
    secret = f"sk-test-{secrets.token_hex(16)}"
    if stage == "label":
        inputs = ["--candidates", _candidates(tmp_path), "--by", "rule:length"]
    else:
        prefs = write_jsonl(tmp_path / "cands.jsonl", [{"prompt": "Is it?", "chosen": " yes", "rejected": " no"}])
        inputs = ["--data", prefs, "--model", tiny_lm, "--max-steps", "1"]
    proc = run(stage, *inputs, *[a.format(s=secret) for a in args], "-o", tmp_path / "out")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert secret not in proc.stdout + proc.stderr and secret[8:] not in proc.stdout + proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cands.jsonl"]


# ---------------------------------------------------------------------------------------------
# Remote code


def test_trust_remote_code_is_off_unless_the_flag_is_given():
    """Every command with --trust-remote-code defaults it to False; no source turns it on by itself."""
    from alignctl.cli import commands

    seen = []
    for name, cmd in commands().items():
        for param in cmd.params:
            if param.name == "trust_remote_code":
                assert param.default is False, name
                seen.append(name)
    assert {"dpo", "train-rm", "grpo", "validate"} <= set(seen)
    hits = [
        f"{p.relative_to(REPO)}:{n}"
        for p in (REPO / "src" / "alignctl").rglob("*.py")
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"trust_remote_code\s*=\s*True", line)
    ]
    assert hits == []


def test_model_loaders_default_to_no_remote_code(tiny_lm, tiny_rm, monkeypatch):
    import transformers

    from alignctl import models

    seen = {}

    def spy(cls_name):
        original = getattr(transformers, cls_name).from_pretrained

        def from_pretrained(*args, **kwargs):
            seen[cls_name] = kwargs.get("trust_remote_code")
            return original(*args, **kwargs)

        monkeypatch.setattr(getattr(transformers, cls_name), "from_pretrained", from_pretrained)

    for cls_name in ("AutoTokenizer", "AutoModelForCausalLM", "AutoModelForSequenceClassification"):
        spy(cls_name)
    models.load_tokenizer(str(tiny_lm))
    models.load_causal_lm(str(tiny_lm))
    models.load_reward_model(str(tiny_rm))
    assert seen == {"AutoTokenizer": False, "AutoModelForCausalLM": False, "AutoModelForSequenceClassification": False}
    for fn in (models.load_tokenizer, models.load_causal_lm, models.load_reward_model):
        assert inspect.signature(fn).parameters["trust_remote_code"].default is False


def test_dpo_passes_the_flag_through(tmp_path, tiny_lm, cli, monkeypatch):
    from alignctl import models

    seen = []

    def stop(path, *, trust_remote_code=False, **kw):
        seen.append(trust_remote_code)
        raise models.ModelError("stop here")

    monkeypatch.setattr(models, "load_tokenizer", stop)
    prefs = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}])
    for extra in ([], ["--trust-remote-code"]):
        code, _, err = cli("dpo", "--data", prefs, "--model", tiny_lm, "-o", tmp_path / "out", *extra)
        assert code == 2 and "stop here" in err
    assert seen == [False, True]


def test_user_rule_files_load_only_from_the_named_path(tmp_path, monkeypatch):
    """`rule:length` is the built-in, even with a length.py in the working dir or on sys.path;
    `rule:f.py:func` runs that file and nothing else, without touching sys.path."""
    from alignctl.errors import InputError
    from alignctl.rewards.rules import load_rule

    marker = tmp_path / "imported"
    trap = (
        f"open({str(marker)!r}, 'a').write(__file__ + '\\n')\n"
        "def length(prompts, completions, **kw):\n    return [0.0] * len(completions)\n"
    )
    for d in (tmp_path, tmp_path / "on_path"):
        d.mkdir(exist_ok=True)
        (d / "length.py").write_text(trap)
        (d / "rules.py").write_text(trap)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path / "on_path"))
    path_before = list(sys.path)

    assert load_rule("rule:length").path is None  # the built-in
    with pytest.raises(InputError, match="no such file"):
        load_rule("rule:elsewhere/rules.py:length")  # a missing file is an error, never a search
    assert not marker.exists()
    rule = load_rule(f"rule:{tmp_path / 'rules.py'}:length")
    assert rule.path == str(tmp_path / "rules.py") and len(rule.sha256) == 64
    assert marker.read_text().splitlines() == [str(tmp_path / "rules.py")]  # exactly that file ran
    assert sys.path == path_before
