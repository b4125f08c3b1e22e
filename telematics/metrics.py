"""Ingest counters, exported for Prometheus at /metrics and by ``ingest --stats``.

Counters live in the process that runs the listeners; in the one-process demo that is
the web process, so /metrics shows them directly.
"""

from prometheus_client import Counter, Gauge, Histogram

CONNECTIONS = Counter(
    "fleetbook_ingest_connections_total", "Unit connections accepted", ["protocol"]
)
OPEN_CONNECTIONS = Gauge(
    "fleetbook_ingest_open_connections", "Unit connections open now", ["protocol"]
)
FRAMES = Counter("fleetbook_ingest_frames_total", "Frames decoded", ["protocol"])
RECORDS_STORED = Counter(
    "fleetbook_ingest_records_stored_total", "Positions stored", ["protocol"]
)
RECORDS_DROPPED = Counter(
    "fleetbook_ingest_records_filtered_total", "Positions filtered out", ["protocol", "reason"]
)
ERRORS = Counter("fleetbook_ingest_errors_total", "Malformed frames", ["protocol"])
REFUSED = Counter("fleetbook_ingest_refused_units_total", "Unknown units refused", ["protocol"])
ACK_LATENCY = Histogram(
    "fleetbook_ingest_ack_latency_seconds",
    "Time from a frame's arrival to its acknowledgement",
    ["protocol"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
STORE_FAILURES = Counter(
    "fleetbook_ingest_store_failures_total", "Batches that failed to store (retried)"
)


def snapshot() -> dict[str, dict[str, float]]:
    """Counter values by protocol, for ``ingest --stats`` and the tests."""
    figures: dict[str, dict[str, float]] = {}
    for metric in (CONNECTIONS, FRAMES, RECORDS_STORED, ERRORS, REFUSED):
        for family in metric.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    protocol = sample.labels.get("protocol", "")
                    figures.setdefault(protocol, {})[family.name] = sample.value
    return figures
