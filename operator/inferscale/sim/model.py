"""The replica latency model: one pure, clock-free class shared by the server and the what-if sim.

:class:`LatencyModel` is a discrete-step model of a continuous-batching engine (vLLM V1 without
chunked prefill). Time is always passed in; the model never reads a clock, sleeps or does I/O, so
the server drives it from the event loop's clock and the what-if simulator from virtual time, and
both get the same numbers for the same inputs.

How a step works:

- A step starts when the previous one ends, or when a request arrives at an idle engine (never
  before ``ready_at``, the cold start). At the start the scheduler admits waiting requests first
  come, first served, while fewer than ``max_num_seqs`` run and the KV cache has room for the
  whole sequence (prompt plus output; see below). A request that does not fit blocks the queue
  behind it, as in vLLM.
- The step lasts ``step_base + per_seq * running + per_context_token * context tokens of the
  decoding sequences``, plus ``prefill_overhead + per_prompt_token * uncached prompt tokens``
  when it prefills. Newly admitted sequences get their first token at the end of their prefill
  step; every other running sequence gets one token per step.
- KV space is counted in blocks of ``block_size`` tokens. Full prompt blocks are content-hashed
  and stay cached after their request ends, in an LRU list that gives them up only when a new
  block is needed; a new request reuses the longest cached prefix of its blocks and skips that
  part of the prefill.
- Host tier (off unless ``host_kv_capacity_tokens`` > 0): a cached block evicted from the GPU
  moves to host memory, itself an LRU list of that many tokens. A prompt's leading blocks may be
  found in either tier; a block found on the host moves back to the GPU (the tiers never hold
  the same block twice) and costs ``host_transfer_seconds_per_token`` per token in the step
  that admits it, instead of ``prefill_seconds_per_token``.
- Cache events: with ``record_events``, every change of what the tiers hold is appended to
  :attr:`LatencyModel.events` as a :class:`KvEvent` (vLLM's BlockStored / BlockRemoved /
  AllBlocksCleared, by medium), which is exactly what a router's cache index is fed with.

LoRA adapters: a request may name one. The running batch holds at most ``max_loras`` distinct
adapters, each in a GPU slot; a request whose adapter is not in a slot takes a free one, or the
least recently used slot of an adapter no running request uses, and its admission step costs
``lora_swap_seconds`` more. When no slot can be had, the request waits at the head of the queue
until a running request of another adapter finishes (vLLM's V1 scheduler instead lets later
requests of resident adapters pass it).

Simplification, stated so nobody mistakes it for vLLM: the sim reserves a sequence's whole KV
(prompt plus its known output length) at admission, as TGI and SGLang's conservative admission
do, so it never preempts. vLLM allocates lazily and preempts under pressure.

Results do not depend on how often :meth:`LatencyModel.advance` is called: steps are chained in
model time, and a run of identical decode steps is fast-forwarded in closed form (which is what
makes replaying an hour-long trace take seconds).
"""

from __future__ import annotations

import enum
import random
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from inferscale.sim.stats import EngineStats


