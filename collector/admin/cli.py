"""Run the fleetwatch collector, and ask it about the fleet.

fleetwatch serve                 run the collector service
fleetwatch db upgrade            apply database migrations
fleetwatch hosts                 hosts and their status
fleetwatch host HOST_ID          one host's latest state and open findings
fleetwatch findings              findings, filtered (--overdue, --state, --waived)
fleetwatch finding ID            one finding and its history
fleetwatch ack ID --note ...     acknowledge a finding [--due DATE]; `due ID DATE` moves it
fleetwatch waive ... / waivers   make, list and revoke waivers
fleetwatch units                 units, their contacts and their hosts
fleetwatch audit                 the audit log
fleetwatch report unit NAME      a unit's rectification report; `report fleet` for all
fleetwatch reports HOST_ID       reports received from a host
fleetwatch token ...             API tokens and enrollment secrets
fleetwatch policy ...            check, compile (from a pyinfra inventory) or reload
fleetwatch bootstrap DIR         a new fleet's CA, collector certificate and secrets
fleetwatch backup FILE           save the database while the collector serves
fleetwatch restore FILE          restore a backup into a new database
fleetwatch vulns ...             vulnerabilities by host, unit or CVE; import and status
fleetwatch notify ...            notification targets: status, a test message
fleetwatch demo                  collector + this machine's agent, on SQLite
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from fleetwatch import __version__
from fleetwatch.collector.admin import casework, notify, sessions, vulns
from fleetwatch.command_line import EXIT_USAGE, CommandParser, quiet_broken_pipe

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence

    from fleetwatch.collector.admin.client import ApiClient
    from fleetwatch.collector.compliance.policy import Policy
    from fleetwatch.collector.settings import CollectorSettings


class CliError(Exception):
    """Something the user asked for that cannot be done; the message says why."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _settings_error(exc: ValidationError) -> CliError:
    error = exc.errors()[0]
    field = ".".join(str(p) for p in error["loc"]) or "settings"
    return CliError(f"invalid setting {field}: {error['msg']}", EXIT_USAGE)


# -- the service --------------------------------------------------------------------------


def _collector_settings(args: argparse.Namespace) -> CollectorSettings:
    from fleetwatch.collector.settings import CollectorSettings

    overrides = {
        name: getattr(args, name)
        for name in ("host", "port", "database_url", "policy", "data_dir")
        if getattr(args, name, None) is not None
    }
    try:
        return CollectorSettings(**overrides)
    except ValidationError as exc:
        raise _settings_error(exc) from exc


def cmd_serve(args: argparse.Namespace) -> int:
    # first: prometheus_client chooses its multiprocess mode when it is first imported
    from fleetwatch.collector.web.metrics_files import prepare_metrics_dir, remove_metrics_dir

    settings = _collector_settings(args)
    metrics_dir, made = prepare_metrics_dir(settings.metrics_dir)
    # uvicorn stops on SIGTERM, then raises the signal again to end the process by it: make
    # that an exit through the `finally` below, which removes the directory
    signal.signal(signal.SIGTERM, _exit_by_signal)
    try:
        return _serve(args, settings)
    finally:
        if made:
            remove_metrics_dir(metrics_dir)


