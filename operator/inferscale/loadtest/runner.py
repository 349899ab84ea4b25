"""The open-loop scheduler: send each arrival on time, watch, draw, and summarise.

Open loop: a request is sent at its arrival time whatever happened to the earlier ones. If
``max_in_flight`` requests are already running it is dropped (counted, never queued), so memory
stays bounded however slow the endpoint gets. When the arrivals end (the planned duration, or the
trace) the requests in flight get up to ``drain_seconds`` to finish; whatever is left then, or
when ``stop`` is set (Ctrl-C), is cancelled and counted as cancelled.

Sending late is measured: the largest delay between an arrival's time and its sending is in the
summary, because a client that cannot keep up under-reports the offered load.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from inferscale.loadtest.arrivals import Arrival
from inferscale.loadtest.client import Target, send
from inferscale.loadtest.observe import ClusterWatch
from inferscale.loadtest.prompts import PromptBuilder
from inferscale.loadtest.report import LiveFrame, Phase, RunInfo, Summary, summarize
from inferscale.loadtest.stats import Recorder
from inferscale.loadtest.status import ModelStatus
from inferscale.loadtest.trace import TraceError, TraceStats
from inferscale.loadtest.view import LiveView


@dataclass
class RunOptions:
    """How the run behaves, besides where the requests go."""

    info: RunInfo
    max_in_flight: int
    refresh_seconds: float = 1.0
    drain_seconds: float = 60.0
    seed: int = 0


class Runner:
    """One load test: call :meth:`run` once."""

    def __init__(
        self,
        options: RunOptions,
        target: Target,
        session: aiohttp.ClientSession,
        prompts: PromptBuilder,
        *,
        phase: Phase,
        view: LiveView | None = None,
        watch: ClusterWatch | None = None,
        trace: TraceStats | None = None,
    ) -> None:
        """Collaborators come in; nothing starts until :meth:`run`."""
        self.options = options
        self.target = target
        self.session = session
        self.prompts = prompts
        self.phase = phase
        self.view = view
        self.watch = watch
        self.trace = trace
        self.notes: list[str] = []
        self.next_index = 0
        self.draining = False
        self.finished = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()
        self.start = self._loop.time()
        self.recorder = self._new_recorder()

    def _new_recorder(self) -> Recorder:
        # The reservoir's RNG is separate from the arrivals' so that sampling never shifts them.
        return Recorder(self.start, random.Random(self.options.seed + 1))

    def now(self) -> float:
        """The runner's clock (monotonic seconds)."""
        return self._loop.time()

    async def _one(self, arrival: Arrival, prompt: str) -> None:
        try:
            outcome = await send(
                self.session,
                self.target,
                prompt,
                arrival.output_tokens,
                arrival.prompt_tokens,
                self.now,
            )
        except asyncio.CancelledError:
            self.recorder.on_cancelled()
            raise
        self.recorder.on_done(self.now(), outcome)

    async def _schedule(self, arrivals: Iterator[Arrival]) -> None:
        planned = self.options.info.duration
        while True:
            try:
                arrival = next(arrivals)
            except StopIteration:
                break
            except (TraceError, OSError, UnicodeDecodeError) as error:
                self.notes.append(f"stopped reading the trace: {error}")
                break
            if planned is not None and arrival.at >= planned:
                break
            self.next_index = arrival.index
            due = self.start + arrival.at
            # sleep(0) when late still yields, so requests start and the view redraws in a burst.
            await asyncio.sleep(max(due - self.now(), 0.0))
            now = self.now()
            if self.recorder.in_flight >= self.options.max_in_flight:
                self.recorder.on_dropped(now)
                continue
            prompt = self.prompts.build(arrival)
            self.recorder.on_sent(now, now - due)
            task = asyncio.create_task(self._one(arrival, prompt))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if planned is not None:
            # A schedule may end with a quiet stage: keep watching until its end.
            await asyncio.sleep(max(self.start + planned - self.now(), 0.0))

    def _frame(self) -> LiveFrame:
        now = self.now()
        return LiveFrame(
            info=self.options.info,
            elapsed=now - self.start,
            phase=self.phase(now - self.start, self.next_index),
            recorder=self.recorder,
            now=now,
            models=self.watch.models if self.watch else (),
            cluster_note=self.watch.note if self.watch else None,
            draining=self.draining,
            finished=self.finished,
        )

    async def _draw(self) -> None:
        assert self.view is not None
        while True:
            self.view.draw(self._frame())
            await asyncio.sleep(self.options.refresh_seconds)

    def _record_models(self, models: list[ModelStatus]) -> None:
        self.recorder.on_models(self.now(), models)

    async def run(self, arrivals: Iterator[Arrival], stop: asyncio.Event) -> Summary:
        """Send, watch and draw until the arrivals end and the requests in flight finish."""
        self.start = self.now()
        self.recorder = self._new_recorder()
        helpers: list[asyncio.Task[Any]] = []
        if self.watch is not None:
            helpers.append(asyncio.create_task(self.watch.run(self._record_models)))
        if self.view is not None:
            helpers.append(asyncio.create_task(self._draw()))
        stopper = asyncio.create_task(stop.wait())
        try:
            scheduler = asyncio.create_task(self._schedule(arrivals))
            await asyncio.wait({scheduler, stopper}, return_when=asyncio.FIRST_COMPLETED)
            scheduler.cancel()
            await asyncio.gather(scheduler, return_exceptions=True)
            if self._tasks and not stop.is_set():
                self.draining = True
                await self._drain(stop, stopper)
        finally:
            leftovers = list(self._tasks)
            for task in leftovers:
                task.cancel()
            await asyncio.gather(*leftovers, return_exceptions=True)
            for task in (*helpers, stopper):
                task.cancel()
            await asyncio.gather(*helpers, stopper, return_exceptions=True)
        elapsed = self.now() - self.start
        interrupted = stop.is_set()
        if self.watch is not None:
            # One last read, so the summary ends with the replicas as they are now.
            models = await self.watch.poll()
            if self.watch.note is None:
                self._record_models(models)
        if self.view is not None:
            self.draining, self.finished = False, True
            self.view.draw(self._frame())
        if self.recorder.max_lag > 1.0:
            self.notes.append(
                f"the load generator sent up to {self.recorder.max_lag:.1f} s late: the offered "
                "load was lower than planned (a faster machine or a lower rate helps)"
            )
        return summarize(
            self.options.info,
            self.recorder,
            elapsed,
            interrupted=interrupted,
            trace=self.trace,
            cluster_note=self.watch.note if self.watch else "not watched (--no-cluster)",
            notes=self.notes,
        )

    async def _drain(self, stop: asyncio.Event, stopper: asyncio.Task[Any]) -> None:
        """Wait for the requests in flight, until ``drain_seconds`` or ``stop``."""
        deadline = self.now() + self.options.drain_seconds
        while self._tasks and not stop.is_set():
            left = deadline - self.now()
            if left <= 0:
                self.notes.append(
                    f"{len(self._tasks)} requests still in flight after "
                    f"{self.options.drain_seconds:g} s of draining were cancelled"
                )
                return
            await asyncio.wait(
                {*self._tasks, stopper}, timeout=left, return_when=asyncio.FIRST_COMPLETED
            )