class EngineParams(BaseModel):
    """Every knob of the latency model; presets are instances of this (see ``presets.py``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    max_num_seqs: int = Field(256, ge=1)
    """Most sequences in one batch (vLLM ``--max-num-seqs``)."""
    kv_capacity_tokens: int = Field(400_000, ge=1)
    """KV-cache size in tokens; requests wait when it is full."""
    block_size: int = Field(16, ge=1)
    """Tokens per KV block, the unit of allocation and of prefix caching (vLLM default 16)."""
    max_model_len: int = Field(32_768, ge=2)
    """Longest prompt plus output accepted, in tokens."""
    startup_delay_seconds: float = Field(0.0, ge=0)
    """Cold start: seconds from process start until the engine serves and ``/health`` is 200."""
    step_base_seconds: float = Field(0.0, ge=0)
    """Fixed cost of every forward pass (reading the weights once), seconds."""
    prefill_overhead_seconds: float = Field(0.0, ge=0)
    """Extra cost of a step that contains any prefill (per batch), seconds."""
    prefill_seconds_per_token: float = Field(0.0, ge=0)
    """Prefill cost per uncached prompt token, seconds."""
    decode_seconds_per_seq: float = Field(0.0, ge=0)
    """Step cost per running sequence, seconds (why decode slows as the batch grows)."""
    decode_seconds_per_context_token: float = Field(0.0, ge=0)
    """Step cost per context token of each decoding sequence (KV reads), seconds."""
    spike_probability: float = Field(0.0, ge=0, le=1)
    """Failure injection: chance that a step stalls by ``spike_seconds`` (GC, preemption, ...)."""
    spike_seconds: float = Field(0.0, ge=0)
    """Failure injection: length of one latency spike, seconds."""
    slow_start_seconds: float = Field(0.0, ge=0)
    """Failure injection: after becoming ready, steps are slower for this long (warm-up)."""
    slow_start_factor: float = Field(1.0, ge=1)
    """Failure injection: step-time multiplier during the slow start."""
    max_loras: int = Field(1, ge=1, le=1024)
    """LoRA adapter slots on the GPU (vLLM ``--max-loras``): adapters of the running batch."""
    lora_swap_seconds: float = Field(0.0, ge=0)
    """Cost of bringing an adapter into a slot, added to the step that admits its request."""
    host_kv_capacity_tokens: int = Field(0, ge=0)
    """Host-memory KV tier in tokens (0: none): blocks evicted from the GPU cache go there."""
    host_transfer_seconds_per_token: float = Field(0.0, ge=0)
    """Cost of copying one token's KV from host memory back to the GPU (the link), seconds."""

    @model_validator(mode="after")
    def _fits(self) -> EngineParams:
        if self.kv_capacity_tokens < self.block_size:
            raise ValueError("kv_capacity_tokens must hold at least one block")
        if self.max_model_len > self.kv_capacity_tokens:
            # A request of max_model_len could never be admitted and would wait forever.
            raise ValueError(
                f"max_model_len ({self.max_model_len}) exceeds kv_capacity_tokens "
                f"({self.kv_capacity_tokens})"
            )
        return self


GPU: Final = "GPU"
"""vLLM's medium name for the GPU KV cache (``BlockStored.medium``)."""
CPU: Final = "CPU"
"""vLLM's medium name for the host-memory tier."""


@dataclass(frozen=True, slots=True)
class KvEvent:
    """One change of the cached blocks, as vLLM's KV events carry it.

    ``kind`` is ``stored`` (the blocks now hold KV in ``medium``), ``removed`` (they no longer
    do there) or ``cleared`` (every block of every medium is gone; ``hashes`` is empty).
    """

    kind: Literal["stored", "removed", "cleared"]
    hashes: tuple[int, ...]
    medium: str


class SeqState(enum.Enum):
    """Where a sequence is in its life."""

    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"
    CANCELLED = "cancelled"


@dataclass(slots=True, eq=False)
class Seq:
    """One request inside the model; the server reads its progress, never writes it."""

    id: int
    arrival: float
    prompt_tokens: int
    output_tokens: int
    block_hashes: tuple[int, ...]
    state: SeqState = SeqState.WAITING
    generated: int = 0
    cached_tokens: int = 0
    host_tokens: int = 0
    admitted_at: float | None = None
    first_token_at: float | None = None
    finished_at: float | None = None
    prefilling: bool = False
    held_hashes: list[int] = field(default_factory=list)
    anon_blocks: int = 0
    adapter: str | None = None

    @property
    def done(self) -> bool:
        """Finished or cancelled: nothing more will happen to it."""
        return self.state is SeqState.FINISHED or self.state is SeqState.CANCELLED

    @property
    def ttft(self) -> float | None:
        """Time to first token in model seconds, once known."""
        return None if self.first_token_at is None else self.first_token_at - self.arrival

    @property
    def queue_time(self) -> float | None:
        """Seconds spent waiting for admission, once admitted."""
        return None if self.admitted_at is None else self.admitted_at - self.arrival


