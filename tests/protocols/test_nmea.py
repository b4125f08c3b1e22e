"""NMEA 0183 decoder: real logs, sentence merging, identification, framing and fuzz."""

from __future__ import annotations

import hashlib
import re
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from functools import reduce
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telematics.protocols.base import DecodeError, FrameTooLarge
from telematics.protocols.nmea import NmeaError, NmeaSession, decode_lines

DATA = Path(__file__).resolve().parent.parent / "data" / "nmea"
JOSM = DATA / "josm-1433-drive-2008-08-14.nmea"
GPSD = DATA / "gpsd-bundg-zeus9-marine.log"


def nmea(body: str) -> str:
    """A sentence with its checksum, from the text between ``$`` and ``*``."""
    checksum = reduce(lambda total, char: total ^ ord(char), body, 0)
    return f"${body}*{checksum:02X}"


def feed(session: NmeaSession, *lines: str) -> list:
    """Decode lines in order and return every fix they emitted."""
    fixes = []
    for line in lines:
        fixes += session.decode(line.encode()).fixes
    return fixes


RMC_1 = nmea("GPRMC,120000,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W")
GGA_1 = nmea("GPGGA,120000,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")
RMC_2 = nmea("GPRMC,120001,A,4807.040,N,01131.010,E,022.0,084.0,230394,003.1,W")
GGA_2 = nmea("GPGGA,120001,4807.040,N,01131.010,E,1,07,1.1,546.0,M,46.9,M,,")
RMC_3 = nmea("GPRMC,120002,A,4807.042,N,01131.020,E,021.0,083.0,230394,003.1,W")


# --- the real logs ---------------------------------------------------------------------


def test_copied_logs_are_byte_for_byte_the_sources() -> None:
    """Git line-ending conversion would silently change the CRLF logs."""
    sources = (DATA / "SOURCES.md").read_text()
    for path in (JOSM, GPSD):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert f"| {path.name} |" in sources
        assert digest in sources


def test_josm_drive_gives_one_fix_per_second() -> None:
    fixes, errors = decode_lines(JOSM.read_text())

    assert errors == []
    assert len(fixes) == 1241
    first = fixes[0]
    assert first.fix_time == datetime(2008, 8, 14, 15, 5, 53, tzinfo=UTC)
    assert first.latitude == pytest.approx(53.792560, abs=1e-6)
    assert first.longitude == pytest.approx(-1.727447, abs=1e-6)
    assert first.altitude == 144.4
    assert first.satellites == 8
    assert first.hdop == 1.0
    assert first.speed_kmh == 0.0
    assert first.course == 241.59
    assert first.valid is True
    assert fixes[-1].fix_time == datetime(2008, 8, 14, 15, 26, 33, tzinfo=UTC)
    assert max(fix.speed_kmh for fix in fixes) == pytest.approx(61.2, abs=0.01)
    steps = {later.fix_time - earlier.fix_time for earlier, later in pairwise(fixes)}
    assert steps == {timedelta(seconds=1)}
    assert all(fix.valid and fix.altitude is not None and fix.hdop for fix in fixes)
    # SOURCES.md gives the bounding box to 5 decimals.
    box = pytest.approx((53.79193, 53.83400, -1.78295, -1.72672), abs=1e-5)
    latitudes = [fix.latitude for fix in fixes]
    longitudes = [fix.longitude for fix in fixes]
    assert (min(latitudes), max(latitudes), min(longitudes), max(longitudes)) == box


def test_josm_drive_over_tcp_in_odd_chunks_matches_the_message_body() -> None:
    raw = JOSM.read_bytes()
    session = NmeaSession()
    buffer = bytearray()
    fixes = []
    for start in range(0, len(raw), 7):
        buffer += raw[start : start + 7]
        for frame in session.split(buffer):
            fixes += session.decode(frame).fixes
    fixes += session.flush().fixes

    assert fixes == decode_lines(JOSM.read_text())[0]


