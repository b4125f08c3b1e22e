"""Simulated GT06, NMEA and OsmAnd units (and a mixed fleet) through the real listeners:
every record a unit had acknowledged is in the database, and NMEA's unacknowledged ones
arrive too."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime

import pytest
from django.db.models import Count

from telematics.models import Position
from telematics.simulator.load import (
    LoadUnit,
    load_units,
    register_load_units,
    run_fleet,
    run_units,
    stored_by_protocol,
)
from telematics.simulator.units import read_http_response
from tests.support import db

FLEET = load_units(8, first=910_000, protocol="mixed")  # two units of each protocol


@pytest.fixture
def units(fleet) -> list[LoadUnit]:
    assert register_load_units(FLEET) == len(FLEET)
    assert register_load_units(FLEET) == 0  # registering again is a no-op
    return FLEET


def of(units: list[LoadUnit], protocol: str) -> list[str]:
    return [u.identifier for u in units if u.protocol == protocol]


def stored_by_unit(identifiers: list[str]) -> dict[str, int]:
    rows = (
        Position.objects.filter(device__identifier__in=identifiers)
        .values_list("device__identifier")
        .annotate(n=Count("id"))
    )
    return dict(rows)


async def stored_when_settled(identifiers: list[str], expected: int) -> dict[str, int]:
    """NMEA units get no ack: wait (bounded) until the listener has stored what it got."""
    for _ in range(100):
        stored = await db(lambda: stored_by_unit(identifiers))
        if sum(stored.values()) >= expected:
            break
        await asyncio.sleep(0.1)
    return stored


@pytest.mark.parametrize("protocol", ["gt06", "osmand", "teltonika"])
async def test_live_units_of_each_acknowledging_protocol(ingest, units, protocol):
    identifiers = of(units, protocol)
    rate = 1 if protocol == "gt06" else 4  # GT06 fix times are whole seconds
    result = await run_units("127.0.0.1", ingest.ports[protocol], identifiers,
                             protocol=protocol, rate=rate, duration=2)
    assert result.complete, result.summary()
    per_unit = 2 * rate
    assert result.connected == 2 and result.records_acked == 2 * per_unit
    assert result.packets_acked == result.packets_sent  # one ack for every packet
    assert result.latencies and result.latency_ms(0.99) > 0
    assert await db(lambda: stored_by_unit(identifiers)) == result.acked_by_unit == dict.fromkeys(
        identifiers, per_unit)


@pytest.mark.parametrize("protocol", ["gt06", "osmand"])
async def test_backlog_units_flush_batches(ingest, units, protocol):
    identifiers = of(units, protocol)
    result = await run_units("127.0.0.1", ingest.ports[protocol], identifiers,
                             protocol=protocol, mode="backlog", packets=3, records_per_packet=10)
    assert result.complete, result.summary()
    # GT06: ten locations and the heartbeat whose echo covers them; OsmAnd: one POST of ten.
    assert result.packets_acked == 2 * 3 and result.records_acked == 2 * 30
    assert await db(lambda: stored_by_unit(identifiers)) == result.acked_by_unit == dict.fromkeys(
        identifiers, 30)
    # A plausible drive: fix times a second apart and nothing filtered as a jump.
    fixes = await db(lambda: list(
        Position.objects.filter(device__identifier=identifiers[0]).values_list("fix_time",
                                                                               "speed_kmh")))
    gaps = {(b[0] - a[0]).total_seconds() for a, b in itertools.pairwise(fixes)}
    assert gaps == {1.0} and fixes[0][1] > 0


async def test_nmea_units_are_stored_without_acknowledgement(ingest, units):
    identifiers = of(units, "nmea")
    result = await run_units("127.0.0.1", ingest.ports["nmea"], identifiers,
                             protocol="nmea", rate=4, duration=2)
    assert result.complete, result.summary()
    assert result.records_sent == result.records_without_ack == 2 * 8
    assert result.records_acked == 0 and not result.latencies  # nothing to measure
    assert "acknowledges nothing" in result.summary()
    stored = await stored_when_settled(identifiers, 16)
    assert stored == result.sent_by_unit == dict.fromkeys(identifiers, 8)


async def test_nmea_backlog_is_stored_in_full(ingest, units):
    identifiers = of(units, "nmea")
    result = await run_units("127.0.0.1", ingest.ports["nmea"], identifiers,
                             protocol="nmea", mode="backlog", packets=4, records_per_packet=25)
    assert result.complete, result.summary()
    stored = await stored_when_settled(identifiers, 200)
    assert stored == result.sent_by_unit == dict.fromkeys(identifiers, 100)


async def test_a_mixed_fleet_reports_per_protocol(ingest, units):
    since = datetime.now(UTC)
    result = await run_fleet("127.0.0.1", ingest.ports, units, rate=1, duration=3, can=True)
    assert result.complete, result.summary()
    assert set(result.protocols) == {"teltonika", "gt06", "nmea", "osmand"}
    for name, child in result.protocols.items():
        assert child.units == child.connected == 2, name
        assert child.records_sent == 6 and child.offered_per_second == 2.0
    assert result.records_acked == 18 and result.records_without_ack == 6
    assert result.offered_ackable_per_second == 6.0
    summary = result.summary()
    for name in ("teltonika", "gt06", "nmea", "osmand"):
        assert f"\n  {name}" in summary
    await stored_when_settled(of(units, "nmea"), 6)
    stored = await db(lambda: stored_by_protocol(units, since))
    assert {name: s.count for name, s in stored.items()} == dict.fromkeys(
        ("teltonika", "gt06", "nmea", "osmand"), 6)


async def test_unregistered_units_are_refused_where_the_protocol_says_so(ingest):
    strangers = load_units(8, first=990_000, protocol="mixed")
    # Long enough for the listener to hang up on the NMEA units before their last record.
    result = await run_fleet("127.0.0.1", ingest.ports, strangers, duration=3)
    refused = {name: child.refused for name, child in result.protocols.items()}
    # Teltonika answers 00, GT06 hangs up on the login, OsmAnd answers 400 to the
    # first request; an NMEA unit cannot tell a refusal from a hang-up: it is lost.
    assert refused == {"teltonika": 2, "gt06": 2, "nmea": 0, "osmand": 2}
    assert result.protocols["nmea"].lost == 2
    assert result.records_acked == 0 and not result.complete


async def test_gt06_units_cannot_report_faster_than_their_clock():
    with pytest.raises(ValueError, match="whole seconds"):
        await run_units("127.0.0.1", 1, ["359999010000016"], protocol="gt06", rate=2)


async def test_a_gt06_echo_of_the_wrong_serial_is_a_wrong_ack():
    async def echo_login_then_serial_zero(reader, writer):
        from telematics.protocols.gt06 import encode_reply

        await reader.read(64)
        writer.write(encode_reply(0x01, 1))
        await reader.read(4096)
        writer.write(encode_reply(0x13, 0))  # not the heartbeat's serial
        await reader.read(4096)

    server = await asyncio.start_server(echo_login_then_serial_zero, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    result = await run_units("127.0.0.1", port, ["359999010000016"], protocol="gt06",
                             duration=1, ack_timeout=1)
    server.close()
    assert result.connected == 1 and result.wrong_acks == 1 and result.records_acked == 0
    assert not result.complete


async def test_osmand_units_reconnect_after_the_server_closes_kept_alive_connections():
    """A server that closes each connection after one answer, and drops the very first
    request unanswered: every record still ends up acknowledged."""
    requests: list[bytes] = []

    async def one_answer_per_connection(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        body = await reader.readexactly(length)
        requests.append(body)
        if len(requests) > 1:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"3\r\nOK\n\r\n0\r\n\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(one_answer_per_connection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    result = await run_units("127.0.0.1", port, ["359999030000038"], protocol="osmand",
                             rate=5, duration=1)
    server.close()
    assert result.complete, result.summary()
    assert result.records_acked == 5 and result.retries == 1 and len(requests) == 6


async def test_an_osmand_error_answer_rejects_the_records():
    async def bad_request(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 27\r\n\r\n"
                     b"location: expected records\n")
        await writer.drain()

    server = await asyncio.start_server(bad_request, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    result = await run_units("127.0.0.1", port, ["359999030000038"], protocol="osmand",
                             duration=1)
    server.close()
    assert result.records_rejected == 1 and not result.complete
    assert "HTTP 400 location: expected records" in result.summary()


def test_http_responses_are_read_whole_or_not_at_all():
    buffer = bytearray(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nOK\n"
                       b"HTTP/1.1 400 Bad Request\r\ntransfer-encoding: chunked\r\n"
                       b"Connection: close\r\n\r\n4\r\nbad \r\n3\r\nid\n\r\n0\r\n\r\nHTTP/1.1 2")
    assert read_http_response(buffer) == (200, b"OK\n", False)
    assert read_http_response(buffer) == (400, b"bad id\n", True)
    assert read_http_response(buffer) is None and buffer == b"HTTP/1.1 2"
    half = bytearray(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nOK")
    assert read_http_response(half) is None and half.endswith(b"\r\n\r\nOK")  # left whole
    with pytest.raises(ValueError):
        read_http_response(bytearray(b"garbage\r\n\r\n"))


def test_load_units_mix_protocols_with_identities_of_their_own():
    mixed = load_units(8, protocol="mixed")
    assert [u.protocol for u in mixed[:4]] == ["teltonika", "gt06", "nmea", "osmand"]
    assert len({u.identifier for u in mixed}) == 8
    assert load_units(4, protocol="mixed") == mixed[:4]  # stable
    assert all(len(u.identifier) == 15 and u.identifier.isdigit() for u in mixed)
    with pytest.raises(ValueError, match="supported: teltonika, gt06, nmea, osmand, mixed"):
        load_units(1, protocol="coap")

