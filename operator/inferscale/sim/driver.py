"""Real-time adaptor: drives a :class:`LatencyModel` from the event loop's clock.

The model is clock-free; this is the only place that ties it to wall time. It advances the
model whenever something happens (a submission, a cancellation, a scrape) and arms one timer
for the end of the step in flight, then wakes the handlers whose sequences progressed. No task
runs in the background, so an idle sim costs nothing and a zero-latency request completes
inside ``submit`` without a single extra wake-up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from inferscale.sim.model import KvEvent, LatencyModel, Seq


@dataclass(slots=True, eq=False)
class Ticket:
    """A handler's view of one sequence: the sequence and the event set when it progresses."""

    seq: Seq
    stream: bool
    event: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait(self) -> None:
        """Wait for the next progress (streaming) or for the end (otherwise)."""
        await self.event.wait()
        self.event.clear()


class EngineDriver:
    """Feeds the model the loop's time; one per server, used from the loop's thread only."""

    def __init__(
        self,
        model: LatencyModel,
        loop: asyncio.AbstractEventLoop,
        publish: Callable[[list[KvEvent]], None] | None = None,
    ) -> None:
        """Drive ``model`` with ``loop.time()`` as its clock.

        ``publish`` gets the model's cache events after every advance that recorded any (the
        model must record them: ``LatencyModel(record_events=True)``).
        """
        self.model = model
        self._publish = publish
        self._loop = loop
        self._tickets: dict[int, Ticket] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    def now(self) -> float:
        """The model's clock: the loop's monotonic time."""
        return self._loop.time()

    def submit(
        self,
        prompt_tokens: int,
        output_tokens: int,
        hashes: Sequence[int],
        *,
        stream: bool,
        adapter: str | None = None,
    ) -> Ticket:
        """Queue a request now (on a LoRA adapter, if named); its event fires as it progresses."""
        now = self._loop.time()
        seq = self.model.submit(now, prompt_tokens, output_tokens, hashes, adapter)
        ticket = Ticket(seq, stream)
        self._tickets[seq.id] = ticket
        self._sync(now)
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        """Drop the request now (client gone): its slot and KV blocks are freed at once."""
        self._tickets.pop(ticket.seq.id, None)
        if not ticket.seq.done:
            now = self._loop.time()
            self.model.cancel(ticket.seq, now)
            self._sync(now)

    def sync(self) -> None:
        """Bring the model up to now (before reading its gauges)."""
        self._sync(self._loop.time())

    def close(self) -> None:
        """Stop the timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None

    def _sync(self, now: float) -> None:
        tickets = self._tickets
        touched = self.model.advance(now)
        if self._publish is not None:
            events = self.model.take_events()
            if events:
                self._publish(events)
        for seq in touched:
            ticket = tickets.get(seq.id)
            if ticket is None:
                continue
            if seq.done:
                del tickets[seq.id]
                ticket.event.set()
            elif ticket.stream:
                ticket.event.set()
        when = self.model.next_event_time()
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when is not None:
            self._timer = self._loop.call_at(when, self._fire, when)

    def _fire(self, when: float) -> None:
        self._timer = self._timer_at = None
        # The loop may run a timer a clock tick early; the step it was armed for is over.
        self._sync(max(self._loop.time(), when))
