"""``manage.py simulate`` against real listeners (running in a thread of the test process,
so the command and the listeners share the test database)."""

from __future__ import annotations

import asyncio
import re
import threading
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from telematics.ingest.runner import start_ingest
from telematics.simulator.load import UNIT_PROTOCOLS


@pytest.fixture
def listeners(transactional_db, settings):
    """The unit listeners on free ports, served by an event loop in a thread."""
    settings.INGEST_BATCH_WAIT_MS = 5
    protocols = (*UNIT_PROTOCOLS, "coap")
    loop = asyncio.new_event_loop()
    started: dict = {}
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            started["service"] = loop.run_until_complete(start_ingest(
                protocols, host="127.0.0.1", ports=dict.fromkeys(protocols, 0), mqtt_url=""))
        finally:
            ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(30) and "service" in started, "the listeners did not start"
    service = started["service"]
    yield ",".join(f"{name}={service.ports[name]}" for name in protocols)
    asyncio.run_coroutine_threadsafe(service.stop(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def simulate(*arguments: str) -> str:
    out = StringIO()
    call_command("simulate", *arguments, stdout=out)
    return out.getvalue()


def test_a_mixed_fleet_is_acknowledged_and_stored(listeners):
    text = simulate("--protocol", "mixed", "--units", "8", "--first-unit", "920000",
                    "--ports", listeners, "--duration", "2", "--register", "--count-stored",
                    "--can")
    assert "Registered 8 units (0 already were)." in text
    assert "units connected" in text and "per protocol:" in text
    for name in ("teltonika", "gt06", "osmand"):
        assert f"\n  {name:<9} 2/2 connected, 0 refused, 0 lost; acked 4 of 4 records" in text
        assert f"stored {name:<9} 4 of 4 acked" in text
    assert "\n  nmea      2/2 connected, 0 refused, 0 lost; 4 records written" in text
    assert "no acknowledgement in NMEA over TCP" in text
    assert "stored nmea      4 of 4 written (no acks in NMEA)" in text


def test_a_gt06_backlog_through_the_command(listeners):
    text = simulate("--protocol", "gt06", "--units", "2", "--first-unit", "920100",
                    "--ports", listeners, "--mode", "backlog", "--packets", "2",
                    "--records-per-packet", "5", "--register", "--count-stored")
    assert "mode backlog, gt06: 2/2 units connected" in text
    assert "records acked 20 of 20 sent, in 4 packets" in text
    assert "stored gt06      20 of 20 acked" in text


def test_units_beside_a_flood(listeners):
    text = simulate("--protocol", "mixed", "--units", "8", "--first-unit", "920400",
                    "--ports", listeners, "--duration", "3", "--register", "--count-stored",
                    "--flood", "40")
    assert "Flooding every port with 40 junk connections a second." in text
    assert "mode live, mixed: 8/8 units connected" in text
    assert "records acked 18 of 18 sent" in text and "stored nmea      6 of 6 written" in text
    flood = re.search(r"flood: ([\d,]+) junk connections \(([\d,]+) cut by the listeners, "
                      r"0 not accepted, 100 held half-open\), ([\d,]+) junk datagrams", text)
    assert flood, text
    assert int(flood[1].replace(",", "")) >= 100 + 40  # half-open ones, and 40 a second


def test_unregistered_units_fail_the_run_with_a_hint(listeners):
    out = StringIO()
    with pytest.raises(CommandError, match="Not every unit connected"):
        call_command("simulate", "--protocol", "osmand", "--units", "2", "--first-unit",
                     "920200", "--ports", listeners, "--duration", "1", stdout=out)
    assert "0/2 units connected" in out.getvalue() and "(2 refused, 0 lost)" in out.getvalue()
    assert "Refused units are not registered: add --register." in out.getvalue()


@pytest.mark.parametrize(("arguments", "message"), [
    (["--protocol", "mixed", "--port", "5027"], "use --ports for a mixed fleet"),
    (["--ports", "gt06:5023"], "'gt06:5023' is not <protocol>=<port>"),
    (["--ports", "mqtt=1883"], "'mqtt=1883' is not <protocol>=<port>"),
    (["--protocol", "nmea", "--can"], "only Teltonika units report CAN"),
    (["--protocol", "gt06", "--rate", "2"], "whole seconds: at most 1 record a second"),
    (["--units", "0"], "--units must be at least 1"),
    (["--first-unit", "999999", "--units", "2"], "numbered 0-999999"),
])
def test_bad_arguments_get_a_clear_message(arguments, message, db):
    with pytest.raises(CommandError, match=message):
        simulate(*arguments)
