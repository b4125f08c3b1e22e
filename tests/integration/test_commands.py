"""Commands to units: the API (admins only), a Teltonika unit over real TCP receiving a
Codec 12 command and answering it, a command queued until the unit connects, MQTT."""

from __future__ import annotations

import asyncio
import os
import struct
import uuid
from urllib.parse import urlparse

import aiomqtt
import pytest

from fleet.models import UnitCommand
from fleet.unit_commands import encode, link_responses
from telematics.ingest.runner import start_ingest
from telematics.models import CommandResponse
from telematics.protocols import gt06, teltonika
from telematics.services import register_unit
from telematics.simulator.encoders import _gt06_frame, gt06_login
from tests.api.conftest import client_for
from tests.integration.conftest import TeltonikaUnit, wait_for
from tests.support import db

# The Teltonika wiki's own example of the getinfo command.
GETINFO = bytes.fromhex("000000000000000F0C010500000007676574696E666F0100004312")
INFO = ("INI:2019/7/22 7:22 RTC:2019/7/22 7:53 RST:2 ERR:1 SR:0 BR:0 CF:0 FG:0 FL:0 "
        "TU:0/0 UT:0 SMS:0 NOGPS:0:30 GPS:1 SAT:0 RS:3 RF:65 SF:1 MD:0")


def commands_url(device) -> str:
    return f"/api/v1/devices/{device.pk}/commands/"


# --- the API --------------------------------------------------------------------------


def test_admin_queues_a_command_and_who_sent_it_is_recorded(fleets):
    r = fleets.client("admin").post(commands_url(fleets.van_unit), {"text": " getinfo "},
                                    format="json")
    assert r.status_code == 201, r.json()
    command = r.json()
    assert command["text"] == "getinfo" and command["status"] == "queued"
    assert command["requested_by"] == "alice" and command["device"] == fleets.van_unit.pk
    assert command["response"] == "" and command["sent_at"] is None
    row = UnitCommand.objects.get()
    assert row.sent_by == fleets.admin and row.sent_by_api_key is None
    r = fleets.client("api_key").post(commands_url(fleets.van_unit), {"text": "setdigout 1"},
                                      format="json")
    assert r.status_code == 201 and r.json()["requested_by"].startswith("api-key:fbk_")
    listed = fleets.client("admin").get(commands_url(fleets.van_unit)).json()["results"]
    assert [c["text"] for c in listed] == ["setdigout 1", "getinfo"]
    one = fleets.client("admin").get(f"{commands_url(fleets.van_unit)}{row.pk}/")
    assert one.status_code == 200 and one.json()["text"] == "getinfo"


@pytest.mark.parametrize("role", ["dispatcher", "driver"])
def test_only_admins_send_commands(fleets, role):
    client = fleets.client(role)
    assert client.post(commands_url(fleets.van_unit), {"text": "getinfo"},
                       format="json").status_code == 403
    assert client.get(commands_url(fleets.van_unit)).status_code == 403
    assert not UnitCommand.objects.exists()


@pytest.mark.parametrize("role", ["admin", "api_key"])
def test_another_organisations_unit_is_not_found(fleets, role):
    client = fleets.client(role)
    url = commands_url(fleets.truck_unit)
    assert client.post(url, {"text": "Relay,1#"}, format="json").status_code == 404
    assert client.post(url, {}, format="json").status_code == 404  # 404 before 400
    assert client.get(url).status_code == 404
    mine = UnitCommand.objects.create(device=fleets.truck_unit, text="x", requested_by="gus")
    assert client.get(f"{url}{mine.pk}/").status_code == 404
    assert client.get(f"{commands_url(fleets.van_unit)}{mine.pk}/").status_code == 404
    assert UnitCommand.objects.count() == 1


def test_commands_are_validated(fleets, acme):
    client = fleets.client("admin")
    url = commands_url(fleets.van_unit)
    assert "blank" in str(client.post(url, {"text": "  "}, format="json").json()["text"])
    r = client.post(url, {"text": "getinfo ü"}, format="json")
    assert r.status_code == 400 and "not ASCII" in str(r.json()["text"])
    r = client.post(url, {"text": "x" * 501}, format="json")
    assert r.status_code == 400
    phone = register_unit("phone-21", "osmand", acme, vehicle_name=fleets.car.name)
    r = client.post(commands_url(phone), {"text": "getinfo"}, format="json")
    assert r.status_code == 400 and "take no commands" in str(r.json()["text"])
    assert client.put(url, {"text": "getinfo"}, format="json").status_code == 405
    assert not UnitCommand.objects.exists()