class LatencyModel:
    """A continuous-batching engine with a KV cache and a prefix cache, in model time.

    Call :meth:`advance` with the current time before reading state; :meth:`submit` and
    :meth:`cancel` advance to ``now`` themselves. :meth:`next_event_time` says when the next
    step ends, so a driver knows when to call again.
    """

    def __init__(
        self,
        params: EngineParams,
        *,
        start: float = 0.0,
        seed: int = 0,
        record_events: bool = False,
    ) -> None:
        """Create an engine that started at ``start`` (model time) and is ready after the delay.

        With ``record_events`` every change of the cached blocks is appended to ``events``
        (the reader takes them away with :meth:`take_events`).
        """
        self.params = params
        self.start = start
        self.ready_at = start + params.startup_delay_seconds
        self.stats = EngineStats(max_model_len=params.max_model_len)
        self.total_blocks = params.kv_capacity_tokens // params.block_size
        self._rng = random.Random(seed)
        self._next_id = 0
        self._waiting: deque[Seq] = deque()
        self._running: dict[int, Seq] = {}
        self._free_blocks = self.total_blocks
        # Cached, unreferenced blocks by hash, oldest first: the eviction order.
        self._lru: OrderedDict[int, None] = OrderedDict()
        # Reference counts of every hashed block that holds KV (in use or in the LRU list).
        self._refs: dict[int, int] = {}
        # Blocks in host memory, least recently stored first (never also in ``_refs``).
        self._host: OrderedDict[int, None] = OrderedDict()
        self.host_blocks = params.host_kv_capacity_tokens // params.block_size
        self.events: list[KvEvent] | None = [] if record_events else None
        self._decode_ctx = 0  # context tokens of the running sequences past their prefill
        self._step_started = start
        self._step_end: float | None = None
        self._step_prefill = False
        self._blocked = False  # the queue head was refused at the last admission attempt
        self._touched: dict[int, Seq] = {}
        self._pending_prompt_tokens = 0  # prompts of the sequences with no first token yet
        # Adapters in a GPU slot, least recently admitted first, and running sequences of each.
        self._slots: OrderedDict[str, None] = OrderedDict()
        self._adapter_runs: dict[str, int] = {}

    # ----- reading state -------------------------------------------------------------------

    @property
    def num_running(self) -> int:
        """Sequences in the batch."""
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        """Sequences queued for admission."""
        return len(self._waiting)

    @property
    def pending_prompt_tokens(self) -> int:
        """Prompt tokens of the sequences still waiting for their first token.

        Queued or in prefill: the prefill that stands ahead of a new request's first token.
        """
        return self._pending_prompt_tokens

    @property
    def used_blocks(self) -> int:
        """KV blocks held by running sequences (cached but unreferenced blocks count as free)."""
        return self.total_blocks - self._free_blocks - len(self._lru)

    def cached_blocks(self) -> dict[str, set[int]]:
        """The hashed blocks each medium holds now (what a cache index fed by events mirrors)."""
        return {GPU: set(self._refs), CPU: set(self._host)}

    @property
    def kv_usage(self) -> float:
        """Fraction of KV blocks in use, 0 to 1, as ``vllm:kv_cache_usage_perc`` reports it."""
        return self.used_blocks / self.total_blocks

    @property
    def running_adapters(self) -> dict[str, int]:
        """Running sequences per adapter, for adapters with any (vLLM's iteration stats)."""
        return {name: n for name, n in self._adapter_runs.items() if n}

    @property
    def waiting_adapters(self) -> dict[str, int]:
        """Waiting sequences per adapter, in queue order."""
        out: dict[str, int] = {}
        for seq in self._waiting:
            if seq.adapter is not None:
                out[seq.adapter] = out.get(seq.adapter, 0) + 1
        return out

    @property
    def slotted_adapters(self) -> list[str]:
        """Adapters in a GPU slot, least recently used first."""
        return list(self._slots)

    def is_ready(self, now: float) -> bool:
        """Whether the cold start is over at ``now``."""
        return now >= self.ready_at

    def next_event_time(self) -> float | None:
        """When the step in flight ends, or None when the engine is idle."""
        return self._step_end

    # ----- driving -------------------------------------------------------------------------

    def submit(
        self,
        now: float,
        prompt_tokens: int,
        output_tokens: int,
        block_hashes: Sequence[int] = (),
        adapter: str | None = None,
    ) -> Seq:
        """Queue a request arriving at ``now``.

        Args:
            now: arrival time (model time), not earlier than the last call's.
            prompt_tokens: prompt length in tokens (at least 1).
            output_tokens: tokens to generate; 0 for a prefill-only request (embeddings).
            block_hashes: content hashes of the prompt's full blocks, in order (see
                ``tokens.block_hashes``); empty means no prefix can be shared.
            adapter: the LoRA adapter the request runs with; None for the base model.

        Raises:
            ValueError: the sequence can never fit the KV cache, or sizes are out of range.
        """
        if prompt_tokens < 1 or output_tokens < 0:
            raise ValueError("prompt_tokens must be >= 1 and output_tokens >= 0")
        if prompt_tokens + output_tokens > self.params.kv_capacity_tokens:
            raise ValueError("sequence is larger than the KV cache and could never run")
        self._run_until(now)
        hashes = tuple(block_hashes[: prompt_tokens // self.params.block_size])
        seq = Seq(self._next_id, now, prompt_tokens, output_tokens, hashes, adapter=adapter)
        self._next_id += 1
        self._waiting.append(seq)
        self._pending_prompt_tokens += prompt_tokens
        self.stats.prompt_len.observe(prompt_tokens)
        if self._step_end is None:
            self._start_step(now)
        return seq

    def cancel(self, seq: Seq, now: float) -> None:
        """Drop a request at once (client gone): its batch slot and KV blocks are freed now."""
        self._run_until(now)
        if seq.done:
            return
        if seq.state is SeqState.WAITING or seq.prefilling:
            self._pending_prompt_tokens -= seq.prompt_tokens
        if seq.state is SeqState.WAITING:
            self._waiting.remove(seq)
        else:
            del self._running[seq.id]
            if not seq.prefilling:
                self._decode_ctx -= seq.prompt_tokens + seq.generated
            self._release(seq)
            self._leave_slot(seq)
        seq.state = SeqState.CANCELLED
        seq.finished_at = now
        self._blocked = False  # room was freed: the next step must try to admit again
        self.stats.requests_cancelled += 1
        self._touched[seq.id] = seq
        if self._step_end is None and self._waiting:
            self._start_step(now)

    def drop_adapter(self, name: str) -> None:
        """Free the adapter's slot if no running sequence uses it (the adapter was unloaded)."""
        if not self._adapter_runs.get(name):
            self._slots.pop(name, None)
            self._adapter_runs.pop(name, None)

    def take_events(self) -> list[KvEvent]:
        """The cache events since the last call, oldest first (empty unless recording)."""
        if not self.events:
            return []
        out = self.events
        self.events = []
        return out

    def advance(self, now: float) -> list[Seq]:
        """Run every step that ends at or before ``now``; return the sequences that changed."""
        self._run_until(now)
        touched = list(self._touched.values())
        self._touched.clear()
        return touched

    # ----- internals -----------------------------------------------------------------------

    def _run_until(self, now: float) -> None:
        while self._step_end is not None and self._step_end <= now:
            self._finish_step()
            self._fast_forward(now)

    def _step_seconds(
        self, start: float, prefill_tokens: int, prefill: bool, host_tokens: int = 0
    ) -> float:
        p = self.params
        seconds = (
            p.step_base_seconds
            + p.decode_seconds_per_seq * len(self._running)
            + p.decode_seconds_per_context_token * self._decode_ctx
        )
        if prefill:
            seconds += p.prefill_overhead_seconds + p.prefill_seconds_per_token * prefill_tokens
            seconds += p.host_transfer_seconds_per_token * host_tokens
        if start < self.ready_at + p.slow_start_seconds:
            seconds *= p.slow_start_factor
        # Draw only when spikes are on, so the default path stays free of RNG calls.
        if p.spike_probability > 0 and self._rng.random() < p.spike_probability:
            seconds += p.spike_seconds
        return seconds

    def _start_step(self, now: float) -> None:
        start = max(now, self.ready_at)
        prefill_tokens = 0
        host_tokens = 0
        swaps = 0
        admitted = False
        while self._waiting and len(self._running) < self.params.max_num_seqs:
            seq = self._waiting[0]
            if seq.adapter is not None and not self._slot_free_for(seq.adapter):
                break  # every slot serves a running adapter: wait for one of them to finish
            if not self._allocate(seq):
                break  # first come, first served: the head blocks the queue, as in vLLM
            self._waiting.popleft()
            if seq.adapter is not None:
                swaps += self._enter_slot(seq.adapter)
            seq.state = SeqState.RUNNING
            seq.prefilling = True
            seq.admitted_at = start
            self._running[seq.id] = seq
            self.stats.queue_time.observe(start - seq.arrival)
            self.stats.prefix_cache_queries += seq.prompt_tokens
            self.stats.prefix_cache_hits += seq.cached_tokens - seq.host_tokens
            self.stats.host_cache_hits += seq.host_tokens
            prefill_tokens += seq.prompt_tokens - seq.cached_tokens
            host_tokens += seq.host_tokens
            admitted = True
        self._blocked = bool(self._waiting)
        if not self._running:
            self._step_end = None
            return
        self._step_prefill = admitted
        self._step_started = start
        swap_seconds = swaps * self.params.lora_swap_seconds
        seconds = self._step_seconds(start, prefill_tokens, admitted, host_tokens)
        self._step_end = start + seconds + swap_seconds

    def _finish_step(self) -> None:
        end = self._step_end
        assert end is not None
        seconds = end - self._step_started
        decoders = 0
        finished: list[Seq] = []
        for seq in self._running.values():
            if seq.prefilling:
                seq.prefilling = False
                self._pending_prompt_tokens -= seq.prompt_tokens
                if seq.output_tokens == 0:
                    finished.append(seq)
                    continue
                seq.first_token_at = end
                seq.generated = 1
                self.stats.ttft.observe(end - seq.arrival)
                self._decode_ctx += seq.prompt_tokens + 1
                self.stats.prompt_tokens += seq.prompt_tokens
                self.stats.generation_tokens += 1
            else:
                seq.generated += 1
                decoders += 1
                self._decode_ctx += 1
            if seq.generated >= seq.output_tokens:
                finished.append(seq)
            self._touched[seq.id] = seq
        if decoders:
            self.stats.itl.observe(seconds, decoders)
            self.stats.generation_tokens += decoders
        for seq in finished:
            self._complete(seq, end)
        self._step_end = None
        if self._running or self._waiting:
            self._start_step(end)

    def _fast_forward(self, now: float) -> None:
        """Complete a run of identical decode steps in one go.

        Valid while no sequence finishes and nobody can be admitted: the queue is empty, or its
        head was refused at the start of this step and arrivals join behind it, and neither
        changes until a sequence finishes. Each step is still computed one by one, in the same
        order and with the same arithmetic as :meth:`_finish_step`, so the numbers are identical.
        """
        if self._step_end is None or self._step_prefill or self._step_end > now:
            return
        if not self._running or (self._waiting and not self._blocked):
            return  # an arrival since the step started may be admitted at the next one
        batch = len(self._running)
        steps_left = min(s.output_tokens - s.generated for s in self._running.values())
        if steps_left < 2:
            return
        end = self._step_end
        seconds = end - self._step_started
        done = 0
        itl = self.stats.itl
        while done < steps_left - 1 and end <= now:
            itl.observe(seconds, batch)
            done += 1
            self._decode_ctx += batch
            start = end
            end = start + self._step_seconds(start, 0, False)
            seconds = end - start  # as _finish_step computes it, so the floats match exactly
            self._step_started = start
        self._step_end = end
        self.stats.generation_tokens += done * batch
        for seq in self._running.values():
            seq.generated += done
            self._touched[seq.id] = seq

    def _complete(self, seq: Seq, now: float) -> None:
        del self._running[seq.id]
        if seq.output_tokens:
            self._decode_ctx -= seq.prompt_tokens + seq.generated
        else:
            self.stats.prompt_tokens += seq.prompt_tokens
        self._release(seq)
        self._leave_slot(seq)
        seq.state = SeqState.FINISHED
        seq.finished_at = now
        self.stats.requests_finished += 1
        self.stats.e2e.observe(now - seq.arrival)
        self.stats.generation_len.observe(seq.generated)
        if seq.generated > 1 and seq.first_token_at is not None:
            self.stats.tpot.observe((now - seq.first_token_at) / (seq.generated - 1))
        self._touched[seq.id] = seq

    def _slot_free_for(self, adapter: str) -> bool:
        if adapter in self._slots or len(self._slots) < self.params.max_loras:
            return True
        return any(not self._adapter_runs.get(name) for name in self._slots)

    def _enter_slot(self, adapter: str) -> int:
        """Put the adapter in a slot (evicting the oldest idle one if full); 1 if it swapped."""
        self._adapter_runs[adapter] = self._adapter_runs.get(adapter, 0) + 1
        if adapter in self._slots:
            self._slots.move_to_end(adapter)
            return 0
        if len(self._slots) >= self.params.max_loras:
            idle = next(name for name in self._slots if self._adapter_runs.get(name) == 0)
            del self._slots[idle]
            del self._adapter_runs[idle]
        self._slots[adapter] = None
        self.stats.adapter_swaps += 1
        return 1

    def _leave_slot(self, seq: Seq) -> None:
        if seq.adapter is not None:
            self._adapter_runs[seq.adapter] -= 1

    def _match(self, hashes: tuple[int, ...]) -> tuple[int, int, int]:
        """The longest cached prefix: (its blocks, those on the GPU, those in the GPU's LRU)."""
        matched = on_gpu = in_lru = 0
        for h in hashes:
            refs = self._refs.get(h)
            if refs is not None:
                on_gpu += 1
                in_lru += refs == 0
            elif h not in self._host:
                break
            matched += 1
        return matched, on_gpu, in_lru

    def _allocate(self, seq: Seq) -> bool:
        bs = self.params.block_size
        need = -(-(seq.prompt_tokens + seq.output_tokens) // bs)
        hashes = seq.block_hashes
        matched, on_gpu, in_lru = self._match(hashes)
        fresh = need - on_gpu  # blocks loaded from the host need GPU blocks too
        if fresh > self._free_blocks + len(self._lru) - in_lru:
            return False
        loaded: list[int] = []
        for h in hashes[:matched]:
            refs = self._refs.get(h)
            if refs is None:
                del self._host[h]  # moves to the GPU below, before any eviction can reach it
                loaded.append(h)
            elif refs == 0:
                del self._lru[h]
            if refs is not None:
                self._refs[h] = refs + 1
        self._emit("removed", loaded, CPU)
        for _ in range(fresh):
            self._take_block()
        stored = list(loaded)
        for h in hashes[matched:]:
            # A hash already cached on the GPU elsewhere (a hole in this prefix) stays
            # anonymous here; one on the host is recomputed, so the host copy goes.
            if h in self._refs:
                continue
            if h in self._host:
                del self._host[h]
                self._emit("removed", [h], CPU)
            stored.append(h)
        for h in stored:
            self._refs[h] = 1
        # Prompt order, so that _release hands the tail to the LRU list first.
        seq.held_hashes.extend(hashes[:matched])
        seq.held_hashes.extend(stored[len(loaded) :])
        self._emit("stored", stored, GPU)
        seq.anon_blocks = fresh - len(stored)
        # vLLM always recomputes at least the last prompt token, even on a full hit.
        seq.cached_tokens = min(matched * bs, seq.prompt_tokens - 1)
        seq.host_tokens = min(len(loaded) * bs, seq.cached_tokens)
        return True

    def _take_block(self) -> None:
        if self._free_blocks:
            self._free_blocks -= 1
            return
        evicted, _ = self._lru.popitem(last=False)
        del self._refs[evicted]
        self._emit("removed", [evicted], GPU)
        if self.host_blocks:
            if len(self._host) >= self.host_blocks:
                dropped, _ = self._host.popitem(last=False)
                self._emit("removed", [dropped], CPU)
            self._host[evicted] = None
            self._emit("stored", [evicted], CPU)

    def _emit(self, kind: Literal["stored", "removed"], hashes: list[int], medium: str) -> None:
        if self.events is not None and hashes:
            self.events.append(KvEvent(kind, tuple(hashes), medium))

    def _release(self, seq: Seq) -> None:
        self._free_blocks += seq.anon_blocks
        seq.anon_blocks = 0
        # Tail blocks go to the LRU list first, so they are evicted before the shared prefix.
        for h in reversed(seq.held_hashes):
            refs = self._refs[h] - 1
            self._refs[h] = refs
            if refs == 0:
                self._lru[h] = None
        seq.held_hashes.clear()
