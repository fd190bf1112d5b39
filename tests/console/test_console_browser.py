"""The web console end to end in a real browser (CONTRACT §13): headless Chromium from Debian
(``chromium``, ``chromium-driver``; ``.ci/run`` installs them) driven by Selenium against the real
daemon and its built-in simulator. A mail's job appears in the queue and turns delivered without a
reload; its page shows the first page; a queued job is canceled and a failed one retried through the
confirmation. The page follows the server's events (``GET /events``), which its header says ("live").
A screenshot of each page is saved in ``$TEST_ARTIFACTS`` (not a ``FAXBRIDGE_`` name: the daemon would
read that as a setting), by default in a folder of the test's temporary directory."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from tests.conftest import free_port, wait_until
from tests.ingress import mailkit
from tests.support import DaemonProcess, base_settings, cli, make_pdf, write_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
if CHROMIUM is None or DRIVER is None:
    if os.environ.get("CI"):
        raise RuntimeError("CI must have chromium and chromium-driver: .ci/run installs them")
    pytest.skip("Chromium and its driver are not installed; .ci/run installs them", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

WAIT_S = 60.0      # a loaded 2-core machine


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("TEST_ARTIFACTS", tmp_path / "artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or ""
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER or ""), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[dict[str, Any]]:
    settings = base_settings(tmp_path)
    smtp_port, console_port = free_port(), free_port()
    settings["smtp"] = {"enabled": True, "listen": f"127.0.0.1:{smtp_port}"}
    users = tmp_path / "console-users"
    users.write_text("alice:" + bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode() + "\n")
    settings["console"] = {"enabled": True, "listen": f"127.0.0.1:{console_port}", "users_file": str(users)}
    settings["provider"]["simulator"] = {"speed": 5.0}      # slow enough to see a job move
    with mailkit.mail_sink() as sink:                       # the smarthost: reply mail goes out
        settings["notify"] = {"smarthost": f"127.0.0.1:{sink.port}"}
        config = write_config(tmp_path / "faxbridge.toml", settings)
        process = DaemonProcess(config, tmp_path / "daemon.log").start()
        try:
            process.wait_ready(timeout=60)
            yield {"config": config, "smtp": ("127.0.0.1", smtp_port), "url": f"http://127.0.0.1:{console_port}",
                   "sink": sink}
        finally:
            process.stop()


def until(driver: WebDriver, what: str, test: Any) -> Any:
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.2).until(test, message=what)


def row_state(driver: WebDriver, job_id: str) -> str | None:
    """Read in one script: the part of the page that refreshes itself may be replaced at any moment,
    so no element is held between two calls (that would be a stale reference)."""
    return driver.execute_script(  # type: ignore[no-any-return]
        "var c = document.querySelector('tr[data-job=\"' + arguments[0] + '\"] td.state');"
        "return c ? c.textContent.trim() : null;", job_id)


def click(driver: WebDriver, selector: str) -> None:
    """Find and click in one script (see :func:`row_state`), once the element is there."""
    until(driver, f"{selector} to click", lambda d: d.execute_script(
        "var e = document.querySelector(arguments[0]); if (!e) return false; e.click(); return true;", selector))


def text_of(driver: WebDriver, element_id: str) -> str | None:
    return driver.execute_script(  # type: ignore[no-any-return]
        "var e = document.getElementById(arguments[0]); return e ? e.textContent.trim() : null;", element_id)


def test_the_console_in_a_browser(daemon: dict[str, Any], browser: WebDriver, artifacts: Path,
                                  tmp_path: Path) -> None:
    url, config = daemon["url"], daemon["config"]
    browser.get(url + "/")
    assert browser.title == "Log in - faxbridge"                 # console.users_file: a login first
    browser.save_screenshot(str(artifacts / "login.png"))
    browser.find_element(By.NAME, "user").send_keys("alice")
    browser.find_element(By.NAME, "password").send_keys("wrong")
    browser.find_element(By.CSS_SELECTOR, "form.login button").click()
    until(browser, "the refusal", lambda d: text_of(d, "message") == "The user name or the password is not right.")
    browser.find_element(By.NAME, "user").send_keys("alice")
    browser.find_element(By.NAME, "password").send_keys("s3cret")
    browser.find_element(By.CSS_SELECTOR, "form.login button").click()
    until(browser, "the queue after logging in", lambda d: d.title == "Queue - faxbridge")
    # the page follows the server's events (GET /events), not a timer
    until(browser, "the event stream open", lambda d: d.execute_script(
        "return document.documentElement.getAttribute('data-live');") == "live")
    assert text_of(browser, "live") == "live"
    browser.save_screenshot(str(artifacts / "queue-empty.png"))

    # a mail comes in while the queue is open: its job appears, and turns delivered, without a reload
    pdf = mailkit.pdf_bytes(tmp_path, pages=2)
    answers = mailkit.send(daemon["smtp"], "alice@example.com", ["15555551212@fax.local"], mailkit.outlook(pdf))
    assert answers[-1].code == 250
    marker = browser.execute_script("window.faxbridgeNoReload = 1; return window.faxbridgeNoReload;")
    assert marker == 1
    job_id = until(browser, "the mail's job in the queue", lambda d: d.execute_script(
        "var r = document.querySelector('tr[data-job]'); return r ? r.getAttribute('data-job') : null;"))
    until(browser, "the job delivered", lambda d: row_state(d, job_id) == "delivered")
    assert browser.execute_script("return window.faxbridgeNoReload;") == 1     # the same page all along
    browser.save_screenshot(str(artifacts / "queue.png"))

    # its page: the first page as an image that really loaded
    click(browser, f'tr[data-job="{job_id}"] a')
    until(browser, "the job page", lambda d: d.find_elements(By.ID, "first-page"))
    assert text_of(browser, "state") == "delivered"
    until(browser, "the first page drawn", lambda d: d.execute_script(
        "var i = document.getElementById('first-page'); return i.complete && i.naturalWidth > 0;"))
    assert browser.execute_script("return document.getElementById('first-page').naturalWidth;") == 850
    # the other page on demand, the documents as received, the reply it produced
    second = browser.execute_async_script(
        "var done = arguments[arguments.length - 1], a = document.querySelector('a.page-link[data-page=\"2\"]');"
        "if (!a) { done(-1); return; } var i = new Image(); i.onload = function () { done(i.naturalWidth); };"
        "i.onerror = function () { done(0); }; i.src = a.href;")
    assert second == 850
    assert (text_of(browser, "received") or "").startswith("invoice.pdf (")
    wait_until(lambda: daemon["sink"].received, timeout=WAIT_S, what="the reply mail")
    assert text_of(browser, "produced") == "The reply mail to alice@example.com:"
    reply = daemon["sink"].received[0].message
    shown = text_of(browser, "produced-text") or ""
    assert f"Subject: {reply['Subject']}" in shown and "Your fax to +1 555-555-1212 was delivered." in shown
    browser.save_screenshot(str(artifacts / "job.png"))

    # cancel a queued job (one to go tomorrow) through the confirmation
    later = cli("send", "--to", "+15555551213", "--at", "2099-01-01T00:00:00Z", str(make_pdf(tmp_path / "b.pdf")),
                config=config)
    assert later.returncode == 2           # more than 30 days ahead: refused at once, naming --at
    queued = cli("send", "--to", "+15555551213", "--at", _tomorrow(), str(make_pdf(tmp_path / "b.pdf")),
                 config=config).stdout.strip()
    browser.get(f"{url}/jobs/{queued}")
    click(browser, "#action-cancel")
    browser.save_screenshot(str(artifacts / "confirm.png"))
    browser.find_element(By.ID, "confirm").click()
    until(browser, "canceled", lambda d: text_of(d, "state") == "canceled")
    assert text_of(browser, "message") == "Cancel requested."

    # retry a failed one (8: not a fax machine, at the first attempt)
    failed = cli("send", "--to", "+15555551218", str(make_pdf(tmp_path / "c.pdf")), config=config).stdout.strip()
    browser.get(f"{url}/jobs/{failed}")
    until(browser, "the fax failed", lambda d: text_of(d, "state") == "failed")
    click(browser, "#action-retry")
    browser.find_element(By.ID, "confirm").click()
    until(browser, "sent again", lambda d: "job.retry" in (text_of(d, "history") or ""))
    until(browser, "failed again, on the same page", lambda d: (text_of(d, "history") or "").count("job.failed") == 2)
    browser.save_screenshot(str(artifacts / "job-retried.png"))
    browser.get(url + "/")
    until(browser, "the three jobs in the queue", lambda d: len(d.find_elements(By.CSS_SELECTOR, "tr[data-job]")) == 3)
    browser.save_screenshot(str(artifacts / "queue-later.png"))
    browser.get(url + "/overview")
    assert text_of(browser, "sent") == "1" and text_of(browser, "failed") == "1"     # today's figures
    assert (text_of(browser, "reply-mail") or "").startswith(f"reply mail: through 127.0.0.1:{daemon['sink'].port}, up")
    browser.save_screenshot(str(artifacts / "overview.png"))
    shots = ("login.png", "queue.png", "job.png", "confirm.png", "job-retried.png", "queue-later.png", "overview.png")
    wait_until(lambda: all((artifacts / n).is_file() and (artifacts / n).stat().st_size > 5000 for n in shots),
               timeout=5, what="screenshots written")


def _tomorrow() -> str:
    from datetime import UTC, datetime, timedelta

    return (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_without_server_sent_events_the_pages_poll(daemon: dict[str, Any], browser: WebDriver, artifacts: Path,
                                                   tmp_path: Path) -> None:
    """A browser (or a proxy) without EventSource: the same pages follow the jobs by asking every
    few seconds, and say so."""
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": "delete window.EventSource;"})
    url = daemon["url"]
    browser.get(url + "/login")
    browser.find_element(By.NAME, "user").send_keys("alice")
    browser.find_element(By.NAME, "password").send_keys("s3cret")
    browser.find_element(By.CSS_SELECTOR, "form.login button").click()
    until(browser, "the queue after logging in", lambda d: d.title == "Queue - faxbridge")
    assert browser.execute_script("return typeof window.EventSource;") == "undefined"
    until(browser, "the polling badge", lambda d: text_of(d, "live") == "polling")
    browser.execute_script("window.faxbridgeNoReload = 1;")
    job_id = cli("send", "--to", "+15555551212", str(make_pdf(tmp_path / "a.pdf")),
                 config=daemon["config"]).stdout.strip()
    until(browser, "the job in the queue, delivered", lambda d: row_state(d, job_id) == "delivered")
    assert browser.execute_script("return window.faxbridgeNoReload;") == 1
    browser.save_screenshot(str(artifacts / "queue-polling.png"))
