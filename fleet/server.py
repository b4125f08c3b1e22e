"""Serving the site over ASGI (uvicorn).

* ``python -m fleet.server`` is how production serves the site and the API (the
  Dockerfile and docker-compose run it): ``WEB_WORKERS`` processes on one port, since
  one Python process uses one core and a page of 1,000 vehicles is CPU work, each with
  a pool of PostgreSQL connections (``DB_POOL_MAX``, 10 unless set). Each process
  listens with a socket of its own (``SO_REUSEPORT``), so the kernel spreads the
  connections evenly: on one shared socket the process that was busiest last tends to
  accept them all, and dispatch boards keep their connections open, so one process
  would serve nearly every client on one core while the others idle.
* ``serve()`` is one asyncio process with the site beside the ingest listeners and, for
  the demo, a simulated fleet driving through them (``manage.py demo``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time

import uvicorn
from asgiref.sync import sync_to_async

logger = logging.getLogger(__name__)

# The same for every way the site is served.
UVICORN_OPTIONS = {"lifespan": "off", "proxy_headers": True, "ws": "websockets-sansio"}
# Connections each web process keeps open to PostgreSQL, unless DB_POOL_MAX says otherwise.
WEB_DB_POOL_MAX = 10


def web_workers() -> int:
    """``WEB_WORKERS``, or one process per core when Redis carries the live updates
    between processes (without it each process would have its own live map); one
    otherwise."""
    raw = os.environ.get("WEB_WORKERS", "").strip()
    if raw:
        return max(1, int(raw))
    return (os.cpu_count() or 1) if os.environ.get("REDIS_URL") else 1


def main(argv: list[str] | None = None) -> None:
    """The site as production serves it: ``python -m fleet.server --port 8000``."""
    parser = argparse.ArgumentParser(prog="python -m fleet.server", description=main.__doc__)
    parser.add_argument("--host", default=os.environ.get("WEB_HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("WEB_PORT", "8000")))
    parser.add_argument("--workers", type=int, default=None,
                        help="processes (default: WEB_WORKERS, see web_workers())")
    parser.add_argument("--no-access-log", action="store_true",
                        help="no line per request (a proxy in front usually logs them)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    workers = args.workers or web_workers()
    # Web processes serve each request in a thread of its own: without a pool each would
    # open a PostgreSQL connection (settings.DB_POOL_MAX; the ingest keeps its own).
    os.environ.setdefault("DB_POOL_MAX", str(WEB_DB_POOL_MAX))
    if workers > 1 and not os.environ.get("REDIS_URL"):
        logger.warning("%d web processes without REDIS_URL: each has its own live map "
                       "updates; set REDIS_URL", workers)
    options = {"access_log": not args.no_access_log, "log_level": args.log_level,
               **UVICORN_OPTIONS}
    if workers == 1 or not hasattr(socket, "SO_REUSEPORT"):
        uvicorn.run("fleet.asgi:application", host=args.host, port=args.port,
                    workers=workers, **options)
        return
    sys.exit(run_workers(args.host, args.port, workers, options))


# A process that exits this soon after its start failed to start (a port taken, a bad
# setting): starting it again would only repeat that.
FAILED_START_S = 5.0


def run_workers(host: str, port: int, workers: int, options: dict) -> int:
    """Serve with ``workers`` processes, each with its own listening socket on the port
    (``SO_REUSEPORT``); restart one that dies; stop them all on SIGTERM or SIGINT.

    Port 0 picks a free port (printed), which every process then shares. Returns the
    exit status: 0 after a stop, 1 when a process could not start.
    """
    holder = _reuse_port_socket(host, port, listen=False)  # holds the port for them all
    port = holder.getsockname()[1]
    context = multiprocessing.get_context("spawn")
    processes: dict[int, tuple[multiprocessing.process.BaseProcess, float]] = {}
    stopping = threading.Event()

    def start(slot: int) -> None:
        process = context.Process(target=_serve_one, args=(host, port, options),
                                  name=f"fleet-web-{slot}")
        process.start()
        processes[slot] = (process, time.monotonic())

    previous = {sig: signal.signal(sig, lambda *_: stopping.set())
                for sig in (signal.SIGTERM, signal.SIGINT)}
    status = 0
    try:
        for slot in range(workers):
            start(slot)
        print(f"Serving http://{host}:{port} with {workers} processes", flush=True)
        while not stopping.wait(0.5):
            for slot, (process, started) in list(processes.items()):
                if process.is_alive():
                    continue
                if time.monotonic() - started < FAILED_START_S:
                    logger.error("web process %s could not start (exit status %s)",
                                 process.pid, process.exitcode)
                    status = 1
                    stopping.set()
                    break
                logger.warning("web process %s exited (status %s); starting another",
                               process.pid, process.exitcode)
                start(slot)
    finally:
        for process, _ in processes.values():
            if process.is_alive():
                process.terminate()  # uvicorn finishes the requests in flight
        for process, _ in processes.values():
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()
        holder.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status


def _reuse_port_socket(host: str, port: int, listen: bool = True) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    if listen:
        sock.listen(2048)
    return sock


def _serve_one(host: str, port: int, options: dict) -> None:
    """One web process: its own socket on the shared port, the site under uvicorn."""
    sock = _reuse_port_socket(host, port)
    config = uvicorn.Config("fleet.asgi:application", host=host, port=port, **options)
    uvicorn.Server(config).run(sockets=[sock])


async def serve(host: str, port: int, with_ingest: bool = False,
                simulated_vehicles: int = 0) -> None:
    from fleet.asgi import application

    config = uvicorn.Config(application, host=host, port=port, log_level="info",
                            **UVICORN_OPTIONS)
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


if __name__ == "__main__":
    main()