def _exit_by_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _serve(args: argparse.Namespace, settings: CollectorSettings) -> int:
    import structlog
    import uvicorn
    from sqlalchemy.exc import OperationalError

    from fleetwatch.collector.compliance.policy import PolicyError, PolicySource
    from fleetwatch.collector.notifications.config import NotificationsError, NotificationsSource
    from fleetwatch.collector.storage.engine import DatabaseURLError, make_engine, upgrade
    from fleetwatch.collector.web.budget import DescriptorLimitError, plan_budget
    from fleetwatch.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    try:
        # before the workers start, so that they inherit the raised limit
        budget = plan_budget(settings.max_connections)
    except DescriptorLimitError as exc:
        raise CliError(str(exc), 1) from exc
    if budget.lowered:
        structlog.get_logger(__name__).warning(
            "connection cap lowered to fit the file descriptor limit",
            max_connections=budget.max_connections,
            cap=budget.cap,
            descriptor_limit=budget.descriptors,
            raised_from=budget.raised_from,
        )
    try:
        PolicySource(settings.policy)  # a broken policy stops us here, with its message
        NotificationsSource(settings.notifications)  # and so does a broken notifications file
        engine = make_engine(settings.resolved_database_url)
    except (PolicyError, NotificationsError, DatabaseURLError) as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    try:
        upgrade(engine)  # once, before any worker starts
    except OperationalError as exc:
        msg = f"cannot reach the database: {str(exc.orig).strip().splitlines()[0]}"
        raise CliError(msg, 1) from exc
    finally:
        engine.dispose()
    # Workers build their own settings from the environment: hand the flags on through it.
    for name in ("host", "port", "database_url", "policy", "data_dir"):
        if getattr(args, name, None) is not None:
            os.environ[f"FLEETWATCH_{name.upper()}"] = str(getattr(args, name))
    uvicorn.run(
        "fleetwatch.collector.web.app:app_from_environment",
        factory=True,
        workers=settings.workers,
        http="fleetwatch.collector.web.protocol:GuardedHttpToolsProtocol",
        loop="fleetwatch.collector.web.loop:GuardedLoop",
        ws="none",  # no WebSocket routes: an upgrade request stays plain HTTP
        # the protocol holds the cap itself, shedding idle and slow connections first
        # (collector/web/connections.py); uvicorn's limit would answer 503 to everyone
        limit_concurrency=None,
        backlog=budget.backlog,
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        log_level=settings.log_level,
        access_log=False,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=10,
        # behind a load balancer, the client's address comes from its X-Forwarded-For
        proxy_headers=True,
        forwarded_allow_ips=settings.trusted_proxies,
    )
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from fleetwatch.collector.storage.engine import DatabaseURLError, make_engine, upgrade

    settings = _collector_settings(args)
    try:
        engine = make_engine(settings.resolved_database_url)
    except DatabaseURLError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    upgrade(engine)
    engine.dispose()
    print("database schema is up to date")
    return 0


# -- asking the API -----------------------------------------------------------------------


def api_client() -> ApiClient:
    """A client of the collector's API from the environment's settings (for subcommand
    modules)."""
    return _client()


def _client() -> ApiClient:
    from fleetwatch.collector.admin.client import ApiClient
    from fleetwatch.collector.settings import ClientSettings
    from fleetwatch.endpoint import CollectorURLError

    try:
        settings = ClientSettings()
    except ValidationError as exc:
        raise _settings_error(exc) from exc
    token = settings.api_token.get_secret_value() if settings.api_token else None
    if not token:
        msg = "no API token: set FLEETWATCH_API_TOKEN (or FLEETWATCH_API_TOKEN_FILE)"
        raise CliError(msg, EXIT_USAGE)
    try:
        return ApiClient(
            settings.api_url,
            token,
            str(settings.ca_bundle or "") or None,
            allow_insecure_http=settings.allow_insecure_http,
            proxy=settings.proxy,
        )
    except CollectorURLError as exc:
        raise CliError(f"FLEETWATCH_API_URL: {exc}", EXIT_USAGE) from exc


