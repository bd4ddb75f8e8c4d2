"""The operator console in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`, installed by `make system-deps`) driven by Selenium, against a real node."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from app.clients.registry import key_hash
from tests.conftest import running_node
from tests.support.processes import Service
from tests.support.simulator_client import SimulatorControl

ADMIN = "console-admin-s3cr3t-0123456789"
FIRST, SECOND = "gemini-3.8-flash", "gemini-3.5-flash"
PROMPT = {"contents": [{"parts": [{"text": "console"}]}]}
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """Headless Chromium; its console messages are kept for the checks."""
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver are missing: run make system-deps")
        pytest.skip("chromium and chromedriver are missing: run make system-deps")
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1280,900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=DriverService(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def console_node(simulator_service: Service, logs_dir: Path) -> Iterator[Service]:
    """A node with an admin token, two models, breakers that open after 2 failures."""
    with running_node(
        simulator_service,
        logs_dir,
        "console-node",
        ADMIN_TOKEN=ADMIN,
        GEMINI_MODELS=f"{FIRST},{SECOND}",
        CIRCUIT_BREAKER_THRESHOLD="2",
        MAX_RETRY_ATTEMPTS="0",
        AUTO_HEAL_ENABLED="false",
    ) as service:
        yield service


def _wait(browser: WebDriver, what: str, condition: object, seconds: float = 15) -> None:
    WebDriverWait(browser, seconds, poll_frequency=0.2).until(condition, what)  # type: ignore[arg-type]


def _state(browser: WebDriver, model: str) -> str:
    """The breaker cell of `model`'s row, read in one step (the table is redrawn often)."""
    state: str = browser.execute_script(
        "const row = document.querySelector(`tr[data-model='${arguments[0]}']`);"
        "return row ? row.cells[1].textContent : '';",
        model,
    )
    return state


def _sign_in(browser: WebDriver, node: Service, token: str) -> None:
    browser.get(f"{node.url}/self/console")
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{node.url}/self/console")
    field = browser.find_element(By.ID, "token")
    field.send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "#token-form button").click()


