"""Database connections of the ingest threads."""

from django.db import connection


def drop_broken_connection() -> None:
    """Close this thread's connection if an error broke it (an outage), else keep it.

    The ingest threads keep their connection open between batches whatever
    CONN_MAX_AGE says: reconnecting for every batch would cost more than the batch.
    """
    if connection.connection is not None and connection.errors_occurred:
        if not connection.is_usable():
            connection.close()
        connection.errors_occurred = False
