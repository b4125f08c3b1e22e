"""The history pages, their JSON, and the downloads: read back, per role and organisation."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import gpxpy
import pytest
from django.utils import timezone
from openpyxl import load_workbook

from fleet.api.renderers import CSV_COLUMNS
from tests.history.conftest import SECRET, t

pytestmark = pytest.mark.django_db
DAY_QUERY = "from=2024-05-06&to=2024-05-06"
HIDDEN = (t("07:10:00"), t("12:00:00"))  # the dispatcher sees nothing strictly between


def replay_url(world, suffix: str = "", query: str = DAY_QUERY) -> str:
    return f"/vehicles/{world['van'].pk}/replay/{suffix}?{query}"


def report_query(world, kind: str, subject: str | None = None, **extra) -> str:
    params = {"type": kind, "subject": subject or f"vehicle:{world['van'].pk}",
              "start": "2024-05-06", "end": "2024-05-06", **extra}
    return "&".join(f"{k}={v}" for k, v in params.items())


def no_inline_script(html: str) -> bool:
    for tag in re.findall(r"<script\b[^>]*>", html):
        if "src=" not in tag and 'type="application/json"' not in tag:
            return False
    return True


def in_hidden_range(moment: datetime) -> bool:
    return HIDDEN[0] < moment < HIDDEN[1]


# --------------------------------------------------------------------------- replay


def test_replay_page(world, login):
    page = login("desk").get(replay_url(world))
    assert page.status_code == 200
    html = page.content.decode()
    assert no_inline_script(html)
    assert 'id="replay-map"' in html and "fleet/replay.js" in html
    assert f"/vehicles/{world['van'].pk}/replay/track/?from=2024-05-06T00%3A00" in html
    assert "format=gpx" in html and "format=csv" in html
    assert "Mon 2024-05-06" in html and "Europe/Berlin" in html
    assert 'type="range"' in html and 'id="replay-play"' in html


def test_replay_defaults_to_today_in_the_organisations_zone(world, login):
    client = login("desk")
    data = client.get(f"/vehicles/{world['van'].pk}/replay/track/").json()
    berlin = ZoneInfo("Europe/Berlin")
    midnight = datetime.combine(timezone.now().astimezone(berlin).date(), time(), berlin)
    assert data["from"] == midnight.timestamp() and data["to"] - data["from"] == 86400
    assert data["fixes"]["t"] == []


def test_replay_track_json_per_role(world, login):
    seen = login("desk").get(replay_url(world, "track/")).json()
    times = [datetime.fromtimestamp(x, UTC) for x in seen["fixes"]["t"]]
    assert times and not any(in_hidden_range(x) for x in times)
    assert seen["summary"]["private_trips_hidden"] == 1 and len(seen["runs"]) == 2
    assert SECRET not in str(seen)
    own = login("alice").get(replay_url(world, "track/")).json()
    assert any(in_hidden_range(datetime.fromtimestamp(x, UTC)) for x in own["fixes"]["t"])
    assert own["summary"]["distance_km"] == 25.0


def test_replay_exports_gpx_and_csv_without_the_private_trip(world, login):
    client = login("desk")
    response = client.get(replay_url(world, "export/", DAY_QUERY + "&format=csv"))
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == 'attachment; filename="van-7_2024-05-06T0000.csv"'
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert tuple(rows[0]) == CSV_COLUMNS
    times = [datetime.fromisoformat(r["fix_time"].replace("Z", "+00:00")) for r in rows]
    assert times == sorted(times) and not any(in_hidden_range(x) for x in times)
    assert times[0] == t("06:50:00") and times[-1] == t("13:00:00")
    track = client.get(replay_url(world, "track/")).json()
    assert len(rows) == track["summary"]["fixes"]
    assert rows[0]["odometer_km"] == "1000.0" and rows[0]["ignition"] == "True"

    response = client.get(replay_url(world, "export/", DAY_QUERY + "&format=gpx"))
    assert response["Content-Type"].startswith("application/gpx+xml")
    gpx = gpxpy.parse(response.content.decode())
    points = gpx.tracks[0].segments[0].points
    assert gpx.tracks[0].name == "Van 7" and len(points) == len(rows)
    assert not any(in_hidden_range(p.time) for p in points)

    own = list(csv.DictReader(io.StringIO(
        login("alice").get(replay_url(world, "export/", DAY_QUERY + "&format=csv"))
        .content.decode())))
    assert len(own) > len(rows)


def test_replay_rejects_a_bad_period(world, login):
    client = login("desk")
    assert client.get(replay_url(world, "track/", "from=yesterday")).status_code == 400
    assert client.get(replay_url(world, "export/", DAY_QUERY + "&format=kml")).status_code == 400
    long = "from=2024-05-01&to=2024-05-20"
    assert client.get(replay_url(world, "track/", long)).status_code == 400
    page = client.get(replay_url(world, "", long)).content.decode()
    assert "At most 7 days at a time" in page
    page = client.get(replay_url(world, "", "from=2024-05-06T08:00&to=2024-05-06T07:00"))
    assert "must end after it starts" in page.content.decode()


# --------------------------------------------------------------------------- charts


def test_charts_page_and_data(world, login):
    client = login("desk")
    page = client.get(f"/vehicles/{world['van'].pk}/charts/?{DAY_QUERY}")
    assert page.status_code == 200 and no_inline_script(page.content.decode())
    assert "uPlot.iife.min.js" in page.content.decode()
    data = client.get(f"/vehicles/{world['van'].pk}/charts/data/?{DAY_QUERY}").json()
    assert [s["key"] for s in data["series"]] == [
        "vehicle_speed", "fuel_level", "engine_speed", "coolant_temperature"]
    coolant = data["series"][3]
    assert coolant["unit"] == "°C" and coolant["points"] == 3
    assert [v for v in coolant["v"] if v is not None] == [70.0, 82.5, 79.0]
    assert data["time_zone"] == "Europe/Berlin"


# --------------------------------------------------------------------------- reports


def test_reports_page_defaults(world, login):
    page = login("desk").get("/reports/")
    assert page.status_code == 200
    html = page.content.decode()
    assert no_inline_script(html) and "Daily mileage" in html
    assert f'value="vehicle:{world["van"].pk}"' in html and "Alice" not in html
    assert 'value="driver:' in html and "report-chart-data" in html


def test_reports_page_table_and_chart(world, login):
    page = login("desk").get(f"/reports/?{report_query(world, 'trips')}").content.decode()
    assert "<table" in page and "Schulz GmbH" in page and SECRET not in page
    assert page.count("<tr>") >= 4  # header + 3 trips
    assert '<td class="num">25.0</td>' in page  # the total km
    assert 'id="report-chart-data" type="application/json"' in page
    own = login("alice").get(f"/reports/?{report_query(world, 'trips')}").content.decode()
    assert SECRET in own


def test_reports_page_shows_form_errors(world, login):
    page = login("desk").get(f"/reports/?{report_query(world, 'trips', end='2024-05-01')}")
    assert page.status_code == 200 and "must end after it starts" in page.content.decode()


def csv_rows(client, query: str) -> list[list[str]]:
    response = client.get(f"/reports/export/?{query}&format=csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(response.content.decode())))


def test_report_csv_read_back(world, login):
    client = login("desk")
    rows = csv_rows(client, report_query(world, "mileage", end="2024-05-08"))
    assert rows == [
        ["Date", "Distance (km)", "Trips", "Source"],
        ["2024-05-06", "25.0", "3", "logbook"],
        ["2024-05-07", "4.5", "0", "positions"],
        ["2024-05-08", "0.0", "0", ""],
        ["Total", "29.5", "3", ""],
    ]
    trips = csv_rows(client, report_query(world, "trips"))
    assert trips[0][:4] == ["Date", "Start", "End", "Driver"]
    assert trips[1][:6] == ["2024-05-06", "2024-05-06 09:00:00", "2024-05-06 09:10:00",
                            "alice", "Depot", "Schulz GmbH"]
    assert trips[1][6:8] == ["6.0", "10.0"]  # km, minutes
    # The private trip: date, distance, category and odometer only.
    assert trips[2] == ["2024-05-06", "", "", "", "", "", "12.5", "", "", "Private", "1006.0",
                        "1018.5"]
    assert SECRET not in str(trips)
    idle = csv_rows(client, report_query(world, "idle"))
    assert idle[1] == ["2024-05-06", "40.0", "10.0", "25.0", "1"]


def test_report_xlsx_read_back(world, login):
    response = login("desk").get(f"/reports/export/?{report_query(world, 'categories')}"
                                 "&format=xlsx")
    assert response.status_code == 200
    assert response["Content-Disposition"] == (
        'attachment; filename="categories_van-7_2024-05-06.xlsx"')
    book = load_workbook(io.BytesIO(response.content))
    sheet = book["Report"]
    values = [list(row) for row in sheet.iter_rows(values_only=True)]
    assert values[0] == ["Date", "Business (km)", "Commute (km)", "Private (km)",
                         "Unclassified (km)", "Total (km)"]
    assert values[1] == [datetime(2024, 5, 6), 6.0, 6.5, 12.5, 0.0, 25.0]
    assert values[2][0] == "Total" and values[2][5] == 25.0
    assert sheet["B2"].number_format == "0.0"
    assert len(sheet._charts) == 1
    about = {row[0]: row[1] for row in book["About"].iter_rows(values_only=True)}
    assert about["Report"] == "Business / private km" and about["Subject"] == "Van 7"
    assert about["Exported by"] == "desk" and about["Time zone"] == "Europe/Berlin"


def test_trips_xlsx_types_and_privacy(world, login):
    response = login("desk").get(f"/reports/export/?{report_query(world, 'trips')}"
                                 "&format=xlsx")
    sheet = load_workbook(io.BytesIO(response.content))["Report"]
    values = list(sheet.iter_rows(values_only=True))
    assert values[1][1] == datetime(2024, 5, 6, 9, 0) and values[1][7] == 10.0
    assert values[2][1] is None and values[2][6] == 12.5 and values[2][9] == "Private"
    assert values[-1][0] == "Total" and values[-1][6] == 25.0
    assert SECRET not in str(values)


def test_driver_report_for_a_dispatcher(world, login):
    query = report_query(world, "trips", subject=f"driver:{world['alice_driver'].pk}")
    rows = csv_rows(login("desk"), query)
    assert rows[0][3] == "Vehicle"
    assert [r[6] for r in rows[1:]] == ["6.0", "6.5", "12.5"]  # T1, T3, total: no T2


# --------------------------------------------------------------------------- isolation


def every_url(world) -> list[str]:
    van = world["van"].pk
    driver = world["alice_driver"].pk
    return [
        f"/vehicles/{van}/replay/", f"/vehicles/{van}/replay/track/",
        f"/vehicles/{van}/replay/export/?format=gpx", f"/vehicles/{van}/replay/export/?format=csv",
        f"/vehicles/{van}/charts/", f"/vehicles/{van}/charts/data/",
        f"/reports/?{report_query(world, 'trips')}",
        f"/reports/export/?{report_query(world, 'trips')}&format=csv",
        f"/reports/export/?{report_query(world, 'idle')}&format=xlsx",
        f"/reports/?{report_query(world, 'trips', subject=f'driver:{driver}')}",
        f"/reports/export/?{report_query(world, 'events', subject=f'driver:{driver}')}&format=csv",
    ]


def test_another_organisation_gets_404_everywhere(world, login):
    client = login("eve")
    for url in every_url(world):
        assert client.get(url).status_code == 404, url
    # ...while its own vehicle works, and the Acme van is not offered to choose.
    truck = world["truck"].pk
    assert client.get(f"/vehicles/{truck}/replay/").status_code == 200
    page = client.get("/reports/").content.decode()
    assert "Van 7" not in page and "Truck 9" in page


def test_a_driver_of_another_vehicle_gets_404(world, login):
    client = login("bob")
    for url in every_url(world)[:6]:
        assert client.get(url).status_code == 404, url


def test_nonsense_subjects_are_404(world, login):
    client = login("desk")
    truck = world["truck"].pk
    for subject in ("vehicle:abc", "truck:1", f"vehicle:{truck}", "vehicle:" + "9" * 30):
        assert client.get(f"/reports/?{report_query(world, 'trips', subject=subject)}"
                          ).status_code == 404, subject


def test_login_required(world, client):
    for url in every_url(world)[:7]:
        response = client.get(url)
        assert response.status_code == 302 and "/login/" in response["Location"], url


def test_vehicle_page_links_to_history(world, login):
    page = login("desk").get(f"/vehicles/{world['van'].pk}/").content.decode()
    for name in ("replay/", "charts/"):
        assert f"/vehicles/{world['van'].pk}/{name}" in page
    assert f"/reports/?subject=vehicle:{world['van'].pk}" in page
