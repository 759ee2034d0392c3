"""The labelling page in a real browser: Debian's headless Chromium driven by selenium through
/usr/bin/chromedriver (`make test-browser`; never a downloaded browser).

Two annotators, K=2, end to end through `alignctl label --serve --until-done`: the server is
killed (SIGKILL) mid-way and restarted, and one annotator's browser is thrown away and replaced
by a fresh one where he enters his name again; nobody loses an answer and nobody is asked twice.
Screenshots of each page go to $ALIGNCTL_SCREENSHOTS when it names a folder (docs/images/ holds
the ones in docs/labelling.md: `ALIGNCTL_SCREENSHOTS=docs/images make test-browser`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from alignctl import io
from tiny import write_jsonl

pytestmark = pytest.mark.browser
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
XSS = "<img src=x onerror=\"document.title='pwned'\">"
CANDS = [
    {"id": "colour", "prompt": "Name a colour and say where you see it.", "completions": [
        " Red: on a fire engine.", " Blue, the sky on a clear day.", " Green.", " I like colours."]},
    {"id": "greet", "prompt": "Greet a new colleague in one sentence.", "completions": [
        " Welcome aboard, glad to have you with us!", " hi"]},
    {"id": "count", "prompt": "Count to three in French.", "completions": [
        " un, deux, trois", " one two three", " 1 2 3"]},
    {"id": "markup", "prompt": "<script>document.title='pwned'</script>What does this page do with markup?",
     "completions": [XSS, "<b>shown as text</b>", " It shows it as text."]},
]  # fmt: skip


def _need_browser() -> None:
    if not (os.access(CHROMIUM, os.X_OK) and os.access(DRIVER, os.X_OK)):
        pytest.fail("needs Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver")
    pytest.importorskip("selenium", reason="pip install 'alignctl[browser]'")


@pytest.fixture
def browsers(tmp_path):
    """`browser(name)`: a fresh headless Chromium with its own profile; all quit at the end."""
    _need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    made = []

    def start(name: str):
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for flag in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1100,1000",
            f"--user-data-dir={tmp_path / f'profile-{name}-{len(made)}'}",
        ):
            opts.add_argument(flag)  # fmt: skip
        driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
        driver.set_page_load_timeout(20)
        made.append(driver)
        return driver

    yield start
    for d in made:
        try:
            d.quit()
        except Exception:  # already quit (the test threw one away on purpose)
            pass


class Server:
    """`alignctl label --serve` as a subprocess on a fixed port (a restart keeps the same URL)."""

    def __init__(self, cwd: Path, *args: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.cwd, self.args, self.proc = cwd, args, None

    def start(self) -> str:
        argv = [sys.executable, "-m", "alignctl", "label", "-c", "c.jsonl", "--by", "human", "--serve", *self.args]
        self.proc = subprocess.Popen([*argv, "--port", str(self.port), "-o", "prefs.jsonl"], cwd=self.cwd,
                                     stderr=subprocess.PIPE, text=True)  # fmt: skip
        line = ""
        while "labelling page:" not in line:
            line = self.proc.stderr.readline()
            assert line, "the server stopped before printing its URL"
        return re.search(r"http://\S+", line).group(0)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def submit(driver, button_id: str) -> None:
    """Click a form's button and wait for the next page (server-rendered: a whole new document)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.ID, button_id).click()
    WebDriverWait(driver, 20).until(ec.staleness_of(old))


def click(driver, *ids: str) -> None:
    from selenium.webdriver.common.by import By

    for i in ids:
        driver.find_element(By.ID, i).click()


def text(driver, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).text.strip()  # answers keep their leading space


def enter(driver, url: str, name: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url)
    driver.find_element(By.ID, "name").send_keys(name)
    submit(driver, "start")


