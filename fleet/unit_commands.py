"""Commands to units: queued by the API, sent by the ingest process, answered by the unit.

The web process cannot reach a unit: only the ingest process holding its TCP connection
(or the MQTT broker) can. So the API writes a ``queued`` UnitCommand, and the
``CommandDispatcher`` that ``start_unit_commands`` starts in every ingest process:

* every second, and at once when a unit logs in (``StreamListener.login_hooks``), sends
  the queued commands of the units connected to this process: a Teltonika Codec 12
  frame, a GT06 online command (0x80), or an MQTT publish to ``fleet/<identifier>/command``
  (MQTT units answer on ``fleet/<identifier>/response``). A command is claimed with a
  conditional update first, so two ingest processes never send it twice;
* links each response the pipeline stored (``telematics.CommandResponse``) to the
  oldest command sent to that unit and still unanswered;
* marks a command failed when no answer came within ``COMMAND_ANSWER_TIMEOUT_S``.

A command for a unit that is not connected stays queued until the unit next connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from fleet.models import ApiKey, CommandStatus, UnitCommand
from fleet.selectors import Principal, devices_visible_to
from telematics.models import CommandResponse, Device
from telematics.protocols import gt06, teltonika

logger = logging.getLogger(__name__)

COMMAND_PROTOCOLS = ("teltonika", "gt06", "mqtt")
MAX_TEXT = 500
# A response stored this long before the command was sent is not its answer (clock skew
# between the ingest's batch time and the dispatcher's).
RESPONSE_SKEW = timedelta(seconds=5)


def commands_visible_to(principal: Principal) -> QuerySet[UnitCommand]:
    return UnitCommand.objects.filter(device__in=devices_visible_to(principal)).select_related(
        "device")


def encode(protocol: str, command_id: int, text: str) -> bytes:
    """The bytes that carry ``text`` to a unit of ``protocol``; ValueError if it cannot."""
    if protocol == "teltonika":
        return teltonika.encode_command(text)
    if protocol == "gt06":
        # The unit echoes the server flag in its answer; the serial is ours to count.
        return gt06.encode_command(text, command_id & 0xFFFF, command_id & 0xFFFFFFFF)
    if protocol == "mqtt":
        return text.encode()
    raise ValueError(f"Units speaking {protocol} take no commands")


def check_command(device: Device, text: str) -> str:
    """The command text as it will be sent, or ValidationError saying what is wrong."""
    if device.protocol not in COMMAND_PROTOCOLS:
        raise ValidationError({"text": [
            f"Units speaking {device.protocol} take no commands; commands go to Teltonika, "
            "GT06 and MQTT units."]})
    if not device.active:
        raise ValidationError({"text": ["The unit is deactivated."]})
    text = text.strip()
    if not text:
        raise ValidationError({"text": ["The command is empty."]})
    if len(text) > MAX_TEXT:
        raise ValidationError({"text": [f"At most {MAX_TEXT} characters."]})
    try:
        encode(device.protocol, 1, text)
    except ValueError as error:
        raise ValidationError({"text": [str(error)]}) from error
    return text


def queue_command(device: Device, text: str, *, user=None, api_key: ApiKey | None = None
                  ) -> UnitCommand:
    """Queue a command for the unit; the ingest sends it when the unit is connected."""
    text = check_command(device, text)
    if api_key is not None:
        requested_by = f"api-key:{api_key.prefix} ({api_key.name})"
    else:
        requested_by = getattr(user, "username", "") or "unknown"
    return UnitCommand.objects.create(
        device=device, text=text, sent_by=user if getattr(user, "pk", None) else None,
        sent_by_api_key=api_key, requested_by=requested_by[:200],
    )


# --- in the ingest process: database side (a thread of the dispatcher's own) ----------


def queued_commands(protocols: set[str], limit: int = 500) -> list[tuple[int, str, str, str]]:
    """(id, identifier, protocol, text) of the oldest queued commands for ``protocols``."""
    return list(
        UnitCommand.objects.filter(status=CommandStatus.QUEUED, device__protocol__in=protocols,
                                   device__active=True)
        .order_by("created", "pk")
        .values_list("pk", "device__identifier", "device__protocol", "text")[:limit]
    )


def claim(command_id: int) -> bool:
    """Mark a queued command sent; False when another process got to it first."""
    return bool(UnitCommand.objects.filter(pk=command_id, status=CommandStatus.QUEUED)
                .update(status=CommandStatus.SENT, sent_at=timezone.now()))


def unclaim(command_id: int) -> None:
    """The unit went away before the command was written: queue it again."""
    UnitCommand.objects.filter(pk=command_id, status=CommandStatus.SENT).update(
        status=CommandStatus.QUEUED, sent_at=None)


def fail(command_id: int, error: str) -> None:
    UnitCommand.objects.filter(pk=command_id).update(status=CommandStatus.FAILED,
                                                     error=error[:300])


def link_responses(now: datetime | None = None) -> int:
    """Pair the unanswered sent commands of each unit, oldest first, with the responses
    stored since; mark the ones waiting too long failed. Returns the number answered."""
    now = now or timezone.now()
    timeout = timedelta(seconds=settings.COMMAND_ANSWER_TIMEOUT_S)
    sent: dict[int, list[UnitCommand]] = defaultdict(list)
    for command in UnitCommand.objects.filter(status=CommandStatus.SENT).order_by(
            "sent_at", "pk"):
        sent[command.device_id].append(command)
    if not sent:
        return 0
    answered = 0
    for device_id, commands in sent.items():
        responses = list(
            CommandResponse.objects.filter(
                device_id=device_id, unit_commands__isnull=True,
                received_time__gte=commands[0].sent_at - RESPONSE_SKEW,
            ).order_by("received_time", "pk")[: len(commands)]
        )
        with transaction.atomic():
            for command, response in zip(commands, responses, strict=False):
                answered += UnitCommand.objects.filter(
                    pk=command.pk, status=CommandStatus.SENT).update(
                    status=CommandStatus.ANSWERED, response=response,
                    response_text=response.text, answered_at=response.received_time,
                )
    UnitCommand.objects.filter(status=CommandStatus.SENT, sent_at__lt=now - timeout).update(
        status=CommandStatus.FAILED,
        error=f"No answer within {settings.COMMAND_ANSWER_TIMEOUT_S:g} s",
    )
    return answered


# --- in the ingest process: the event-loop side ---------------------------------------


class CommandDispatcher:
    def __init__(self, service, poll_s: float = 1.0):
        self.service = service
        self.poll_s = poll_s
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="unit-commands")
        self._wake = asyncio.Event()
        self.sent = 0

    def unit_logged_in(self, protocol: str, unit) -> None:
        """``StreamListener.login_hooks``: look for the unit's queued commands now.

        Runs in the event loop right after the unit is authenticated and before its
        login is answered; the commands go out after a database round trip, so the
        unit hears the answer to its login first.
        """
        self._wake.set()

    async def run(self) -> None:
        failing = False
        while True:
            try:
                await self.cycle()
                if failing:
                    logger.info("Unit commands: database is back")
                failing = False
            except DatabaseError as error:
                if not failing:
                    logger.warning("Unit commands: database unavailable (%s); retrying", error)
                failing = True
                await self._db(_reset_connection)
            except Exception:
                logger.exception("Unit commands: a cycle failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            self._wake.clear()

    async def cycle(self) -> None:
        protocols = {p for p in ("teltonika", "gt06") if p in self.service.stream_listeners}
        if self.service.mqtt is not None:
            protocols.add("mqtt")
        if protocols:
            rows = await self._db(queued_commands, protocols)
            if rows:
                connected = self._connected_units()
                for command_id, identifier, protocol, text in rows:
                    if protocol == "mqtt" or (protocol, identifier) in connected:
                        await self._deliver(command_id, identifier, protocol, text)
        await self._db(link_responses)

    def _connected_units(self) -> set[tuple[str, str]]:
        return {
            (protocol, unit.identifier)
            for protocol, listener in self.service.stream_listeners.items()
            for unit in list(listener.connections.values()) if unit is not None
        }

    async def _deliver(self, command_id: int, identifier: str, protocol: str,
                       text: str) -> None:
        try:
            payload = encode(protocol, command_id, text)
        except ValueError as error:
            await self._db(fail, command_id, str(error))
            return
        if not await self._db(claim, command_id):
            return
        try:
            if protocol == "mqtt":
                await self._publish(identifier, payload)
                written = True
            else:
                written = await self.service.stream_listeners[protocol].send_command(
                    identifier, payload)
        except Exception as error:  # connection lost, broker away: try again later
            logger.warning("Sending command %s to %s failed: %s", command_id, identifier, error)
            written = False
        if written:
            self.sent += 1
            logger.info("Sent command %s to %s unit %s", command_id, protocol, identifier)
        else:
            await self._db(unclaim, command_id)

    async def _publish(self, identifier: str, payload: bytes) -> None:
        import aiomqtt

        mqtt = self.service.mqtt
        async with aiomqtt.Client(
            mqtt.host, mqtt.port, identifier=f"{mqtt.client_id}-commands",
            username=mqtt.username, password=mqtt.password,
            tls_params=aiomqtt.TLSParameters() if mqtt.tls else None,
        ) as client:
            await client.publish(f"{mqtt.topic_root}/{identifier}/command", payload, qos=1)

    async def _db(self, function, *args):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, _in_thread, function, *args)

    async def close(self) -> None:
        await self._db(_reset_connection)
        self.executor.shutdown(wait=False)


def _in_thread(function, *args):
    from telematics.ingest.connections import drop_broken_connection

    drop_broken_connection()
    return function(*args)


def _reset_connection() -> None:
    with contextlib.suppress(DatabaseError):
        connection.close()
    close_old_connections()


def start_unit_commands(service) -> CommandDispatcher:
    """Deliver queued commands from this ingest process (one line in ``start_ingest``).

    Reachable as ``service.unit_commands``; stopped with the service.
    """
    dispatcher = CommandDispatcher(service)
    for protocol, listener in service.stream_listeners.items():
        if protocol in COMMAND_PROTOCOLS:  # NMEA units name themselves on every line
            listener.login_hooks.append(dispatcher.unit_logged_in)
    task = asyncio.create_task(dispatcher.run(), name="unit-commands")
    service._tasks.append(task)
    service._closers.append(dispatcher.close)
    service.unit_commands = dispatcher
    return dispatcher
