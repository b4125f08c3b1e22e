"""Alerts through the real ingest: a Teltonika unit over TCP drives into and out of a
geofence, speeds, idles and runs low on fuel; a silent unit goes offline; a DM1 report
opens a fault. Each becomes Event rows, a live ``events.new`` message and e-mails."""

from __future__ import annotations

import asyncio
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from fleet.live import organisation_group
from telematics.alerts.engine import EVENT_TYPES
from telematics.ingest.runner import start_ingest
from telematics.models import AlertRule, Device, Event, Geofence, VehicleAlertState
from telematics.simulator.encoders import fix_at, teltonika_avl, teltonika_login
from tests.support import IMEI, db

M = 111_195.0  # metres per degree of latitude
# A square of about 200 m x 200 m; the drive goes south to north along lon 13.4015.
DEPOT = {"type": "Polygon", "coordinates": [[
    [13.400, 52.520], [13.403, 52.520], [13.403, 52.5218], [13.400, 52.5218], [13.400, 52.520],
]]}


def t0() -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)


async def send(port: int, fixes: list, io: dict | None = None) -> None:
    """What the unit does: log in, send the records (a few per packet), read each ack."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(teltonika_login(IMEI))
        assert await asyncio.wait_for(reader.readexactly(1), 5) == b"\x01"
        for start in range(0, len(fixes), 4):
            chunk = fixes[start:start + 4]
            writer.write(teltonika_avl(chunk, io=io))
            await asyncio.wait_for(reader.readexactly(4), 5)
    finally:
        writer.close()


async def settle(service) -> None:
    assert await sync_to_async(service.pipeline.alert_worker.wait_idle)(10)


def drive(start: datetime, lat_from: float, lat_to: float, step_m: float = 10.0,
          speed_kmh: float = 30.0, **fields) -> list:
    steps = round(abs(lat_to - lat_from) * M / step_m)
    sign = 1 if lat_to > lat_from else -1
    return [fix_at(lat_from + sign * i * step_m / M, 13.4015, start + timedelta(seconds=i),
                   speed_kmh=speed_kmh, **fields) for i in range(steps + 1)]


def alerts_of(vehicle_id: int):
    """The vehicle's events of the kinds alerts raise (the logbook adds trip events)."""
    return Event.objects.filter(vehicle_id=vehicle_id, type__in=list(EVENT_TYPES))


async def kinds(vehicle_id: int, *types: str) -> list[str]:
    def read():
        events = alerts_of(vehicle_id).order_by("time", "id")
        if types:
            events = events.filter(type__in=types)
        return list(events.values_list("type", flat=True))
    return await db(read)


@pytest.fixture
def fast_checks(settings):
    settings.ALERTS_CHECK_S = 0.2


async def test_driving_through_a_geofence_gives_one_enter_one_exit(ingest, fleet, mailoutbox):
    acme, vehicle_id = fleet["acme"], fleet["teltonika"].vehicle_id

    def setup():
        depot = Geofence.objects.create(organisation=acme, name="Depot", geometry=DEPOT)
        rule = AlertRule.objects.create(organisation=acme, name="Depot watch",
                                        event_types=["geofence_enter", "geofence_exit"],
                                        recipients=["yard@example.com"])
        rule.geofences.add(depot)
        AlertRule.objects.create(organisation=acme, name="Everything",
                                 event_types=["geofence_enter"],
                                 recipients=["boss@example.com", "ops@example.com"])
        other = Geofence.objects.create(organisation=acme, name="Elsewhere", geometry={
            "type": "Point", "coordinates": [11.5, 48.1]}, radius_m=100)
        quiet = AlertRule.objects.create(organisation=acme, name="Elsewhere only",
                                         event_types=["geofence_enter"],
                                         recipients=["nobody@example.com"])
        quiet.geofences.add(other)
        AlertRule.objects.create(organisation=acme, name="Another vehicle",
                                 event_types=["geofence_enter"],
                                 recipients=["nobody@example.com"]).vehicles.add(
            fleet["gt06"].vehicle)
        return depot

    depot = await db(setup)
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(organisation_group(acme.pk), channel)

    start = t0()
    # Outside, into the square and through it, 10 m a fix, sent 4 fixes a packet.
    await send(ingest.ports["teltonika"], drive(start, 52.5190, 52.5240))
    await settle(ingest)
    assert await kinds(vehicle_id) == ["geofence_enter", "geofence_exit"]
    enter, leave = await db(lambda: list(alerts_of(vehicle_id).order_by("time")))
    assert enter.attributes["geofence"] == depot.pk
    assert enter.attributes["geofence_name"] == "Depot"
    assert 52.520 < enter.attributes["latitude"] < 52.5205  # 2 fixes in, or 25 m in
    assert leave.attributes["latitude"] > 52.5218 + 25 / M
    assert leave.attributes["inside_s"] > 0
    # (The logbook's trip events, written by its own thread, go out in a later round.)
    assert await db(lambda: alerts_of(vehicle_id).filter(dispatched=False).count()) == 0

    # Published live to the organisation, in one or more messages.
    published = []
    while len(published) < 2:
        message = await asyncio.wait_for(layer.receive(channel), 5)
        if message["type"] == "events.new":
            published += [e for e in message["events"] if e["type"] in EVENT_TYPES]
    assert [e["type"] for e in published] == ["geofence_enter", "geofence_exit"]
    assert published[0]["summary"] == "Van 7 entered Depot"
    assert published[0]["vehicle"] == vehicle_id
    await layer.group_discard(organisation_group(acme.pk), channel)

    # E-mail per rule: the depot rule (enter + exit, one message each round or both in
    # one), the catch-all (enter only); never the rules for elsewhere or another vehicle.
    to = sorted(tuple(m.to) for m in mailoutbox)
    assert ("nobody@example.com",) not in to
    assert ("boss@example.com", "ops@example.com") in to
    yard = [m for m in mailoutbox if m.to == ["yard@example.com"]]
    assert "entered Depot" in "".join(m.body for m in yard)
    assert "left Depot" in "".join(m.body for m in yard)
    boss = next(m for m in mailoutbox if "boss@example.com" in m.to)
    assert boss.subject == "[Fleetbook] Van 7 entered Depot"
    assert "left Depot" not in boss.body


