"""Settings of the collector service and of the admin command line.

Every field reads from ``FLEETWATCH_<NAME>``. Secrets can also come from a file named by
``FLEETWATCH_<NAME>_FILE`` (for systemd credentials, Docker or Kubernetes secrets).
"""

from __future__ import annotations

from datetime import time
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORT = 8470


def _secret_from_file(value: SecretStr | None, path: Path | None, name: str) -> SecretStr | None:
    if value is not None or path is None:
        return value
    try:
        text = path.read_text().strip()
    except OSError as exc:
        msg = f"{name}_file: cannot read {path}: {exc.strerror}"
        raise ValueError(msg) from exc
    return SecretStr(text) if text else None


class CollectorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEETWATCH_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: Annotated[int, Field(ge=0, le=65535)] = Field(
        default=DEFAULT_PORT, description="Port to listen on."
    )
    workers: Annotated[int, Field(ge=1, le=64)] = Field(
        default=1,
        description="Collector processes sharing the port; one per CPU core for the most "
        "reports a second.",
    )
    data_dir: Path = Field(
        default=Path("/var/lib/fleetwatch"),
        description="Where the default SQLite database lives.",
    )
    database_url: str | None = Field(
        default=None,
        description="sqlite:///PATH or postgresql://USER@HOST/DB; a SQLite file in data_dir "
        "when unset.",
    )
    policy: Path | None = Field(
        default=None, description="Policy file (TOML) every host is held against."
    )
    policy_check_interval: Annotated[float, Field(gt=0)] = Field(
        default=5.0,
        description="Seconds between checks of the policy file for changes.",
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description="Bootstrap admin API token (or FLEETWATCH_ADMIN_TOKEN_FILE).",
    )
    admin_token_file: Path | None = Field(default=None, description="File holding admin_token.")
    enroll_secret: SecretStr | None = Field(
        default=None,
        description="Fleet-wide enrollment secret (or FLEETWATCH_ENROLL_SECRET_FILE); "
        "per-unit secrets are created with `fleetwatch token create --kind enroll`.",
    )
    enroll_secret_file: Path | None = Field(default=None, description="File holding enroll_secret.")
    tls_cert: Path | None = Field(default=None, description="TLS certificate chain (PEM).")
    tls_key: Path | None = Field(default=None, description="TLS private key (PEM).")
    max_body_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=16 * 1024 * 1024,
        description="Largest request body accepted, after decompression.",
    )
    body_timeout: Annotated[float, Field(gt=0)] = Field(
        default=30.0, description="Seconds a client may take to send its request body."
    )
    max_api_body_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=64 * 1024,
        description="Largest request body of every endpoint but the report (admin writes, "
        "enrollment), as sent: refused with 413 beyond, and read only after the caller's "
        "token is checked.",
    )
    header_timeout: Annotated[float, Field(gt=0)] = Field(
        default=10.0, description="Seconds a client may take to send a request's headers."
    )
    max_connections: Annotated[int, Field(ge=1)] = Field(
        default=4096,
        description="Connections a worker holds at once, lowered at start to what its file "
        "descriptor limit allows; near it, idle and slow connections are closed for new ones.",
    )
    host_rate: Annotated[float, Field(gt=0)] = Field(
        default=1.0,
        description="Reports per second a single host may send, on average, to the whole fleet "
        "of collector processes (the bucket is kept on the host's row).",
    )
    host_burst: Annotated[int, Field(ge=1)] = Field(
        default=30,
        description="Reports a single host may send at once before being slowed.",
    )
    enroll_rate: Annotated[float, Field(gt=0)] = Field(
        default=0.5,
        description="Enrollment attempts per second one address may make, on average "
        "(guessing the secret is slow), to the whole fleet of collector processes.",
    )
    enroll_burst: Annotated[int, Field(ge=1)] = Field(
        default=20, description="Enrollment attempts one address may make at once."
    )
    trusted_proxies: str = Field(
        default="127.0.0.1",
        description="Addresses (comma-separated, or *) of load balancers whose "
        "X-Forwarded-For header names the client: enrollment is limited per client address, "
        "which behind a balancer is otherwise the balancer's.",
    )
    rotate_rate: Annotated[float, Field(gt=0)] = Field(
        default=0.01,
        description="Token rotations per second a single host may ask for, on average (one "
        "every 100 s); agents rotate every few weeks.",
    )
    rotate_burst: Annotated[int, Field(ge=1)] = Field(
        default=5, description="Token rotations a single host may ask for at once."
    )
    admin_write_rate: Annotated[float, Field(gt=0)] = Field(
        default=1.0,
        description="Admin writes (creating and revoking tokens and hosts, allowing "
        "re-enrollment, reloading the policy) per second one API token may make, on average.",
    )
    admin_write_burst: Annotated[int, Field(ge=1)] = Field(
        default=60, description="Admin writes one API token may make at once."
    )
    token_cache_seconds: Annotated[float, Field(ge=0)] = Field(
        default=900.0,
        description="Seconds a collector process keeps a host token it has checked without "
        "asking the database again (revocations are followed meanwhile: see "
        "token_revocation_check_seconds). 0: ask the database for every request.",
    )
    token_revocation_check_seconds: Annotated[float, Field(ge=0)] = Field(
        default=1.0,
        description="At most this often each collector process asks the database for the host "
        "tokens revoked lately (by any process) and drops them from its token cache: a token "
        "revoked anywhere is refused everywhere within about this long. 0: never ask; a token "
        "revoked by another process may then be accepted for up to token_cache_seconds.",
    )
    security_log_lines: Annotated[int, Field(ge=0)] = Field(
        default=20,
        description="Refused requests of one reason written to the security log in each "
        "security_log_interval; the rest are counted and summed up in one line.",
    )
    security_log_interval: Annotated[float, Field(gt=0)] = Field(
        default=60.0,
        description="Seconds over which security_log_lines applies, per reason.",
    )
    ready_probe_after: Annotated[float, Field(gt=0)] = Field(
        default=30.0,
        description="Seconds without a write after which /readyz tries a small write of its "
        "own to tell whether writes succeed.",
    )
    ingest_max_wait: Annotated[float, Field(gt=0)] = Field(
        default=2.0,
        description="Seconds a report may be expected to wait for the writer; beyond that the "
        "collector answers 503 with a Retry-After that spreads agents out, instead of holding "
        "their requests (agents keep the report in their spool and send it later).",
    )
    ingest_retry_after_max: Annotated[float, Field(gt=0)] = Field(
        default=120.0,
        description="Longest Retry-After the collector gives when it is too busy for reports.",
    )
    report_retention_days: Annotated[float, Field(gt=0)] = Field(
        default=30.0,
        description="Days a received report is kept (the latest of each host is always kept).",
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL",
        description="FULL survives power loss; NORMAL survives a crash of the process only.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Least severe log level written."
    )
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto",
        description="auto: readable lines on a terminal, JSON lines otherwise.",
    )
    # -- metrics (/metrics) --
    metrics_cache_seconds: Annotated[float, Field(ge=0)] = Field(
        default=15.0,
        description="Seconds a collector process keeps the fleet figures of /metrics (hosts "
        "by status, open findings) before reading them from the database again; scrapes in "
        "between are answered from memory. 0: read them at every scrape.",
    )
    metrics_dir: Path | None = Field(
        default=None,
        description="Where the worker processes of `fleetwatch serve` keep their metric "
        "values for each other (prometheus_client's multiprocess mode); emptied at start, so "
        "for this collector alone. Unset: `serve` makes a private temporary directory and "
        "removes it at exit.",
    )
    # -- the dashboard --
    dashboard_session_hours: Annotated[float, Field(gt=0, le=24 * 30)] = Field(
        default=12.0, description="Hours a dashboard sign-in lasts, however busy."
    )
    dashboard_idle_minutes: Annotated[float, Field(gt=0)] = Field(
        default=60.0, description="Minutes without a request after which a dashboard session ends."
    )
    dashboard_snapshot_seconds: Annotated[float, Field(gt=0)] = Field(
        default=60.0,
        description="Seconds between the housekeeper's snapshots of the fleet's counts (the "
        "overview's figures and the last point of its trends).",
    )
    dashboard_live_max_age: Annotated[float, Field(ge=0)] = Field(
        default=120.0,
        description="Seconds the overview shows the housekeeper's snapshot for; an older one "
        "(or 0 here) and the overview counts the fleet itself.",
    )

    # -- notifications (docs/notifications.md) --
    notifications: Path | None = Field(
        default=None,
        description="Notifications file (TOML): targets, the SMTP server, routes; secrets in "
        "files it names. Unset: no targets and no mail server, so nothing is sent.",
    )
    notify_interval: Annotated[float, Field(gt=0)] = Field(
        default=5.0, description="Seconds between the notification sender's passes."
    )
    notify_batch: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=5000,
        description="Events the sender reads from the log in one transaction, and deliveries "
        "it sends in one pass.",
    )
    notify_storm_threshold: Annotated[int, Field(ge=1)] = Field(
        default=20,
        description="Events for one unit and target in one pass beyond which they go as one "
        "summary instead of one message each.",
    )
    notify_retry_first: Annotated[float, Field(gt=0)] = Field(
        default=30.0,
        description="Seconds before the first retry of a failed delivery; each "
        "further retry waits twice as long (half of it random), up to notify_retry_max.",
    )
    notify_retry_max: Annotated[float, Field(gt=0)] = Field(
        default=3600.0, description="Longest wait between two attempts of one delivery."
    )
    notify_give_up_after: Annotated[float, Field(gt=0)] = Field(
        default=3 * 86400.0,
        description="Seconds after a delivery is recorded when the sender stops retrying it "
        "and marks it failed.",
    )
    notify_failing_after: Annotated[int, Field(ge=1)] = Field(
        default=3,
        description="Failed attempts in a row of one delivery after which its target shows "
        "as failing in the status.",
    )
    notify_retention_days: Annotated[float, Field(gt=0)] = Field(
        default=30.0,
        description="Days a sent or failed delivery is kept (for the status and to look up "
        "what was sent).",
    )
    notify_digest_time: time = Field(
        default=time(7, 0),
        description="Time of day (UTC) when daily digests go out.",
    )
    # -- vulnerability data ---------------------------------------------------------------
    vulnerability_urls: list[str] = Field(
        default=[],
        description="URLs of vulnerability data to fetch and import on a schedule (the Debian "
        "tracker's JSON, an OSV zip, CISA's KEV JSON); empty (the default): data is imported "
        "by hand with `fleetwatch vulns import`, as air-gapped fleets must.",
    )
    vulnerability_refresh_hours: Annotated[float, Field(gt=0)] = Field(
        default=24.0,
        description="Hours between fetches of vulnerability_urls (by one process of the fleet).",
    )
    vulnerability_max_bytes: Annotated[int, Field(gt=0)] = Field(
        default=512 * 1024 * 1024,
        description="Largest vulnerability data file fetched from vulnerability_urls.",
    )
    vulnerability_releases: list[str] = Field(
        default=[],
        description="Release codenames whose vulnerability data each process holds in memory "
        "(empty, the default: every release in the data); hosts of other releases match "
        "nothing.",
    )

    @model_validator(mode="after")
    def _read_secret_files(self) -> CollectorSettings:
        self.admin_token = _secret_from_file(self.admin_token, self.admin_token_file, "admin_token")
        self.enroll_secret = _secret_from_file(
            self.enroll_secret, self.enroll_secret_file, "enroll_secret"
        )
        if (self.tls_cert is None) != (self.tls_key is None):
            msg = "tls_cert and tls_key go together: set both or neither"
            raise ValueError(msg)
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'fleetwatch.db'}"


