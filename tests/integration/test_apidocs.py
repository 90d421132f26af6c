"""/docs and /redoc of the real collector work with no internet: every asset comes from the
collector, and a real headless Chromium renders them with nothing leaving loopback."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
import requests

from fleetwatch.collector.web.apidocs import CONTENT_SECURITY_POLICY
from tests.helpers import CollectorProcess

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
# ReDoc's sidebar shows Redocly's logo from their CDN; the page's policy blocks it (so nothing
# is fetched) and the browser says so on the console: the one URL blocked and the one console
# message a page may have.
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


class _References(HTMLParser):
    """Every URL a page refers to: scripts, stylesheets, icons, images."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value and name in {"src", "href"}:
                self.urls.append(value)


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    tmp_path = tmp_path_factory.mktemp("apidocs")
    # (the autouse fixture that clears FLEETWATCH_* is function-scoped: start clean here too)
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("FLEETWATCH_")}
    try:
        process = CollectorProcess(tmp_path, f"sqlite:///{tmp_path / 'fleetwatch.db'}").start()
    finally:
        os.environ.update(saved)
    try:
        yield process
    finally:
        process.stop()


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_every_asset_a_page_names_is_served_by_the_collector(
    collector: CollectorProcess, page: str
) -> None:
    """The page names only the collector's own URLs, each answers 200 with a body, and the
    page carries the policy that allows nothing else."""
    response = requests.get(collector.url + page, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    references = _References()
    references.feed(response.text)
    assert len(references.urls) >= 2, references.urls
    for url in references.urls:
        absolute = urljoin(collector.url + page, url)
        assert absolute.startswith(collector.url + "/"), f"{page} refers outside: {url}"
        asset = requests.get(absolute, timeout=10)
        assert asset.status_code == 200, absolute
        assert asset.content, absolute
    assert requests.get(collector.url + "/openapi.json", timeout=10).json()["paths"]


def test_only_the_listed_assets_are_served(collector: CollectorProcess) -> None:
    """Names outside the list, and paths that climb out of the folder, answer 404."""
    for name in ("README.md", "LICENSE.redoc", "..%2Fapidocs.py", "%2E%2E%2Fapp.py"):
        response = requests.get(f"{collector.url}/docs/assets/{name}", timeout=10)
        assert response.status_code == 404, name


def _browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests run as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--window-size=1400,900",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))


def _requested_urls(driver: Any) -> tuple[list[str], list[str]]:
    """The URLs the page asked for, from the browser's performance log: (those it fetched,
    those the page's Content-Security-Policy blocked before any request was sent)."""
    urls: dict[str, str] = {}
    blocked: set[str] = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message["params"]
        if message["method"] == "Network.requestWillBeSent":
            urls[params["requestId"]] = params["request"]["url"]
        elif message["method"] == "Network.loadingFailed" and params.get("blockedReason") == "csp":
            blocked.add(params["requestId"])
    fetched = [url for request, url in urls.items() if request not in blocked]
    return fetched, [url for request, url in urls.items() if request in blocked]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("needs Debian's chromium and chromium-driver")
    pytest.importorskip("selenium")
    driver = _browser()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.mark.parametrize(
    ("page", "rendered", "allowed_messages"),
    [
        ("/docs", ".swagger-ui .info .title", []),
        ("/redoc", ".api-info h1", [REDOC_LOGO]),
    ],
)
def test_chromium_renders_the_page_from_the_collector_alone(
    collector: CollectorProcess,
    browser: Any,
    page: str,
    rendered: str,
    allowed_messages: list[str],
) -> None:
    """Chromium shows the API's title and its endpoints; every request it made went to the
    collector (or stayed in the page: data:, blob:); its console has no error."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get_log("browser")  # forget what an earlier page said
    browser.get_log("performance")
    browser.get(collector.url + page)
    title = WebDriverWait(browser, 60).until(
        expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, rendered))
    )
    assert "fleetwatch collector" in title.text
    WebDriverWait(browser, 60).until(
        lambda driver: "/api/v1/hosts" in driver.find_element(By.TAG_NAME, "body").text
    )
    fetched, blocked = _requested_urls(browser)
    assert any(url.endswith(".js") for url in fetched), fetched
    outside = [
        url
        for url in fetched
        if urlsplit(url).scheme not in {"data", "blob"} and not url.startswith(collector.url + "/")
    ]
    assert outside == [], f"requests that left the collector: {outside}"
    assert blocked == allowed_messages
    errors = [
        entry["message"]
        for entry in browser.get_log("browser")
        if entry["level"] == "SEVERE"
        and not any(allowed in entry["message"] for allowed in allowed_messages)
    ]
    assert errors == [], errors