def test_encoding_per_protocol():
    assert encode("teltonika", 7, "getinfo") == GETINFO
    assert encode("gt06", 0x10001, "Relay,1#") == gt06.encode_command("Relay,1#", 1, 0x10001)
    assert encode("mqtt", 1, "reboot") == b"reboot"
    with pytest.raises(ValueError, match="take no commands"):
        encode("nmea", 1, "x")


def test_a_response_is_linked_to_the_oldest_sent_command(fleets):
    from django.utils import timezone

    now = timezone.now()
    older = UnitCommand.objects.create(device=fleets.van_unit, text="getinfo", status="sent",
                                       sent_at=now, requested_by="alice")
    newer = UnitCommand.objects.create(device=fleets.van_unit, text="getio", status="sent",
                                       sent_at=now, requested_by="alice")
    CommandResponse.objects.create(device=fleets.van_unit, text=INFO, received_time=now)
    assert link_responses() == 1
    older.refresh_from_db()
    newer.refresh_from_db()
    assert (older.status, older.response_text) == ("answered", INFO)
    assert newer.status == "sent"


def test_an_unanswered_command_fails_after_the_timeout(fleets, settings):
    from datetime import timedelta

    from django.utils import timezone

    settings.COMMAND_ANSWER_TIMEOUT_S = 60
    command = UnitCommand.objects.create(
        device=fleets.van_unit, text="getinfo", status="sent",
        sent_at=timezone.now() - timedelta(minutes=2), requested_by="alice")
    link_responses()
    command.refresh_from_db()
    assert command.status == "failed" and command.error == "No answer within 60 s"


# --- through the real ingest ----------------------------------------------------------

ingest_test = pytest.mark.django_db(transaction=True)


async def post_command(fleets, device, text: str) -> dict:
    response = await db(lambda: client_for(fleets.admin).post(
        commands_url(device), {"text": text}, format="json"))
    assert response.status_code == 201, response.json()
    return response.json()


async def get_command(fleets, device, command_id: int) -> dict:
    response = await db(lambda: client_for(fleets.admin).get(
        f"{commands_url(device)}{command_id}/"))
    return response.json()


@ingest_test
async def test_connected_teltonika_unit_gets_getinfo_and_its_answer_is_shown(
        dispatch_ingest, fleets):
    unit = await TeltonikaUnit.connect(dispatch_ingest.ports["teltonika"],
                                       fleets.van_unit.identifier)
    command = await post_command(fleets, fleets.van_unit, "getinfo")
    assert await unit.read_packet() == GETINFO  # over the open connection, within a second
    sent = await get_command(fleets, fleets.van_unit, command["id"])
    assert sent["status"] == "sent" and sent["sent_at"] is not None
    await unit.answer(INFO)
    answered = await wait_for(
        lambda: UnitCommand.objects.get(pk=command["id"]), lambda c: c.status == "answered")
    assert answered.response_text == INFO
    response = await db(lambda: CommandResponse.objects.get(device=fleets.van_unit))
    assert answered.response_id == response.pk
    shown = await get_command(fleets, fleets.van_unit, command["id"])
    assert (shown["status"], shown["response"], shown["requested_by"]) == (
        "answered", INFO, "alice")
    assert shown["answered_at"] is not None
    unit.close()


@ingest_test
async def test_a_command_waits_for_the_unit_to_connect(dispatch_ingest, fleets):
    command = await post_command(fleets, fleets.van_unit, "setdigout 1")
    await asyncio.sleep(1.5)  # the dispatcher has looked at least once: nobody to send to
    waiting = await get_command(fleets, fleets.van_unit, command["id"])
    assert waiting["status"] == "queued"
    unit = await TeltonikaUnit.connect(dispatch_ingest.ports["teltonika"],
                                       fleets.van_unit.identifier)
    started = asyncio.get_running_loop().time()
    assert await unit.read_packet(timeout=3) == teltonika.encode_command("setdigout 1")
    assert asyncio.get_running_loop().time() - started < 1.0  # on login, not at the next poll
    await unit.answer("DOUT1:1 DOUT2:IGNORED")
    answered = await wait_for(
        lambda: UnitCommand.objects.get(pk=command["id"]), lambda c: c.status == "answered")
    assert answered.response_text == "DOUT1:1 DOUT2:IGNORED"
    unit.close()


