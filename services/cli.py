"""`mom`: the one command for operators and developers."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from services.common import localstack
from services.common.settings import REPO_ROOT, KafkaSettings

SERVICES = ("ingest", "execution", "quality", "maintenance", "inventory")


def available_services() -> tuple[str, ...]:
    """The services this checkout can run (a package with a __main__), in start order."""
    return tuple(s for s in SERVICES if (Path(__file__).parent / s / "__main__.py").exists())


def migrated_services() -> tuple[str, ...]:
    return tuple(s for s in SERVICES if (REPO_ROOT / "migrations" / "versions" / s).is_dir())


def prepare(status: dict) -> None:
    """What must exist before services start: topics from the catalogue, every service schema migrated."""
    from services.common.catalogue import Catalogue
    from services.common.kafka import apply_topics
    from services.common.migrations import upgrade

    outcome = apply_topics(KafkaSettings(bootstrap=status["kafka"]["bootstrap"]), Catalogue.load())
    changed = {name: what for name, what in outcome.items() if what != "unchanged"}
    if changed:
        print(f"topics: {changed}", file=sys.stderr)
    for service in migrated_services():
        upgrade(status["database"]["service_urls"][service], service)


def cmd_up(args: argparse.Namespace) -> int:
    config = localstack.StackConfig.from_env()
    services = () if args.infra else available_services()
    status = localstack.up(config, services=services, after_infra=prepare)
    print(json.dumps(status, indent=2) if args.json else _describe(status))
    return 0


def cmd_down(_args: argparse.Namespace) -> int:
    localstack.down(localstack.StackConfig.from_env())
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status = localstack.status(localstack.StackConfig.from_env())
    print(json.dumps(status, indent=2) if args.json else _describe(status))
    return 0


def _describe(status: dict) -> str:
    def mark(running: bool) -> str:
        return "running" if running else "stopped"

    lines = [
        f"kafka       {mark(status['kafka']['running']):8} {status['kafka']['bootstrap']}",
        f"database    {mark(status['database']['running']):8} {status['database']['url']}",
        f"registry    {mark(status['registry']['running']):8} {status['registry']['url'] or '(none: single-object encoding)'}",
        f"ingest      {mark(status['ingest']['running']):8} {status['ingest']['url']}  token {status['ingest']['token']}",
    ]
    for name, service in status["services"].items():
        lines.append(f"{name:<11} {mark(service['running']):8} {service['metrics']}")
    return "\n".join(lines)


def cmd_topics_apply(args: argparse.Namespace) -> int:
    from services.common.catalogue import Catalogue
    from services.common.kafka import apply_topics

    kafka = KafkaSettings.from_env(os.environ)
    outcome = apply_topics(kafka, Catalogue.load(), replication_factor=args.replication_factor)
    for name, what in sorted(outcome.items()):
        print(f"{name:<28} {what}")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from services.common.migrations import upgrade

    url = os.environ.get("MOM_DATABASE_URL")
    for service in args.services or migrated_services():
        if service not in migrated_services():
            print(f"mom migrate: {service!r} has no migrations (known: {', '.join(migrated_services())})", file=sys.stderr)
            return 2
        service_url = url or localstack.status(localstack.StackConfig.from_env())["database"]["service_urls"][service]
        upgrade(service_url, service)
        print(f"{service}: at head")
    return 0


def _admin_url() -> str:
    """A role that may create schemas: MOM_ADMIN_DATABASE_URL, else the local stack's superuser."""
    return os.environ.get("MOM_ADMIN_DATABASE_URL") or localstack.status(localstack.StackConfig.from_env())["database"]["url"]


def cmd_replay(args: argparse.Namespace) -> int:
    import asyncio
    import importlib

    from services.common import logging as mom_logging
    from services.common.replay import compare, rebuild
    from services.common.runtime import settle_heap
    from services.common.settings import Settings

    if args.service not in migrated_services():
        print(f"mom replay: {args.service!r} keeps no projection (known: {', '.join(migrated_services())})", file=sys.stderr)
        return 2
    env = dict(os.environ)
    if "MOM_KAFKA_BOOTSTRAP" not in env or "MOM_DATABASE_URL" not in env:
        env = {**localstack.service_env(localstack.StackConfig.from_env(), args.service), **env}
    settings = Settings.from_env(args.service, env)
    mom_logging.configure(f"{args.service}-replay", "WARNING")
    make_spec = importlib.import_module(f"services.{args.service}.app").build
    target = args.into or f"{settings.db_schema}_replay"
    admin = _admin_url()

    def progress(done: int, total: int) -> None:
        print(f"\rreplaying {args.service}: {done}/{total} events", end="", file=sys.stderr, flush=True)

    settle_heap()  # a replay runs as a worker does
    rebuilt = asyncio.run(rebuild(settings, make_spec, admin, target, progress=progress, workers=args.workers))
    print(f"\n{args.service} rebuilt into schema {target} in {rebuilt.seconds:.1f} s ({rebuilt.applied:,} events; "
          f"deferred work {rebuilt.settle_seconds:.1f} s, by {args.workers} process{'es' if args.workers > 1 else ''})",
          file=sys.stderr)
    if args.no_compare:
        return 0
    differences = compare(admin, settings.db_schema, target)
    for d in differences:
        verdict = "identical" if d.only_live == d.only_replay == 0 else f"{d.only_live} rows only live, {d.only_replay} only rebuilt"
        print(f"{d.table:<28} {verdict}")
    return 0 if all(d.only_live == d.only_replay == 0 for d in differences) else 1


