"""NMEA 0183 position sentences, from units over TCP and from MQTT/CoAP message bodies.

A receiver reports one position as several sentences, one a line: RMC carries the date,
speed, course and validity, GGA the altitude, satellites and HDOP, and VTG/GSA fill gaps.
Storing each sentence as its own fix would double the track and lose the date of GGA, so
an :class:`NmeaSession` merges the sentences of one epoch (same UTC time of day) into one
:class:`~telematics.protocols.base.Fix`. Sentences are parsed with pynmea2.

Rules, in the order a line meets them:

- Blank lines, ``#`` comment lines (gpsd logs) and ``!`` encapsulated sentences (AIS) are
  skipped. Any other line must be ASCII.
- Identification: ``$PGID,<identifier>*hh`` or an ``<identifier>,`` prefix before the
  ``$`` of a sentence (Traccar's T55 convention, ``123456789012345,$GPRMC,...``). PGID
  needs its checksum, since the identifier decides whose track the fixes join; a prefix is
  taken only from a line that is otherwise good. The first identification yields
  ``Decoded(identifier=...)``; repeating it is a no-op; a different identifier on the same
  session is an error, since a connection carries one unit.
- Checksums: a wrong checksum is an :class:`NmeaError` whatever the sentence type (the line
  is damaged, and it may have been a position). A missing checksum is accepted (except on
  PGID): NMEA 0183 made it optional before 2.0, and loggers and simple units still drop
  it.
- RMC, GGA, GLL, VTG and GSA are used; every other sentence type (GSV, ZDA, depth, wind,
  autopilot, proprietary...) is skipped. RMC/GGA/GLL without a position (a receiver with
  no fix yet sends empty fields) are skipped too: no fix, no error.
- Merging: RMC gives date, position, speed (knots -> km/h), course and validity (status
  ``A``); GGA altitude, satellites and HDOP (and the position and validity when there is
  no RMC); GLL a position when there is neither. VTG, which has no time, gives speed and
  course to the epoch in progress when RMC had none; GSA gives HDOP when GGA had none.
  The epoch key is the exact time of day, fraction included, so 5 or 10 Hz units keep
  every epoch. An epoch's fix is emitted when a sentence of another time arrives, once
  both its RMC and GGA are in, or on :meth:`NmeaSession.flush`; later sentences of an
  epoch already emitted are dropped (gpsd logs send GLL after RMC and GGA).
- Dates: GGA and GLL carry none. An epoch without RMC takes the date of the last RMC
  seen before it closed, moved by a day when that puts it more than 12 h from that RMC
  (midnight passed); before any RMC date its fix is dropped.
- Fix times are aware UTC datetimes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

import pynmea2

from telematics.protocols.base import Decoded, DecodeError, Fix, FrameTooLarge

KNOT_KMH = 1.852
_LINE_END = re.compile(rb"\r\n|\r|\n")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_IDENTIFIER = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_POSITION_TYPES = ("RMC", "GGA", "GLL")


class NmeaError(DecodeError):
    """An NMEA line that cannot be used: bad checksum, garbled field, foreign unit."""


@dataclass(slots=True)
class _Reading:
    """What one RMC, GGA or GLL sentence said about its epoch."""

    kind: str
    time: time
    latitude: float
    longitude: float
    valid: bool
    date: date | None = None
    speed_kmh: float | None = None
    course: float | None = None
    altitude: float | None = None
    satellites: int | None = None
    hdop: float | None = None


@dataclass(slots=True)
class _Epoch:
    """The sentences of one UTC time of day, waiting to become one fix."""

    time: time
    readings: dict[str, _Reading] = field(default_factory=dict)
    vtg_speed_kmh: float | None = None
    vtg_course: float | None = None
    gsa_hdop: float | None = None


class NmeaSession:
    """One unit's NMEA stream: frames lines and merges sentences into fixes."""

    def __init__(self, max_frame: int = 1024) -> None:
        self.max_frame = max_frame
        self.identifier: str | None = None
        self._pending: _Epoch | None = None
        self._closed_time: time | None = None
        self._last_rmc: datetime | None = None

    def split(self, buffer: bytearray) -> list[bytes]:
        """Remove complete lines from the front of ``buffer`` and return them.

        Lines end with ``\\n``, ``\\r\\n`` or ``\\r``; blank ones are dropped. A line over
        ``max_frame`` bytes raises FrameTooLarge whether or not its end has arrived, so
        the outcome does not depend on how TCP cut the stream; complete lines before it
        are returned first and the next call raises.
        """
        lines: list[bytes] = []
        start = 0
        while True:
            match = _LINE_END.search(buffer, start)
            end = match.start() if match else len(buffer)
            if end - start > self.max_frame:
                if lines:
                    break
                raise FrameTooLarge(f"NMEA line longer than {self.max_frame} bytes")
            if match is None:
                break
            line = bytes(buffer[start:end])
            if line.strip():
                lines.append(line)
            start = match.end()
        del buffer[:start]
        return lines

    def decode(self, frame: bytes) -> Decoded:
        """Decode one line; fixes come out as epochs complete (see the module rules)."""
        return self._decode_line(frame.decode("latin-1"))

    def flush(self) -> Decoded:
        """Emit the epoch in progress: end of an MQTT/CoAP message, or the unit is idle."""
        return Decoded(fixes=self._close())

    def _decode_line(self, line: str) -> Decoded:
        line = line.strip()
        if not line or line[0] in "#!":
            return Decoded()
        if not line.isascii():
            raise NmeaError(f"non-ASCII characters in line {_excerpt(line)}")
        identifier, sentence_text = _split_prefix(line)
        sentence = _parse(sentence_text)
        fixes: list[Fix] = []
        if _is_pgid(sentence):
            identifier = _pgid_identifier(sentence_text)
        elif isinstance(sentence, pynmea2.TalkerSentence):
            # A foreign unit's line must not close this unit's epoch: check it first.
            self._check_unit(identifier)
            fixes = self._use(sentence)
        return Decoded(identifier=self._identify(identifier), fixes=fixes)

    def _check_unit(self, identifier: str | None) -> None:
        if identifier is not None and self.identifier not in (None, identifier):
            raise NmeaError(f"line names unit {identifier!r}, session is unit {self.identifier!r}")

    def _identify(self, identifier: str | None) -> str | None:
        """Return the identifier the first time it is seen, None after."""
        self._check_unit(identifier)
        if identifier is None or identifier == self.identifier:
            return None
        self.identifier = identifier
        return identifier

    def _use(self, sentence: pynmea2.TalkerSentence) -> list[Fix]:
        kind = sentence.sentence_type
        if kind == "VTG":
            speed_kmh, course = _read_vtg(sentence)
            if self._pending is not None:
                self._pending.vtg_speed_kmh = speed_kmh
                self._pending.vtg_course = course
            return []
        if kind == "GSA":
            hdop = _number(sentence.hdop, "GSA HDOP", minimum=0.0)
            if self._pending is not None:
                self._pending.gsa_hdop = hdop
            return []
        if kind not in _POSITION_TYPES:
            return []
        reading = _read_position(sentence)
        if reading is None:
            return []
        return self._add(reading)

    def _add(self, reading: _Reading) -> list[Fix]:
        if reading.time == self._closed_time:
            return []
        fixes: list[Fix] = []
        if self._pending is not None and self._pending.time != reading.time:
            fixes += self._close()
        if self._pending is None:
            self._pending = _Epoch(reading.time)
        self._pending.readings.setdefault(reading.kind, reading)
        if reading.kind == "RMC" and reading.date is not None:
            self._last_rmc = datetime.combine(reading.date, reading.time.replace(tzinfo=UTC))
        if "RMC" in self._pending.readings and "GGA" in self._pending.readings:
            fixes += self._close()
        return fixes

    def _close(self) -> list[Fix]:
        epoch, self._pending = self._pending, None
        if epoch is None:
            return []
        self._closed_time = epoch.time
        fix_time = self._fix_time(epoch)
        if fix_time is None:
            return []
        rmc = epoch.readings.get("RMC")
        gga = epoch.readings.get("GGA")
        first = rmc or gga or epoch.readings["GLL"]
        speed_kmh = rmc.speed_kmh if rmc and rmc.speed_kmh is not None else epoch.vtg_speed_kmh
        course = rmc.course if rmc and rmc.course is not None else epoch.vtg_course
        hdop = gga.hdop if gga and gga.hdop is not None else epoch.gsa_hdop
        fix = Fix(
            fix_time=fix_time,
            latitude=first.latitude,
            longitude=first.longitude,
            altitude=gga.altitude if gga else None,
            speed_kmh=speed_kmh,
            course=course,
            satellites=gga.satellites if gga else None,
            hdop=hdop,
            valid=first.valid,
        )
        return [fix]

    def _fix_time(self, epoch: _Epoch) -> datetime | None:
        clock = epoch.time.replace(tzinfo=UTC)
        rmc = epoch.readings.get("RMC")
        if rmc is not None and rmc.date is not None:
            return datetime.combine(rmc.date, clock)
        if self._last_rmc is None:
            return None
        fix_time = datetime.combine(self._last_rmc.date(), clock)
        if fix_time - self._last_rmc > timedelta(hours=12):
            fix_time -= timedelta(days=1)
        elif self._last_rmc - fix_time > timedelta(hours=12):
            fix_time += timedelta(days=1)
        return fix_time


