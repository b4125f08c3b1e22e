"""DBC files through the API: upload as a file or as text, a mapping checked against the
file, scoped to the organisation and written by admins only; and the signal catalogue
that says which keys a mapping may name."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from fleet.models import Vehicle
from telematics.can.signals import SIGNALS
from telematics.models import DbcFile
from tests.can.helpers import DATA_DIR

MAZDA = (DATA_DIR / "mazda_rx8.dbc").read_text()
TOYOTA = (DATA_DIR / "toyota_iQ_2009_can.dbc").read_text()
URL = "/api/v1/dbc-files/"


def upload(client, name="Mazda RX-8", text=MAZDA, mapping=None, vehicles=(), filename="rx8.dbc"):
    """The multipart form a browser or `curl -F` sends."""
    form = {"name": name, "file": SimpleUploadedFile(filename, text.encode()
                                                     if isinstance(text, str) else text),
            "mapping": json.dumps({"speed.EngineRPM": "engine_speed"} if mapping is None
                                       else mapping)}
    if vehicles:
        form["vehicles"] = [v.pk for v in vehicles]
    return client.post(URL, form, format="multipart")


def test_admin_uploads_a_file_and_reads_it_back(fleets):
    admin = fleets.client("admin")
    created = upload(admin, mapping={"speed.EngineRPM": "engine_speed",
                                     "coolant.CoolantTemperature": "coolant_temperature"},
                     vehicles=[fleets.van, fleets.car])
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["name"] == "Mazda RX-8"
    assert body["mapping"] == {"speed.EngineRPM": "engine_speed",
                               "coolant.CoolantTemperature": "coolant_temperature"}
    assert sorted(body["vehicles"]) == sorted([fleets.van.pk, fleets.car.pk])
    assert body["size_chars"] == len(MAZDA) and body["warnings"] == []
    assert body["organisation"] == fleets.acme.pk
    assert body["uploaded"].endswith("Z") and "file" not in body
    one = admin.get(f"{URL}{body['id']}/").json()
    assert one["dbc_text"] == MAZDA
    listed = admin.get(URL).json()["results"]
    assert [(d["name"], d["size_chars"]) for d in listed] == [("Mazda RX-8", len(MAZDA))]
    assert "dbc_text" not in listed[0]  # lists stay small
    stored = DbcFile.objects.get()
    assert stored.dbc_text == MAZDA and set(stored.vehicles.all()) == {fleets.van, fleets.car}


def test_json_upload_with_text(fleets):
    created = fleets.client("admin").post(URL, {
        "name": "Toyota iQ", "dbc_text": TOYOTA, "mapping": {},
        "vehicles": [fleets.van.pk]}, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["mapping"] == {} and created.json()["vehicles"] == [fleets.van.pk]


def test_what_the_loader_forgave_is_in_the_answer(fleets):
    from tests.can.test_dbc import OVERLAPPING  # two signals share bits, as in some opendbc files

    created = fleets.client("admin").post(URL, {"name": "Overlap", "dbc_text": OVERLAPPING,
                                                "mapping": {"Fine.C": "fuel_level"}},
                                          format="json")
    assert created.status_code == 201, created.json()
    [warning] = created.json()["warnings"]
    assert "loaded with strict=False" in warning and "overlapping" in warning


def test_a_windows_1252_file_is_read_as_such(fleets):
    # CANdb++ writes cp1252; a degree sign in a comment is byte 0xB0, not UTF-8.
    text = MAZDA.replace('CM_ ', 'CM_ "Temperatur in \u00b0C";\nCM_ ', 1)
    created = upload(fleets.client("admin"), text=text.encode("cp1252"))
    assert created.status_code == 201, created.json()
    assert "\u00b0C" in DbcFile.objects.get().dbc_text


@pytest.mark.parametrize(("form_text", "field", "message"), [
    ("this is not a dbc", "file", "DBC does not parse: Invalid syntax at line 1"),
    (b"BO_ 1\x00\x01\x02", "file", "NUL bytes"),
])
def test_a_file_that_is_not_a_dbc_is_refused_with_the_reason(fleets, form_text, field, message):
    refused = upload(fleets.client("admin"), text=form_text)
    assert refused.status_code == 400
    assert message in refused.json()[field][0]
    assert not DbcFile.objects.exists()


def test_text_that_does_not_parse_names_the_line(fleets):
    broken = MAZDA.replace("BO_ 513 speed: 8 Powertrain", "BO_ 513 speed 8 Powertrain")
    assert broken != MAZDA
    refused = fleets.client("admin").post(URL, {"name": "x", "dbc_text": broken},
                                          format="json")
    assert refused.status_code == 400
    assert refused.json()["dbc_text"][0].startswith("DBC does not parse: Invalid syntax at line")


@pytest.mark.parametrize(("mapping", "message"), [
    ({"EEC1.EngSpeed": "engine_speed"},
     "names a message the DBC does not define (it defines brake_controls, coolant, "),
    ({"speed.EngSpeed": "engine_speed"},
     "message speed has no signal 'EngSpeed' (it has AcceleratorPos, EngineRPM"),
    ({"speed.EngineRPM": "rpm"}, "targets unknown canonical signal 'rpm'; use one of: "),
    ({"speed": "engine_speed"}, "must name a message and a signal as 'Message.Signal'"),
    (["speed.EngineRPM"], "the mapping must be an object"),
    ({"speed.EngineRPM": 7}, "must name a signal key as a string"),
])
def test_a_mapping_that_names_nothing_is_refused_with_the_reason(fleets, mapping, message):
    refused = fleets.client("admin").post(URL, {"name": "RX-8", "dbc_text": MAZDA,
                                                "mapping": mapping}, format="json")
    assert refused.status_code == 400
    assert message in refused.json()["mapping"][0]
    assert not DbcFile.objects.exists()


def test_changing_the_mapping_is_checked_against_the_stored_file(fleets):
    admin = fleets.client("admin")
    dbc = upload(admin).json()
    bad = admin.patch(f"{URL}{dbc['id']}/", {"mapping": {"speed.Nope": "engine_speed"}},
                      format="json")
    assert bad.status_code == 400 and "has no signal 'Nope'" in bad.json()["mapping"][0]
    good = admin.patch(f"{URL}{dbc['id']}/", {"mapping": {"speed.VehicleSpeed":
                                                          "vehicle_speed"}}, format="json")
    assert good.status_code == 200
    assert DbcFile.objects.get().mapping == {"speed.VehicleSpeed": "vehicle_speed"}
    # a new file must still hold what the stored mapping names
    other = admin.patch(f"{URL}{dbc['id']}/", {"dbc_text": TOYOTA}, format="json")
    assert other.status_code == 400
    assert "names a message the DBC does not define" in other.json()["mapping"][0]
    renamed = admin.patch(f"{URL}{dbc['id']}/", {"name": "RX-8 2004"}, format="json")
    assert renamed.status_code == 200 and renamed.json()["name"] == "RX-8 2004"


def test_a_vehicle_decodes_with_one_dbc_file(fleets):
    admin = fleets.client("admin")
    first = upload(admin, vehicles=[fleets.van]).json()
    second = upload(admin, name="Toyota iQ", text=TOYOTA, mapping={}, vehicles=[fleets.van])
    assert second.status_code == 400
    assert second.json()["vehicles"][0].startswith(
        f"Van 7 already decodes with DBC file 'Mazda RX-8' (id {first['id']})")
    duplicate = upload(admin)
    assert duplicate.status_code == 400 and "of this name already" in duplicate.json()["name"][0]
    assert admin.delete(f"{URL}{first['id']}/").status_code == 204
    assert upload(admin, name="Toyota iQ", text=TOYOTA, mapping={},
                  vehicles=[fleets.van]).status_code == 201


def test_requests_missing_the_file_or_sending_both_get_a_clear_answer(fleets):
    admin = fleets.client("admin")
    missing = admin.post(URL, {"name": "RX-8"}, format="json")
    assert missing.status_code == 400 and "Send the DBC file" in missing.json()["dbc_text"][0]
    both = admin.post(URL, {"name": "RX-8", "dbc_text": MAZDA,
                            "file": SimpleUploadedFile("a.dbc", MAZDA.encode())},
                      format="multipart")
    assert both.status_code == 400 and "not both" in both.json()["file"][0]
    not_a_file = admin.post(URL, {"name": "RX-8", "file": "BO_"}, format="json")
    assert not_a_file.status_code == 400 and "file" in not_a_file.json()


def test_roles_and_organisations(fleets):
    dbc_id = upload(fleets.client("admin"), vehicles=[fleets.van]).json()["id"]
    dispatcher = fleets.client("dispatcher")
    assert dispatcher.get(f"{URL}{dbc_id}/").status_code == 200
    assert dispatcher.patch(f"{URL}{dbc_id}/", {"name": "x"}, format="json").status_code == 403
    assert upload(dispatcher, name="Other").status_code == 403
    driver = fleets.client("driver")
    assert driver.get(URL).status_code == 403
    assert driver.get(f"{URL}{dbc_id}/").status_code == 403
    outsider = fleets.client("globex_admin")
    assert outsider.get(URL).json()["results"] == []
    for method in ("get", "patch", "put", "delete"):
        assert getattr(outsider, method)(f"{URL}{dbc_id}/", {}, format="json").status_code \
            == 404, method
    foreign_vehicle = upload(outsider, name="Theirs", vehicles=[fleets.van])
    assert foreign_vehicle.status_code == 400 and "vehicles" in foreign_vehicle.json()
    assert DbcFile.objects.get().name == "Mazda RX-8"
    assert fleets.client("api_key").get(f"{URL}{dbc_id}/").status_code == 200


def test_the_operator_names_the_organisation(fleets, operator):
    client = APIClient()
    client.force_authenticate(operator)
    unnamed = upload(client)
    assert unnamed.status_code == 400 and "Name the organisation" in \
        unnamed.json()["organisation"][0]
    truck = Vehicle.objects.get(name="Truck 1")
    mixed = client.post(URL, {"name": "RX-8", "dbc_text": MAZDA, "mapping": {},
                              "organisation": fleets.acme.pk, "vehicles": [truck.pk]},
                        format="json")
    assert mixed.status_code == 400
    assert mixed.json()["vehicles"] == ["The vehicle belongs to another organisation."]


def test_signal_catalogue_lists_every_key_with_its_unit(fleets):
    catalogue = fleets.client("driver").get("/api/v1/signals/catalogue/")
    assert catalogue.status_code == 200
    by_key = {entry["key"]: entry for entry in catalogue.json()}
    assert set(by_key) == set(SIGNALS)
    assert by_key["engine_speed"] == {"key": "engine_speed", "label": "Engine speed",
                                      "unit": "rpm"}
    assert by_key["coolant_temperature"]["unit"] == "\u00b0C"
    assert APIClient().get("/api/v1/signals/catalogue/").status_code == 401


def test_schema_documents_the_new_endpoints(db):
    schema = APIClient().get("/api/v1/schema/?format=json").json()
    assert {"/api/v1/dbc-files/", "/api/v1/dbc-files/{id}/",
            "/api/v1/signals/catalogue/"} <= set(schema["paths"])
    post = schema["paths"]["/api/v1/dbc-files/"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(post)