class ClientSettings(BaseSettings):
    """How the admin command line reaches the collector's API."""

    model_config = SettingsConfigDict(env_prefix="FLEETWATCH_", extra="ignore")

    api_url: str = Field(
        default=f"http://127.0.0.1:{DEFAULT_PORT}",
        description="Base URL of the collector.",
    )
    api_token: SecretStr | None = Field(
        default=None,
        description="API token (admin, read or unit read); or FLEETWATCH_API_TOKEN_FILE.",
    )
    api_token_file: Path | None = Field(default=None, description="File holding api_token.")
    admin_token: SecretStr | None = Field(
        default=None,
        description="Used when api_token is unset, as on the collector's own host.",
    )
    ca_bundle: Path | None = Field(
        default=None,
        description="CA certificates to verify the collector's TLS certificate.",
    )
    allow_insecure_http: bool = Field(
        default=False,
        description="Allow plain http:// to a collector that is not on loopback (the API "
        "token would cross the network in clear).",
    )
    proxy: str | None = Field(
        default=None,
        description="Proxy to reach the collector through; proxy variables of the "
        "environment are followed only for https:// collectors.",
    )

    @model_validator(mode="after")
    def _read_secret_files(self) -> ClientSettings:
        self.api_token = _secret_from_file(self.api_token, self.api_token_file, "api_token")
        if self.api_token is None:
            self.api_token = self.admin_token
        return self
