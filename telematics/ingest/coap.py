"""The CoAP listener, for NB-IoT/LTE-M units that cannot keep a TCP connection.

``POST /fleet/<identifier>/position`` (JSON fixes) or ``/nmea`` (NMEA lines), with
``?secret=...`` when the device has one. A confirmable request is answered
``2.04 Changed`` only once the records are stored; bad input gets ``4.00 Bad Request``
with a diagnostic payload, an unknown unit ``4.01 Unauthorized``.
"""

from __future__ import annotations

import logging

import aiocoap
from aiocoap import resource
from aiocoap.numbers.codes import Code

from telematics.ingest.directory import UnitDirectory
from telematics.ingest.messages import parse_topic
from telematics.ingest.pipeline import IngestPipeline
from telematics.ingest.unit_messages import BAD, STORED, receive_unit_message

logger = logging.getLogger(__name__)

PROTOCOL = "coap"


class FleetSite(resource.Resource, resource.PathCapable):
    """The whole URI tree; one resource parses the path itself (``fleet/<id>/<kind>``)."""

    def __init__(self, pipeline: IngestPipeline, directory: UnitDirectory):
        super().__init__()
        self.pipeline = pipeline
        self.directory = directory

    async def render(self, request: aiocoap.Message) -> aiocoap.Message:
        path = "/".join(request.opt.uri_path)
        target = parse_topic(path)
        if target is None:
            return _reply(Code.NOT_FOUND, f"No resource {path!r}: POST to fleet/<id>/position")
        if request.code != Code.POST:
            return _reply(Code.METHOD_NOT_ALLOWED, "Use POST")
        identifier, kind = target
        secret = next((q[7:] for q in request.opt.uri_query if q.startswith("secret=")), None)
        remote = str(request.remote.hostinfo) if request.remote else "?"
        outcome = await receive_unit_message(self.pipeline, self.directory, PROTOCOL,
                                             identifier, kind, request.payload, remote, secret)
        code = {STORED: Code.CHANGED, BAD: Code.BAD_REQUEST}.get(outcome.status,
                                                                 Code.UNAUTHORIZED)
        return _reply(code, outcome.detail)


def _reply(code: Code, text: str) -> aiocoap.Message:
    return aiocoap.Message(code=code, payload=text.encode())


async def start_coap(host: str, port: int, pipeline: IngestPipeline,
                     directory: UnitDirectory) -> aiocoap.Context:
    return await aiocoap.Context.create_server_context(
        FleetSite(pipeline, directory), bind=(host, port), transports=["udp6"]
    )