def test_gpsd_marine_log_skips_comments_and_other_sentences() -> None:
    text = GPSD.read_text(encoding="utf-8")
    fixes, errors = decode_lines(text)

    assert errors == []
    seconds = [fix.fix_time.strftime("%H%M%S") for fix in fixes]
    assert len(seconds) == len(set(seconds))
    rmc_seconds = set(re.findall(r"RMC,(\d{6})", text))
    assert len(rmc_seconds) == 145  # 146 RMC lines, 09:49:45 is sent twice
    assert rmc_seconds <= set(seconds)
    # Epochs with GGA/GLL but no RMC still are positions, dated by the last RMC.
    assert sorted(set(seconds) - rmc_seconds) == ["094834", "094936", "095004"]
    assert len(fixes) == 148
    assert fixes[0].fix_time == datetime(2018, 8, 20, 9, 47, 37, tzinfo=UTC)
    assert fixes[0].altitude == -4.0
    assert fixes[0].satellites == 12
    assert fixes[0].speed_kmh == pytest.approx(5.6 * 1.852)
    # SOURCES.md's bounding box is that of the RMC positions, to 5 decimals.
    rmc_fixes = [fix for fix in fixes if fix.fix_time.strftime("%H%M%S") in rmc_seconds]
    box = pytest.approx((52.84789, 52.85015, 5.30849, 5.31362), abs=1e-5)
    latitudes = [fix.latitude for fix in rmc_fixes]
    longitudes = [fix.longitude for fix in rmc_fixes]
    assert (min(latitudes), max(latitudes), min(longitudes), max(longitudes)) == box
    assert max(fix.speed_kmh or 0 for fix in fixes) == pytest.approx(12.4, abs=0.05)


# --- merging an epoch ------------------------------------------------------------------


def test_rmc_then_gga_emit_one_fix_as_soon_as_both_are_in() -> None:
    session = NmeaSession()

    assert feed(session, RMC_1) == []
    [fix] = feed(session, GGA_1)

    assert fix.fix_time == datetime(1994, 3, 23, 12, 0, tzinfo=UTC)
    assert fix.latitude == pytest.approx(48.1173)
    assert fix.longitude == pytest.approx(11.516667, abs=1e-6)
    assert fix.speed_kmh == pytest.approx(22.4 * 1.852)
    assert fix.course == 84.4
    assert (fix.altitude, fix.satellites, fix.hdop) == (545.4, 8, 0.9)
    assert session.flush().fixes == []


def test_gga_before_rmc_waits_for_the_rmc_date() -> None:
    session = NmeaSession()

    assert feed(session, GGA_1) == []
    [fix] = feed(session, RMC_1)

    assert fix.fix_time == datetime(1994, 3, 23, 12, 0, tzinfo=UTC)
    assert fix.altitude == 545.4


def test_rmc_alone_is_emitted_when_the_second_changes_or_on_flush() -> None:
    session = NmeaSession()

    assert feed(session, RMC_1) == []
    [first] = feed(session, RMC_2)
    [second] = session.flush().fixes

    assert first.fix_time.second == 0
    assert first.altitude is None
    assert second.fix_time.second == 1


def test_late_sentences_of_an_emitted_epoch_are_dropped() -> None:
    gll = nmea("GPGLL,4807.038,N,01131.000,E,120000,A,A")
    session = NmeaSession()

    fixes = feed(session, RMC_1, GGA_1, gll, RMC_1) + session.flush().fixes

    assert len(fixes) == 1


def test_vtg_and_gsa_fill_what_rmc_and_gga_lack() -> None:
    rmc = nmea("GPRMC,120000,A,4807.038,N,01131.000,E,,,230394,,")
    vtg = nmea("GPVTG,054.7,T,034.4,M,005.5,N,010.2,K")
    gga = nmea("GPGGA,120000,4807.038,N,01131.000,E,1,08,,545.4,M,46.9,M,,")
    gsa = nmea("GPGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3,2.1")
    session = NmeaSession()

    [fix] = feed(session, rmc, vtg, gsa, gga)

    assert fix.speed_kmh == 10.2
    assert fix.course == 54.7
    assert fix.hdop == 1.3


