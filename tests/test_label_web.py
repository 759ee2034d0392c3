"""`label --by human --serve` over HTTP (Starlette's test client; the real browser run is
tests/test_label_browser.py): several people, K per prompt, votes and agreement in the output and
in `validate`, restarts, and the page's safety (token, Host, CSRF, markup shown as text, bad
requests answered 4xx with the journals whole)."""

from __future__ import annotations

import http.cookiejar
import json
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import pytest

from alignctl import io
from alignctl.labelling.core import questions_for
from alignctl.labelling.team import Team
from alignctl.prompts import training_form
from alignctl.stages import label, resolve
from tiny import write_jsonl

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from alignctl.labelling.web import make_app  # noqa: E402

BASE = "http://127.0.0.1:8765"
KEY = b"k" * 32
CANDS = [
    {"id": "p0", "prompt": "Name a colour.", "completions": [" red", " blue", " green", " grey"]},
    {"id": "p1", "prompt": "Say hi.", "completions": [" hi", " hello"]},
    {"id": "p2", "prompt": "Count to three.", "completions": [" 1 2 3", " one two three", " 3 2 1"]},
]


class Person:
    """One browser: its own cookies, the CSRF token of its pages, and the question on its screen."""

    def __init__(self, app, name: str | None = None, base: str = BASE) -> None:
        self.c = TestClient(app, base_url=base)
        self.page = self.c.get("/")
        if name:
            self.page = self.post("/name", name=name)

    @property
    def csrf(self) -> str:
        return self.c.cookies.get("alignctl_csrf", "")

    def post(self, path: str, **fields):
        self.page = self.c.post(path, data={"csrf": self.csrf, **fields})
        return self.page

    def question(self) -> tuple[int, str]:
        """(q, prompt id) of the page in front of them (GET /label)."""
        self.page = self.c.get("/label")
        q = re.search(r'name="q" value="(\d+)"', self.page.text)
        pid = re.search(r'class="pid">([^<]*)<', self.page.text)
        return (int(q.group(1)), pid.group(1)) if q else (-1, "")

    def answer(self, **fields):
        q, _ = self.question()
        return self.post("/answer", q=str(q), **fields)


def _team(tmp_path: Path, cands=CANDS, k: int = 2, mode: str = "auto") -> Team:
    forms = {r["id"]: training_form(r) for r in cands}
    return Team.open(tmp_path / "ann", questions_for(cands, forms, mode), forms, "key", k)


@pytest.fixture
def serving(tmp_path, monkeypatch):
    """`serving(script, *flags, sets=...)`: label.run with --serve, the page driven by `script(app)`
    over HTTP instead of a browser; returns the output path."""

    def run(script, sets=(), **flags):
        def fake_serve(team, *, host, port, until_done, out):
            done = []
            script(make_app(team, key=KEY, token=None, loopback=True, on_complete=lambda: done.append(1)))

        monkeypatch.setattr("alignctl.labelling.serve.serve", fake_serve)
        write_jsonl(tmp_path / "c.jsonl", CANDS)
        resolved = resolve("label", sets=["annotations_per_prompt=2", *sets])
        return label.run(resolved, tmp_path / "c.jsonl", "human", tmp_path / "prefs.jsonl", serve=True, **flags)

    return run


def two_people(app) -> None:
    """Alice and Bob, K=2: agree on p0's best and worst, disagree on p1, agree on p2; Alice
    writes a better answer on p0 (shown back first, then kept)."""
    alice, bob = Person(app, "Alice"), Person(app, "Bob")
    page = alice.answer(action="save", best="1", worst="4", text="crimson, <b>deep</b> red")
    assert page.status_code == 200 and 'id="written">crimson, &lt;b&gt;deep&lt;/b&gt; red<' in page.text
    assert "Keep it and save" in page.text  # shown back before it is kept
    alice.answer(action="save", best="1", worst="4", text="crimson, <b>deep</b> red", confirmed="1")
    assert bob.question()[1] == "p0"  # K=2: both get the first prompt
    bob.answer(action="save", best="1", worst="3")
    alice.answer(pick="a")
    bob.answer(pick="b")
    for who in (alice, bob):
        assert who.question()[1] == "p2"
        who.answer(action="save", best="2", worst="3")
    assert alice.question() == (-1, "") and 'id="done"' in alice.page.text