def shot(driver, name: str) -> None:
    folder = os.environ.get("ALIGNCTL_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / f"label-web-{name}.png"))


def test_two_annotators_k2_with_a_server_kill_and_a_new_browser(tmp_path, browsers):
    from selenium.webdriver.common.by import By

    write_jsonl(tmp_path / "c.jsonl", CANDS)
    server = Server(tmp_path, "--annotations-per-prompt", "2", "--until-done")
    url = server.start()
    alice, bob = browsers("alice"), browsers("bob")
    alice.get(url)
    shot(alice, "name")
    enter(alice, url, "Alice")
    enter(bob, url, "Bob")

    # colour (best/worst): Alice writes a better answer, shown back before it is kept
    assert text(alice, "prompt") == "Name a colour and say where you see it." and "0 of 4" in text(alice, "progress")
    click(alice, "best-2", "worst-4")
    alice.find_element(By.TAG_NAME, "summary").click()
    alice.find_element(By.ID, "text").send_keys("Blue: the sky at noon, and the sea under it.")
    shot(alice, "best-worst")
    submit(alice, "save")
    assert text(alice, "written") == "Blue: the sky at noon, and the sea under it."
    shot(alice, "written-answer")
    submit(alice, "keep")
    click(bob, "best-2", "worst-3")
    submit(bob, "save")
    # greet (a comparison): Alice answers, then the server is killed mid-way
    assert text(alice, "answer-1") == "Welcome aboard, glad to have you with us!"
    shot(alice, "pairwise")
    submit(alice, "pick-a")
    server.kill()
    url = server.start()

    alice.refresh()  # the same browser: still signed in, on her next prompt
    assert "Count to three" in text(alice, "prompt") and "you: 2 of 4" in text(alice, "progress")
    bob.quit()  # Bob's browser is gone; a fresh one, his name again, and he is where he was
    bob = browsers("bob-again")
    enter(bob, url, "Bob")
    assert "Greet a new colleague" in text(bob, "prompt")
    submit(bob, "pick-b")
    for who in (alice, bob):
        click(who, "best-1", "worst-3")
        submit(who, "save")

    # markup: shown as text, nothing runs
    for who in (alice, bob):
        assert text(who, "answer-1") == XSS and text(who, "answer-2") == "<b>shown as text</b>"
        assert who.find_elements(By.CSS_SELECTOR, "main img, main script, .text b") == []
        assert who.title == "alignctl label"
        assert text(who, "prompt").startswith("<script>document.title='pwned'</script>")
    shot(alice, "markup")
    click(alice, "best-3", "worst-1")
    submit(alice, "save")
    assert alice.find_elements(By.ID, "waiting")  # Bob holds the last one
    click(bob, "best-3", "worst-2")
    submit(bob, "save")
    assert bob.find_elements(By.ID, "done")
    assert server.proc.wait(timeout=30) == 0  # --until-done: every prompt has its 2 answers
    said = server.proc.stderr.read()

    rows = io.load(tmp_path / "prefs.jsonl", "preferences")
    got = [(r["id"], r["label"]["chosen_index"], r["label"]["rejected_index"], r["label"].get("written_by"))
           for r in rows]  # fmt: skip
    # colour: best Blue for both; worst Green (Bob) or "I like colours" (Alice), tied on score, so the
    # first, whose own two votes agree; Alice's written answer against her worst
    assert got == [("colour", 1, 2, None), ("colour", 1, 3, "Alice"), ("count", 0, 2, None), ("markup", 2, 0, None)]
    assert all(r["label"]["annotators"] == ["Alice", "Bob"] for r in rows)
    assert rows[0]["label"]["votes"] == {"Alice": "chosen", "Bob": "chosen"} and rows[0]["label"]["agreement"] == 1.0
    assert rows[1]["chosen"] == "Blue: the sky at noon, and the sea under it."
    assert rows[3]["rejected"] == XSS  # kept as it was, text
    stats = json.loads((tmp_path / "prefs.jsonl.alignctl.json").read_text())["final_metrics"]
    judged = stats["agreement"]["judged"]
    assert judged["people"] == 2 and judged["pairs"] == 11 and judged["alpha"] is not None  # 4 + 1 + 3 + 3
    assert stats["ties"] == 1  # greet: Alice a, Bob b
    assert "Krippendorff's alpha" in said and f"{judged['alpha']:.3f}" in said
    journals = sorted((tmp_path / "prefs.jsonl.annotations").glob("*.jsonl"))
    assert [json.loads(p.read_text().splitlines()[0])["_alignctl_journal"]["annotator"] for p in journals] == [
        "Alice", "Bob"]  # fmt: skip


def test_the_ranking_page(tmp_path, browsers):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    write_jsonl(tmp_path / "c.jsonl", CANDS[:1])
    server = Server(tmp_path, "--human-mode", "rank", "--pairs", "all", "--until-done")
    url = server.start()
    carol = browsers("carol")
    enter(carol, url, "Carol")
    for n, rank in [(1, "2"), (2, "1"), (3, "2"), (4, "4")]:
        Select(carol.find_element(By.ID, f"rank-{n}")).select_by_value(rank)
    submit(carol, "save")
    assert "each answer a different rank" in text(carol, "error")  # 400: the form comes back as it was
    assert Select(carol.find_element(By.ID, "rank-2")).first_selected_option.text == "1"
    Select(carol.find_element(By.ID, "rank-3")).select_by_value("3")
    shot(carol, "rank")
    submit(carol, "save")
    assert server.proc.wait(timeout=30) == 0
    rows = io.load(tmp_path / "prefs.jsonl", "preferences")  # the order 2, 1, 3, 4: every pair of it
    got = [(r["label"]["chosen_index"], r["label"]["rejected_index"]) for r in rows]
    assert got == [(1, 0), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert rows[0]["label"]["votes"] == {"Carol": "chosen"} and rows[0]["label"]["agreement"] is None


def test_terminal_screens_as_pictures(browsers):
    """The terminal app's snapshots (SVG, tests/__snapshots__/) as PNGs for the docs, same browser."""
    folder = os.environ.get("ALIGNCTL_SCREENSHOTS")
    if not folder:
        pytest.skip("ALIGNCTL_SCREENSHOTS names no folder")
    driver = browsers("svg")
    driver.set_window_size(1300, 900)
    for mode in ("best-worst", "pairwise"):
        svg = Path(__file__).parent / "__snapshots__" / "test_label_human" / f"test_screen_snapshot[{mode}].svg"
        driver.get(svg.resolve().as_uri())
        driver.save_screenshot(str(Path(folder) / f"label-terminal-{mode}.png"))


def test_chromium_is_debians(tmp_path):
    """The browser is the system package, not one a tool fetched (CI installs it with apt-get)."""
    _need_browser()
    owner = subprocess.run(["dpkg", "-S", CHROMIUM], capture_output=True, text=True)
    assert owner.returncode == 0 and owner.stdout.startswith("chromium"), owner.stdout + owner.stderr
    assert shutil.which("chromedriver") == DRIVER
