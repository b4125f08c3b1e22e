"""Positions as CSV and GPX, besides JSON, for spreadsheets and mapping tools.

Both render the ``results`` of a position page; the next page is in the ``Link`` header.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime

import gpxpy.gpx
from rest_framework.renderers import BaseRenderer

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
                writer.writerow(["" if row.get(c) is None else row.get(c) for c in CSV_COLUMNS])
        return out.getvalue().encode(self.charset)


class PositionGpxRenderer(BaseRenderer):
    """A GPX 1.1 track, one segment a page: position, elevation and fix time."""

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
        track = gpxpy.gpx.GPXTrack(name=vehicle() if callable(vehicle) else None)
        segment = gpxpy.gpx.GPXTrackSegment()
        for row in rows:
            segment.points.append(gpxpy.gpx.GPXTrackPoint(
                latitude=row["latitude"], longitude=row["longitude"],
                elevation=row.get("altitude_m"),
                time=datetime.fromisoformat(row["fix_time"]),
            ))
        track.segments.append(segment)
        gpx.tracks.append(track)
        return gpx.to_xml(version="1.1").encode(self.charset)
