"""One asyncio process serving the site over ASGI (uvicorn) beside the ingest listeners."""

from __future__ import annotations

import asyncio
import logging

import uvicorn

logger = logging.getLogger(__name__)


async def serve(host: str, port: int, with_ingest: bool = False) -> None:
    from fleet.asgi import application

    config = uvicorn.Config(
        application, host=host, port=port, log_level="info", lifespan="off",
        proxy_headers=True, ws="websockets-sansio",
    )
    server = uvicorn.Server(config)
    tasks = [asyncio.create_task(server.serve())]
    if with_ingest:
        try:
            from telematics.ingest.runner import run_listeners
        except ImportError:  # the ingest is optional while it is being built
            logger.info("Ingest listeners not available; serving the site only.")
        else:
            tasks.append(asyncio.create_task(run_listeners()))
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    for task in done:
        task.result()
