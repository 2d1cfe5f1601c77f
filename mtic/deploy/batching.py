"""Micro-batching: concurrent requests gathered into one model call (asyncio queue + one inference thread)."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

Sessions = Sequence[Sequence[str]]


class MicroBatcher:
    """`await batcher.submit(sessions)` -> `fn(sessions)`'s results for them, computed together with the sessions
    of other requests that arrive within `wait_ms` of the first one (at most `max_sessions` per call; one request
    larger than that runs alone). `fn(all sessions) -> one result per session` runs on `executor`."""

    def __init__(self, fn: Callable[[list[Sequence[str]]], list[Any]], executor: Executor, max_sessions: int = 32,
                 wait_ms: float = 5.0) -> None:
        self.fn, self.executor = fn, executor
        self.max_sessions, self.wait = max(1, max_sessions), max(0.0, wait_ms) / 1000.0
        self._queue: asyncio.Queue[tuple[Sessions, asyncio.Future]] | None = None
        self._task: asyncio.Task | None = None
        self._carry: tuple[Sessions, asyncio.Future] | None = None
        self.calls = 0  # model calls made (observability and tests)

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="mtic-micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        waiting = [self._carry] if self._carry else []
        while self._queue is not None and not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        for _, future in waiting:
            if not future.done():
                future.set_exception(RuntimeError("service shutting down"))

    async def submit(self, sessions: Sessions) -> list[Any]:
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        await self._queue.put((sessions, future))
        return await future

    async def _gather(self) -> list[tuple[Sessions, asyncio.Future]]:
        """The next batch: the first waiting request, then whatever fits and arrives within the window."""
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        first, self._carry = self._carry or await self._queue.get(), None
        batch, size, deadline = [first], len(first[0]), loop.time() + self.wait
        while size < self.max_sessions:
            if self._queue.empty():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                await asyncio.sleep(min(remaining, 0.0005))
                continue
            item = self._queue.get_nowait()
            if size + len(item[0]) > self.max_sessions:
                self._carry = item  # it opens the next batch
                break
            batch.append(item)
            size += len(item[0])
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            batch = [(s, f) for s, f in batch if not f.done()]  # requests whose client went away
            if not batch:
                continue
            flat = [session for sessions, _ in batch for session in sessions]
            try:
                self.calls += 1
                results = await loop.run_in_executor(self.executor, self.fn, flat)
            except Exception as err:  # noqa: BLE001 - the error belongs to the requests, not to the batcher
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            start = 0
            for sessions, future in batch:
                if not future.done():
                    future.set_result(results[start : start + len(sessions)])
                start += len(sessions)
