"""`python -m services.ingest`: settings from the environment, JSON logs, the HTTP API until SIGTERM."""
from __future__ import annotations

import logging

from aiohttp import web

from services.common import logging as mom_logging
from services.ingest.app import build
from services.ingest.settings import SERVICE, IngestSettings

DEFAULT_PORT = 8080  # when MOM_HTTP_PORT is not set


def main() -> None:
    settings = IngestSettings.from_env()
    mom_logging.configure(SERVICE, settings.common.log_level)
    port = settings.common.http_port or DEFAULT_PORT
    logging.getLogger(__name__).info("listening", extra={"fields": {"host": settings.common.http_host, "port": port}})
    # run_app turns SIGTERM and SIGINT into a graceful exit: in-flight requests finish, then the
    # app's cleanup stops the poll thread and flushes the producer.
    web.run_app(build(settings), host=settings.common.http_host, port=port, access_log=None, print=None,
                shutdown_timeout=settings.ack_timeout_s + 5)


if __name__ == "__main__":
    main()