async def test_jitter_at_the_boundary_and_a_restart_fire_nothing_twice(ingest, fleet):
    acme, vehicle_id = fleet["acme"], fleet["teltonika"].vehicle_id
    await db(lambda: Geofence.objects.create(organisation=acme, name="Depot", geometry=DEPOT))
    start = t0()
    # Parked across the northern edge, fixes scattering 20 m either side.
    edge = 52.5218
    jitter = [fix_at(edge + ((-1) ** i) * (20 if i % 3 else 8) / M, 13.4015,
                     start + timedelta(seconds=10 * i)) for i in range(40)]
    parked = fix_at(52.5210, 13.4015, start - timedelta(seconds=10))
    await send(ingest.ports["teltonika"], [parked, *jitter])
    await settle(ingest)
    assert await kinds(vehicle_id) == []  # first fix inside: state only, no event
    state = await db(lambda: VehicleAlertState.objects.get(vehicle_id=vehicle_id))
    assert state.state["fences"]

    # A restarted ingest knows the vehicle is inside: more fixes inside fire nothing,
    # driving out fires one exit.
    await ingest.stop()
    again = await start_ingest(("teltonika",), host="127.0.0.1", ports={"teltonika": 0},
                               mqtt_url="")
    try:
        later = start + timedelta(minutes=10)
        await send(again.ports["teltonika"], [fix_at(52.5210, 13.4015, later)])
        await settle(again)
        assert await kinds(vehicle_id) == []
        await send(again.ports["teltonika"],
                   drive(later + timedelta(seconds=5), 52.5210, 52.5235))
        await settle(again)
        assert await kinds(vehicle_id) == ["geofence_exit"]
    finally:
        await again.stop()
        ingest.stop = _noop  # already stopped


async def _noop():
    return None


async def test_overspeed_for_the_minimum_duration(ingest, fleet, mailoutbox):
    acme, vehicle_id = fleet["acme"], fleet["teltonika"].vehicle_id
    await db(lambda: AlertRule.objects.create(
        organisation=acme, name="Highway", event_types=["overspeed"], overspeed_kmh=80,
        overspeed_min_s=20, recipients=["safety@example.com"]))
    start = t0()
    fixes = [fix_at(52.0 + i * 0.0003, 13.0, start + timedelta(seconds=i), speed_kmh=s)
             for i, s in enumerate([70, 95, 98, 75, 90, 100, 60])]  # short bursts: too short
    fixes += [fix_at(52.01 + i * 0.0003, 13.0, start + timedelta(seconds=60 + 5 * i),
                     speed_kmh=110 + i) for i in range(8)]  # 35 s over 80 km/h
    await send(ingest.ports["teltonika"], fixes)
    await settle(ingest)
    events = await db(lambda: list(alerts_of(vehicle_id)))
    assert [e.type for e in events] == ["overspeed"]
    assert events[0].time == start + timedelta(seconds=80)
    assert events[0].attributes["limit_kmh"] == 80
    assert events[0].attributes["max_speed_kmh"] == 114
    assert [m.to for m in mailoutbox] == [["safety@example.com"]]
    assert "Van 7 at 114 km/h (limit 80 km/h)" in mailoutbox[0].subject


