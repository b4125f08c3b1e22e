"""One asyncio process serving the site over ASGI (uvicorn) beside the ingest listeners
and, for the demo, a simulated fleet driving through them."""

from __future__ import annotations

import asyncio
import logging

import uvicorn
from asgiref.sync import sync_to_async

logger = logging.getLogger(__name__)


async def serve(host: str, port: int, with_ingest: bool = False,
                simulated_vehicles: int = 0) -> None:
    from fleet.asgi import application

    config = uvicorn.Config(
        application, host=host, port=port, log_level="info", lifespan="off",
        proxy_headers=True, ws="websockets-sansio",
    )
    server = uvicorn.Server(config)
    tasks = [asyncio.create_task(server.serve(), name="web")]
    service = None
    stop = asyncio.Event()
    if with_ingest:
        from telematics.ingest.runner import start_ingest

        service = await start_ingest()
        if simulated_vehicles:
            tasks.append(asyncio.create_task(
                _simulate(simulated_vehicles, service.ports, stop), name="simulated fleet"))
    try:
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if service is not None:
            await service.stop()


async def _simulate(vehicles: int, ports: dict[str, int], stop: asyncio.Event) -> None:
    from fleet.demo import DEMO_ORGANISATION, seed_demo_units
    from fleet.models import Organisation
    from telematics.simulator.fleet import demo_units, run_demo_fleet

    units = demo_units(vehicles)

    def seed() -> None:
        seed_demo_units(Organisation.objects.get(name=DEMO_ORGANISATION), units)

    await sync_to_async(seed, thread_sensitive=False)()
    logger.info("Simulated fleet: %d vehicles driving a recorded track through the listeners",
                len(units))
    await run_demo_fleet(units, "127.0.0.1", ports, stop)
