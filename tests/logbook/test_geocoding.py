"""Addresses: named places offline, and a local server that speaks Nominatim's protocol."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from logbook.geocoding import configured_geocoder, geocode_pending_trips
from logbook.models import AddressCache, Interface, NamedPlace, PlaceKind, Trip
from logbook.services import verify_chain
from tests.logbook.support import DEPOT, Track, feed_live

pytestmark = pytest.mark.django_db


class FakeNominatim(BaseHTTPRequestHandler):
    """Answers GET /reverse?lat=..&lon=..&format=json like Nominatim does."""

    requests: list[dict] = []
    down = False

    def do_GET(self):
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        type(self).requests.append({"path": url.path, **query})
        if self.down or url.path != "/reverse":
            self.send_response(503)
            self.end_headers()
            return
        lat, lon = float(query["lat"]), float(query["lon"])
        number = round((lon - DEPOT[1]) * 10_000)
        body = {
            "place_id": 1, "lat": query["lat"], "lon": query["lon"],
            "display_name": f"{number}, Karl-Marx-Allee, Friedrichshain, Berlin, 10243, "
                            "Deutschland",
            "address": {"house_number": str(number), "road": "Karl-Marx-Allee",
                        "suburb": "Friedrichshain", "city": "Berlin", "postcode": "10243",
                        "country": "Deutschland", "country_code": "de"},
            "boundingbox": [str(lat - 0.001), str(lat + 0.001), str(lon - 0.001),
                            str(lon + 0.001)],
        }
        payload = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def nominatim(settings):
    FakeNominatim.requests = []
    FakeNominatim.down = False
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeNominatim)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.GEOCODER_URL = f"http://127.0.0.1:{server.server_address[1]}"
    settings.GEOCODER_MIN_DELAY_S = 0.0
    yield FakeNominatim
    server.shutdown()
    server.server_close()


def drive(unit) -> list[Trip]:
    track = Track()
    track.emit(0.0)
    track.park(600).drive(3000).park(900).drive(2000, heading=0.0).park(900)
    feed_live(unit, track.fixes)
    return list(Trip.objects.filter(vehicle=unit.vehicle).order_by("start_time"))


def test_named_places_give_addresses_offline(acme, acme_unit, settings):
    settings.GEOCODER_URL = ""
    customer = Track().park(0).drive(3000).position()
    NamedPlace.objects.create(organisation=acme, name="Depot Nord", kind=PlaceKind.DEPOT,
                              latitude=DEPOT[0] + 0.0005, longitude=DEPOT[1],  # 56 m off
                              radius_m=150, address="Industriestr. 5, 13403 Berlin")
    NamedPlace.objects.create(organisation=acme, name="Schulz GmbH", kind=PlaceKind.CUSTOMER,
                              latitude=customer[0], longitude=customer[1], radius_m=100)
    NamedPlace.objects.create(organisation=acme, name="Far away", latitude=DEPOT[0] + 0.01,
                              longitude=DEPOT[1], radius_m=100)
    assert configured_geocoder() is None
    first, second = drive(acme_unit)
    assert first.start_address == "Depot Nord, Industriestr. 5, 13403 Berlin"
    assert first.end_address == "Schulz GmbH" and first.end_place.name == "Schulz GmbH"
    assert second.start_address == "Schulz GmbH"
    assert second.end_address == ""  # no place there, and no geocoder: left empty
    assert geocode_pending_trips() == 0
    assert not Trip.objects.filter(addresses_pending=True).exists()


def test_local_nominatim_fills_addresses_after_the_trip_is_stored(acme, acme_unit, nominatim):
    NamedPlace.objects.create(organisation=acme, name="Depot", kind=PlaceKind.DEPOT,
                              latitude=DEPOT[0], longitude=DEPOT[1])
    first, second = drive(acme_unit)
    # Derivation never waits for the network: the addresses come afterwards.
    assert nominatim.requests == []
    assert first.addresses_pending and first.end_address == ""
    assert first.start_address == "Depot"

    assert geocode_pending_trips() == 2
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.end_address.startswith("Karl-Marx-Allee ")
    assert first.end_address.endswith(", 10243 Berlin")
    assert second.start_address == first.end_address
    assert len(nominatim.requests) == 3  # one per spot (to ~11 m): the depot is a place
    request = nominatim.requests[0]
    assert request["path"] == "/reverse" and request["format"] == "json"
    assert request["accept-language"] == "de"
    assert AddressCache.objects.count() == 3
    # Asked again for a spot it knows (within the rounding), the cache answers.
    again = configured_geocoder().address(first.end_latitude + 0.00001, first.end_longitude)
    assert again == first.end_address and len(nominatim.requests) == 3
    revision = first.revisions.get(field="end_address")
    assert (revision.old_value, revision.interface) == ("", Interface.GEOCODER)
    assert not first.addresses_pending
    assert verify_chain(acme_unit.vehicle_id).ok


def test_geocoder_down_leaves_addresses_pending(acme, acme_unit, nominatim):
    nominatim.down = True
    first, _ = drive(acme_unit)
    assert geocode_pending_trips() == 0
    first.refresh_from_db()
    assert first.addresses_pending and first.end_address == ""
    nominatim.down = False
    assert geocode_pending_trips() == 2