def cmd_report(args: argparse.Namespace) -> int:
    from services.report import ReportQuery, instant, run

    query = ReportQuery(scope=args.scope, period=args.period, start=args.start and instant(args.start),
                        end=args.end and instant(args.end))
    print(run(query, as_json=args.json))
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    from services.inventory.trace import run

    print(run(args.lot, forward=args.forward, as_of=args.as_of, as_json=args.json))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from services.ingest.erp.importer import run

    return run(args.files, direct=args.direct)


def cmd_run(args: argparse.Namespace) -> int:
    if args.service == "ingest-bridge":  # MQTT and OPC UA bridges (docs/connectivity.md)
        os.execv(sys.executable, [sys.executable, "-m", "services.ingest.bridge_main"])
    if args.service not in available_services():
        print(f"mom run: unknown service {args.service!r} (known: {', '.join(available_services())})", file=sys.stderr)
        return 2
    os.execv(sys.executable, [sys.executable, "-m", f"services.{args.service}"])
    return 0  # not reached


def cmd_token_hash(args: argparse.Namespace) -> int:
    from services.ingest.settings import hash_token, new_token

    token = sys.stdin.readline().strip() if args.stdin else new_token()
    if not token:
        print("mom token hash: no token on standard input", file=sys.stderr)
        return 2
    if not args.stdin:
        print(f"token (give it to the client, keep it nowhere else): {token}")
    print(f"MOM_INGEST_TOKENS entry: {args.name}:{hash_token(token)}")
    return 0


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r}: must be an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{raw!r}: must be at least 1")
    return value


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="mom", description="Run and operate the MOM backend.")
    sub = root.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start Kafka, PostgreSQL, the registry and every service (idempotent)")
    up.add_argument("--infra", action="store_true", help="start the infrastructure only, no services")
    up.add_argument("--json", action="store_true", help="print the status as JSON")
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="stop what `mom up` started, and nothing else")
    down.set_defaults(func=cmd_down)

    status = sub.add_parser("status", help="what runs, and where a client connects")
    status.add_argument("--json", action="store_true", help="machine-readable")
    status.set_defaults(func=cmd_status)

    topics = sub.add_parser("topics", help="Kafka topics from schemas/topics.yaml")
    topics_sub = topics.add_subparsers(dest="topics_command", required=True)
    apply = topics_sub.add_parser("apply", help="create or update every catalogued topic (idempotent)")
    apply.add_argument("--replication-factor", type=int, default=None, help="for new topics (default: catalogue)")
    apply.set_defaults(func=cmd_topics_apply)

    migrate = sub.add_parser("migrate", help="bring service schemas to their latest migration")
    migrate.add_argument("services", nargs="*", help="default: every service with migrations")
    migrate.set_defaults(func=cmd_migrate)

    replay = sub.add_parser("replay", help="rebuild a service's tables from offset 0 and compare them with the live ones")
    replay.add_argument("service")
    replay.add_argument("--into", help="target schema (default: <schema>_replay); dropped and rebuilt")
    replay.add_argument("--no-compare", action="store_true", help="rebuild only")
    replay.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                        help="processes that share the fold, each a range of every topic's partitions, and then the work "
                             "deferred to its end, such as execution's periods (default 1)")
    replay.set_defaults(func=cmd_replay)

    report = sub.add_parser("report", help="OEE, downtime Pareto, order progress and WIP from the analyst views")
    report.add_argument("--scope", metavar="EQUIPMENT_ID", help="a piece of equipment and everything below it")
    report.add_argument("--period", choices=("hour", "shift", "day"), default="shift", help="default: shift")
    report.add_argument("--from", dest="start", metavar="T", help="periods starting at or after T (RFC 3339; UTC if no offset)")
    report.add_argument("--to", dest="end", metavar="T", help="periods starting before T")
    report.add_argument("--json", action="store_true", help="one JSON object, ratios as fractions")
    report.set_defaults(func=cmd_report)

    trace = sub.add_parser("trace", help="a lot's genealogy: ancestors (default) or descendants, with quantities")
    trace.add_argument("lot")
    trace.add_argument("--forward", action="store_true", help="descendants instead of ancestors")
    trace.add_argument("--as-of", metavar="T", help="as of an instant (RFC 3339; UTC if no offset)")
    trace.add_argument("--json", action="store_true", help="one JSON object")
    trace.set_defaults(func=cmd_trace)

    token = sub.add_parser("token", help="ingest bearer tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    token_hash = token_sub.add_parser(
        "hash", help="make a new random token and print it with its `name:sha256:<hex>` entry for MOM_INGEST_TOKENS")
    token_hash.add_argument("--name", default="client", help="the client's name, which becomes its events' source")
    token_hash.add_argument("--stdin", action="store_true", help="hash the token read from standard input instead")
    token_hash.set_defaults(func=cmd_token_hash)

    erp = sub.add_parser("import", help="send production orders, products (BOMs, routings) and material lots "
                                        "from ERP exports (CSV, B2MML XML) through ingest")
    erp.add_argument("files", nargs="+", metavar="FILE")
    erp.add_argument("--direct", action="store_true", help="straight to Kafka through ingest's pipeline, not HTTP")
    erp.set_defaults(func=cmd_import)

    run = sub.add_parser("run", help="run one service in the foreground (as a container does), or ingest-bridge")
    run.add_argument("service")
    run.set_defaults(func=cmd_run)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except localstack.StackError as exc:
        print(f"mom {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
