"""DBC decoding against real opendbc files; expected values worked out by hand from the
DBC lines quoted above each test, not from cantools."""

from __future__ import annotations

import pytest

from telematics.can.dbc import DbcDecoder, load_dbc
from telematics.can.errors import CanDecodeError, DbcError, DbcMappingError
from tests.can.helpers import DATA_DIR, frame, utc

MAZDA = (DATA_DIR / "mazda_rx8.dbc").read_text()
TOYOTA = (DATA_DIR / "toyota_iQ_2009_can.dbc").read_text()

MAZDA_MAPPING = {
    "speed.EngineRPM": "engine_speed",
    "speed.VehicleSpeed": "vehicle_speed",
    "speed.AcceleratorPos": "accelerator_pedal",
    "coolant.CoolantTemperature": "coolant_temperature",
    "instrument_cluster.FuelLevel": "fuel_level",
    (592, "IntakeAirTemperature"): "intake_air_temperature",
}


@pytest.fixture(scope="module")
def mazda() -> DbcDecoder:
    return DbcDecoder(MAZDA, MAZDA_MAPPING)


def values(decoder: DbcDecoder, can_id: int, data: str) -> dict[str, float]:
    samples = decoder.decode(frame(can_id, data))
    assert all(s.time == utc() for s in samples)
    return {s.signal: s.value for s in samples}


def test_real_dbc_loads_strictly(mazda: DbcDecoder) -> None:
    assert mazda.warnings == []
    assert len(mazda.database.messages) == 7


def test_mazda_speed_frame(mazda: DbcDecoder) -> None:
    # BO_ 513 speed: 8
    #  SG_ EngineRPM : 7|16@0+ (0.25,0)        -> big-endian bytes 0-1
    #  SG_ VehicleSpeed : 39|16@0+ (0.01,-100) -> big-endian bytes 4-5
    #  SG_ AcceleratorPos : 55|8@0+ (0.5,0)    -> byte 6
    got = values(mazda, 513, "1AF800004E205000")
    assert got["engine_speed"] == pytest.approx(0x1AF8 * 0.25)  # 1726.0
    assert got["vehicle_speed"] == pytest.approx(0x4E20 * 0.01 - 100)  # 100.0
    assert got["accelerator_pedal"] == pytest.approx(0x50 * 0.5)  # 40.0
    assert len(got) == 3


def test_mazda_coolant_fuel_and_intake_frames(mazda: DbcDecoder) -> None:
    # BO_ 1056 coolant: SG_ CoolantTemperature : 7|8@0+ (1,-40) -> byte 0
    assert values(mazda, 1056, "7B00000000000000") == {"coolant_temperature": 123 - 40}
    # BO_ 1072 instrument_cluster: SG_ FuelLevel : 7|8@0+ (0.392156,0) -> byte 0
    got = values(mazda, 1072, "80FFFF0000000000")
    assert got == {"fuel_level": pytest.approx(128 * 0.392156)}
    # BO_ 592 throttle_body: SG_ IntakeAirTemperature : 31|8@0+ (1,-40) -> byte 3
    assert values(mazda, 592, "0000004600000000") == {"intake_air_temperature": 70 - 40}


def test_sources_name_message_and_signal(mazda: DbcDecoder) -> None:
    sources = {s.source for s in mazda.decode(frame(513, "1AF800004E205000"))}
    assert sources == {"dbc:speed.EngineRPM", "dbc:speed.VehicleSpeed", "dbc:speed.AcceleratorPos"}


def test_known_but_unmapped_message_yields_nothing(mazda: DbcDecoder) -> None:
    # BO_ 1200 wheel_speed is in the DBC but nothing maps it
    assert mazda.knows(1200, False)
    assert mazda.decode(frame(1200, "0000000000000000")) == []


def test_id_spaces_do_not_collide(mazda: DbcDecoder) -> None:
    assert mazda.knows(513, False)
    assert not mazda.knows(513, True)
    with pytest.raises(CanDecodeError, match="not defined in the DBC"):
        mazda.decode(frame(513, "1AF800004E205000", extended=True))


def test_short_frame_is_an_error(mazda: DbcDecoder) -> None:
    with pytest.raises(CanDecodeError, match=r"speed\) has 4 bytes, the DBC says 8"):
        mazda.decode(frame(513, "1AF80000"))


def test_toyota_iq_engine_and_speed() -> None:
    decoder = DbcDecoder(
        TOYOTA,
        {(452, "MOTOR_RPM"): "engine_speed", "VEHICLE_DYNAMICS.VEHICLE_SPEED": "vehicle_speed"},
    )
    assert decoder.warnings == []
    # BO_ 452 ENGINE: SG_ MOTOR_RPM : 7|16@0+ (1,0) -> big-endian bytes 0-1
    assert values(decoder, 452, "0BB8000000000000") == {"engine_speed": 3000.0}
    # BO_ 180 VEHICLE_DYNAMICS: SG_ VEHICLE_SPEED : 47|16@0+ (0.01,0) -> bytes 5-6
    assert values(decoder, 180, "00000000001F4000") == {"vehicle_speed": pytest.approx(80.0)}


