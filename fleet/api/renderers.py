"""JSON through orjson; positions as CSV and GPX too, for spreadsheets and mapping tools.

The CSV and GPX renderers render the ``results`` of a position page; the next page is in
the ``Link`` header. Their rows may hold times as RFC 3339 text (a serializer's output)
or as datetimes (the API's bulk reads, ``fleet.api.rows``).
"""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ElementTree
from datetime import datetime

import gpxpy.gpx
import orjson
from rest_framework.renderers import BaseRenderer, JSONRenderer

from fleet.api.serializers import rfc3339

# What DRF's JSONRenderer escapes so that the output is also valid JavaScript.
LINE_SEPARATORS = ((b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"))


class FastJSONRenderer(JSONRenderer):
    """DRF's JSON output, written by orjson: the same text for everything the API
    returns (times as RFC 3339 with "Z" for UTC, as DRF writes them), about ten times
    faster, which is most of what a page of 1,000 vehicles or positions costs to send.
    Only floats below 1e-4 read differently (0.00001 for 1e-05: the same number).

    Pretty-printing (``Accept: application/json; indent=2``) and anything orjson refuses
    (integers beyond 64 bits) go DRF's way. Not-a-number floats are written as null,
    where DRF would fail.
    """

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        if data is None:
            return b""
        if self.get_indent(accepted_media_type, renderer_context or {}) is not None:
            return super().render(data, accepted_media_type, renderer_context)
        try:
            body = orjson.dumps(data, default=self.encoder_class().default,
                                option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS)
        except orjson.JSONEncodeError:
            return super().render(data, accepted_media_type, renderer_context)
        for raw, escaped in LINE_SEPARATORS:
            if raw in body:
                body = body.replace(raw, escaped)
        return body


CSV_COLUMNS = (
    "id", "vehicle", "device", "fix_time", "server_time", "latitude", "longitude",
    "altitude_m", "speed_kmh", "course", "satellites", "hdop", "valid", "ignition",
    "odometer_km",
)


def _rows_of(data) -> list[dict] | None:
    if isinstance(data, dict) and isinstance(data.get("results"), list):
        return data["results"]
    if isinstance(data, list):
        return data
    return None


def _error_lines(data) -> list[tuple[str, str]]:
    """An error body (``{"field": ["message"]}`` or ``{"detail": ...}``) as pairs."""
    if not isinstance(data, dict):
        return [("detail", str(data))]
    lines = []
    for field, messages in data.items():
        for message in messages if isinstance(messages, list) else [messages]:
            lines.append((field, str(message)))
    return lines


class PositionCsvRenderer(BaseRenderer):
    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        rows = _rows_of(data)
        if rows is None:
            writer.writerow(["field", "error"])
            writer.writerows(_error_lines(data))
        else:
            writer.writerow(CSV_COLUMNS)
            for row in rows:
                writer.writerow([_csv_value(row.get(c)) for c in CSV_COLUMNS])
        return out.getvalue().encode(self.charset)


def _csv_value(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return rfc3339(value)
    return value


# Garmin's TrackPointExtension (v2) carries speed and course in GPX 1.1, whose own
# track points have neither (GPX 1.0 had them); Garmin's software, GPSBabel, gpxpy and
# most track viewers read it. Speed is in metres per second there, as in GPX 1.0.
TRACKPOINT_EXTENSION_NS = "http://www.garmin.com/xmlschemas/TrackPointExtension/v2"
TRACKPOINT_EXTENSION_XSD = "https://www8.garmin.com/xmlschemas/TrackPointExtensionv2.xsd"


class PositionGpxRenderer(BaseRenderer):
    """A GPX 1.1 track, one segment a page: position, elevation, fix time, satellites and
    HDOP in GPX's own elements; speed (m/s) and course (degrees) in Garmin's
    TrackPointExtension v2 (``gpxtpx:speed``, ``gpxtpx:course``)."""

    media_type = "application/gpx+xml"
    format = "gpx"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        gpx = gpxpy.gpx.GPX()
        gpx.creator = "Fleetbook"
        rows = _rows_of(data)
        if rows is None:
            gpx.description = "; ".join(f"{f}: {m}" for f, m in _error_lines(data))
            return gpx.to_xml(version="1.1").encode(self.charset)
        view = (renderer_context or {}).get("view")
        vehicle = getattr(view, "gpx_track_name", None)
        gpx.nsmap["gpxtpx"] = TRACKPOINT_EXTENSION_NS
        gpx.schema_locations = [
            "http://www.topografix.com/GPX/1/1", "http://www.topografix.com/GPX/1/1/gpx.xsd",
            TRACKPOINT_EXTENSION_NS, TRACKPOINT_EXTENSION_XSD,
        ]
        track = gpxpy.gpx.GPXTrack(name=vehicle() if callable(vehicle) else None)
        segment = gpxpy.gpx.GPXTrackSegment()
        for row in rows:
            fix_time = row["fix_time"]
            point = gpxpy.gpx.GPXTrackPoint(
                latitude=row["latitude"], longitude=row["longitude"],
                elevation=row.get("altitude_m"),
                time=fix_time if isinstance(fix_time, datetime)
                else datetime.fromisoformat(fix_time),
                horizontal_dilution=row.get("hdop"),
            )
            point.satellites = row.get("satellites")
            extension = _speed_and_course(row.get("speed_kmh"), row.get("course"))
            if extension is not None:
                point.extensions.append(extension)
            segment.points.append(point)
        track.segments.append(segment)
        gpx.tracks.append(track)
        return gpx.to_xml(version="1.1").encode(self.charset)


def _speed_and_course(speed_kmh: float | None, course: float | None):
    """``<gpxtpx:TrackPointExtension>`` with what the fix has of the two, or None."""
    if speed_kmh is None and course is None:
        return None
    extension = ElementTree.Element(f"{{{TRACKPOINT_EXTENSION_NS}}}TrackPointExtension")
    # The schema's order: speed before course.
    if speed_kmh is not None:
        ElementTree.SubElement(extension, f"{{{TRACKPOINT_EXTENSION_NS}}}speed").text = repr(
            round(speed_kmh / 3.6, 3))
    if course is not None:
        degrees = course % 360.0
        ElementTree.SubElement(extension, f"{{{TRACKPOINT_EXTENSION_NS}}}course").text = repr(
            degrees if degrees < 360.0 else 0.0)  # the schema's range is [0, 360)
    return extension