@ingest_test
async def test_a_unit_that_hangs_up_keeps_its_command_queued(dispatch_ingest, fleets):
    unit = await TeltonikaUnit.connect(dispatch_ingest.ports["teltonika"],
                                       fleets.van_unit.identifier)
    unit.close()
    await asyncio.sleep(0.2)
    command = await post_command(fleets, fleets.van_unit, "getver")
    await asyncio.sleep(1.5)
    assert (await get_command(fleets, fleets.van_unit, command["id"]))["status"] == "queued"
    again = await TeltonikaUnit.connect(dispatch_ingest.ports["teltonika"],
                                        fleets.van_unit.identifier)
    assert await again.read_packet() == teltonika.encode_command("getver")
    again.close()


@ingest_test
async def test_gt06_unit_gets_an_online_command_and_answers(dispatch_ingest, fleets):
    """Globex's GT06 unit, commanded by Globex's admin: the 0x80 packet carries the
    command's id as server flag, and the unit's 0x15 answer is linked."""
    response = await db(lambda: client_for(fleets.globex_admin).post(
        commands_url(fleets.truck_unit), {"text": "Relay,1#"}, format="json"))
    command_id = response.json()["id"]
    reader, writer = await asyncio.open_connection("127.0.0.1", dispatch_ingest.ports["gt06"])
    writer.write(gt06_login(fleets.truck_unit.identifier, 1))
    assert (await asyncio.wait_for(reader.readexactly(10), 5))[3] == 0x01  # login answered
    expected = gt06.encode_command("Relay,1#", command_id & 0xFFFF, command_id)
    assert await asyncio.wait_for(reader.readexactly(len(expected)), 5) == expected
    text = b"Relay on: OK"
    writer.write(_gt06_frame(0x15, bytes([4 + len(text)]) + struct.pack(">I", command_id)
                             + text + b"\x00\x02", 2))
    answered = await wait_for(lambda: UnitCommand.objects.get(pk=command_id),
                              lambda c: c.status == "answered")
    assert answered.response_text == "Relay on: OK"
    assert answered.requested_by == "gus"
    writer.close()


MQTT_URL = os.environ.get("MQTT_URL", "")


@ingest_test
@pytest.mark.skipif(not MQTT_URL, reason="MQTT_URL is not set (CI sets it)")
async def test_mqtt_unit_gets_its_command_published_and_answers(fleets):
    device = await db(lambda: register_unit("mqtt-cmd-1", "mqtt", fleets.acme,
                                            vehicle_name=fleets.car.name))
    root = f"fleet{uuid.uuid4().hex[:8]}"
    service = await start_ingest(("mqtt",), host="127.0.0.1", mqtt_url=MQTT_URL,
                                 mqtt_client_id=f"test-{root}", mqtt_topic_root=root)
    url = urlparse(MQTT_URL)
    try:
        await asyncio.wait_for(service.mqtt.connected.wait(), 10)
        async with aiomqtt.Client(url.hostname, url.port or 1883,
                                  identifier=f"unit-{root}") as unit:
            await unit.subscribe(f"{root}/mqtt-cmd-1/command", qos=1)
            command = await post_command(fleets, device, "reboot now")
            message = await asyncio.wait_for(anext(aiter(unit.messages)), 5)
            assert str(message.topic) == f"{root}/mqtt-cmd-1/command"
            assert message.payload == b"reboot now"
            await unit.publish(f"{root}/mqtt-cmd-1/response", b"Rebooting in 5 s", qos=1)
        answered = await wait_for(
            lambda: UnitCommand.objects.get(pk=command["id"]),
            lambda c: c.status == "answered")
        assert answered.response_text == "Rebooting in 5 s"
    finally:
        await service.stop()
