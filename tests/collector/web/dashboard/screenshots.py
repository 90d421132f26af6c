"""Screenshots of every dashboard page at 1400x900, from a demo fleet, for docs/screenshots/.

    python -m tests.collector.web.dashboard.screenshots [--hosts 2000] [DIR]

Seeds a fleet (`benchmarks.dashboard seed`: units, findings, 90 days of snapshots), adds a
host that reports the captured Debian 12 machine over HTTP (so its page is full), starts the
real collector, signs in with Debian's chromium and saves one PNG per page.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path

import requests

from benchmarks.dashboard import seed
from tests.collector.web.dashboard import browser
from tests.helpers import CollectorProcess, make_report

ROOT = Path(__file__).resolve().parents[4]
DEMO_HOST = "web-01.parks"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory", nargs="?", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--hosts", type=int, default=2000)
    args = parser.parse_args()
    reason = browser.missing()
    if reason:
        raise SystemExit(reason)
    args.directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        url = f"sqlite:///{tmp / 'fleetwatch.db'}"
        seed(args.hosts, url, tmp)
        policy = tmp / "policy.toml"
        policy.write_text(
            policy.read_text() + f'\n[hosts."{DEMO_HOST}"]\nunit = "unit01"\ngroups = ["web"]\n'
        )
        collector = CollectorProcess(
            tmp, url, policy, extra_env={"FLEETWATCH_DASHBOARD_SNAPSHOT_SECONDS": "1"}
        ).start()
        driver = browser.chromium()
        try:
            enrolled = requests.post(
                collector.url + "/api/v1/enroll",
                json={"host_id": DEMO_HOST, "enroll_secret": collector.enroll_secret},
                timeout=10,
            ).json()
            requests.post(
                collector.url + "/api/v1/report",
                data=json.dumps(make_report(DEMO_HOST, 1)),
                headers={
                    "Authorization": f"Bearer {enrolled['token']}",
                    "Content-Type": "application/json",
                },
                timeout=10,
            ).raise_for_status()
            driver.get(collector.url + "/dashboard/login")
            driver.save_screenshot(str(args.directory / "login.png"))
            driver.find_element("id", "token").send_keys(collector.admin_token)
            driver.find_element("id", "sign-in").click()
            pages = {
                "overview": "/dashboard/?days=30",
                "hosts": "/dashboard/hosts?unit=unit01",
                "host": f"/dashboard/hosts/{DEMO_HOST}",
                "findings": "/dashboard/findings?severity=high",
                "sessions": "/dashboard/sessions",
            }
            for name, path in pages.items():
                driver.get(collector.url + path)
                assert not re.search("Not here", driver.title), path
                driver.save_screenshot(str(args.directory / f"{name}.png"))
                print(f"{args.directory / name}.png")
        finally:
            driver.quit()
            collector.stop()


if __name__ == "__main__":
    main()