def test_vtg_speed_in_knots_only_is_converted() -> None:
    rmc = nmea("GPRMC,120000,A,4807.038,N,01131.000,E,,,230394,,")
    vtg = nmea("GPVTG,054.7,T,,M,010.0,N,,K")
    session = NmeaSession()

    [fix] = feed(session, rmc, vtg) + session.flush().fixes

    assert fix.speed_kmh == pytest.approx(18.52)


def test_gga_and_gll_without_any_rmc_date_emit_nothing() -> None:
    gll = nmea("GPGLL,4807.040,N,01131.010,E,120001,A,A")
    session = NmeaSession()

    assert feed(session, GGA_1, gll) + session.flush().fixes == []


def test_gga_alone_takes_the_date_of_the_last_rmc() -> None:
    session = NmeaSession()

    fixes = feed(session, RMC_1, GGA_1, GGA_2) + session.flush().fixes

    assert [fix.fix_time for fix in fixes] == [
        datetime(1994, 3, 23, 12, 0, 0, tzinfo=UTC),
        datetime(1994, 3, 23, 12, 0, 1, tzinfo=UTC),
    ]
    assert fixes[1].speed_kmh is None
    assert fixes[1].satellites == 7


def test_gga_after_midnight_moves_to_the_next_day() -> None:
    rmc = nmea("GPRMC,235959,A,4807.038,N,01131.000,E,0.0,0.0,311299,,")
    gga = nmea("GPGGA,000000,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")
    session = NmeaSession()

    fixes = feed(session, rmc, gga) + session.flush().fixes

    assert fixes[-1].fix_time == datetime(2000, 1, 1, 0, 0, 0, tzinfo=UTC)


def test_validity_comes_from_rmc_status() -> None:
    rmc = nmea("GPRMC,120000,V,4807.038,N,01131.000,E,0.0,0.0,230394,,")
    session = NmeaSession()

    [fix] = feed(session, rmc, GGA_1)

    assert fix.valid is False


def test_gga_quality_zero_is_invalid_without_rmc() -> None:
    gga = nmea("GPGGA,120001,4807.040,N,01131.010,E,0,00,,,M,,M,,")
    session = NmeaSession()

    fixes = feed(session, RMC_1, gga) + session.flush().fixes

    assert [fix.valid for fix in fixes] == [True, False]


def test_ten_hertz_epochs_are_kept_apart() -> None:
    first = nmea("GNRMC,120000.10,A,4807.038,N,01131.000,E,1.0,0.0,230394,,,A")
    second = nmea("GNRMC,120000.20,A,4807.039,N,01131.000,E,1.0,0.0,230394,,,A")
    session = NmeaSession()

    fixes = feed(session, first, second) + session.flush().fixes

    assert [fix.fix_time.microsecond for fix in fixes] == [100000, 200000]


def test_receiver_without_fix_sends_empty_sentences_that_are_skipped() -> None:
    lines = [
        nmea("GPRMC,,V,,,,,,,,,,N"),
        nmea("GPGGA,120000,,,,,0,00,99.99,,,,,,"),
        nmea("GPGLL,,,,,,V,N"),
    ]
    fixes, errors = decode_lines("\n".join(lines))

    assert (fixes, errors) == ([], [])


def test_other_sentences_comments_and_blank_lines_are_skipped() -> None:
    lines = [
        "# a gpsd comment, with ünïcode",
        "",
        "   ",
        nmea("GPGSV,3,1,10,30,78,263,35,12,55,078,31,14,43,245,37,29,39,189,43"),
        nmea("GPZDA,094737,20,08,2018,-01,00"),
        nmea("SDDPT,5.3,0.4,"),
        nmea("WIMWV,57.5,R,13.0,N,A"),
        nmea("GPGLC,9960,,,,,,,,,,,,"),
        nmea("PGRME,15.0,M,45.0,M,25.0,M"),
        "!AIVDM,1,1,,A,13aEOK?P00PD2wVMdLDRhgvL289?,0*26",
    ]
    session = NmeaSession()

    for line in lines:
        assert session.decode(line.encode()) == session.flush()


def test_missing_checksum_is_accepted() -> None:
    session = NmeaSession()

    fixes = feed(session, RMC_1.split("*")[0], GGA_1.split("*")[0])

    assert len(fixes) == 1


# --- bad lines -------------------------------------------------------------------------


