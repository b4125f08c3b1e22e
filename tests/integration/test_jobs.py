"""Jobs through the API and the driver's phone page: stops, roles, isolation, transitions."""

from __future__ import annotations

import pytest
from django.utils import timezone

from fleet.jobs import create_job
from fleet.models import Job, JobStatus, JobStop
from telematics.models import Event

STOPS = [
    {"address": "Lager Nord, Berlin", "latitude": 52.52, "longitude": 13.40,
     "window_start": "2026-03-02T08:00:00Z", "window_end": "2026-03-02T09:00:00Z",
     "notes": "Ramp 3"},
    {"address": "Kunde GmbH, Potsdam", "radius_m": 300},
]


def make_job(fleets, **fields) -> Job:
    fields.setdefault("title", "Deliver pallets")
    fields.setdefault("stops", [{"address": "Hauptstr. 1", "latitude": 52.5,
                                 "longitude": 13.4}])
    return create_job(fleets.acme, **fields)


def status_events(job: Job) -> list[dict]:
    return [e.attributes for e in Event.objects.filter(type="job_status").order_by("pk")
            if e.attributes["job"] == job.pk]


# --- creating and reading ------------------------------------------------------------


def test_dispatcher_creates_a_job_with_ordered_stops(fleets):
    r = fleets.client("dispatcher").post("/api/v1/jobs/", {
        "title": "Deliver pallets", "reference": "SO-4711", "vehicle": fleets.van.pk,
        "stops": STOPS}, format="json")
    assert r.status_code == 201, r.json()
    job = r.json()
    assert job["status"] == "assigned" and job["organisation"] == fleets.acme.pk
    assert job["created_by"] == "dirk"
    assert [s["sequence"] for s in job["stops"]] == [1, 2]
    first, second = job["stops"]
    assert first["address"] == "Lager Nord, Berlin" and first["radius_m"] == 150.0
    assert first["window_start"] == "2026-03-02T08:00:00Z" and first["state"] == "pending"
    assert second["latitude"] is None and second["radius_m"] == 300.0
    assert job["next_statuses"] == ["en_route", "arrived", "failed"]
    assert fleets.client("dispatcher").get(f"/api/v1/jobs/{job['id']}/").json() == job


def test_a_job_without_assignee_is_planned_until_assigned(fleets):
    client = fleets.client("admin")
    job = client.post("/api/v1/jobs/", {"title": "Pick up", "stops": STOPS},
                      format="json").json()
    assert job["status"] == "planned" and job["next_statuses"] == ["failed"]
    r = client.patch(f"/api/v1/jobs/{job['id']}/", {"driver": fleets.dana.pk}, format="json")
    assert r.status_code == 200 and r.json()["status"] == "assigned"
    r = client.patch(f"/api/v1/jobs/{job['id']}/", {"driver": None}, format="json")
    assert r.json()["status"] == "planned"
    changes = [(a["from"], a["to"], a["by"]) for a in status_events(Job.objects.get())]
    assert changes == [("planned", "assigned", "alice"), ("assigned", "planned", "alice")]


@pytest.mark.parametrize(("stop", "field", "message"), [
    ({"notes": "somewhere"}, "address", "address or coordinates"),
    ({"latitude": 52.5}, "longitude", "both latitude and longitude"),
    ({"latitude": 91, "longitude": 13}, "latitude", "less than or equal to 90"),
    ({"address": "A", "radius_m": 2}, "radius_m", "greater than or equal to 10"),
    ({"address": "A", "window_start": "2026-03-02T10:00:00Z",
      "window_end": "2026-03-02T09:00:00Z"}, "window_end", "before window_start"),
])
def test_stop_validation_answers_400_per_field(fleets, stop, field, message):
    r = fleets.client("admin").post("/api/v1/jobs/", {"title": "X", "stops": [stop]},
                                    format="json")
    assert r.status_code == 400
    assert message in str(r.json()["stops"]["0"][field])  # errors by the stop's index


