"""The dashboard in a real browser: Debian's chromium against the real collector over HTTP."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from fleetwatch.collector.web.dashboard.browser import CONTENT_SECURITY_POLICY
from tests.collector.web.dashboard import browser
from tests.collector.web.dashboard.fleet import HOSTILE, POLICY
from tests.helpers import CollectorProcess, full, make_report, ports_section, section_data

pytestmark = [pytest.mark.browser]

if browser.missing():
    pytest.skip(browser.missing() or "", allow_module_level=True)

from selenium.common.exceptions import (  # noqa: E402
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

ROOT = Path(__file__).resolve().parents[4]


class Fleet:
    """The collector, seeded over HTTP, with its admin token and a reader of unit parks."""

    def __init__(self, collector: CollectorProcess) -> None:
        self.collector = collector
        self.url = collector.url
        self.admin = collector.admin_token
        self.parks = self.token("read", "parks")

    def call(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {token or self.admin}"}
        answer = requests.request(method, self.url + path, headers=headers, timeout=10, **kwargs)
        answer.raise_for_status()
        return answer.json()

    def token(self, kind: str, unit: str | None = None) -> str:
        made = self.call(
            "POST", "/api/v1/tokens", json={"name": f"{kind} {unit}", "kind": kind, "unit": unit}
        )
        return str(made["token"])

    def report(self, host_id: str, collected_at: datetime | None = None, **sections: Any) -> None:
        enrolled = requests.post(
            self.url + "/api/v1/enroll",
            json={"host_id": host_id, "enroll_secret": self.collector.enroll_secret},
            timeout=10,
        )
        enrolled.raise_for_status()
        body = make_report(host_id, 1, collected_at=collected_at)
        body["sections"].update(sections)
        sent = requests.post(
            self.url + "/api/v1/report",
            data=json.dumps(body),
            headers={
                "Authorization": f"Bearer {enrolled.json()['token']}",
                "Content-Type": "application/json",
            },
            timeout=10,
        )
        sent.raise_for_status()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("browser")
    policy = tmp / "policy.toml"
    policy.write_text(POLICY)
    collector = CollectorProcess(
        tmp,
        f"sqlite:///{tmp / 'fleetwatch.db'}",
        policy,
        extra_env={
            "FLEETWATCH_DASHBOARD_LIVE_MAX_AGE": "0",
            "FLEETWATCH_DASHBOARD_SNAPSHOT_SECONDS": "0.5",
        },
    ).start()
    try:
        seeded = Fleet(collector)
        seeded.report("web-01")
        seeded.report("db-01")
        seeded.report("web-02", ports=ports_section(("tcp", "0.0.0.0", 22)))
        hostile = {
            "listeners": [
                {
                    "protocol": "tcp",
                    "address": "0.0.0.0",
                    "port": 4444,
                    "pid": 66,
                    "process": HOSTILE,
                    "user": HOSTILE,
                }
            ]
        }
        seeded.report(
            "evil-01",
            system=full("system", section_data("system", hostname=HOSTILE)),
            ports=full("ports", hostile),
        )
        seeded.report("old-01", collected_at=datetime.now(UTC) - timedelta(days=3))
        yield seeded
    finally:
        collector.stop()


@pytest.fixture
def driver() -> Iterator[Any]:
    chromium = browser.chromium()
    try:
        yield chromium
    finally:
        chromium.quit()


def sign_in(driver: Any, fleet: Fleet, token: str) -> None:
    """Sign in with the keyboard alone: type the token, press Enter."""
    driver.get(fleet.url + "/dashboard/")
    assert driver.current_url.endswith("/dashboard/login")
    field = driver.find_element(By.ID, "token")
    assert driver.switch_to.active_element == field  # the form has focus on arrival
    field.send_keys(token, Keys.ENTER)
    WebDriverWait(driver, 30).until(expected_conditions.presence_of_element_located((By.ID, "who")))


def follow(driver: Any, element: Any) -> None:
    """Click a link or button and wait until the page it leads to replaced this one."""
    element.click()

    def replaced(_: Any) -> bool:
        try:
            element.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            # asked about a node while the navigation takes it away, chromedriver can answer
            # this instead of "stale element": the page is being replaced all the same
            if "does not belong to the document" in str(exc):
                return True
            raise
        return False

    WebDriverWait(driver, 30).until(replaced)


def wait_for_hosts(driver: Any, fleet: Fleet, count: int) -> None:
    """The housekeeper places new hosts within a round: reload until the list has them all."""
    for _ in range(100):
        driver.get(fleet.url + "/dashboard/hosts")
        if len(driver.find_elements(By.CSS_SELECTOR, "#hosts tbody tr[data-host]")) == count:
            return
        driver.implicitly_wait(0)
        import time

        time.sleep(0.1)
    msg = f"the host list never showed {count} hosts"
    raise AssertionError(msg)


def number(driver: Any, element_id: str) -> int:
    return int(driver.find_element(By.ID, element_id).text)


def console_errors(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def shot(driver: Any, name: str) -> None:
    """A screenshot of the page as shown, kept with the test run's files."""
    directory = ROOT / ".test-screenshots"
    directory.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(directory / f"{name}.png"))