def test_bad_checksum_is_rejected_and_the_neighbours_are_kept() -> None:
    bad = RMC_2.replace("4807.040", "4807.041")
    fixes, errors = decode_lines("\r\n".join([RMC_1, bad, RMC_3]))

    assert [fix.fix_time.second for fix in fixes] == [0, 2]
    assert len(errors) == 1
    assert errors[0].startswith("line 2: checksum does not match")


def test_bad_checksum_on_a_skipped_sentence_type_is_still_an_error() -> None:
    with pytest.raises(NmeaError, match="checksum"):
        NmeaSession().decode(b"$GPGSV,3,1,10,30,78,263,35*00")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("hello world", "not an NMEA sentence"),
        ("$", "not an NMEA sentence"),
        ("$GPRMC,120000,A,4807.038,N,01131.000,E,1.0,0.0,230394*7", "not an NMEA sentence"),
        (nmea("GPRMC,120000,A,4807.038,,01131.000,E,1.0,0.0,230394,,"), "hemisphere"),
        (nmea("GPRMC,120000,A,,N,01131.000,E,1.0,0.0,230394,,"), "only one of"),
        (nmea("GPRMC,120000,A,4807,N,01131.000,E,1.0,0.0,230394,,"), "ddmm.mmmm"),
        (nmea("GPRMC,120000,A,9107.038,N,01131.000,E,1.0,0.0,230394,,"), "latitude"),
        (nmea("GPRMC,120000,A,4807.038,N,18131.000,E,1.0,0.0,230394,,"), "longitude"),
        (nmea("GPRMC,996000,A,4807.038,N,01131.000,E,1.0,0.0,230394,,"), "RMC time"),
        (nmea("GPRMC,,A,4807.038,N,01131.000,E,1.0,0.0,230394,,"), "without UTC time"),
        (nmea("GPRMC,120000,A,4807.038,N,01131.000,E,1.0,0.0,320394,,"), "RMC date"),
        (nmea("GPRMC,120000,A,4807.038,N,01131.000,E,fast,0.0,230394,,"), "RMC speed"),
        (nmea("GPRMC,120000,A,4807.038,N,01131.000,E,-1.0,0.0,230394,,"), "RMC speed"),
        (nmea("GPGGA,120000,4807.038,N,01131.000,E,1,8.5,0.9,1,M,,M,,"), "satellites"),
        (nmea("GPGGA,120000,4807.038,N,01131.000,E,1,08,0.9,nan,M,,M,,"), "altitude"),
        (nmea("GPVTG,054.7,T,,M,,N,inf,K"), "VTG speed"),
        ("$GPRMC,120000,A,4807.038,N,01131.000,E,1.0,0.0,230394,,*\xe9", "non-ASCII"),
    ],
)
def test_damaged_lines_get_a_clear_error(line: str, message: str) -> None:
    with pytest.raises(NmeaError, match=message):
        NmeaSession().decode(line.encode("latin-1"))


# --- identification --------------------------------------------------------------------


def test_pgid_identifies_the_unit_once() -> None:
    session = NmeaSession()
    pgid = nmea("PGID,123456789012345").encode()

    first = session.decode(pgid)

    assert first.identifier == "123456789012345"
    assert (first.fixes, first.reply, first.refusal) == ([], None, None)
    assert session.decode(pgid).identifier is None
    assert session.identifier == "123456789012345"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("$PGID,123456789012345", "without checksum"),
        ("$PGID,123456789012345*07", "checksum does not match"),
        (nmea("PGID,123 456"), "bad PGID identifier"),
        (nmea("PGID,123,456"), "bad PGID identifier"),
        (nmea("PGID,"), "bad PGID identifier"),
    ],
)
def test_pgid_needs_a_checksum_and_one_clean_identifier(line: str, message: str) -> None:
    session = NmeaSession()

    with pytest.raises(NmeaError, match=message):
        session.decode(line.encode())
    assert session.identifier is None