async def test_long_idling(ingest, fleet):
    acme, vehicle_id = fleet["acme"], fleet["teltonika"].vehicle_id
    await db(lambda: AlertRule.objects.create(organisation=acme, name="Idle",
                                              event_types=["idle"], idle_minutes=2))
    start = t0()
    standing = [fix_at(52.0, 13.0, start + timedelta(seconds=20 * i), speed_kmh=0.0,
                       ignition=True) for i in range(10)]  # 3 minutes, engine running
    await send(ingest.ports["teltonika"], standing)
    await settle(ingest)
    events = await db(lambda: list(alerts_of(vehicle_id)))
    assert [e.type for e in events] == ["idle"]
    assert events[0].time == start + timedelta(minutes=2)


async def test_low_fuel_from_a_teltonika_io_signal(ingest, fleet, mailoutbox):
    acme, vehicle_id = fleet["acme"], fleet["teltonika"].vehicle_id
    await db(lambda: AlertRule.objects.create(
        organisation=acme, name="Fuel", event_types=["low_fuel"], low_fuel_percent=20,
        recipients=["fuel@example.com"]))
    start = t0()
    # IO 89: fuel level in % (LVCAN), as in tests/vehicle_data.
    await send(ingest.ports["teltonika"], [fix_at(52.0, 13.0, start)], io={89: 45})
    await settle(ingest)
    assert await kinds(vehicle_id) == []
    await send(ingest.ports["teltonika"], [fix_at(52.0, 13.0, start + timedelta(minutes=1))],
               io={89: 15})
    await settle(ingest)
    await send(ingest.ports["teltonika"], [fix_at(52.0, 13.0, start + timedelta(minutes=2))],
               io={89: 14})
    await settle(ingest)
    events = await db(lambda: list(alerts_of(vehicle_id)))
    assert [e.type for e in events] == ["low_fuel"]
    assert events[0].attributes["fuel_percent"] == 15.0
    assert [m.to for m in mailoutbox] == [["fuel@example.com"]]
    assert "fuel at 15 %" in mailoutbox[0].subject


async def test_unit_offline(fast_checks, ingest, fleet, mailoutbox):
    acme, device = fleet["acme"], fleet["teltonika"]

    def setup():
        Device.objects.filter(pk=device.pk).update(
            last_seen=datetime.now(UTC) - timedelta(minutes=5))
        AlertRule.objects.create(organisation=acme, name="Silent", event_types=["offline"],
                                 offline_minutes=3, recipients=["noc@example.com"])

    await db(setup)
    for _ in range(100):
        if await kinds(device.vehicle_id):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # several more checks: still one event
    events = await db(lambda: list(alerts_of(device.vehicle_id)))
    assert [e.type for e in events] == ["offline"]
    assert events[0].attributes["minutes"] >= 5
    # Other vehicles never reported: no event for them.
    assert await db(lambda: Event.objects.count()) == 1
    for _ in range(50):
        if mailoutbox:
            break
        await asyncio.sleep(0.05)
    assert [m.to for m in mailoutbox] == [["noc@example.com"]]
    assert "silent for 5 min" in mailoutbox[0].subject


def post(url: str, body: bytes) -> int:
    request = urllib.request.Request(url, data=body, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status


async def test_fault_opened_events_are_dispatched_and_mailed(ingest, fleet, mailoutbox):
    acme, vehicle = fleet["acme"], fleet["mqtt"].vehicle
    await db(lambda: AlertRule.objects.create(
        organisation=acme, name="Faults", event_types=["fault_opened"],
        recipients=["workshop@example.com"]))
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(organisation_group(acme.pk), channel)
    when = t0()
    dm1 = f"({when.timestamp():.6f}) can0 18FECA00#04FF6E0000037FFF"  # SPN 110 FMI 0
    status = await sync_to_async(post)(
        f"http://127.0.0.1:{ingest.ports['osmand']}/fleet/mqtt-5/can", dm1.encode())
    assert status == 200
    await settle(ingest)
    event = await db(lambda: Event.objects.get(vehicle=vehicle))
    assert (event.type, event.dispatched) == ("fault_opened", True)
    message = await asyncio.wait_for(layer.receive(channel), 5)
    assert message["type"] == "events.new"
    assert message["events"][0]["summary"].startswith("Van 5: fault SPN110-FMI0")
    assert [m.to for m in mailoutbox] == [["workshop@example.com"]]
    await layer.group_discard(organisation_group(acme.pk), channel)
