"""A Teltonika unit over real TCP: login, data, acknowledgement after storage."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from telematics.models import Position, UnknownUnit, VehicleState
from telematics.simulator.encoders import fix_at, teltonika_avl, teltonika_login, teltonika_udp
from tests.support import IMEI, db


def drive(start: datetime, count: int, **fields):
    return [fix_at(52.5 + i * 0.001, 13.4, start + timedelta(seconds=i), speed_kmh=40.0,
                   **fields) for i in range(count)]


async def test_login_data_and_acknowledgement(ingest, fleet):
    port = ingest.ports["teltonika"]
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(teltonika_login(IMEI))
    assert await asyncio.wait_for(reader.readexactly(1), 5) == b"\x01"
    writer.write(teltonika_avl(drive(start, 3, ignition=True, odometer_km=1000.0)))
    ack = await asyncio.wait_for(reader.readexactly(4), 5)
    assert ack == b"\x00\x00\x00\x03"
    # Acknowledged means stored: the rows are there the moment the ack arrives.
    rows = await db(lambda: list(Position.objects.filter(device=fleet["teltonika"])
                                 .order_by("fix_time")))
    assert [r.fix_time for r in rows] == [start + timedelta(seconds=i) for i in range(3)]
    assert rows[0].latitude == 52.5 and rows[2].latitude == 52.502
    assert rows[0].vehicle_id == fleet["teltonika"].vehicle_id
    assert rows[0].ignition is True and rows[0].odometer_km == 1000.0
    assert rows[0].speed_kmh == 40.0
    state = await db(lambda: VehicleState.objects.get(vehicle=fleet["teltonika"].vehicle))
    assert state.fix_time == start + timedelta(seconds=2) and state.latitude == 52.502
    writer.close()


async def test_unknown_unit_is_refused_and_recorded(ingest):
    reply = await asyncio.wait_for(
        _login_reply(ingest.ports["teltonika"], "352093081429150"), 5)
    assert reply == b"\x00"
    unknown = await db(lambda: UnknownUnit.objects.get(identifier="352093081429150"))
    assert unknown.protocol == "teltonika" and unknown.remote_address.startswith("127.0.0.1")


async def _login_reply(port: int, imei: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(teltonika_login(imei))
    reply = await reader.read(1)
    rest = await reader.read(1)  # the server hangs up on a refused unit
    writer.close()
    assert rest == b""
    return reply


async def test_resend_after_lost_ack_stores_nothing_twice(ingest, fleet):
    port = ingest.ports["teltonika"]
    packet = teltonika_avl(drive(datetime.now(UTC).replace(microsecond=0)
                                 - timedelta(minutes=1), 25))
    for _ in range(2):  # the unit never saw the first ack, so it sends the packet again
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(teltonika_login(IMEI))
        await reader.readexactly(1)
        writer.write(packet)
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"\x00\x00\x00\x19"
        writer.close()
    assert await db(lambda: Position.objects.filter(device=fleet["teltonika"]).count()) == 25


async def test_late_fix_is_stored_but_does_not_move_the_marker_back(ingest, fleet):
    port = ingest.ports["teltonika"]
    now = datetime.now(UTC).replace(microsecond=0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(teltonika_login(IMEI))
    await reader.readexactly(1)
    writer.write(teltonika_avl([fix_at(52.6, 13.5, now - timedelta(minutes=1))]))
    await reader.readexactly(4)
    writer.write(teltonika_avl([fix_at(52.59, 13.49, now - timedelta(minutes=10))]))
    await reader.readexactly(4)
    writer.close()
    assert await db(lambda: Position.objects.filter(device=fleet["teltonika"]).count()) == 2
    state = await db(lambda: VehicleState.objects.get(vehicle=fleet["teltonika"].vehicle))
    assert (state.latitude, state.fix_time) == (52.6, now - timedelta(minutes=1))


async def test_garbage_between_two_good_frames(ingest, fleet):
    port = ingest.ports["teltonika"]
    now = datetime.now(UTC).replace(microsecond=0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(teltonika_login(IMEI))
    await reader.readexactly(1)
    first = teltonika_avl([fix_at(52.1, 13.1, now - timedelta(seconds=30))])
    second = teltonika_avl([fix_at(52.1005, 13.1, now - timedelta(seconds=20))])
    writer.write(first + b"\xde\xad\xbe\xef garbage \x00\x01\x02" + second)
    acks = await asyncio.wait_for(reader.readexactly(8), 5)
    assert acks == b"\x00\x00\x00\x01" * 2
    writer.close()
    latitudes = await db(lambda: list(Position.objects.filter(device=fleet["teltonika"])
                                      .order_by("fix_time").values_list("latitude", flat=True)))
    assert latitudes == [52.1, 52.1005]


async def test_bad_crc_is_not_acknowledged_and_connection_goes_on(ingest, fleet):
    port = ingest.ports["teltonika"]
    now = datetime.now(UTC).replace(microsecond=0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(teltonika_login(IMEI))
    await reader.readexactly(1)
    corrupt = bytearray(teltonika_avl([fix_at(52.3, 13.3, now - timedelta(seconds=9))]))
    corrupt[-1] ^= 0xFF
    good = teltonika_avl([fix_at(52.4, 13.4, now - timedelta(seconds=5))])
    writer.write(bytes(corrupt) + good)
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"\x00\x00\x00\x01"
    writer.close()
    latitudes = await db(lambda: list(Position.objects.filter(device=fleet["teltonika"])
                                      .values_list("latitude", flat=True)))
    assert latitudes == [52.4]


async def test_oversized_frame_cuts_only_that_connection(ingest, fleet, settings):
    port = ingest.ports["teltonika"]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(teltonika_login(IMEI))
    await reader.readexactly(1)
    writer.write(b"\x00\x00\x00\x00\x7f\xff\xff\xff\x08\x01")  # announces 2 GiB
    assert await asyncio.wait_for(reader.read(10), 5) == b""
    writer.close()
    reply = await asyncio.wait_for(_login_reply_open(port), 5)
    assert reply == b"\x01"


async def _login_reply_open(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(teltonika_login(IMEI))
    reply = await reader.readexactly(1)
    writer.close()
    return reply


async def test_filtered_fixes_are_acknowledged_but_not_stored(ingest, fleet):
    port = ingest.ports["teltonika"]
    now = datetime.now(UTC).replace(microsecond=0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(teltonika_login(IMEI))
    await reader.readexactly(1)
    fixes = [
        fix_at(0.0, 0.0, now - timedelta(seconds=40)),                  # null island
        fix_at(52.0, 13.0, now - timedelta(seconds=30), satellites=0),  # no fix
        fix_at(52.0, 13.0, now + timedelta(days=3)),                    # wrong clock
        fix_at(52.0, 13.0, now - timedelta(seconds=20)),                # good
        fix_at(48.0, 11.0, now - timedelta(seconds=19)),                # 500 km in 1 s
        fix_at(52.0001, 13.0, now - timedelta(seconds=10)),             # good
    ]
    writer.write(teltonika_avl(fixes))
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"\x00\x00\x00\x06"
    writer.close()
    latitudes = await db(lambda: list(Position.objects.filter(device=fleet["teltonika"])
                                      .order_by("fix_time").values_list("latitude", flat=True)))
    assert latitudes == [52.0, 52.0001]


async def test_udp_packet_stored_then_acknowledged(ingest, fleet):
    now = datetime.now(UTC).replace(microsecond=0)
    packet = teltonika_udp(IMEI, 0xCAFE, 7, drive(now - timedelta(minutes=2), 2))
    loop = asyncio.get_running_loop()
    replies: asyncio.Queue[bytes] = asyncio.Queue()

    class Unit(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            replies.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(
        Unit, remote_addr=("127.0.0.1", ingest.ports["teltonika_udp"]))
    transport.sendto(packet)
    reply = await asyncio.wait_for(replies.get(), 5)
    transport.close()
    assert reply == bytes.fromhex("0005CAFE010702")
    assert await db(lambda: Position.objects.filter(device=fleet["teltonika"]).count()) == 2


async def test_command_response_is_stored(ingest, fleet):
    from pathlib import Path

    from telematics.models import CommandResponse

    vectors = Path(__file__).parent.parent / "data/protocols/teltonika"
    path = vectors / "wiki_codec12_getinfo_response.hex"
    frame = bytes.fromhex("".join(
        line for line in path.read_text().splitlines() if not line.startswith("#")))
    reader, writer = await asyncio.open_connection("127.0.0.1", ingest.ports["teltonika"])
    writer.write(teltonika_login(IMEI))
    await reader.readexactly(1)
    writer.write(frame)
    for _ in range(50):
        responses = await db(lambda: list(CommandResponse.objects.filter(
            device=fleet["teltonika"]).values_list("text", flat=True)))
        if responses:
            break
        await asyncio.sleep(0.1)
    writer.close()
    assert responses == ["INI:2019/7/22 7:22 RTC:2019/7/22 7:53 RST:2 ERR:1 SR:0 BR:0 CF:0 FG:0 "
                         "FL:0 TU:0/0 UT:0 SMS:0 NOGPS:0:30 GPS:1 SAT:0 RS:3 RF:65 SF:1 MD:0"]


async def test_idle_connection_is_closed(fleet, settings):
    from telematics.ingest.runner import start_ingest

    settings.INGEST_IDLE_TIMEOUT_S = 0.3
    service = await start_ingest(("teltonika",), host="127.0.0.1", ports={"teltonika": 0},
                                 mqtt_url="")
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", service.ports["teltonika"])
        writer.write(teltonika_login(IMEI))
        await reader.readexactly(1)
        assert await asyncio.wait_for(reader.read(1), 5) == b""  # hung up on the silent unit
        writer.close()
    finally:
        await service.stop()