def test_identifier_prefix_identifies_and_the_sentence_is_used() -> None:
    session = NmeaSession()

    first = session.decode(f"123456789012345,{RMC_1}".encode())
    second = session.decode(f"123456789012345,{RMC_2}".encode())

    assert first.identifier == "123456789012345"
    assert first.fixes == []
    assert second.identifier is None
    assert second.fixes[0].fix_time.second == 0


def test_prefix_on_a_bad_line_does_not_identify() -> None:
    session = NmeaSession()
    bad = RMC_1[:-2] + "00"

    with pytest.raises(NmeaError, match="checksum"):
        session.decode(f"123456789012345,{bad}".encode())
    assert session.identifier is None
    assert session.decode(f"123456789012345,{RMC_1}".encode()).identifier == "123456789012345"


def test_another_units_line_is_refused_and_does_not_close_the_epoch() -> None:
    session = NmeaSession()
    session.decode(nmea("PGID,111").encode())
    session.decode(RMC_1.encode())

    with pytest.raises(NmeaError, match="'222'"):
        session.decode(f"222,{RMC_2}".encode())
    [fix] = feed(session, GGA_1)
    assert fix.altitude == 545.4


def test_decode_lines_ignores_identification() -> None:
    text = "\n".join([nmea("PGID,123456789012345"), f"123456789012345,{RMC_1}", GGA_1])

    fixes, errors = decode_lines(text)

    assert (len(fixes), errors) == (1, [])


# --- framing ---------------------------------------------------------------------------


def test_split_takes_every_line_ending_and_leaves_the_partial_line() -> None:
    session = NmeaSession()
    buffer = bytearray(b"one\r\ntwo\nthree\rfour\r\n\r\n\nfive")

    assert session.split(buffer) == [b"one", b"two", b"three", b"four"]
    assert buffer == bytearray(b"five")


def test_split_byte_by_byte() -> None:
    raw = f"{RMC_1}\r\n{GGA_1}\r\n".encode()
    session = NmeaSession()
    buffer = bytearray()
    frames = []
    for byte in raw:
        buffer.append(byte)
        frames += session.split(buffer)

    assert frames == [RMC_1.encode(), GGA_1.encode()]
    assert buffer == bytearray()
    [fix] = [fix for frame in frames for fix in session.decode(frame).fixes]
    assert fix.altitude == 545.4


def test_split_refuses_a_line_over_max_frame() -> None:
    session = NmeaSession(max_frame=16)
    buffer = bytearray(b"x" * 17)

    with pytest.raises(FrameTooLarge):
        session.split(buffer)
    assert session.split(bytearray(b"x" * 16)) == []


def test_split_returns_good_lines_before_an_oversized_one() -> None:
    session = NmeaSession(max_frame=16)
    buffer = bytearray(b"short\n" + b"x" * 40 + b"\n")

    assert session.split(buffer) == [b"short"]
    with pytest.raises(FrameTooLarge):
        session.split(buffer)


# --- fuzz ------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=120), max_size=8))
def test_arbitrary_bytes_raise_only_decode_errors(chunks: list[bytes]) -> None:
    session = NmeaSession(max_frame=64)
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        try:
            frames = session.split(buffer)
        except FrameTooLarge:
            return
        for frame in frames:
            with suppress(DecodeError):
                session.decode(frame)
    session.flush()


_FIELD = st.text(alphabet="0123456789.-NSEWAVMTKn,e+", max_size=12)
_SENTENCE = st.builds(
    lambda talker, kind, fields: nmea(f"{talker}{kind}," + ",".join(fields)),
    st.sampled_from(["GP", "GN", "PG"]),
    st.sampled_from(["RMC", "GGA", "GLL", "VTG", "GSA", "GSV", "ID", "ZDA"]),
    st.lists(_FIELD, max_size=16),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(_SENTENCE, max_size=10))
def test_well_framed_sentences_with_odd_fields_raise_only_nmea_errors(lines: list[str]) -> None:
    session = NmeaSession()
    for line in lines:
        try:
            decoded = session.decode(line.encode())
        except NmeaError:
            continue
        for fix in decoded.fixes:
            assert -90 <= fix.latitude <= 90
            assert -180 <= fix.longitude <= 180
            assert fix.fix_time.tzinfo is UTC
    session.flush()
    decode_lines("\n".join(lines))