def _console_errors(browser: WebDriver) -> list[str]:
    return [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def test_console_shows_breakers_and_heals(
    browser: WebDriver, console_node: Service, simulator: SimulatorControl, tmp_path: Path
) -> None:
    _sign_in(browser, console_node, ADMIN)
    _wait(
        browser, "both models closed", lambda b: _state(b, FIRST) == _state(b, SECOND) == "closed"
    )
    summary = browser.find_element(By.ID, "summary").text
    assert "version" in summary and "state local" in summary

    simulator.fault("503", model=FIRST)
    for _ in range(3):  # two failures open FIRST's breaker; the calls rotate to SECOND
        requests.post(
            f"{console_node.url}/v1beta/models/{FIRST}:generateContent", json=PROMPT, timeout=10
        )
    _wait(browser, "FIRST's breaker open on the page", lambda b: _state(b, FIRST) == "open")
    assert _state(browser, SECOND) == "closed"
    simulator.reset()

    browser.find_element(By.XPATH, '//button[text()="Heal: light"]').click()
    _wait(browser, "FIRST closed again", lambda b: _state(b, FIRST) == "closed")
    _wait(
        browser,
        "the heal in the history",
        lambda b: "light by admin" in b.find_element(By.ID, "heals").text,
    )
    events = browser.find_element(By.ID, "events").text
    assert "circuit_breaker_open" in events
    hedges = browser.find_element(By.ID, "hedges").text
    assert hedges.startswith("Hedges: ") and "Stalled attempts: 0." in hedges
    assert "done" in browser.find_element(By.ID, "heal-result").text

    browser.save_screenshot(str(tmp_path / "console.png"))
    assert (tmp_path / "console.png").stat().st_size > 10_000
    # A phone's width: the page itself never scrolls sideways (wide tables scroll inside).
    browser.set_window_size(390, 844)
    wide = browser.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    browser.save_screenshot(str(tmp_path / "console-phone.png"))
    browser.set_window_size(1280, 900)
    assert wide <= 0
    assert _console_errors(browser) == []  # no CSP violation, no script error


def test_recycle_asks_for_a_confirmation(
    browser: WebDriver, console_node: Service, simulator: SimulatorControl
) -> None:
    _sign_in(browser, console_node, ADMIN)
    _wait(browser, "the models", lambda b: _state(b, FIRST) == "closed")
    browser.find_element(By.ID, "recycle").click()
    confirm = browser.find_element(By.ID, "recycle-confirm")
    assert confirm.is_displayed()
    browser.find_element(By.ID, "recycle-cancel").click()
    assert not browser.find_element(By.ID, "recycle-confirm").is_displayed()
    heals = requests.get(
        f"{console_node.url}/self/status",
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=5,
    ).json()["heals"]
    assert not any("recycle_workers" in h["actions"] for h in heals)  # nothing was asked
    assert _console_errors(browser) == []


def test_wrong_token_shows_an_error_and_no_data(
    browser: WebDriver, console_node: Service, simulator: SimulatorControl
) -> None:
    _sign_in(browser, console_node, "not-the-token")
    _wait(browser, "the error", lambda b: b.find_element(By.ID, "error").is_displayed())
    assert "Wrong admin token" in browser.find_element(By.ID, "error").text
    body = browser.find_element(By.TAG_NAME, "body").text
    assert FIRST not in body and SECOND not in body
    assert browser.execute_script("return sessionStorage.length") == 0


def test_without_admin_token_the_page_says_admin_is_off(
    browser: WebDriver, node: Service, simulator: SimulatorControl
) -> None:
    browser.get(f"{node.url}/self/console")
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{node.url}/self/console")
    _wait(browser, "the notice", lambda b: b.find_element(By.ID, "error").is_displayed())
    assert "Admin is off" in browser.find_element(By.ID, "error").text
    assert not browser.find_element(By.ID, "token-form").is_displayed()


def test_console_headers_and_no_inline_script(console_node: Service) -> None:
    page = requests.get(f"{console_node.url}/self/console", timeout=5)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Cache-Control"] == "no-store"
    html = page.text
    assert not re.search(r"\son[a-z]+\s*=", html)  # no inline event handlers
    assert not re.search(r"<script(?![^>]*\ssrc=)[^>]*>", html)  # every script is a file
    assert "http://" not in html and "https://" not in html  # nothing from elsewhere
    for name in ("console.js", "console.css"):
        asset = requests.get(f"{console_node.url}/self/console/{name}", timeout=5)
        assert asset.status_code == 200 and asset.headers["X-Content-Type-Options"] == "nosniff"
    status = requests.get(
        f"{console_node.url}/self/status", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=5
    )
    assert status.headers["Cache-Control"] == "no-store"
    assert requests.get(f"{console_node.url}/self/console/other.js", timeout=5).status_code == 404


def test_console_shows_each_clients_use(
    browser: WebDriver, simulator_service: Service, logs_dir: Path, tmp_path: Path
) -> None:
    key = "console-client-s3cr3t-key"
    path = tmp_path / "clients.toml"
    path.write_text(
        f'[clients.reports-app]\nkey_sha256 = "{key_hash(key)}"\n'
        'models = ["gemini-3.8-*"]\ntokens_per_minute = 1000\nmax_in_flight = 4\n'
    )
    with running_node(
        simulator_service, logs_dir, "console-clients", ADMIN_TOKEN=ADMIN, CLIENTS_FILE=str(path)
    ) as node:
        answer = requests.post(
            f"{node.url}/v1beta/models/{FIRST}:generateContent",
            json=PROMPT,
            headers={"x-goog-api-key": key},
            timeout=10,
        )
        tokens = answer.json()["usageMetadata"]["totalTokenCount"]
        _console_errors(browser)  # drained: what earlier tests logged (a refused token)
        _sign_in(browser, node, ADMIN)

        def row(b: WebDriver) -> str:
            text: str = b.execute_script(
                "const r = document.querySelector(\"tr[data-client='reports-app']\");"
                "return r ? r.textContent : '';"
            )
            return text

        _wait(browser, "the client's row", lambda b: f"{tokens} of 1000" in row(b))
        assert "gemini-3.8-*" in row(browser) and "0 of 4" in row(browser)
        assert key not in browser.page_source and key_hash(key) not in browser.page_source
        assert _console_errors(browser) == []
