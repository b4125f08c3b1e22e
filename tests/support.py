"""Helpers for tests that talk to real listeners from async code."""

from __future__ import annotations

import asyncio

from asgiref.sync import sync_to_async
from django.db import connection

IMEI = "356307042441013"


async def exchange(port: int, payload: bytes, reply_size: int, timeout: float = 5.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(reply_size), timeout)
    finally:
        writer.close()


def db(query):
    """Run an ORM query from an async test (the ORM is synchronous).

    It runs in a worker thread and closes that thread's connection afterwards, so the
    test database can be dropped at the end of the run.
    """

    def run():
        try:
            return query()
        finally:
            connection.close()

    return sync_to_async(run, thread_sensitive=False)()