def test_validation_of_the_job(fleets):
    client = fleets.client("admin")
    r = client.post("/api/v1/jobs/", {"stops": STOPS}, format="json")
    assert r.status_code == 400 and "title" in r.json()
    # Another organisation's vehicle or driver is simply not found.
    r = client.post("/api/v1/jobs/", {"title": "X", "vehicle": fleets.truck.pk},
                    format="json")
    assert r.status_code == 400 and "does not exist" in str(r.json()["vehicle"])
    r = client.post("/api/v1/jobs/", {"title": "X", "driver": fleets.greta.pk}, format="json")
    assert r.status_code == 400 and "driver" in r.json()
    r = client.post("/api/v1/jobs/", {"title": "X", "stops": [
        {"address": "A", "sequence": 2}, {"address": "B", "sequence": 2}]}, format="json")
    assert r.status_code == 400 and "same sequence" in str(r.json())


# --- roles and isolation --------------------------------------------------------------


def test_driver_sees_only_their_jobs_and_cannot_edit(fleets):
    mine = make_job(fleets, vehicle=fleets.van)  # dana drives the van
    by_name = make_job(fleets, driver=fleets.dana, title="Named")
    other = make_job(fleets, vehicle=fleets.car, title="Pool car job")
    driver = fleets.client("driver")
    ids = {row["id"] for row in driver.get("/api/v1/jobs/").json()["results"]}
    assert ids == {mine.pk, by_name.pk}
    assert driver.get(f"/api/v1/jobs/{other.pk}/").status_code == 404
    assert driver.post("/api/v1/jobs/", {"title": "mine"}, format="json").status_code == 403
    assert driver.patch(f"/api/v1/jobs/{mine.pk}/", {"title": "x"},
                        format="json").status_code == 403
    assert driver.delete(f"/api/v1/jobs/{mine.pk}/").status_code == 403
    assert driver.post(f"/api/v1/jobs/{mine.pk}/stops/", {"address": "x"},
                       format="json").status_code == 403
    assert driver.get(f"/api/v1/jobs/{mine.pk}/stops/").status_code == 200


@pytest.mark.parametrize("role", ["admin", "dispatcher", "driver", "api_key"])
def test_other_organisations_jobs_are_not_found(fleets, role):
    theirs = create_job(fleets.globex, title="Globex run", vehicle=fleets.truck,
                        stops=[{"address": "Wien"}])
    stop = theirs.stops.get()
    client = fleets.client(role)
    base = f"/api/v1/jobs/{theirs.pk}/"
    assert client.get(base).status_code == 404
    assert client.patch(base, {"title": "mine"}, format="json").status_code == 404
    assert client.delete(base).status_code == 404
    assert client.post(base + "status/", {"status": "en_route"},
                       format="json").status_code == 404
    assert client.get(base + "stops/").status_code == 404
    assert client.get(f"{base}stops/{stop.pk}/").status_code == 404
    if role != "driver":  # a driver may not add stops anywhere (403 before the lookup)
        assert client.post(base + "stops/", {"address": "x"},
                           format="json").status_code == 404
    assert theirs.pk not in {row["id"] for row in client.get("/api/v1/jobs/").json()["results"]}
    Job.objects.get(pk=theirs.pk, title="Globex run", status="assigned")


def test_api_key_manages_jobs_like_an_admin(fleets):
    client = fleets.client("api_key")
    job = client.post("/api/v1/jobs/", {"title": "From dispatch", "vehicle": fleets.car.pk,
                                        "stops": STOPS}, format="json").json()
    r = client.post(f"/api/v1/jobs/{job['id']}/status/", {"status": "en_route"}, format="json")
    assert r.status_code == 200
    assert status_events(Job.objects.get(pk=job["id"]))[0]["by"].startswith("api-key:fbk_")


# --- status transitions ---------------------------------------------------------------


