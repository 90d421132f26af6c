"""The agent's settings: a TOML file (``--config``) with environment variables on top.

Every field reads from ``FLEETWATCH_<NAME>`` (``FLEETWATCH_COLLECTOR_URL``...) and from the key
of the same name in the TOML file; the environment wins. Active checks are ``[[checks]]``
tables in the file, or a JSON list in ``FLEETWATCH_CHECKS``.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings import SettingsError as SourceError

from fleetwatch.agent.collectors.checks import CheckConfig, HttpCheck, ProcessCheck, TcpCheck
from fleetwatch.schema import HostId

if sys.version_info >= (3, 11):
    import tomllib
else:  # the agent runs on Python 3.9 and 3.10 too, where tomli is the same parser
    import tomli as tomllib

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

DEFAULT_CONFIG = Path("/etc/fleetwatch/agent.toml")
ENV_PREFIX = "FLEETWATCH_"


class SettingsError(Exception):
    """A setting that is missing or wrong, or a config file that cannot be read."""


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    collector_url: str | None = Field(
        default=None,
        description="Base URL of the collector, such as https://fleetwatch.example:8470. "
        "Needed by `run`; `collect` sends nothing.",
    )
    host_id: HostId | None = Field(
        default=None,
        description="The name the fleet knows this host by (its inventory name). "
        "Defaults to the hostname.",
    )
    enroll_secret: SecretStr | None = Field(
        default=None,
        description="Enrollment secret, used once to obtain this host's token.",
    )
    enroll_secret_file: Path | None = Field(
        default=None,
        description="File holding the enrollment secret (instead of enroll_secret).",
    )
    state_dir: Path = Field(
        default=Path("/var/lib/fleetwatch-agent"),
        description="Where the agent keeps its token, sequence numbers, spool and caches.",
    )
    interval: Annotated[float, Field(ge=1, le=86_400)] = Field(
        default=300.0, description="Seconds between reports."
    )
    jitter: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.1,
        description="Random spread of each interval, as a fraction of it, so that a fleet "
        "started at once does not report in lockstep.",
    )
    checks: list[CheckConfig] = Field(
        default=[], description="Active checks: tcp, http and process tables."
    )
    collector_timeout: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=120.0,
        description="Seconds a single collector may take before it is reported as an error.",
    )
    http_timeout: Annotated[float, Field(gt=0, le=600)] = Field(
        default=30.0,
        description="Seconds to wait for the collector to answer a request.",
    )
    ca_bundle: Path | None = Field(
        default=None,
        description="CA certificates to verify the collector's TLS certificate with; the "
        "system store when unset.",
    )
    allow_insecure_http: bool = Field(
        default=False,
        description="Allow plain http:// to a collector that is not on loopback.",
    )
    proxy: str | None = Field(
        default=None,
        description="Proxy to reach the collector through (http://HOST:PORT). Proxy "
        "variables of the environment are followed only for https:// collectors.",
    )
    spool_max_reports: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=2_000,
        description="Most reports kept in the spool while the collector is away.",
    )
    spool_max_bytes: Annotated[int, Field(ge=65_536)] = Field(
        default=64 * 1024 * 1024, description="Most bytes kept in the spool."
    )
    retry_max_delay: Annotated[float, Field(gt=0, le=86_400)] = Field(
        default=300.0, description="Longest wait between two delivery attempts."
    )
    token_max_age_days: Annotated[float, Field(ge=0)] = Field(
        default=30.0,
        description="Days after which the agent rotates its host token by itself; 0: never.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Least severe log level written."
    )
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto",
        description="auto: readable lines on a terminal, JSON lines otherwise.",
    )

    @field_validator("collector_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            msg = "must start with http:// or https://"
            raise ValueError(msg)
        return value.rstrip("/") if value else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],  # noqa: ARG003
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's values arrive as init arguments; the environment overrides them.
        return env_settings, init_settings

    @property
    def resolved_host_id(self) -> str:
        return self.host_id or socket.gethostname()

    def enroll_secret_value(self) -> str | None:
        if self.enroll_secret is not None:
            return self.enroll_secret.get_secret_value()
        if self.enroll_secret_file is not None:
            try:
                return self.enroll_secret_file.read_text().strip() or None
            except OSError as exc:
                msg = f"enroll_secret_file: cannot read {self.enroll_secret_file}: {exc.strerror}"
                raise SettingsError(msg) from exc
        return None

    @property
    def active_checks(self) -> list[TcpCheck | HttpCheck | ProcessCheck]:
        return list(self.checks)


def _describe(error: ErrorDetails, config: Path | None) -> str:
    loc = [str(part) for part in error.get("loc", ())]
    field = loc[0] if loc else "?"
    env_name = ENV_PREFIX + field.upper()
    where = env_name if env_name in os.environ else (f"{field} in {config}" if config else env_name)
    path = ".".join(loc)
    message = error.get("msg", "invalid")
    if error.get("type") == "extra_forbidden":
        return f"unknown setting {path!r} ({where})"
    return f"invalid setting {path} ({where}): {message}"


def load_settings(config: Path | None = None) -> AgentSettings:
    """Settings from ``config`` (or the default file when it exists) and the environment.

    Raises SettingsError with a one-line message naming the offending setting.
    """
    path = config
    values: dict[str, Any] = {}
    if path is None and DEFAULT_CONFIG.exists():
        path = DEFAULT_CONFIG
    if path is not None:
        try:
            values = tomllib.loads(path.read_text())
        except OSError as exc:
            msg = f"cannot read config file {path}: {exc.strerror}"
            raise SettingsError(msg) from exc
        except tomllib.TOMLDecodeError as exc:
            msg = f"config file {path} is not valid TOML: {exc}"
            raise SettingsError(msg) from exc
    try:
        return AgentSettings(**values)
    except ValidationError as exc:
        raise SettingsError(_describe(exc.errors()[0], path)) from exc
    except SourceError as exc:  # an environment variable that is not valid JSON, for one
        raise SettingsError(str(exc)) from exc
