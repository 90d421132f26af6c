"""Active checks configured for the host: TCP connect, HTTP GET, process present by name."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePath
from typing import TYPE_CHECKING, Annotated, Literal, Union

import psutil
import requests
from pydantic import BaseModel, ConfigDict, Field

from fleetwatch.schema import CheckResult, ChecksData

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from fleetwatch.schema import SectionName

CheckName = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$")]
Timeout = Annotated[float, Field(gt=0, le=300)]


class _CheckConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: CheckName
    timeout: Timeout = 5.0


class TcpCheck(_CheckConfig):
    """Passes when a TCP connection to host:port opens within the timeout."""

    type: Literal["tcp"]
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)]


class HttpCheck(_CheckConfig):
    """Passes when a GET answers with an expected status (any below 400 by default)."""

    type: Literal["http"]
    url: Annotated[str, Field(pattern=r"^https?://", max_length=1024)]
    expect_status: list[Annotated[int, Field(ge=100, le=599)]] = []
    verify_tls: bool = True


class ProcessCheck(_CheckConfig):
    """Passes when a process with this name runs."""

    type: Literal["process"]
    process: Annotated[str, Field(min_length=1, max_length=255)]


# A runtime alias: Union, not `X | Y`, which Python 3.9 cannot evaluate
CheckConfig = Annotated[Union[TcpCheck, HttpCheck, ProcessCheck], Field(discriminator="type")]


def _elapsed_ms(start: float) -> float:
    return round((time.monotonic() - start) * 1000, 1)


def run_tcp(check: TcpCheck) -> CheckResult:
    target = f"{check.host}:{check.port}"
    start = time.monotonic()
    try:
        with socket.create_connection((check.host, check.port), timeout=check.timeout):
            pass
    except TimeoutError:
        reason = f"no connection within {check.timeout:g} s"
    except OSError as exc:
        reason = exc.strerror or str(exc)
    else:
        return CheckResult(
            name=check.name,
            kind="tcp",
            target=target,
            ok=True,
            latency_ms=_elapsed_ms(start),
        )
    return CheckResult(name=check.name, kind="tcp", target=target, ok=False, reason=reason)


def run_http(check: HttpCheck) -> CheckResult:
    start = time.monotonic()
    try:
        response = requests.get(
            check.url,
            timeout=check.timeout,
            allow_redirects=False,
            verify=check.verify_tls,
            stream=True,
        )
        response.close()
    except requests.Timeout:
        reason = f"no answer within {check.timeout:g} s"
    except requests.RequestException as exc:
        reason = f"request failed: {type(exc).__name__}: {str(exc)[:300]}"
    else:
        latency = _elapsed_ms(start)
        status = response.status_code
        ok = status in check.expect_status if check.expect_status else status < 400
        return CheckResult(
            name=check.name,
            kind="http",
            target=check.url,
            ok=ok,
            status_code=status,
            latency_ms=latency,
            reason=None if ok else f"HTTP status {status}",
        )
    return CheckResult(name=check.name, kind="http", target=check.url, ok=False, reason=reason)


def process_names() -> Iterator[str]:
    """Names of running processes: the kernel's name and the executable's base name."""
    for process in psutil.process_iter(["name", "exe"]):
        info = process.info
        if info.get("name"):
            yield info["name"]
        if info.get("exe"):
            yield PurePath(info["exe"]).name


def run_process(
    check: ProcessCheck, names: Callable[[], Iterator[str]] = process_names
) -> CheckResult:
    ok = any(name == check.process for name in names())
    return CheckResult(
        name=check.name,
        kind="process",
        target=check.process,
        ok=ok,
        reason=None if ok else f"no running process named {check.process!r}",
    )


def run_check(check: TcpCheck | HttpCheck | ProcessCheck) -> CheckResult:
    if isinstance(check, TcpCheck):
        return run_tcp(check)
    if isinstance(check, HttpCheck):
        return run_http(check)
    return run_process(check)


class ChecksCollector:
    """Runs every configured check at once; each check is bounded by its own timeout."""

    name: SectionName = "checks"

    def __init__(
        self,
        checks: list[TcpCheck | HttpCheck | ProcessCheck],
        run: Callable[[TcpCheck | HttpCheck | ProcessCheck], CheckResult] = run_check,
    ) -> None:
        self.checks = checks
        self.run = run

    def collect(self) -> ChecksData:
        if not self.checks:
            return ChecksData(results=[])
        with ThreadPoolExecutor(max_workers=min(8, len(self.checks))) as pool:
            results = list(pool.map(self._run_one, self.checks))
        return ChecksData(results=results)

    def _run_one(self, check: TcpCheck | HttpCheck | ProcessCheck) -> CheckResult:
        try:
            return self.run(check)
        except Exception as exc:  # noqa: BLE001  (one broken check must not hide the others)
            return CheckResult(
                name=check.name,
                kind=check.type,
                target=getattr(check, "url", None) or getattr(check, "process", None) or "?",
                ok=False,
                reason=f"check failed: {type(exc).__name__}: {str(exc)[:300]}",
            )