def test_the_whole_way_with_events(fleets):
    job = make_job(fleets, vehicle=fleets.van)
    driver = fleets.client("driver")
    url = f"/api/v1/jobs/{job.pk}/status/"
    for status, note in (("en_route", ""), ("arrived", "at the ramp"), ("done", "signed")):
        r = driver.post(url, {"status": status, "note": note}, format="json")
        assert r.status_code == 200, r.json()
        assert r.json()["status"] == status
    assert r.json()["next_statuses"] == []
    events = status_events(job)
    assert [(e["from"], e["to"]) for e in events] == [
        ("assigned", "en_route"), ("en_route", "arrived"), ("arrived", "done")]
    assert {e["by"] for e in events} == {"dana"} and events[1]["note"] == "at the ramp"
    event = Event.objects.filter(type="job_status").first()
    assert event.organisation_id == fleets.acme.pk and event.vehicle_id == fleets.van.pk


@pytest.mark.parametrize(("start", "target", "message"), [
    ("assigned", "done", "cannot become done; it can become: en_route, arrived, failed"),
    ("done", "en_route", "cannot become en route; it can become: none: it is closed"),
    ("failed", "arrived", "it can become: none"),
    ("en_route", "en_route", "is en route already"),
])
def test_invalid_transition_answers_409_with_a_message(fleets, start, target, message):
    job = make_job(fleets, vehicle=fleets.van)
    Job.objects.filter(pk=job.pk).update(status=start)
    r = fleets.client("dispatcher").post(f"/api/v1/jobs/{job.pk}/status/",
                                         {"status": target}, format="json")
    assert r.status_code == 409
    assert message in r.json()["detail"]
    assert Job.objects.get(pk=job.pk).status == start


def test_status_requests_are_validated(fleets):
    planned = make_job(fleets)
    client = fleets.client("admin")
    url = f"/api/v1/jobs/{planned.pk}/status/"
    r = client.post(url, {"status": "teleported"}, format="json")
    assert r.status_code == 400 and "status" in r.json()
    r = client.post(url, {"status": "assigned"}, format="json")
    assert r.status_code == 409 and "Assign a vehicle or a driver first" in r.json()["detail"]
    # A driver may report progress, not dispatch.
    mine = make_job(fleets, vehicle=fleets.van)
    r = fleets.client("driver").post(f"/api/v1/jobs/{mine.pk}/status/",
                                     {"status": "assigned"}, format="json")
    assert r.status_code == 403


def test_closed_jobs_and_reached_stops_stay_as_they_are(fleets):
    job = make_job(fleets, vehicle=fleets.van)
    client = fleets.client("dispatcher")
    JobStop.objects.filter(job=job).update(arrived_at=timezone.now())
    r = client.patch(f"/api/v1/jobs/{job.pk}/", {"stops": STOPS}, format="json")
    assert r.status_code == 409 and "one by one" in r.json()["detail"]
    stop = job.stops.get()
    assert client.delete(f"/api/v1/jobs/{job.pk}/stops/{stop.pk}/").status_code == 409
    client.post(f"/api/v1/jobs/{job.pk}/status/", {"status": "failed"}, format="json")
    r = client.patch(f"/api/v1/jobs/{job.pk}/", {"title": "again"}, format="json")
    assert r.status_code == 409 and "failed" in r.json()["detail"]


def test_replacing_the_stops_of_a_job_not_yet_started(fleets):
    job = make_job(fleets, vehicle=fleets.van)
    r = fleets.client("dispatcher").put(f"/api/v1/jobs/{job.pk}/", {
        "title": "New plan", "vehicle": fleets.van.pk, "stops": STOPS}, format="json")
    assert r.status_code == 200
    assert [s["address"] for s in r.json()["stops"]] == [s["address"] for s in STOPS]


