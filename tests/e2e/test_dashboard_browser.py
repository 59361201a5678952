"""The dashboard in a real browser (Debian's chromium, headless, through selenium and chromedriver)
against a live local-mode system: log in, see a running partition with its targets, open its
timeline, pause and resume it from the page and see the kernel effect go and come back, a bad YAML
refused at its field, a Workflow applied from the form whose graph progresses without a reload, a
Schedule paused and resumed from its page with its child's partition going and coming back, the
nodes and Events pages, and the kill switch recovering every fault.

Screenshots of each page go to the test's tmp dir, and to CHAOSBUS_DASHBOARD_SCREENSHOTS when set
(`make screenshots` regenerates docs/images that way).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.live import System, eventually, wait_blocked

# Its first and last tests carry the live system's start and stop, slow on two loaded cores.
pytestmark = [pytest.mark.privileged, pytest.mark.timeout(300)]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
PAIR = {(0, 1), (1, 0)}
SCHEDULED_PAIR = {(2, 3), (3, 2)}
SCHEDULE = yaml.safe_dump(
    {
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": "Schedule",
        "metadata": {"name": "dash-sched"},
        "spec": {
            "schedule": "@every 2s",
            "concurrencyPolicy": "Forbid",  # one child at a time: it runs on while we watch
            "historyLimit": 1,
            "type": "NetworkChaos",
            "networkChaos": {
                "action": "partition",
                "mode": "all",
                "direction": "both",
                "selector": {"fieldSelectors": {"metadata.name": "peer-2"}},
                "target": {"mode": "all", "selector": {"fieldSelectors": {"metadata.name": "peer-3"}}},
                "duration": "10m",
            },
        },
    }
)
PARTITION = yaml.safe_dump(
    {
        "apiVersion": "chaos-mesh.org/v1alpha1",
        "kind": "NetworkChaos",
        "metadata": {"name": "dash-cut"},
        "spec": {
            "action": "partition",
            "mode": "all",
            "direction": "both",
            "selector": {"fieldSelectors": {"metadata.name": "peer-0"}},
            "target": {"mode": "all", "selector": {"fieldSelectors": {"metadata.name": "peer-1"}}},
        },
    }
)
BAD = PARTITION.replace("direction: both", "direction: sideways").replace("dash-cut", "dash-bad")
WORKFLOW = """apiVersion: chaos-mesh.org/v1alpha1
kind: Workflow
metadata:
  name: dash-wf
spec:
  entry: entry
  templates:
  - name: entry
    templateType: Serial
    children: [cut, settle]
  - name: cut
    templateType: NetworkChaos
    deadline: 12s  # seen running after the page loads, which takes seconds under load
    networkChaos:
      action: partition
      mode: all
      direction: both
      selector: {fieldSelectors: {metadata.name: peer-2}}
      target: {mode: all, selector: {fieldSelectors: {metadata.name: peer-3}}}
  - name: settle
    templateType: Suspend
    deadline: 2s