def decode_lines(text: str) -> tuple[list[Fix], list[str]]:
    """Decode a whole message body (MQTT/CoAP): one session, every line, then flush.

    Returns ``(fixes, errors)``: one message per bad line (``"line 3: ..."``), so good
    lines beside bad ones are never lost and the caller decides whether to refuse a body
    that gave errors and no fix. Identification lines are accepted and ignored here: the
    topic or path names the unit.
    """
    session = NmeaSession()
    fixes: list[Fix] = []
    errors: list[str] = []
    for number, line in enumerate(_LINE_BREAK.split(text), start=1):
        try:
            fixes += session._decode_line(line).fixes
        except NmeaError as error:
            errors.append(f"line {number}: {error}")
    fixes += session.flush().fixes
    return fixes, errors


def _excerpt(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _split_prefix(line: str) -> tuple[str | None, str]:
    """Split Traccar's ``<identifier>,$...`` prefix off a line."""
    if line.startswith("$"):
        return None, line
    dollar = line.find(",$")
    if dollar < 1:
        raise NmeaError(f"not an NMEA sentence: {_excerpt(line)}")
    identifier = line[:dollar]
    if not _IDENTIFIER.fullmatch(identifier):
        raise NmeaError(f"bad unit identifier prefix {_excerpt(identifier)}")
    return identifier, line[dollar + 1 :]


def _parse(text: str, *, check: bool = False) -> pynmea2.NMEASentence | None:
    """Parse with pynmea2; None for sentence types it does not know (skipped).

    pynmea2's proprietary sentence classes can raise anything on odd input, and the
    contract allows only DecodeError out, hence the last, broad clause.
    """
    try:
        return pynmea2.parse(text, check=check)
    except pynmea2.ChecksumError as error:
        raise NmeaError(f"{_parse_detail(error)} in {_excerpt(text)}") from None
    except pynmea2.SentenceTypeError:
        return None
    except pynmea2.ParseError:
        raise NmeaError(f"not an NMEA sentence: {_excerpt(text)}") from None
    except Exception as error:
        raise NmeaError(f"unparseable sentence {_excerpt(text)}: {error}") from None


def _parse_detail(error: pynmea2.ParseError) -> str:
    detail = error.args[0] if error.args else error
    return str(detail[0] if isinstance(detail, tuple) else detail)


def _is_pgid(sentence: pynmea2.NMEASentence | None) -> bool:
    return isinstance(sentence, pynmea2.ProprietarySentence) and sentence.manufacturer == "GID"


def _pgid_identifier(text: str) -> str:
    """The identifier of a ``$PGID`` sentence, whose checksum is required."""
    try:
        pynmea2.parse(text, check=True)
    except pynmea2.ParseError:
        raise NmeaError(f"PGID identification without checksum: {_excerpt(text)}") from None
    sentence = _parse(text)
    fields = sentence.data[1:] if sentence is not None else []
    if len(fields) != 1 or not _IDENTIFIER.fullmatch(fields[0]):
        raise NmeaError(f"bad PGID identifier in {_excerpt(text)}")
    return fields[0]


def _read_position(sentence: pynmea2.TalkerSentence) -> _Reading | None:
    """Read an RMC, GGA or GLL; None when the receiver had no position to give."""
    kind = sentence.sentence_type
    position = _position(sentence, kind)
    clock = sentence.timestamp
    if position is None:
        return None
    if clock is None:
        raise NmeaError(f"{kind} position without UTC time")
    if not isinstance(clock, time):
        raise NmeaError(f"{kind} time {clock!r} is not hhmmss[.sss]")
    latitude, longitude = position
    if kind == "RMC":
        day = sentence.datestamp
        if day is not None and not isinstance(day, date):
            raise NmeaError(f"RMC date {day!r} is not ddmmyy")
        knots = _number(sentence.spd_over_grnd, "RMC speed", minimum=0.0)
        return _Reading(
            kind,
            clock,
            latitude,
            longitude,
            valid=sentence.status == "A",
            date=day,
            speed_kmh=None if knots is None else knots * KNOT_KMH,
            course=_number(sentence.true_course, "RMC course", minimum=0.0),
        )
    if kind == "GGA":
        quality = _number(sentence.gps_qual, "GGA fix quality", minimum=0.0)
        satellites = _number(sentence.num_sats, "GGA satellites", minimum=0.0)
        if satellites is not None and not satellites.is_integer():
            raise NmeaError(f"GGA satellites {sentence.num_sats!r} is not a count")
        return _Reading(
            kind,
            clock,
            latitude,
            longitude,
            valid=quality is None or quality > 0,
            altitude=_number(sentence.altitude, "GGA altitude"),
            satellites=None if satellites is None else int(satellites),
            hdop=_number(sentence.horizontal_dil, "GGA HDOP", minimum=0.0),
        )
    return _Reading(kind, clock, latitude, longitude, valid=sentence.status in (None, "A"))


def _position(sentence: pynmea2.TalkerSentence, kind: str) -> tuple[float, float] | None:
    """Signed degrees, or None when both coordinates are empty (no fix yet).

    pynmea2 reads a missing hemisphere or coordinate as 0 degrees, which would put the
    unit in the Gulf of Guinea, so both are checked here first.
    """
    if not sentence.lat and not sentence.lon:
        return None
    if not sentence.lat or not sentence.lon:
        raise NmeaError(f"{kind} has only one of latitude and longitude")
    if sentence.lat_dir not in ("N", "S") or sentence.lon_dir not in ("E", "W"):
        raise NmeaError(f"{kind} hemisphere missing or not N/S, E/W")
    try:
        latitude = sentence.latitude
        longitude = sentence.longitude
    except (ValueError, TypeError):
        raise NmeaError(f"{kind} coordinates are not ddmm.mmmm") from None
    if not (math.isfinite(latitude) and abs(latitude) <= 90):
        raise NmeaError(f"{kind} latitude {sentence.lat!r} out of range")
    if not (math.isfinite(longitude) and abs(longitude) <= 180):
        raise NmeaError(f"{kind} longitude {sentence.lon!r} out of range")
    return latitude, longitude


def _read_vtg(sentence: pynmea2.TalkerSentence) -> tuple[float | None, float | None]:
    """Speed (km/h, or knots converted) and true course of a VTG."""
    speed_kmh = _number(sentence.spd_over_grnd_kmph, "VTG speed", minimum=0.0)
    if speed_kmh is None:
        knots = _number(sentence.spd_over_grnd_kts, "VTG speed", minimum=0.0)
        speed_kmh = None if knots is None else knots * KNOT_KMH
    return speed_kmh, _number(sentence.true_track, "VTG course", minimum=0.0)


def _number(value: object, what: str, minimum: float | None = None) -> float | None:
    """A finite float from a pynmea2 field, which hands back the raw text when it fails."""
    if value is None or value == "":
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, ArithmeticError):
        raise NmeaError(f"{what} {value!r} is not a number") from None
    if not math.isfinite(number) or (minimum is not None and number < minimum):
        raise NmeaError(f"{what} {value!r} out of range")
    return number