class TestAdmin:
    def test_every_page_with_the_apis_figures(self, fleet: Fleet, driver: Any) -> None:
        """Signed in as admin, every page opens from the navigation; the overview's figures
        and the host list equal the API's; no page logs a console error (a CSP violation
        would)."""
        sign_in(driver, fleet, fleet.admin)
        wait_for_hosts(driver, fleet, 6)
        hosts = fleet.call("GET", "/api/v1/hosts")
        follow(driver, driver.find_element(By.LINK_TEXT, "Overview"))
        assert number(driver, "total-hosts") == len(hosts)
        for status in ("compliant", "noncompliant", "stale", "never_reported"):
            assert number(driver, f"total-{status}") == sum(
                1 for h in hosts if h["status"] == status
            )
        for severity in ("critical", "high", "medium", "low"):
            assert number(driver, f"open-{severity}") == sum(
                h["open_by_severity"].get(severity, 0) for h in hosts
            )
        shot(driver, "overview")
        follow(driver, driver.find_element(By.LINK_TEXT, "Hosts"))
        rows = driver.find_elements(By.CSS_SELECTOR, "#hosts tbody tr[data-host]")
        listed = {
            r.get_attribute("data-host"): int(
                r.find_element(By.CSS_SELECTOR, "td[data-open]").get_attribute("data-open")
            )
            for r in rows
        }
        assert listed == {h["host_id"]: h["open_findings"] for h in hosts}
        follow(driver, driver.find_element(By.LINK_TEXT, "web-01"))
        assert driver.find_element(By.ID, "host-title").text == "web-01"
        detail = fleet.call("GET", "/api/v1/hosts/web-01")
        shown = driver.find_elements(By.CSS_SELECTOR, "#open-findings tbody tr")
        assert len(shown) == len(detail["findings"])
        follow(driver, driver.find_element(By.LINK_TEXT, "Findings"))
        open_findings = fleet.call("GET", "/api/v1/findings", params={"open": "true"})
        assert len(
            driver.find_elements(By.CSS_SELECTOR, "#findings tbody tr[data-finding]")
        ) == min(len(open_findings), 50)
        follow(driver, driver.find_element(By.LINK_TEXT, "Sessions"))
        assert driver.find_elements(By.CSS_SELECTOR, "#sessions tbody tr")
        assert console_errors(driver) == []

    def test_the_filters(self, fleet: Fleet, driver: Any) -> None:
        """The host filters (unit, group, status, text) and the findings' severity filter
        narrow the tables to what the API says."""
        sign_in(driver, fleet, fleet.admin)
        wait_for_hosts(driver, fleet, 6)
        Select(driver.find_element(By.ID, "f-unit")).select_by_visible_text("water")
        follow(driver, driver.find_element(By.ID, "apply"))
        shown = [
            r.get_attribute("data-host")
            for r in driver.find_elements(By.CSS_SELECTOR, "#hosts tbody tr[data-host]")
        ]
        assert sorted(shown) == ["db-01", "evil-01", "old-01"]
        Select(driver.find_element(By.ID, "f-unit")).select_by_visible_text("any")
        Select(driver.find_element(By.ID, "f-group")).select_by_visible_text("web")
        follow(driver, driver.find_element(By.ID, "apply"))
        shown = [
            r.get_attribute("data-host")
            for r in driver.find_elements(By.CSS_SELECTOR, "#hosts tbody tr[data-host]")
        ]
        assert sorted(shown) == ["web-01", "web-02"]
        Select(driver.find_element(By.ID, "f-group")).select_by_visible_text("any")
        Select(driver.find_element(By.ID, "f-status")).select_by_value("never_reported")
        follow(driver, driver.find_element(By.ID, "apply"))
        shown = [
            r.get_attribute("data-host")
            for r in driver.find_elements(By.CSS_SELECTOR, "#hosts tbody tr[data-host]")
        ]
        assert shown == ["quiet-01"]
        shot(driver, "hosts-filtered")
        driver.get(fleet.url + "/dashboard/findings")
        Select(driver.find_element(By.ID, "f-severity")).select_by_visible_text("high")
        follow(driver, driver.find_element(By.ID, "apply"))
        rows = driver.find_elements(By.CSS_SELECTOR, "#findings tbody tr[data-finding]")
        high = [
            f
            for f in fleet.call("GET", "/api/v1/findings", params={"open": "true"})
            if f["severity"] == "high"
        ]
        assert len(rows) == len(high) > 0

    def test_hostile_host_data_is_text(self, fleet: Fleet, driver: Any) -> None:
        """A hostname and process name made of markup show as that text: no script ran, no
        element was made of it."""
        sign_in(driver, fleet, fleet.admin)
        wait_for_hosts(driver, fleet, 6)
        driver.get(fleet.url + "/dashboard/hosts/evil-01")
        facts = driver.find_element(By.CSS_SELECTOR, ".facts dd").text
        assert facts == HOSTILE
        assert HOSTILE in driver.find_element(By.ID, "ports").text
        assert driver.find_elements(By.CSS_SELECTOR, "main b") == []
        assert driver.find_elements(By.CSS_SELECTOR, "main script") == []
        shot(driver, "host-hostile")
        assert console_errors(driver) == []

    def test_the_csp_header_holds(self, fleet: Fleet) -> None:
        """The collector sends the strict policy with every dashboard page."""
        answer = requests.get(fleet.url + "/dashboard/login", timeout=10)
        assert answer.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY

    def test_ending_a_session_through_the_form(self, fleet: Fleet, driver: Any) -> None:
        """An admin ends a reader's session with the sessions page's button: the reader's
        next page is the sign-in form. Signing out ends the admin's own."""
        reader = requests.Session()
        form = reader.get(fleet.url + "/dashboard/login", timeout=10).text
        form_token = re.search(r'name="form_token" value="([^"]+)"', form)
        assert form_token is not None
        reader.post(
            fleet.url + "/dashboard/login",
            data={"form_token": form_token.group(1), "token": fleet.parks},
            timeout=10,
        )
        assert reader.get(fleet.url + "/dashboard/", timeout=10).url.endswith("/dashboard/")
        sign_in(driver, fleet, fleet.admin)
        driver.get(fleet.url + "/dashboard/sessions")
        newest_reader = next(
            s
            for s in fleet.call("GET", "/api/v1/sessions")
            if s["unit"] == "parks" and s["revoked_at"] is None
        )
        shot(driver, "sessions")
        follow(driver, driver.find_element(By.ID, f"revoke-{newest_reader['id']}"))
        assert reader.get(fleet.url + "/dashboard/", timeout=10).url.endswith("/dashboard/login")
        follow(driver, driver.find_element(By.ID, "sign-out"))
        assert driver.current_url.endswith("/dashboard/login")
        driver.get(fleet.url + "/dashboard/hosts")
        assert driver.current_url.endswith("/dashboard/login")