def count(text: str) -> int:
    """A count of at least 1 (``--limit``)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"not a whole number of at least 1: {text!r}"
        raise ValueError(msg)  # argparse: "invalid count value: ..."
    return value


def cmd_hosts(args: argparse.Namespace) -> int:
    from fleetwatch.collector.admin import render

    status = "noncompliant" if args.noncompliant else args.status
    pages = _client().pages("/api/v1/hosts", args.limit, unit=args.unit, status=status)
    if not render.stream(pages, args.json, render.hosts_table) and not args.json:
        filters = {"noncompliant": args.noncompliant, "status": args.status, "unit": args.unit}
        print(render.nothing_found("hosts", filters))
    return 0


def cmd_host(args: argparse.Namespace) -> int:
    from fleetwatch.collector.admin import render

    client = _client()
    path = f"/api/v1/hosts/{args.host_id}"
    if args.allow_reenroll is not None:
        answer = client.post(path + "/allow-reenroll", {"minutes": args.allow_reenroll})
        print(render.clean(answer["detail"]))
        return 0
    if args.revoke:
        answer = client.post(path + "/revoke")
        print(f"revoked {answer['revoked']} token(s) of {render.clean(args.host_id)}")
        return 0
    host = client.get(path, data="true")
    if args.json:
        print(render.to_json(host))
    else:
        from fleetwatch.collector.admin.host_page import host_page

        print(host_page(host))
    return 0


def cmd_findings(args: argparse.Namespace) -> int:
    from fleetwatch.collector.admin import render

    is_open = True if args.open else (False if args.resolved else None)
    pages = _client().pages(
        "/api/v1/findings",
        args.limit,
        host_id=args.host,
        rule=args.rule,
        unit=args.unit,
        open=None if is_open is None else str(is_open).lower(),
        state=args.state,
        overdue="true" if args.overdue else None,
        waived=None if args.waived is None else str(args.waived).lower(),
        severity=args.severity,
    )
    if not render.stream(pages, args.json, render.findings_table) and not args.json:
        filters = {
            "host": args.host,
            "rule": args.rule,
            "unit": args.unit,
            "open": args.open,
            "resolved": args.resolved,
            "severity": args.severity,
        }
        print(render.nothing_found("findings", filters))
    return 0


def cmd_reports(args: argparse.Namespace) -> int:
    from fleetwatch.collector.admin import render

    reports = _client().get(f"/api/v1/hosts/{args.host_id}/reports", limit=args.limit)
    if args.json:
        print(render.to_json(reports))
        return 0
    if not reports:
        print(f"no reports from {render.clean(args.host_id)} yet")
        return 0
    rows = [
        [
            r["sequence"],
            r["collected_at"],
            r["received_at"],
            r["dropped"],
            ", ".join(sorted(r["errors"])) or "-",
        ]
        for r in reports
    ]
    print(render.table(["SEQ", "COLLECTED", "RECEIVED", "DROPPED", "ERRORS"], rows))
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from fleetwatch.collector.admin import render

    client = _client()
    if args.token_command == "create":  # noqa: S105  (a command name)
        made = client.post(
            "/api/v1/tokens", {"name": args.name, "kind": args.kind, "unit": args.unit}
        )
        print(render.to_json(made) if args.json else made["token"])
        if not args.json:
            print(
                f"(token {made['id']}: {args.kind}"
                f"{' for unit ' + render.clean(args.unit) if args.unit else ''}; "
                "shown once, keep it safe)",
                file=sys.stderr,
            )
    elif args.token_command == "list":  # noqa: S105  (a command name)
        tokens = client.get("/api/v1/tokens")
        if args.json:
            print(render.to_json(tokens))
        else:
            print(render.tokens_table(tokens) if tokens else "no tokens")
    else:
        print(render.clean(client.delete(f"/api/v1/tokens/{args.id}")["detail"]))
    return 0


def _epoch_warnings(policy: Policy) -> list[str]:
    """min_versions entries without the epoch their package has on the collector's hosts."""
    from fleetwatch.collector.compliance.rules.packages import epochless_minimums

    baselines = [policy.defaults, *policy.groups.values(), *policy.hosts.values()]
    patterns = sorted({p for b in baselines for p, v in b.min_versions.items() if ":" not in v})
    if not patterns:
        return []
    from fleetwatch.collector.admin.client import ApiError

    try:
        installed = _client().get("/api/v1/packages/installed", name=patterns)["hosts"]
    except (CliError, ApiError) as exc:
        return [f"min_versions not checked against the hosts' epochs ({exc}; --offline: skip)"]
    return epochless_minimums(lambda h: policy.for_host(h).baseline.min_versions, installed)


