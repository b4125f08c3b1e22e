"""The MQTT subscriber: units publish to ``fleet/<identifier>/<kind>``.

It subscribes through a shared subscription (``$share/ingest/fleet/+/+``) so several
ingest processes split the load, with QoS 1 and a persistent session, and acknowledges
(PUBACK) a message only after its records are stored: a message the process could not
store is delivered again by the broker. Messages are worked on concurrently but
acknowledged in arrival order, as MQTT requires. The broker authenticates units (give
each unit its own login and an ACL such as ``pattern write fleet/%u/#``); a device with
a secret must also send it as the MQTT v5 user property ``secret``.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlparse

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from telematics.ingest.directory import UnitDirectory
from telematics.ingest.messages import parse_topic
from telematics.ingest.pipeline import IngestPipeline
from telematics.ingest.unit_messages import receive_unit_message

logger = logging.getLogger(__name__)

PROTOCOL = "mqtt"
SHARE_GROUP = "ingest"


class MqttSubscriber:
    def __init__(self, url: str, pipeline: IngestPipeline, directory: UnitDirectory, *,
                 client_id: str = "fleetbook-ingest", topic_root: str = "fleet",
                 share_group: str = SHARE_GROUP, max_in_flight: int = 1000):
        parsed = urlparse(url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or (8883 if parsed.scheme == "mqtts" else 1883)
        self.username = parsed.username
        self.password = parsed.password
        self.tls = parsed.scheme == "mqtts"
        self.pipeline = pipeline
        self.directory = directory
        self.client_id = client_id
        self.topic_root = topic_root
        self.topic = f"$share/{share_group}/{topic_root}/+/+"
        self.max_in_flight = max_in_flight
        self.connected = asyncio.Event()

    async def run(self) -> None:
        """Stay subscribed for ever, reconnecting with backoff when the broker goes away."""
        delay = 0.5
        while True:
            try:
                await self._session()
            except aiomqtt.MqttError as error:
                self.connected.clear()
                logger.warning("MQTT connection lost (%s); reconnecting in %.1fs", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            else:
                delay = 0.5

    async def _session(self) -> None:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600  # keep QoS 1 messages while we are away
        async with aiomqtt.Client(
            self.host, self.port, identifier=self.client_id, username=self.username,
            password=self.password, protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False, properties=properties,
            tls_params=aiomqtt.TLSParameters() if self.tls else None,
            max_queued_incoming_messages=self.max_in_flight * 4,
        ) as client:
            # aiomqtt acknowledges on receipt; the pipeline must acknowledge after storage,
            # so switch paho (underneath) to manual acknowledgements.
            client._client.manual_ack_set(True)
            await client.subscribe(self.topic, qos=1)
            self.connected.set()
            logger.info("MQTT subscribed to %s on %s:%s", self.topic, self.host, self.port)
            acks: asyncio.Queue[tuple[aiomqtt.Message, asyncio.Task]] = asyncio.Queue(
                maxsize=self.max_in_flight
            )
            acker = asyncio.create_task(self._acknowledge_in_order(client, acks))
            try:
                async for message in client.messages:
                    await acks.put((message, asyncio.create_task(self._receive(message))))
            finally:
                acker.cancel()

    async def _acknowledge_in_order(
        self, client: aiomqtt.Client, acks: asyncio.Queue[tuple[aiomqtt.Message, asyncio.Task]]
    ) -> None:
        while True:
            message, task = await acks.get()
            try:
                await task
            except Exception:
                logger.exception("Storing MQTT message on %s failed; not acknowledged",
                                 message.topic)
                continue
            client._client.ack(message.mid, message.qos)

    async def _receive(self, message: aiomqtt.Message) -> None:
        """Store one message; returns once it may be acknowledged.

        A message that can never be stored (garbage, unknown unit) is acknowledged too:
        the broker sending it again would not make it better.
        """
        topic = parse_topic(str(message.topic), self.topic_root)
        if topic is None:
            return
        identifier, kind = topic
        if kind == "command":  # a command the server published to the unit
            return
        body = message.payload if isinstance(message.payload, bytes) else str(
            message.payload).encode()
        await receive_unit_message(self.pipeline, self.directory, PROTOCOL, identifier, kind,
                                   body, "mqtt", _user_property(message, "secret"))


def _user_property(message: aiomqtt.Message, name: str) -> str | None:
    for key, value in getattr(message.properties, "UserProperty", None) or []:
        if key == name:
            return value
    return None
