"""What a unit says about itself: GT06 heartbeats become unit status, alarms become events.

The frames are the vendor's own examples (Concox protocol V3.1, quoted in
tests/data/protocols/gt06/vendor.txt): a heartbeat with terminal info 0x40 (GPS tracking
on), voltage level 4 and GSM signal 4; an alarm packet (0x26) with a vibration alarm,
terminal info 0x0C (charging), voltage level 6, GSM 4.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from telematics.models import Event, Position, VehicleState
from telematics.simulator.encoders import gt06_login
from tests.support import db

GT06_IMEI = "359710049095095"
HEARTBEAT = bytes.fromhex("78780A134004040001000FDCEE0D0A")
ALARM = bytes.fromhex(
    "7878252612030C063816C3026C10540C38C9700144030901CC002866000EEE0C06040302000DA2DB0D0A")


async def gt06_session(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(gt06_login(GT06_IMEI, serial=1))
    await asyncio.wait_for(reader.readexactly(10), 5)
    return reader, writer


async def test_heartbeat_becomes_the_vehicles_unit_status(ingest, fleet):
    reader, writer = await gt06_session(ingest.ports["gt06"])
    before = datetime.now(UTC)
    writer.write(HEARTBEAT)
    reply = await asyncio.wait_for(reader.readexactly(10), 5)
    assert reply[3] == 0x13 and reply[4:6] == b"\x00\x0f"  # echoes type and serial
    writer.close()

    state = await db(lambda: VehicleState.objects.get(vehicle=fleet["gt06"].vehicle))
    status = state.unit_status
    assert status["voltage_level"] == 4 and status["gsm_signal"] == 4
    assert status["gps_tracking"] is True and status["charging"] is False
    assert datetime.fromisoformat(status["time"]) >= before.replace(microsecond=0)
    # A heartbeat is not a position: nothing on the map moved.
    assert await db(lambda: Position.objects.filter(device=fleet["gt06"]).count()) == 0


async def test_alarm_packet_raises_an_alarm_event(ingest, fleet):
    reader, writer = await gt06_session(ingest.ports["gt06"])
    writer.write(ALARM)
    reply = await asyncio.wait_for(reader.readexactly(10), 5)
    assert reply[3] == 0x26 and reply[4:6] == b"\x00\x0d"
    writer.close()

    # The example's GPS block is not positioned (course/status 0x4403): no position is
    # stored, but the alarm is raised, with the unit's last known place marked as such.
    assert await db(lambda: Position.objects.filter(device=fleet["gt06"]).count()) == 0
    events = await db(lambda: list(Event.objects.filter(vehicle=fleet["gt06"].vehicle,
                                                        type="alarm")))
    assert len(events) == 1
    alarm = events[0]
    assert alarm.attributes["alarm"] == "vibration"
    assert alarm.time == datetime(2018, 3, 12, 6, 56, 22, tzinfo=UTC)
    assert round(alarm.attributes["latitude"], 5) == 22.57583
    assert round(alarm.attributes["longitude"], 5) == 113.91565
    assert alarm.attributes["valid"] is False
    state = await db(lambda: VehicleState.objects.get(vehicle=fleet["gt06"].vehicle))
    assert state.unit_status["charging"] is True and state.unit_status["voltage_level"] == 6


async def test_the_latest_status_wins(ingest, fleet):
    reader, writer = await gt06_session(ingest.ports["gt06"])
    writer.write(ALARM)  # voltage level 6
    await asyncio.wait_for(reader.readexactly(10), 5)
    writer.write(HEARTBEAT)  # voltage level 4, said later
    await asyncio.wait_for(reader.readexactly(10), 5)
    writer.close()
    state = await db(lambda: VehicleState.objects.get(vehicle=fleet["gt06"].vehicle))
    assert state.unit_status["voltage_level"] == 4


async def test_positioned_alarm_stores_the_position_too(ingest, fleet):
    # Traccar's test frame G10 (tests/data/protocols/gt06/traccar.txt): an 0x16 alarm
    # packet with a valid fix, status 0x46 (ACC on, charging), alarm 0x06 overspeed.
    frame = bytes.fromhex((Path(__file__).parents[1] / "data/protocols/gt06/traccar.txt")
                          .read_text().split("\nG10 ")[1].split()[0])
    reader, writer = await gt06_session(ingest.ports["gt06"])
    writer.write(frame)
    reply = await asyncio.wait_for(reader.readexactly(10), 5)
    assert reply[3] == 0x16 and reply[4:6] == b"\x01\x40"
    writer.close()
    position = await db(lambda: Position.objects.get(device=fleet["gt06"]))
    assert position.fix_time == datetime(2017, 8, 25, 17, 2, 8, tzinfo=UTC)
    assert position.ignition is True
    alarm = await db(lambda: Event.objects.get(vehicle=fleet["gt06"].vehicle, type="alarm"))
    assert alarm.attributes["alarm"] == "overspeed" and alarm.attributes["valid"] is True
    assert alarm.time == position.fix_time
    assert (alarm.attributes["latitude"], alarm.attributes["longitude"]) == (
        position.latitude, position.longitude)
