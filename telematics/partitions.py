"""Monthly partitions of the position table on PostgreSQL.

Positions are range-partitioned by fix time so that old months can be detached and
archived without touching the live table. A DEFAULT partition catches anything outside
the monthly ones (a unit with a wrong clock), so an insert never fails for lack of one.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime

from django.db import DatabaseError, connection

logger = logging.getLogger(__name__)

TABLE = "telematics_position"


def month_start(year: int, month: int) -> date:
    year += (month - 1) // 12
    month = (month - 1) % 12 + 1
    return date(year, month, 1)


def ensure_position_partitions(
    months_back: int = 1, months_ahead: int = 2, today: date | None = None, using=None
) -> list[str]:
    """Create the monthly partitions around today that do not exist yet; returns them.

    Safe to call at every start-up. A no-op on databases other than PostgreSQL.
    """
    conn = using or connection
    if conn.vendor != "postgresql":
        return []
    today = today or datetime.now(UTC).date()
    created = []
    for offset in range(-months_back, months_ahead + 1):
        start = month_start(today.year, today.month + offset)
        end = month_start(start.year, start.month + 1)
        name = f"{TABLE}_y{start.year:04d}m{start.month:02d}"
        with conn.cursor() as cursor:
            cursor.execute("SELECT to_regclass(%s)", [name])
            if cursor.fetchone()[0] is not None:
                continue
            try:
                cursor.execute(
                    f"CREATE TABLE {name} PARTITION OF {TABLE} "
                    f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
                )
                created.append(name)
            except DatabaseError as error:
                # Rows for that month already sit in the default partition; leave them.
                logger.warning("Could not create partition %s: %s", name, error)
    return created