def test_two_people_k2_votes_agreement_and_validate(tmp_path, serving, cli):
    out = serving(two_people)
    rows = io.load(out, "preferences")
    got = [(r["id"], r["label"]["chosen_index"], r["label"]["rejected_index"], r["label"].get("written_by"))
           for r in rows]  # fmt: skip
    assert got == [("p0", 0, 2, None), ("p0", 0, 3, "Alice"), ("p2", 1, 2, None)]
    first = rows[0]["label"]
    assert first["annotators"] == ["Alice", "Bob"] and first["votes"] == {"Alice": "chosen", "Bob": "chosen"}
    assert first["agreement"] == 1.0 and first["source"]["annotations_per_prompt"] == 2
    assert rows[1]["chosen"] == "crimson, <b>deep</b> red" and rows[1]["label"]["human_written"] is True
    stats = json.loads((tmp_path / "prefs.jsonl.alignctl.json").read_text())["final_metrics"]
    # every pair with 2 votes: 8, two of them split (p0 green/grey, p1); by hand, nominal = ordinal
    # here (no 0 votes): Do = 4/16, De = 2*12*4/(16*15) = 0.4, alpha = 1 - 0.25/0.4 = 0.375
    assert stats["agreement"]["judged"] == {
        "pairs": 8, "people": 2, "mean_agreement": 0.875, "full_agreement": 6, "alpha": 0.375,
    }  # fmt: skip
    assert (stats["pairs"], stats["ties"], stats["annotated"]) == (3, 1, 3)
    written = stats["agreement"]["written"]
    assert written["pairs"] == 2 and written["alpha"] is None  # all written pairs unanimous: alpha undefined

    code, shown, _ = cli("validate", out)
    assert code == 0 and "agreement        Krippendorff's alpha undefined (every vote the same) over 2 pairs" in shown
    code, shown, _ = cli("validate", out, "--json")
    assert json.loads(shown)["files"][0]["stats"]["agreement"] == written
    # the journals stay (people's work): a rerun with another selection rewrites from them, serving nobody
    assert (
        sorted(p.name for p in (tmp_path / "prefs.jsonl.annotations").glob("*.jsonl"))
        == [p.name for p in sorted((tmp_path / "prefs.jsonl.annotations").glob("*.jsonl"))]
        and len(list((tmp_path / "prefs.jsonl.annotations").glob("*.jsonl"))) == 2
    )
    out = serving(lambda app: pytest.fail("served again"), sets=["pairs=all", "min_agreement=1"], overwrite=True)
    rows = io.load(out, "preferences")
    assert all(r["label"]["agreement"] == 1.0 for r in rows) and len(rows) == 9  # 3 + 3 written + 3
    stats = json.loads((tmp_path / "prefs.jsonl.alignctl.json").read_text())["final_metrics"]
    # one vote is no agreement: p0's blue/grey (Alice's) and blue/green (Bob's), and Alice's own
    # answer against the red she improved on; the split pairs are ties, not written at all
    assert (stats["disagreed"], stats["ties"]) == (3, 2)


def test_a_restarted_page_keeps_people_signed_in_and_their_answers(tmp_path):
    team = _team(tmp_path)
    alice = Person(make_app(team, key=KEY, token=None, loopback=True), "Alice")
    alice.answer(action="save", best="2", worst="1")
    alice.answer(pick="b")
    team.close()
    (journal,) = (tmp_path / "ann").glob("*.jsonl")
    whole = journal.read_bytes()
    journal.write_bytes(whole + b'{"t": "cmp", "id": "p2", "i"')  # a kill in the middle of a write
    again = _team(tmp_path)  # what a restart reads back: the torn line dropped, the file cut back
    alice.c.app = make_app(again, key=KEY, token=None, loopback=True)
    assert alice.question()[1] == "p2" and "you: 2 of 3 prompts" in alice.page.text
    alice.post("/undo")
    assert alice.question()[1] == "p1"  # undo steps back across the restart too
    assert again.states()["Alice"].rankings["p0"]["order"] == [1, 0]
    assert journal.read_bytes().startswith(whole) and all(json.loads(x) for x in journal.read_text().splitlines())


def test_markup_in_prompts_and_answers_is_shown_as_text(tmp_path):
    evil = [{"id": "x", "prompt": "<script>alert('p')</script>", "completions": [
        "<img src=x onerror=alert(1)>", "<script>alert(2)</script>", "</div><b>bold?</b>"]}]  # fmt: skip
    alice = Person(make_app(_team(tmp_path, evil), key=KEY, token=None, loopback=True), "<b>")
    assert alice.page.status_code == 400  # a name is letters, digits, spaces, . ' -
    alice.post("/name", name="Alice")
    html = alice.c.get("/label").text
    assert "<script" not in html and "<img" not in html and "<b>" not in html
    assert "&lt;script&gt;alert(&#39;p&#39;)&lt;/script&gt;" in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    policy = alice.c.get("/label").headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script" not in policy  # and no script may run at all
    page = alice.answer(action="save", best="1", worst="2", text="<script>alert(3)</script>")
    assert "<script" not in page.text and 'value="&lt;script&gt;alert(3)&lt;/script&gt;"' in page.text