class TestUnitReader:
    def test_sees_and_reaches_only_their_unit(self, fleet: Fleet, driver: Any) -> None:
        """A reader of parks: totals and hosts of parks only; another unit's host by URL is
        not found, like a host that does not exist."""
        sign_in(driver, fleet, fleet.parks)
        wait_for_hosts(driver, fleet, 3)
        parks = fleet.call("GET", "/api/v1/hosts", fleet.parks)
        shown = sorted(
            r.get_attribute("data-host")
            for r in driver.find_elements(By.CSS_SELECTOR, "#hosts tbody tr[data-host]")
        )
        assert shown == sorted(h["host_id"] for h in parks)
        driver.get(fleet.url + "/dashboard/")
        assert number(driver, "total-hosts") == len(parks) == 3
        units = [
            r.get_attribute("data-unit")
            for r in driver.find_elements(By.CSS_SELECTOR, "#units tbody tr")
        ]
        assert units == ["parks"]
        for host_id in ("db-01", "evil-01"):
            driver.get(fleet.url + f"/dashboard/hosts/{host_id}")
            assert "No host" in driver.find_element(By.ID, "error-message").text
            assert "water" not in driver.find_element(By.TAG_NAME, "main").text
        driver.get(fleet.url + "/dashboard/hosts?unit=water")
        assert driver.find_elements(By.CSS_SELECTOR, "#hosts tbody tr[data-host]") == []
        # the 404 pages above log their status to the console; nothing else may
        errors = [e for e in console_errors(driver) if "404" not in e["message"]]
        assert errors == []