def test_stops_one_by_one(fleets):
    job = make_job(fleets, vehicle=fleets.van)
    client = fleets.client("dispatcher")
    base = f"/api/v1/jobs/{job.pk}/stops/"
    r = client.post(base, {"address": "Second", "notes": "back door"}, format="json")
    assert r.status_code == 201 and r.json()["sequence"] == 2
    assert client.post(base, {"address": "Dup", "sequence": 2},
                       format="json").status_code == 409
    r = client.patch(f"{base}{r.json()['id']}/", {"latitude": 52.4, "longitude": 13.1},
                     format="json")
    assert r.status_code == 200 and r.json()["latitude"] == 52.4
    r = client.patch(f"{base}{r.json()['id']}/", {"longitude": None}, format="json")
    assert r.status_code == 400 and "or neither" in str(r.json()["longitude"])
    assert [s["sequence"] for s in client.get(base).json()] == [1, 2]
    assert client.delete(f"{base}{job.stops.get(sequence=2).pk}/").status_code == 204
    assert [s["address"] for s in client.get(base).json()] == ["Hauptstr. 1"]


def test_filters(fleets):
    first = make_job(fleets, vehicle=fleets.van, reference="A-1")
    second = make_job(fleets, vehicle=fleets.car, reference="A-2")
    Job.objects.filter(pk=second.pk).update(status=JobStatus.DONE)
    client = fleets.client("admin")

    def ids(query):
        return [row["id"] for row in client.get(f"/api/v1/jobs/?{query}").json()["results"]]

    assert ids("open=true") == [first.pk]
    assert ids("open=false") == [second.pk]
    assert ids("status=done&status=failed") == [second.pk]
    assert ids(f"vehicle={fleets.car.pk}") == [second.pk]
    assert ids("reference=A-1") == [first.pk]
    assert client.get("/api/v1/jobs/?vehicle=abc").status_code == 400


# --- the phone page -------------------------------------------------------------------


def test_driver_moves_a_job_from_the_phone_page(fleets, client):
    job = make_job(fleets, vehicle=fleets.van, title="Deliver to Kunde GmbH")
    make_job(fleets, vehicle=fleets.car, title="Not mine")
    client.force_login(fleets.driver_user)
    page = client.get("/jobs/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "Deliver to Kunde GmbH" in html and "Not mine" not in html
    assert 'value="en_route"' in html and 'value="assigned"' not in html
    assert "<script" not in html and "style=" not in html  # the CSP allows neither
    assert "geo:52.500000,13.400000" in html
    r = client.post(f"/jobs/{job.pk}/status/", {"status": "en_route", "note": "traffic"})
    assert r.status_code == 302 and r["Location"] == "/jobs/"
    assert Job.objects.get(pk=job.pk).status == "en_route"
    assert status_events(job)[-1]["note"] == "traffic"
    page = client.get("/jobs/").content.decode()
    assert "en route." in page and 'value="arrived"' in page
    # An invalid move is explained, not applied.
    client.post(f"/jobs/{job.pk}/status/", {"status": "en_route"})
    assert "is en route already" in client.get("/jobs/").content.decode()


def test_phone_page_refuses_other_jobs_and_anonymous(fleets, client):
    theirs = create_job(fleets.globex, title="Globex run", vehicle=fleets.truck)
    assert client.get("/jobs/").status_code == 302  # to the login
    client.force_login(fleets.driver_user)
    assert client.post(f"/jobs/{theirs.pk}/status/", {"status": "en_route"}).status_code == 404
    assert client.get(f"/jobs/{theirs.pk}/status/").status_code == 405
    Job.objects.get(pk=theirs.pk, status="assigned")


def test_dispatcher_sees_every_open_job_on_the_page(fleets, client):
    make_job(fleets, vehicle=fleets.van, title="Van job")
    make_job(fleets, vehicle=fleets.car, title="Car job")
    client.force_login(fleets.dispatcher)
    html = client.get("/jobs/").content.decode()
    assert "Van job" in html and "Car job" in html and "Open jobs" in html