def test_off_loopback_every_request_needs_the_token(tmp_path):
    app = make_app(_team(tmp_path), key=KEY, token="T0k3n", loopback=False)
    stranger = TestClient(app, base_url="http://10.1.2.3:8765")
    assert stranger.get("/").status_code == 403
    assert stranger.get("/?token=wrong").status_code == 403
    assert stranger.post("/name", data={"name": "Eve"}).status_code == 403
    assert stranger.get("/style.css").status_code == 403
    friend = TestClient(app, base_url="http://10.1.2.3:8765", follow_redirects=False)
    r = friend.get("/label?token=T0k3n")
    assert r.status_code == 303 and r.headers["location"] == "/label"  # the token leaves the address bar
    assert friend.get("/").status_code == 200  # from now on its cookie carries it
    assert Person(app, base="http://10.1.2.3:8765").page.status_code == 403


def test_the_command_off_loopback_needs_its_token_and_ctrl_c_writes_what_was_answered(tmp_path):
    """The real server: --host prints a token URL; without the token, 403; with it, an answer;
    Ctrl-C ends the server, which writes the prefs from the journal (exit 0)."""
    write_jsonl(tmp_path / "c.jsonl", CANDS)
    argv = [sys.executable, "-m", "alignctl", "label", "-c", "c.jsonl", "--by", "human", "--serve", "--host", "0.0.0.0"]
    proc = subprocess.Popen([*argv, "--port", "0", "-o", "p.jsonl"], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        while "labelling page:" not in line:
            line = proc.stderr.readline()
            assert line, "the server said nothing"
        port, token = re.search(r":(\d+)/\?token=(\S+)", line).groups()
        assert "needs the token" in proc.stderr.readline() + proc.stderr.readline()
        local = f"http://127.0.0.1:{port}"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{local}/", timeout=10)
        assert refused.value.code == 403
        jar = http.cookiejar.CookieJar()
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))  # keeps the cookies
        assert browser.open(f"{local}/?token={token}", timeout=10).status == 200
        csrf = next(c.value for c in jar if c.name == "alignctl_csrf")
        page = browser.open(f"{local}/name", urlencode({"csrf": csrf, "name": "Dana"}).encode(), timeout=10).read()
        q = re.search(rb'name="q" value="(\d+)"', page).group(1).decode()
        form = {"csrf": csrf, "q": q, "action": "save", "best": "3", "worst": "1"}
        assert b"Say hi." in browser.open(f"{local}/answer", urlencode(form).encode(), timeout=10).read()
        assert (tmp_path / "p.jsonl.annotations" / "server.json").stat().st_mode & 0o777 == 0o600
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
    rows = io.load(tmp_path / "p.jsonl", "preferences")
    assert [(r["id"], r["chosen"], r["rejected"], r["label"]["votes"]) for r in rows] == [
        ("p0", " green", " red", {"Dana": "chosen"})
    ]
    stats = json.loads((tmp_path / "p.jsonl.alignctl.json").read_text())["final_metrics"]
    assert (stats["unanswered"], stats["skipped"], stats["annotated"]) == (2, 0, 1)


def test_loopback_refuses_other_host_names_and_forged_forms(tmp_path):
    team = _team(tmp_path)
    app = make_app(team, key=KEY, token=None, loopback=True)
    assert TestClient(app, base_url="http://attacker.example:8765").get("/").status_code == 400  # DNS rebinding
    assert TestClient(app, base_url="http://[::1]:8765").get("/").status_code == 200
    alice = Person(app, "Alice")
    q, _ = alice.question()
    assert alice.c.post("/answer", data={"q": q, "pick": "a", "action": "equal"}).status_code == 403  # no token
    assert alice.c.post("/answer", data={"q": q, "action": "equal", "csrf": "x" * 43}).status_code == 403
    forged = alice.c.post("/answer", data={"q": q, "action": "equal", "csrf": alice.csrf},
                          headers={"origin": "http://attacker.example"})  # fmt: skip
    assert forged.status_code == 403
    assert "Alice" not in team.states() and not list((tmp_path / "ann").glob("*.jsonl"))