def cmd_policy(args: argparse.Namespace) -> int:
    from fleetwatch.collector.admin import render
    from fleetwatch.collector.compliance.policy import Policy, PolicyError

    if args.policy_command == "check":
        try:
            policy = Policy.from_file(args.file)
        except PolicyError as exc:
            raise CliError(str(exc), 1) from exc
        print(f"{args.file}: {len(policy.hosts)} hosts, {len(policy.groups)} groups; valid")
        if not args.offline:
            for warning in _epoch_warnings(policy):
                print(f"warning: {render.clean(warning)}")
        return 0
    if args.policy_command == "compile":
        from fleetwatch.deploy.baseline import InventoryError, compile_policy

        try:
            text = compile_policy(args.inventory)
        except InventoryError as exc:
            raise CliError(str(exc), 1) from exc
        if args.output:
            args.output.write_text(text)
        else:
            sys.stdout.write(text)
        return 0
    answer = _client().post("/api/v1/policy/reload")
    if answer.get("error"):
        raise CliError(f"policy not reloaded: {answer['error']}")
    print(f"changed: {answer['changed']}; hosts evaluated: {answer['hosts_evaluated']}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from fleetwatch.collector.admin.demo import run_demo

    return int(
        run_demo(args.dir, keep=args.keep, port=args.port, vulnerabilities=args.vulnerabilities)
    )


# -- parsing ------------------------------------------------------------------------------


def _server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        help="sqlite:///PATH or postgresql://... (FLEETWATCH_DATABASE_URL)",
    )
    parser.add_argument("--data-dir", type=Path, help="directory of the default SQLite database")


