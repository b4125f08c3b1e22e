"""A vehicle's positions (JSON, CSV, GPX, cursor pages) and the fleet-wide feed."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import gpxpy
import pytest
from django.utils import timezone

from telematics.models import Position
from tests.api.conftest import T0, add_positions


def positions_url(fleets, **params) -> str:
    params = {"from": "2026-03-02T07:00:00Z", "to": "2026-03-02T09:00:00Z", **params}
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"/api/v1/vehicles/{fleets.van.pk}/positions/?{query}"


def follow(client, url: str) -> list[dict]:
    rows = []
    while url:
        body = client.get(url).json()
        rows += body["results"]
        url = body["next"]
    return rows


def test_positions_json(fleets):
    body = fleets.client("dispatcher").get(positions_url(fleets)).json()
    assert body["next"] is None and body["has_more"] is False
    rows = body["results"]
    assert len(rows) == 30
    first = rows[0]
    assert first["fix_time"] == "2026-03-02T08:00:00Z"
    assert first["server_time"] == "2026-03-02T08:00:01Z"
    assert first["latitude"] == 52.5 and first["altitude_m"] == 30.0
    assert first["speed_kmh"] == 0.0 and first["odometer_km"] == 1000.0
    assert first["vehicle"] == fleets.van.pk and first["device"] == fleets.van_unit.pk
    assert [r["fix_time"] for r in rows] == sorted(r["fix_time"] for r in rows)


def test_positions_window_is_half_open(fleets):
    url = positions_url(fleets, **{"from": "2026-03-02T08:00:10Z", "to": "2026-03-02T08:01:00Z"})
    rows = fleets.client("admin").get(url).json()["results"]
    assert [r["fix_time"] for r in rows] == [
        f"2026-03-02T08:00:{s:02}Z" for s in (10, 20, 30, 40, 50)
    ]


def test_positions_default_to_the_last_24_hours(fleets):
    add_positions(fleets.van_unit, timezone.now() - timedelta(hours=25), 1)
    add_positions(fleets.van_unit, timezone.now() - timedelta(hours=1), 2)
    body = fleets.client("admin").get(f"/api/v1/vehicles/{fleets.van.pk}/positions/").json()
    assert len(body["results"]) == 2


def test_cursor_pages_neither_skip_nor_repeat(fleets):
    client = fleets.client("admin")
    body = client.get(positions_url(fleets, page_size=7)).json()
    assert len(body["results"]) == 7 and body["has_more"]
    assert "from=2026-03-02T07%3A00%3A00Z" in body["next"]
    # A fix stored between two page requests, inside the window and after the cursor,
    # is found once; one before the cursor does not shift the pages.
    add_positions(fleets.van_unit, T0 + timedelta(seconds=295), 1)
    add_positions(fleets.van_unit, T0 - timedelta(seconds=5), 1)
    rows = body["results"] + follow(client, body["next"])
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == 31
    assert rows[-1]["fix_time"] == "2026-03-02T08:04:55Z"


def test_equal_fix_times_are_kept_apart_by_id(fleets, acme):
    from telematics.services import register_unit

    second = register_unit("356307042441014", "teltonika", acme, vehicle_name=fleets.van.name)
    add_positions(second, T0, 30)  # the same fix times from a second unit
    rows = follow(fleets.client("admin"), positions_url(fleets, page_size=4))
    assert len({r["id"] for r in rows}) == len(rows) == 60


def test_position_query_validation(fleets):
    client = fleets.client("admin")
    r = client.get(positions_url(fleets, **{"from": "2026-03-03T00:00:00Z"}))
    assert r.status_code == 400 and r.json() == {"from": ["Must be before `to`."]}
    r = client.get(positions_url(fleets, to="yesterday"))
    assert r.status_code == 400 and "Datetime has wrong format" in r.json()["to"][0]
    r = client.get(positions_url(fleets, cursor="bogus"))
    assert r.json() == {"cursor": ["Not a cursor this API returned."]}
    r = client.get(positions_url(fleets, page_size=0))
    assert r.json() == {"page_size": ["A whole number of at least 1."]}


def test_page_size_is_capped(fleets, settings):
    settings.API_POSITIONS_MAX_PAGE_SIZE = 10
    body = fleets.client("admin").get(positions_url(fleets, page_size=500)).json()
    assert len(body["results"]) == 10 and body["next"]


def test_positions_csv(fleets):
    for url, headers in (
        (positions_url(fleets, format="csv"), {}),
        (positions_url(fleets), {"HTTP_ACCEPT": "text/csv"}),
    ):
        r = fleets.client("admin").get(url, **headers)
        assert r.status_code == 200 and r["Content-Type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(r.content.decode())))
        assert len(rows) == 30
        assert rows[3]["fix_time"] == "2026-03-02T08:00:30Z"
        assert float(rows[3]["latitude"]) == pytest.approx(52.503)
        assert float(rows[3]["longitude"]) == pytest.approx(13.403)
        assert float(rows[3]["speed_kmh"]) == 3.0
        assert float(rows[3]["altitude_m"]) == 33.0
        assert rows[3]["ignition"] == "True"


def test_positions_csv_pages_link_header(fleets):
    r = fleets.client("admin").get(positions_url(fleets, format="csv", page_size=10))
    assert 'rel="next"' in r["Link"] and "format=csv" in r["Link"]


def test_positions_gpx(fleets):
    for url, headers in (
        (positions_url(fleets, format="gpx"), {}),
        (positions_url(fleets), {"HTTP_ACCEPT": "application/gpx+xml"}),
    ):
        r = fleets.client("admin").get(url, **headers)
        assert r.status_code == 200 and r["Content-Type"].startswith("application/gpx+xml")
        gpx = gpxpy.parse(r.content.decode())
        track = gpx.tracks[0]
        assert track.name == "Van 7"
        points = track.segments[0].points
        assert len(points) == 30
        assert (points[5].latitude, points[5].longitude) == pytest.approx((52.505, 13.405))
        assert points[5].elevation == 35.0
        assert points[5].time == datetime(2026, 3, 2, 8, 0, 50, tzinfo=UTC)
        assert (points[5].satellites, points[5].horizontal_dilution) == (9, 0.9)
        # Speed (m/s) and course in Garmin's TrackPointExtension, as GPX 1.1 has neither.
        speed, course = speed_and_course(points[5])
        assert speed * 3.6 == pytest.approx(5.0, abs=0.01) and course == 5.0


def speed_and_course(point) -> tuple[float | None, float | None]:
    values = {}
    for extension in point.extensions:
        assert extension.tag == f"{{{TPX}}}TrackPointExtension"
        for child in extension:
            values[child.tag.removeprefix(f"{{{TPX}}}")] = float(child.text)
    return values.get("speed"), values.get("course")


TPX = "http://www.garmin.com/xmlschemas/TrackPointExtension/v2"


def test_gpx_names_the_extension_and_leaves_out_what_a_fix_lacks(fleets):
    Position.objects.filter(device=fleets.van_unit, fix_time=T0).update(
        speed_kmh=None, course=None)
    Position.objects.filter(device=fleets.van_unit, fix_time=T0 + timedelta(seconds=10)).update(
        speed_kmh=36.0, course=None)
    r = fleets.client("admin").get(positions_url(fleets, format="gpx"))
    text = r.content.decode()
    assert f'xmlns:gpxtpx="{TPX}"' in text and "TrackPointExtensionv2.xsd" in text
    points = gpxpy.parse(text).tracks[0].segments[0].points
    assert points[0].extensions == []
    assert speed_and_course(points[1]) == (10.0, None)
    assert speed_and_course(points[2]) == (pytest.approx(2 / 3.6, abs=1e-3), 2.0)


def test_error_in_csv_is_still_a_400(fleets):
    r = fleets.client("admin").get(positions_url(fleets, format="csv", to="nope"))
    assert r.status_code == 400 and b"to," in r.content


def test_driver_reads_own_vehicles_positions_only(fleets):
    client = fleets.client("driver")
    assert client.get(positions_url(fleets)).status_code == 200
    assert client.get(f"/api/v1/vehicles/{fleets.car.pk}/positions/").status_code == 404


# --- the feed -------------------------------------------------------------------------


def test_feed_orders_by_server_time_and_includes_late_fixes(fleets, settings):
    settings.API_FEED_SETTLE_S = 0
    client = fleets.client("api_key")
    rows = follow_feed(client, "/api/v1/positions/feed/?page_size=8")
    assert len(rows) == 30
    # A late fix: recorded long ago, stored now. It comes after everything seen so far.
    late = add_positions(fleets.van_unit, T0 - timedelta(days=3), 1,
                         server_time=timezone.now() - timedelta(seconds=1))
    body = client.get(client.last_next).json()
    assert [r["id"] for r in body["results"]] == [late[0].pk]
    assert body["results"][0]["fix_time"] == "2026-02-27T08:00:00Z"


def follow_feed(client, url: str) -> list[dict]:
    rows = []
    while True:
        body = client.get(url).json()
        rows += body["results"]
        client.last_next = body["next"]
        assert body["next"]  # a feed always hands out a cursor to poll with
        url = body["next"]
        if not body["has_more"]:
            return rows


def test_feed_neither_skips_nor_repeats_while_positions_arrive(fleets, settings):
    settings.API_FEED_SETTLE_S = 0
    client = fleets.client("admin")
    seen: list[int] = []
    url = "/api/v1/positions/feed/?page_size=7"
    inserted = 0
    for round_ in range(12):
        body = client.get(url).json()
        seen += [r["id"] for r in body["results"]]
        url = body["next"]
        # Units keep reporting between two requests: present fixes and late ones.
        now = timezone.now()
        add_positions(fleets.van_unit, now - timedelta(hours=round_ + 1), 3,
                      server_time=now - timedelta(milliseconds=1))
        inserted += 3
    seen += [r["id"] for r in follow_feed(client, url)]
    expected = list(Position.objects.filter(device=fleets.van_unit)
                    .order_by("server_time", "id").values_list("id", flat=True))
    assert len(expected) == 30 + inserted
    assert seen == expected  # every row, once, in storage order


def test_feed_holds_back_rows_that_may_still_be_committing(fleets, settings):
    """A batch stored with an earlier server time but committed later is not skipped."""
    settings.API_FEED_SETTLE_S = 5
    now = timezone.now()
    client = fleets.client("admin")
    add_positions(fleets.van_unit, now, 1, server_time=now - timedelta(seconds=1))
    rows = follow_feed(client, "/api/v1/positions/feed/")
    assert len(rows) == 30  # the row stored a second ago is held back
    held_back_cursor = client.last_next
    # Meanwhile a slower batch commits a row with an even earlier server time.
    add_positions(fleets.van_unit, now + timedelta(seconds=1), 1,
                  server_time=now - timedelta(seconds=2))
    settings.API_FEED_SETTLE_S = 0  # as if the settle time had passed
    body = client.get(held_back_cursor).json()
    assert [r["server_time"] < rows[-1]["server_time"] for r in body["results"]] == [False] * 2
    assert len(body["results"]) == 2


def test_feed_since_and_bad_cursor(fleets, settings):
    client = fleets.client("admin")
    body = client.get("/api/v1/positions/feed/?since=2026-03-02T08:04:01Z").json()
    assert [r["server_time"] for r in body["results"]] == [
        "2026-03-02T08:04:01Z", "2026-03-02T08:04:11Z", "2026-03-02T08:04:21Z",
        "2026-03-02T08:04:31Z", "2026-03-02T08:04:41Z", "2026-03-02T08:04:51Z",
    ]
    assert "since" not in body["next"]
    assert client.get("/api/v1/positions/feed/?after=xyz").json() == {
        "after": ["Not a cursor this API returned."]}
    assert client.get("/api/v1/positions/feed/?since=nope").status_code == 400


def test_empty_feed_still_hands_out_a_cursor(fleets):
    body = fleets.client("admin").get("/api/v1/positions/feed/?since=2030-01-01T00:00:00Z").json()
    assert body["results"] == [] and body["next"] and not body["has_more"]


def test_driver_feed_has_only_their_vehicles(fleets, acme):
    from telematics.services import register_unit

    pool_unit = register_unit("356307042441015", "teltonika", acme, vehicle_name="Pool car")
    add_positions(pool_unit, T0, 3)
    rows = fleets.client("driver").get("/api/v1/positions/feed/").json()["results"]
    assert {r["vehicle"] for r in rows} == {fleets.van.pk}
    rows = fleets.client("dispatcher").get("/api/v1/positions/feed/").json()["results"]
    assert {r["vehicle"] for r in rows} == {fleets.van.pk, fleets.car.pk}
