"""Starting the ingest listeners: all enabled protocols in one asyncio process.

Used by ``manage.py ingest``, by the demo (inside the web process) and by the tests
(with port 0 everywhere, reading the bound ports back from ``IngestService.ports``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

import uvicorn
from channels.layers import get_channel_layer
from django.conf import settings

from fleet.jobs import attach_job_tracker
from fleet.unit_commands import start_unit_commands
from fleet.webhooks import start_webhook_worker
from logbook.live import attach_trip_tracker
from telematics.alerts.worker import attach_alert_worker
from telematics.ingest.directory import UnitDirectory
from telematics.ingest.filters import FixFilter
from telematics.ingest.http import OsmandApp
from telematics.ingest.pipeline import IngestPipeline
from telematics.ingest.tcp import StreamListener, server_ssl_context
from telematics.ingest.udp import DatagramListener
from telematics.protocols import gt06, nmea, teltonika

logger = logging.getLogger(__name__)

PROTOCOLS = ("teltonika", "gt06", "nmea", "osmand", "coap", "mqtt")


@dataclass
class IngestService:
    pipeline: IngestPipeline
    directory: UnitDirectory
    ports: dict[str, int] = field(default_factory=dict)
    stream_listeners: dict[str, StreamListener] = field(default_factory=dict)
    _closers: list = field(default_factory=list)
    _tasks: list[asyncio.Task] = field(default_factory=list)
    mqtt = None

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for close in reversed(self._closers):
            result = close()
            if asyncio.iscoroutine(result):
                await result
        await self.pipeline.stop()


def _stream_sessions() -> dict[str, object]:
    limit = settings.INGEST_MAX_FRAME_BYTES
    return {
        "teltonika": lambda: teltonika.TeltonikaTcpSession(max_frame=limit),
        "gt06": lambda: gt06.Gt06Session(max_frame=min(limit, 4096)),
        "nmea": lambda: nmea.NmeaSession(max_frame=min(limit, 4096)),
    }


async def start_ingest(
    protocols: Iterable[str] | None = None,
    *,
    host: str | None = None,
    ports: dict[str, int] | None = None,
    mqtt_url: str | None = None,
    mqtt_client_id: str | None = None,
    mqtt_topic_root: str | None = None,
) -> IngestService:
    """Start the listeners; MQTT only when an MQTT URL is configured."""
    host = host if host is not None else settings.INGEST_BIND
    ports = {**settings.INGEST_PORTS, **(ports or {})}
    mqtt_url = settings.MQTT_URL if mqtt_url is None else mqtt_url
    wanted = set(PROTOCOLS if protocols is None else protocols)
    unknown = wanted - set(PROTOCOLS)
    if unknown:
        raise ValueError(f"Unknown protocols: {', '.join(sorted(unknown))}")

    pipeline = IngestPipeline(
        fix_filter=FixFilter(settings.INGEST_MAX_SPEED_KMH,
                             timedelta(seconds=settings.INGEST_MAX_FUTURE_S)),
        batch_max=settings.INGEST_BATCH_MAX,
        batch_wait=settings.INGEST_BATCH_WAIT_MS / 1000,
        store_raw=settings.INGEST_STORE_RAW,
        channel_layer=get_channel_layer(),
    )
    attach_trip_tracker(pipeline)
    attach_job_tracker(pipeline)
    attach_alert_worker(pipeline)
    await pipeline.start()
    await _prepare_partitions(pipeline)
    directory = UnitDirectory(pipeline.lookup_executor,
                              cache_seconds=settings.INGEST_UNIT_CACHE_S,
                              unknown_throttle_seconds=settings.INGEST_UNKNOWN_THROTTLE_S)
    pipeline.directory = directory
    service = IngestService(pipeline, directory)
    tls = server_ssl_context(settings.INGEST_TLS_CERT, settings.INGEST_TLS_KEY)

    for name, session_factory in _stream_sessions().items():
        if name not in wanted:
            continue
        listener = StreamListener(name, session_factory, pipeline, directory,
                                  idle_timeout=settings.INGEST_IDLE_TIMEOUT_S, ssl_context=tls)
        server = await listener.start(host, ports[name])
        service.ports[name] = server.sockets[0].getsockname()[1]
        service.stream_listeners[name] = listener
        service._closers.append(server.close)
        service._closers.append(listener.close_connections)
        logger.info("%s listening on %s:%s/tcp%s", name, host, service.ports[name],
                    " (TLS)" if tls else "")

    if "teltonika" in wanted:
        udp = DatagramListener("teltonika", teltonika.decode_udp, pipeline, directory)
        transport = await udp.start(host, service.ports.get("teltonika", ports["teltonika"]))
        service.ports["teltonika_udp"] = transport.get_extra_info("sockname")[1]
        service._closers.append(transport.close)

    if "osmand" in wanted:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, ports["osmand"]))
        service.ports["osmand"] = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(
            OsmandApp(pipeline, directory, max_body=settings.INGEST_MAX_FRAME_BYTES),
            lifespan="off", log_level="warning", access_log=False,
        ))
        server.config.setup_event_loop = lambda: None  # share the running loop
        service._tasks.append(asyncio.create_task(server.serve(sockets=[sock])))

        async def stop_http() -> None:
            server.should_exit = True

        service._closers.append(stop_http)
        logger.info("osmand listening on %s:%s/http", host, service.ports["osmand"])

    if "coap" in wanted:
        from telematics.ingest.coap import start_coap

        context = await start_coap(host, ports["coap"], pipeline, directory)
        service.ports["coap"] = _coap_port(context, ports["coap"])
        service._closers.append(context.shutdown)
        logger.info("coap listening on %s:%s/udp", host, service.ports["coap"])

    if "mqtt" in wanted and mqtt_url:
        from telematics.ingest.mqtt import MqttSubscriber

        service.mqtt = MqttSubscriber(
            mqtt_url, pipeline, directory,
            client_id=mqtt_client_id or settings.MQTT_CLIENT_ID,
            topic_root=mqtt_topic_root or settings.MQTT_TOPIC_ROOT,
        )
        service._tasks.append(asyncio.create_task(service.mqtt.run()))
    start_unit_commands(service)
    start_webhook_worker(service)
    return service


def _coap_port(context, fallback: int) -> int:
    """The UDP port aiocoap bound (it keeps it three objects deep; needed for port 0)."""
    for request_interface in context.request_interfaces:
        message_manager = getattr(request_interface, "token_interface", None)
        udp = getattr(message_manager, "message_interface", None)
        if hasattr(udp, "_local_port"):
            return udp._local_port()
    return fallback


async def _prepare_partitions(pipeline: IngestPipeline) -> None:
    from telematics.partitions import ensure_position_partitions

    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(pipeline.db_executor, ensure_position_partitions)
    except Exception as error:  # the default partition catches rows meanwhile
        logger.warning("Could not prepare position partitions: %s", error)


async def run_listeners(protocols: Iterable[str] | None = None) -> None:
    """Run the listeners until cancelled (``manage.py ingest``: a process of its own)."""
    service = await start_ingest(protocols)
    # Everything loaded so far (Django, the decoders, the models) lives as long as the
    # process: freeze it out of the collector's sight, and collect the young generation
    # less often. Ingest allocates many short-lived containers that reference counting
    # frees; the default threshold (700) ran the collector thousands of times a second
    # at fleet scale, for cycles that hardly exist.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    try:
        await asyncio.Event().wait()
    finally:
        await service.stop()
