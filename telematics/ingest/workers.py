"""Worker threads fed by the pipeline's stored-records listeners.

A stored-records listener runs in the event loop after every committed batch, so it must
only hand the batch on. ``StoredRecordsWorker`` is that hand-over: ``submit`` queues an
item for the worker's own thread (with its own database connection), ``take`` gives the
thread the next one, ``done`` marks it finished, and ``wait_idle`` lets tests and
shutdown wait for the queue to drain. ``attach_worker`` starts a worker, registers its
listener and stops it after the pipeline stops, so ``IngestService.stop`` needs no
change.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

STOP = object()


class StoredRecordsWorker:
    thread_name = "stored-records"

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._busy = 0
        self._idle = threading.Condition()
        self._thread = threading.Thread(target=self.run, name=self.thread_name, daemon=True)

    # --- event-loop side

    def listener(self, positions: list, moved: set[int]) -> None:
        raise NotImplementedError

    def submit(self, item: Any) -> None:
        with self._idle:
            self._busy += 1
        self._queue.put(item)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the queued items, then end the thread."""
        self._queue.put(STOP)
        self._thread.join(timeout)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until every submitted item is done (tests and shutdown)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    # --- worker side

    def run(self) -> None:
        raise NotImplementedError

    def take(self, timeout: float) -> Any:
        """The next item, ``STOP`` at shutdown, or None after ``timeout`` seconds."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def done(self, count: int = 1) -> None:
        with self._idle:
            self._busy = max(0, self._busy - count)
            self._idle.notify_all()


def attach_worker(pipeline, worker: StoredRecordsWorker, name: str) -> StoredRecordsWorker:
    """Start ``worker`` on ``pipeline``'s stored records; reachable as ``pipeline.<name>``,
    stopped (queue drained, thread ended) after the pipeline stops."""
    worker.start()
    pipeline.stored_listeners.append(worker.listener)
    setattr(pipeline, name, worker)
    stop_pipeline = pipeline.stop

    async def stop() -> None:
        import asyncio

        await stop_pipeline()
        await asyncio.get_running_loop().run_in_executor(None, worker.stop)

    pipeline.stop = stop
    return worker
