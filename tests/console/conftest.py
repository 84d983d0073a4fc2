"""Fixtures for the console's browser tests: the real ``arbiter`` binary (``$ARBITER_BIN``,
else ``$CARGO_TARGET_DIR/debug/arbiter``) on free ports with a temporary data directory,
principals made through the real API, and headless Chromium driven by Selenium through
the system ``chromedriver`` (never a downloaded browser).

The console's address is read from the server log ("serving the operator console on
http://ADDR/"), as the e2e harness does.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.client import HTTPConnection
from pathlib import Path
from typing import IO

import arbiter
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

REPO = Path(__file__).resolve().parents[2]
START_DEADLINE = 30.0
CHROMIUM = os.environ.get("ARBITER_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("ARBITER_CHROMEDRIVER", "/usr/bin/chromedriver")

POLICY = """
version: 1
defaults:
  trust_level: L2_SUGGEST
  consent: deny
  approval_ttl: 1h
audit:
  sensitive_keys: {card_number: digest}
actions:
  - match: {tool: "refund_*"}
    approval: always
agents:
  - id: "bot*"
    tools: {allow: ["*"]}
budgets:
  - {name: cap, scope: agent, period: lifetime, max_usd: "100.00"}
  - {name: run, scope: session, agents: ["botrun-*"], period: lifetime, max_usd: "50.00"}
"""


def arbiter_bin() -> Path:
    explicit = os.environ.get("ARBITER_BIN")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise RuntimeError(f"ARBITER_BIN={explicit} does not exist")
        return path
    path = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "debug" / "arbiter"
    if not path.is_file():
        raise RuntimeError(f"the arbiter binary is missing at {path}; build it or set ARBITER_BIN")
    return path


@dataclass
class Server:
    address: str
    console: str
    process: subprocess.Popen[bytes]
    directory: Path
    keys: dict[str, str] = field(default_factory=dict)

    def client(self, who: str | None = None) -> arbiter.Client:
        key = self.keys[who] if who else None
        return arbiter.Client(self.address, api_key=key, timeout=15.0)

    def async_client(self, who: str) -> arbiter.AsyncClient:
        return arbiter.AsyncClient(self.address, api_key=self.keys[who], timeout=15.0)

    def log(self) -> str:
        return (self.directory / "server.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=20)
        shutil.rmtree(self.directory, ignore_errors=True)


def _drain(stream: IO[bytes], sink: IO[bytes]) -> None:
    for line in stream:
        sink.write(line)
        sink.flush()


def start_server() -> Server:
    directory = Path(tempfile.mkdtemp(prefix="arbiter-console-"))
    (directory / "policy.yaml").write_text(POLICY)
    log = open(directory / "server.log", "ab")  # noqa: SIM115 (closed with the process)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
    env.update(RUST_LOG="info,sqlx=warn", NO_COLOR="1")
    env["ARBITER_METRICS__LISTEN"] = "off"
    env["ARBITER_CONSOLE__LISTEN"] = "127.0.0.1:0"
    process = subprocess.Popen(
        [
            str(arbiter_bin()),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(directory / "data"),
            "--policy",
            str(directory / "policy.yaml"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        env=env,
    )
    assert process.stdout is not None
    first = process.stdout.readline().decode().strip()
    prefix = "arbiter listening on "
    if not first.startswith(prefix):
        process.kill()
        raise RuntimeError(f"no address line (got {first!r}):\n{(directory / 'server.log').read_text()}")
    threading.Thread(target=_drain, args=(process.stdout, log), daemon=True).start()
    address = first[len(prefix) :]
    probe = arbiter.Client(address, timeout=1.0, circuit_breaker=False)
    deadline = time.monotonic() + START_DEADLINE
    console = ""
    while True:
        text = (directory / "server.log").read_text(errors="replace")
        found = re.search(r"serving the operator console on (http://[0-9.:]+)/", text)
        try:
            probe.ping()
            if found:
                console = found.group(1)
                break
        except arbiter.Unavailable:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError("arbiter did not start in time; log:\n" + text)
        time.sleep(0.05)
    return Server(address=address, console=console, process=process, directory=directory)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """A server with authentication on: an admin, an agent runtime for ``bot*``, two
    operators (alice, bob) and an auditor."""
    s = start_server()
    root = s.client().create_principal("root", ["admin"])
    assert root.api_key
    s.keys["root"] = root.api_key
    admin = s.client("root")
    for name, roles, agents in [
        ("bot-runtime", ["agent"], ["bot*"]),
        ("alice", ["operator"], []),
        ("bob", ["operator"], []),
        ("audrey", ["auditor"], []),
        # An operator that also acts for the agents: it may sign in, never govern them.
        ("ops-bot", ["operator", "agent"], ["bot*"]),
    ]:
        made = admin.create_principal(name, roles, agents=agents)
        assert made.api_key
        s.keys[name] = made.api_key
    yield s
    s.stop()


@pytest.fixture()
def dev_server() -> Iterator[Server]:
    """A development-mode server (no principals)."""
    s = start_server()
    yield s
    s.stop()


@pytest.fixture()
def agent() -> str:
    return f"bot-{uuid.uuid4().hex[:10]}"


@pytest.fixture()
def browser() -> Iterator[WebDriver]:
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        raise RuntimeError(
            f"{CHROMIUM} or {CHROMEDRIVER} is missing: apt-get install chromium chromium-driver"
        )
    os.environ["SE_OFFLINE"] = "true"  # selenium-manager must never fetch anything
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def wait(driver: WebDriver, timeout: float = 5.0) -> WebDriverWait[WebDriver]:
    # A page load or a live refresh can swap an element out between finding and reading
    # it: that only means "look again". Chromium reports some of those swaps as an
    # "unknown error" ("Node with given id does not belong to the document") rather than
    # a stale element, so those are looked at again too; anything that stays wrong still
    # fails the wait when it times out.
    return WebDriverWait(
        driver,
        timeout,
        poll_frequency=0.02,
        ignored_exceptions=(StaleElementReferenceException, WebDriverException),
    )


def sign_in(driver: WebDriver, server: Server, who: str) -> None:
    driver.get(server.console + "/login")
    driver.find_element(By.ID, "key").send_keys(server.keys[who])
    driver.find_element(By.CSS_SELECTOR, "#login button").click()
    wait(driver).until(lambda d: d.find_elements(By.ID, "me"))
    assert driver.find_element(By.ID, "me").text.startswith(who)


def screenshot(driver: WebDriver, name: str) -> None:
    """Saves the page as docs/console/NAME.png-style files when ARBITER_CONSOLE_SCREENSHOTS
    names a directory."""
    target = os.environ.get("ARBITER_CONSOLE_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(target) / f"{name}.png"))


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: str


def request(
    server: Server,
    method: str,
    path: str,
    *,
    cookie: str | None = None,
    form: dict[str, str] | None = None,
) -> Answer:
    """One request to the console outside the browser (a forged one, or a check)."""
    host = urllib.parse.urlparse(server.console).netloc
    conn = HTTPConnection(host, timeout=10)
    headers = {}
    body = None
    if cookie:
        headers["Cookie"] = f"arbiter_console={cookie}"
    if form is not None:
        body = urllib.parse.urlencode(form)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    answer = Answer(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode(errors="replace"))
    conn.close()
    return answer


def session_cookie(driver: WebDriver) -> str:
    c = driver.get_cookie("arbiter_console")
    assert c is not None, "no session cookie"
    return str(c["value"])


def csrf(driver: WebDriver) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, "form.logout input[name=csrf]").get_attribute("value"))