class TestActions:
    def test_acknowledge_through_the_form_and_overdue_counts(
        self, fleet: Fleet, driver: Any
    ) -> None:
        """An admin opens a web-01 finding from the findings page and acknowledges it with
        the form: the page and the API say acknowledged. A db-01 finding given a past due
        date through the API is overdue: the overview's unit table counts each unit's
        overdue findings as the API does, and its link lists them."""
        late = fleet.call("GET", "/api/v1/findings", params={"host_id": "db-01", "open": "true"})[0]
        past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
        fleet.call("POST", f"/api/v1/findings/{late['id']}/due", json={"due_at": past})
        finding = fleet.call(
            "GET", "/api/v1/findings", params={"host_id": "web-01", "open": "true"}
        )[0]
        sign_in(driver, fleet, fleet.admin)
        wait_for_hosts(driver, fleet, 6)
        driver.get(fleet.url + "/dashboard/findings?state=open")
        row = driver.find_element(By.CSS_SELECTOR, f'tr[data-finding="{finding["id"]}"]')
        follow(driver, row.find_element(By.CSS_SELECTOR, "td[data-state] a"))
        assert driver.find_element(By.ID, "finding-state").text == "open"
        driver.find_element(By.ID, "ack-note").send_keys("parks is on it")
        follow(driver, driver.find_element(By.ID, "acknowledge"))
        assert driver.find_element(By.ID, "action-done").text == "Acknowledged."
        assert driver.find_element(By.ID, "finding-state").text == "acknowledged"
        assert "parks is on it" in driver.find_element(By.ID, "finding-facts").text
        assert fleet.call("GET", f"/api/v1/findings/{finding['id']}")["state"] == "acknowledged"
        shot(driver, "finding-acknowledged")

        driver.get(fleet.url + "/dashboard/")
        units = {u["name"]: u["overdue_findings"] for u in fleet.call("GET", "/api/v1/units")}
        shown = {
            r.get_attribute("data-unit"): int(
                r.find_element(By.CSS_SELECTOR, "[data-count=overdue]").text
            )
            for r in driver.find_elements(By.CSS_SELECTOR, "#units tbody tr")
        }
        assert shown == {u: units.get(u, 0) for u in shown}
        assert shown["water"] == 1
        follow(driver, driver.find_element(By.CSS_SELECTOR, 'tr[data-unit="water"] a[data-count]'))
        listed = driver.find_elements(By.CSS_SELECTOR, "#findings tbody tr[data-finding]")
        assert [r.get_attribute("data-finding") for r in listed] == [str(late["id"])]
        assert console_errors(driver) == []

    def test_a_unit_reader_has_no_action_buttons(self, fleet: Fleet, driver: Any) -> None:
        """A parks reader opens a parks finding: no acknowledge or waive form."""
        finding = fleet.call(
            "GET", "/api/v1/findings", params={"host_id": "web-01", "open": "true"}
        )[0]
        sign_in(driver, fleet, fleet.parks)
        driver.get(fleet.url + f"/dashboard/findings/{finding['id']}")
        assert driver.find_element(By.ID, "finding-title")
        assert driver.find_elements(By.CSS_SELECTOR, "main form") == []