"""


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if CHROMIUM is None or CHROMEDRIVER is None:
        return "needs Debian's chromium and chromium-driver (scripts/install-system-deps.sh installs them)"
    return None


@pytest.fixture
def dashboard(system: System, tmp_path: Path) -> Iterator[tuple[str, str]]:
    url_file = tmp_path / "dashboard.url"
    proc = subprocess.Popen(
        [sys.executable, "-m", "chaosbus.dashboard", "--port", "0", "--metrics-port", "0", "--url-file", str(url_file)],
        env=system.env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "dashboard.log", "wb"),
        start_new_session=True,
    )
    try:
        eventually(lambda: url_file.exists() and url_file.read_text().strip(), timeout=30)
        token = (system.state / "dashboard" / "admin.token").read_text().strip()
        yield url_file.read_text().strip().rstrip("/"), token
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        # Whatever happened, the shared live system is left released and without our experiments.
        system.cli("resume", check=False)
        for kind, name in (("schedule", "dash-sched"), ("workflow", "dash-wf"), ("networkchaos", "dash-cut")):
            system.cli("delete", kind, name, check=False)


@pytest.fixture
def browser() -> Iterator[Any]:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
        "--no-first-run",
        "--disable-extensions",
    ):
        opts.add_argument(arg)
    opts.unhandled_prompt_behavior = "accept"  # the pages' confirm() dialogs: yes
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


class Shots:
    def __init__(self, driver: Any, folder: Path) -> None:
        self.driver, self.folders = driver, [folder]
        extra = os.environ.get("CHAOSBUS_DASHBOARD_SCREENSHOTS")
        if extra:
            self.folders.append(Path(extra))
        for f in self.folders:
            f.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str) -> None:
        for f in self.folders:
            self.driver.save_screenshot(str(f / f"dashboard-{name}.png"))


def test_dashboard_in_a_real_browser(system: System, dashboard: tuple[str, str], browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    url, token = dashboard
    shot = Shots(browser, tmp_path / "screenshots")

    from selenium.common.exceptions import StaleElementReferenceException

    def css(selector: str) -> Any:
        return browser.find_element(By.CSS_SELECTOR, selector)

    # Live updates replace parts of the page at any moment: read through the DOM in one step.
    def text(selector: str) -> str:
        return str(
            browser.execute_script(
                "var e = document.querySelector(arguments[0]); return e ? e.textContent : '';", selector
            )
        )

    def count(selector: str) -> int:
        return int(browser.execute_script("return document.querySelectorAll(arguments[0]).length;", selector))

    def texts(selector: str) -> set[str]:
        return set(
            browser.execute_script(
                "return Array.from(document.querySelectorAll(arguments[0]))"
                ".map(function (e) { return e.textContent; });",
                selector,
            )
        )

    def click(selector: str) -> None:
        for _ in range(20):
            try:
                css(selector).click()
                return
            except StaleElementReferenceException:
                time.sleep(0.1)
        raise AssertionError(f"{selector} kept being replaced")

    def type_into(selector: str, value: str) -> None:
        for _ in range(20):
            try:
                css(selector).send_keys(value)
                return
            except StaleElementReferenceException:
                time.sleep(0.1)
        raise AssertionError(f"{selector} kept being replaced")

    def submit(action: str) -> None:
        click(f'form[action="{action}"] button')
        from selenium.common.exceptions import NoAlertPresentException

        with contextlib.suppress(NoAlertPresentException):  # the page asks "are you sure?" for some
            browser.switch_to.alert.accept()

    # Log in: a page without a session sends you to the login form.
    browser.get(url + "/")
    assert "/login" in browser.current_url
    shot("login")
    css("#token").send_keys(token)
    click('form[action="/login"] button')
    eventually(lambda: "Experiments" in text("main h1"), timeout=15)

    # A running partition appears on the list and turns Running with 2/2 injected, pushed, no reload.
    browser.execute_script("window.__noReload = true;")
    system.cli("apply", "-f", "-", stdin=PARTITION)
    row = 'tr[data-key="NetworkChaos/default/dash-cut"]'
    eventually(lambda: text(f"{row} .phase") == "Running" and text(f"{row} .injected") == "2/2", timeout=20)
    assert browser.execute_script("return window.__noReload === true;"), "the page was reloaded"
    wait_blocked(system, PAIR)
    shot("experiments")

    # Its page: both targets, and their apply events on the timeline.
    click(f"{row} a")
    eventually(lambda: count("table.records tbody tr") == 2, timeout=10)
    assert texts("table.records tbody tr td:first-child") == {"default/peer-0", "default/peer-1"}
    assert count("svg.timeline circle.op-apply") == 2
    shot("experiment")
    page = browser.current_url.split("?")[0]

    # Pause from the page: the partition goes from the kernel; resume: it comes back.
    submit(page.replace(url, "") + "/pause")
    wait_blocked(system, set(), timeout=15)
    eventually(lambda: "Paused" in text("p.summary"), timeout=10)
    submit(page.replace(url, "") + "/resume")
    wait_blocked(system, PAIR, timeout=15)
    eventually(lambda: count("svg.timeline circle.op-recover") == 2, timeout=10)
    eventually(lambda: "Running" in text("p.summary"), timeout=10)
    shot("timeline")

    # A bad YAML is refused at its field, nothing stored.
    browser.get(url + "/new")
    area = css("#yaml")
    area.clear()
    area.send_keys(BAD)
    click("#create")
    eventually(lambda: "spec.direction" in text(".field-error"), timeout=10)
    assert "expected one of to, from, both" in text(".field-error")
    assert "direction: sideways" in text(".listing .bad")
    assert system.get("networkchaos", "dash-bad") is None
    shot("new-error")

    # A Workflow from the form; its graph progresses while we watch (no reload).
    area = css("#yaml")
    area.clear()
    area.send_keys(WORKFLOW)
    click("#create")
    eventually(lambda: "Workflow/default/dash-wf created" in text(".flash"), timeout=15)
    browser.get(url + "/workflows/default/dash-wf")
    browser.execute_script("window.__noReload = true;")

    def state(template: str) -> str:
        return str(
            browser.execute_script(
                "var e = document.querySelector('g.wf-node[data-template=\"' + arguments[0] + '\"]');"
                "return e ? e.getAttribute('data-state') : '';",
                template,
            )
        )

    eventually(lambda: state("cut") == "running", timeout=20)
    shot("workflow")
    eventually(lambda: state("cut") == "accomplished" and state("entry") == "accomplished", timeout=40)
    assert browser.execute_script("return window.__noReload === true;"), "the page was reloaded"
    assert state("settle") == "accomplished"

    # A Schedule paused and resumed from its page: its running child's partition goes and comes back.
    wait_blocked(system, PAIR, timeout=20)  # the workflow's partition is recovered
    system.cli("apply", "-f", "-", stdin=SCHEDULE)
    wait_blocked(system, PAIR | SCHEDULED_PAIR, timeout=30)
    browser.get(url + "/schedules")
    section = 'section.schedule[data-key="default/dash-sched"]'
    eventually(lambda: count(f"{section} ul li a") == 1, timeout=15)
    submit("/schedules/default/dash-sched/pause")
    wait_blocked(system, PAIR, timeout=20)
    eventually(lambda: count(f'{section}[data-paused="true"]') == 1 and "paused" in text(f"{section} p"), timeout=15)
    shot("schedules")
    submit("/schedules/default/dash-sched/resume")
    wait_blocked(system, PAIR | SCHEDULED_PAIR, timeout=20)
    eventually(lambda: count(f'{section}[data-paused="false"]') == 1, timeout=15)

    browser.get(url + "/nodes")
    eventually(lambda: text("td.node-healthy") == "healthy", timeout=15)
    shot("nodes")
    browser.get(url + "/events")
    eventually(lambda: "Applied" in text("table.events") or "Started" in text("table.events"), timeout=10)
    shot("events")

    # The kill switch, from any page: every fault recovered, the banner says so; then released.
    browser.get(page)
    type_into('#killswitch input[name="reason"]', "browser test")
    submit("/control/halt")
    wait_blocked(system, set(), timeout=15)
    eventually(lambda: "HALTED" in text("#killswitch"), timeout=10)
    assert "browser test" in text("#killswitch")
    shot("halted")
    submit("/control/resume")
    eventually(lambda: "released" in text("#killswitch"), timeout=10)
    assert system.blocked() == set()  # a released kill switch leaves the ended faults ended