J1939_DBC = """VERSION ""
NS_ :
BS_:
BU_:
BO_ 2364540158 EEC1: 8 Vector__XXX
 SG_ EngSpeed : 24|16@1+ (0.125,0) [0|8031.875] "rpm" Vector__XXX
"""


@pytest.mark.parametrize(
    "key", ["EEC1.EngSpeed", (0x0CF004FE, "EngSpeed"), (2364540158, "EngSpeed")]
)
def test_extended_ids_in_a_j1939_dbc(key: object) -> None:
    decoder = DbcDecoder(J1939_DBC, {key: "engine_speed"})
    assert decoder.knows(0x0CF004FE, True)
    [sample] = decoder.decode(frame(0x0CF004FE, "FFFFFF6019FFFFFF"))
    assert (sample.signal, sample.value, sample.source) == (
        "engine_speed",
        812.0,
        "dbc:EEC1.EngSpeed",
    )


OVERLAPPING = """VERSION ""
NS_ :
BS_:
BU_: ECU
BO_ 256 Overlap: 8 ECU
 SG_ A : 0|8@1+ (1,0) [0|255] "" Vector__XXX
 SG_ B : 4|8@1+ (1,0) [0|255] "" Vector__XXX
BO_ 257 Fine: 8 ECU
 SG_ C : 0|8@1+ (1,0) [0|255] "" Vector__XXX
"""


def test_strict_failure_falls_back_with_a_warning() -> None:
    # like opendbc's hyundai_i30_2014.dbc, which only loads with strict=False
    decoder = DbcDecoder(OVERLAPPING, {"Overlap.A": "throttle", "Fine.C": "fuel_level"})
    [warning] = decoder.warnings
    assert "strict=False" in warning and "overlapping" in warning
    assert values(decoder, 257, "2A00000000000000") == {"fuel_level": 42.0}
    # the broken message itself cannot be unpacked: one clear error per frame
    with pytest.raises(CanDecodeError, match=r"id 0x100 \(Overlap\): unpacking failed"):
        decoder.decode(frame(256, "2A00000000000000"))


@pytest.mark.parametrize("text", ["this is not a dbc", "BO_ nonsense", ""])
def test_unparseable_dbc_raises_with_parser_message(text: str) -> None:
    with pytest.raises(DbcError, match=r"DBC does not parse: .*Invalid syntax"):
        DbcDecoder(text, {})


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"nope.EngineRPM": "engine_speed"}, "message the DBC does not define"),
        ({(0x7FF, "EngineRPM"): "engine_speed"}, "message the DBC does not define"),
        ({"speed.Nope": "engine_speed"}, "has no signal 'Nope'"),
        ({"speed": "engine_speed"}, "must name a message and a signal as 'Message.Signal'"),
        ({"speed.EngineRPM": ["engine_speed"]}, "unknown canonical signal"),
        ({"speed.EngineRPM": "warp_factor"}, "unknown canonical signal 'warp_factor'"),
    ],
)
def test_bad_mapping_raises(mapping: dict, message: str) -> None:
    with pytest.raises(DbcMappingError, match=message):
        DbcDecoder(MAZDA, mapping)


def test_mapping_errors_list_what_the_dbc_has() -> None:
    """The person fixing a mapping sees the names to choose from, not just "no"."""
    with pytest.raises(DbcMappingError) as error:
        DbcDecoder(MAZDA, {"nope.EngineRPM": "engine_speed"})
    assert "coolant" in str(error.value) and "speed" in str(error.value)
    with pytest.raises(DbcMappingError) as error:
        DbcDecoder(MAZDA, {"speed.Nope": "engine_speed"})
    assert "EngineRPM" in str(error.value) and "VehicleSpeed" in str(error.value)


def test_one_parse_serves_several_mappings() -> None:
    database, warnings = load_dbc(MAZDA)
    rpm = DbcDecoder.from_database(database, {"speed.EngineRPM": "engine_speed"}, warnings)
    speed = DbcDecoder.from_database(database, {"speed.VehicleSpeed": "vehicle_speed"})
    assert values(rpm, 513, "1AF800004E205000") == {"engine_speed": 1726.0}
    assert values(speed, 513, "1AF800004E205000") == {"vehicle_speed": pytest.approx(100.0)}


def test_dbc_error_is_a_value_error() -> None:
    assert issubclass(DbcError, ValueError)
