"""`mom import FILE...`: parse ERP exports (CSV, B2MML XML) and send the plan events through ingest.

By default over ingest's HTTP API (MOM_INGEST_URL and MOM_INGEST_TOKEN, else the local stack's);
with `--direct` straight through ingest's pipeline to Kafka (MOM_KAFKA_BOOTSTRAP, else the local
stack's). Rows the parser or ingest refuses are printed as `file:line: reason`; the good rows go through.
Exit status: 0 all sent, 1 some rows refused, 2 nothing could be sent.
"""
from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from services.ingest.bridge_sink import DirectSink, HttpSink, Sink
from services.ingest.erp import b2mml, csv_import
from services.ingest.erp.model import ParseResult, RowError

BATCH = 500


def parse_files(paths: Sequence[Path], now: datetime) -> ParseResult:
    result = ParseResult()
    csv_files = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            result.errors.append(RowError(str(path), 0, f"cannot read: {exc}"))
            continue
        if path.suffix.lower() == ".xml" or text.lstrip().startswith("<"):
            result.extend(b2mml.parse(str(path), text, now))
        else:
            csv_files.append((str(path), text))
    if csv_files:
        result.extend(csv_import.parse(csv_files, now))
    return result


@dataclass
class ImportReport:
    sent: int = 0
    refused: list[RowError] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


async def send(result: ParseResult, sink: Sink) -> ImportReport:
    report = ImportReport(refused=list(result.errors))
    rows = sorted(result.rows, key=lambda r: (r.item["type"] != "ProductDefined", r.file, r.line))  # products first
    try:
        for start in range(0, len(rows), BATCH):
            batch = rows[start:start + BATCH]
            outcome = await sink.submit([row.item for row in batch])
            if outcome.error is not None:
                report.failed.append(outcome.error)
                break
            for item in outcome.results:
                row = batch[item["index"]]
                if item["status"] == "accepted":
                    report.sent += 1
                elif item["status"] == "rejected":
                    reasons = "; ".join(e["message"] for e in item.get("errors", []))
                    report.refused.append(RowError(row.file, row.line, f"refused by ingest: {reasons}"))
                else:
                    report.failed.append(f"{row.file}:{row.line}: {item.get('error', 'not acknowledged')}")
    finally:
        await sink.close()
    return report


def _stack_env() -> dict[str, str]:
    from services.common import localstack

    config = localstack.StackConfig.from_env()
    env = localstack.service_env(config, "ingest")
    env["MOM_INGEST_URL"] = f"http://127.0.0.1:{config.ingest_port}"
    env["MOM_INGEST_TOKEN"] = localstack.ingest_token(config)
    return env


def make_sink(direct: bool, env: Mapping[str, str]) -> Sink:
    needed = ("MOM_KAFKA_BOOTSTRAP",) if direct else ("MOM_INGEST_URL", "MOM_INGEST_TOKEN")
    if not all(env.get(name) for name in needed):
        env = {**_stack_env(), **{k: v for k, v in env.items() if v}}
    if direct:
        return DirectSink.from_settings(DirectSink.settings_from_env(env, 30.0), client="erp-import")
    return HttpSink(env["MOM_INGEST_URL"], env["MOM_INGEST_TOKEN"])


def run(paths: Sequence[str], *, direct: bool = False, env: Mapping[str, str] | None = None,
        out: TextIO = sys.stdout, err: TextIO = sys.stderr, sink: Sink | None = None) -> int:
    env = dict(os.environ if env is None else env)
    result = parse_files([Path(p) for p in paths], datetime.now(UTC))
    report = asyncio.run(send(result, sink or make_sink(direct, env)))
    for error in sorted(report.refused, key=lambda e: (e.file, e.line)):
        print(f"{error}", file=err)
    for failure in report.failed:
        print(f"not sent: {failure}", file=err)
    print(f"{report.sent} events sent, {len(report.refused)} rows refused"
          + (f", {len(report.failed)} failures (safe to run again)" if report.failed else ""), file=out)
    if report.failed:
        return 2
    return 1 if report.refused else 0