def _parser() -> argparse.ArgumentParser:  # noqa: PLR0915  (one statement per option)
    parser = CommandParser(prog="fleetwatch", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--version", action="version", version=f"fleetwatch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the collector service")
    serve.add_argument("--host", help="address to listen on (FLEETWATCH_HOST)")
    serve.add_argument("--port", type=int, help="port to listen on (FLEETWATCH_PORT)")
    serve.add_argument("--policy", type=Path, help="policy file (FLEETWATCH_POLICY)")
    _server_options(serve)
    serve.set_defaults(func=cmd_serve)

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_upgrade = db_commands.add_parser("upgrade", help="apply database migrations")
    _server_options(db_upgrade)
    db_upgrade.set_defaults(func=cmd_db_upgrade)

    hosts = commands.add_parser("hosts", help="hosts and their status")
    hosts.add_argument("--noncompliant", action="store_true", help="only noncompliant hosts")
    hosts.add_argument("--status", choices=["compliant", "noncompliant", "stale", "never_reported"])
    hosts.add_argument("--unit", help="only hosts of this unit")
    hosts.add_argument("--json", action="store_true", help="JSON for scripts")
    hosts.add_argument(
        "--limit", type=count, help="stop after this many hosts (default: every one)"
    )
    hosts.set_defaults(func=cmd_hosts)

    host = commands.add_parser("host", help="one host's latest state and open findings")
    host.add_argument("host_id")
    host.add_argument("--json", action="store_true", help="JSON for scripts")
    host.add_argument(
        "--allow-reenroll",
        type=float,
        nargs="?",
        const=60.0,
        metavar="MINUTES",
        help="let the host enroll again within MINUTES (default 60)",
    )
    host.add_argument("--revoke", action="store_true", help="revoke the host's tokens")
    host.set_defaults(func=cmd_host)

    findings = commands.add_parser("findings", help="findings, filtered")
    findings.add_argument("--host", help="only this host's findings")
    findings.add_argument("--rule", help="only this rule's findings")
    findings.add_argument("--unit", help="only findings of this unit's hosts")
    state = findings.add_mutually_exclusive_group()
    state.add_argument("--open", action="store_true", help="only open findings")
    state.add_argument("--resolved", action="store_true", help="only resolved findings")
    findings.add_argument(
        "--state", choices=["open", "acknowledged", "resolved", "verified"], help="only this state"
    )
    findings.add_argument(
        "--overdue", action="store_true", help="only open, unwaived findings past their due date"
    )
    waived = findings.add_mutually_exclusive_group()
    waived.add_argument("--waived", action="store_true", default=None, help="only waived ones")
    waived.add_argument("--not-waived", dest="waived", action="store_false", help="only unwaived")
    findings.add_argument(
        "--severity", choices=["critical", "high", "medium", "low"], help="only this severity"
    )
    findings.add_argument("--json", action="store_true", help="JSON for scripts")
    findings.add_argument(
        "--limit", type=count, help="stop after this many findings (default: every one)"
    )
    findings.set_defaults(func=cmd_findings)

    reports = commands.add_parser("reports", help="reports received from a host")
    reports.add_argument("host_id")
    reports.add_argument("--limit", type=int, default=50)
    reports.add_argument("--json", action="store_true", help="JSON for scripts")
    reports.set_defaults(func=cmd_reports)

    token = commands.add_parser("token", help="API tokens and enrollment secrets")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    listing = token_commands.add_parser(
        "list", help="list tokens, and the collector's tokens from its environment"
    )
    listing.add_argument("--json", action="store_true")
    create = token_commands.add_parser("create", help="create a token (shown once)")
    create.add_argument("--name", required=True, help="what the token is for")
    create.add_argument("--kind", required=True, choices=["admin", "read", "respond", "enroll"])
    create.add_argument(
        "--unit",
        help="limit a read token or enrollment secret to a unit (a respond token: its unit)",
    )
    create.add_argument("--json", action="store_true")
    revoke = token_commands.add_parser("revoke", help="revoke a token")
    revoke.add_argument("id", type=int)
    token.set_defaults(func=cmd_token)

    policy = commands.add_parser("policy", help="the compliance policy")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    check = policy_commands.add_parser("check", help="validate a policy file")
    check.add_argument("file", type=Path)
    check.add_argument(
        "--offline",
        action="store_true",
        help="only validate the file; do not ask the collector (FLEETWATCH_API_URL) for the "
        "package versions its hosts report, to warn of min_versions entries without an epoch",
    )
    compile_ = policy_commands.add_parser(
        "compile",
        help="print the policy of a pyinfra inventory (needs fleetwatch[deploy])",
    )
    compile_.add_argument(
        "inventory", help="pyinfra inventory: its directory (inventory/) or its file"
    )
    compile_.add_argument("-o", "--output", type=Path, help="write to this file")
    policy_commands.add_parser("reload", help="make the collector re-read its policy now")
    policy.set_defaults(func=cmd_policy)

    from fleetwatch.collector.admin import backup, bootstrap

    bootstrap.add_parser(commands)
    backup.add_parser(commands)
    vulns.add_parser(commands)
    casework.add_parser(commands)
    notify.add_parser(commands)

    demo = commands.add_parser(
        "demo", help="start a collector on SQLite, report this machine, show the hosts"
    )
    demo.add_argument(
        "--dir",
        type=Path,
        default=Path(".fleetwatch-demo"),
        help="where the demo keeps its database and agent state",
    )
    demo.add_argument(
        "--port",
        type=int,
        default=8470,
        help="the demo collector's port on 127.0.0.1 (default 8470; 0: any free port)",
    )
    demo.add_argument(
        "--keep",
        action="store_true",
        help="keep the collector and agent running until Ctrl-C",
    )
    demo.add_argument(
        "--vulnerabilities",
        type=Path,
        metavar="PATH",
        help="vulnerability data to import first (tracker JSON, OSV, KEV; file or directory)",
    )
    demo.set_defaults(func=cmd_demo)
    sessions.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return quiet_broken_pipe(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    func: Callable[[argparse.Namespace], int] = args.func
    from fleetwatch.collector.admin.client import ApiError

    try:
        return func(args)
    except CliError as exc:
        print(f"fleetwatch: {exc}", file=sys.stderr)
        return exc.code
    except ApiError as exc:
        from fleetwatch.collector.admin.render import clean

        print(f"fleetwatch: {clean(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