def test_bad_requests_are_4xx_and_the_journal_stays_whole(tmp_path):
    team = _team(tmp_path, mode="rank")
    app = make_app(team, key=KEY, token=None, loopback=True)
    alice = Person(app, "Alice")
    q, _ = alice.question()
    c = alice.c
    form = {"csrf": alice.csrf, "q": str(q), "action": "save"}
    bad = [
        c.get("/nope"), c.get("/../../etc/passwd"), c.get("/style.css/../../pyproject.toml"), c.put("/answer"),
        c.post("/answer", content=b"{}", headers={"content-type": "application/json"}),
        c.post("/answer", content=b"csrf=\xff\xfe", headers={"content-type": "application/x-www-form-urlencoded"}),
        c.post("/answer", data={**form, "junk": "x" * 300_000}),
        c.post("/answer", data={**form, "q": "99"}), c.post("/answer", data={**form, "q": "-1x"}),
        c.post("/answer", data={**form, "action": "explode"}),
        c.post("/answer", data={**form, "rank-1": "1", "rank-2": "1", "rank-3": "2", "rank-4": "3"}),
        c.post("/answer", data={**form, "rank-1": "1", "rank-2": "2", "rank-3": "3", "rank-4": "9"}),
        c.post("/answer", data={**form, "rank-1": "one"}),
        c.post("/name", data={"csrf": alice.csrf, "name": "../../etc"}),
        c.post("/name", data={"csrf": alice.csrf, "name": ""}),
    ]  # fmt: skip
    assert [r.status_code for r in bad if not 400 <= r.status_code < 500] == []
    assert [r.status_code for r in bad[:7]] == [404, 404, 404, 405, 415, 400, 413]
    ok = c.post("/answer", data={**form, "rank-1": "2", "rank-2": "1", "rank-3": "4", "rank-4": "3"})
    assert ok.status_code == 200 and "p1" in ok.text
    again = c.post("/answer", data={**form, "rank-1": "1", "rank-2": "2", "rank-3": "3", "rank-4": "4"})
    assert again.status_code == 409  # already answered (a second tab, a resubmitted form)
    (journal,) = (tmp_path / "ann").glob("*.jsonl")
    lines = [json.loads(x) for x in journal.read_text().splitlines()]
    assert [x.get("t") for x in lines] == [None, "rank"] and lines[1]["r"]["order"] == [1, 0, 3, 2]
    assert sorted(p.name for p in (tmp_path / "ann").iterdir()) == [journal.name]  # the only file written


def test_the_serve_options_and_a_missing_package(tmp_path, monkeypatch, cli):
    from alignctl.errors import InputError
    from alignctl.labelling import require_serve

    write_jsonl(tmp_path / "c.jsonl", CANDS)
    for argv, said in [
        (["--by", "rule:length", "--serve"], "--serve is for --by human"),
        (["--by", "human", "--host", "0.0.0.0"], "--host goes with --serve"),
        (["--by", "human", "--annotations-per-prompt", "2"], "annotations_per_prompt > 1 needs --serve"),
        (["--by", "human", "--serve", "--min-agreement", "1.5"], "min_agreement must be between 0 and 1"),
        (["--by", "human", "--human-mode", "worst"], "human_mode must be one of"),
    ]:
        code, _, err = cli("label", "-c", tmp_path / "c.jsonl", *argv, "-o", tmp_path / "p.jsonl")
        assert code == 2 and said in err, (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl"]
    real = __import__("importlib.util").util.find_spec
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None if name == "uvicorn" else real(name))
    with pytest.raises(InputError, match=r"^label --serve needs uvicorn: pip install 'alignctl\[serve\]'$"):
        require_serve()


def test_alpha_and_votes_by_hand():
    from alignctl.labelling.votes import agreement, team_pairs
    from alignctl.rewards.pairs import State

    # two coders, units (+,+), (-,-), (+,-): nominal alpha by hand: Do = 2/6, De = 2*3*3/(6*5), 1 - Do/De = 4/9
    assert agreement([{"a": 1, "b": 1}, {"a": -1, "b": -1}, {"a": 1, "b": -1}])["alpha"] == round(4 / 9, 4)
    three = {n: State(rankings={"x": {"kind": "rank", "order": order}}) for n, order in
             [("a", [0, 1, 2]), ("b", [0, 1, 2]), ("c", [1, 0, 2])]}  # fmt: skip
    out = team_pairs(["p", "q", "r"], three, "x", "all", 0.0, 0.0)
    got = [(p.chosen, p.rejected, p.extra["agreement"]) for p in out.pairs]
    assert got == [(0, 1, 0.6667), (0, 2, 1.0), (1, 2, 1.0)]
    assert out.pairs[0].extra["votes"] == {"a": "chosen", "b": "chosen", "c": "rejected"}
    kept = team_pairs(["p", "q", "r"], three, "x", "all", 0.0, 0.7)
    assert [(p.chosen, p.rejected) for p in kept.pairs] == [(0, 2), (1, 2)] and kept.disagreed == 1
