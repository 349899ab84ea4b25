"""A parameterised prefix-sharing workload, as trace rows (``workload.Row``) for both runners.

Real applications share prompt prefixes in four common ways, each a kind of request here:

- **shared system prompts**: every request starts with one of ``systems`` system prompts
  (``system_blocks`` blocks each), chosen by a Zipf law;
- **few-shot templates** (``fewshot`` share of requests): a system prompt, one of ``templates``
  templates of ``template_blocks`` blocks (Zipf), then a fresh question;
- **RAG documents** (``rag`` share): a system prompt, one of ``documents`` retrieved documents
  of ``document_blocks`` blocks (Zipf), then a fresh question;
- **multi-turn agent loops** (the rest): ``agents`` sessions run at once; each turn resends the
  session's whole history (its system prompt, every earlier turn and answer) plus
  ``turn_blocks`` new blocks; a session ends after ``turns`` turns and a new one starts.

Blocks are 512 tokens, as in the Mooncake trace, and a block id names its whole prefix (the
same content after a different prefix gets another id), so the rows replay through the same
code as the trace. Arrivals are Poisson at ``rate`` requests per second; every figure comes
from ``seed``, so a run is reproducible.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass, field

from workload import TRACE_BLOCK_TOKENS, Row


@dataclass(frozen=True, slots=True)
class PrefixWorkload:
    """The knobs (module docstring); the defaults are a prefix-heavy mix."""

    requests: int = 1500
    rate: float = 4.0
    systems: int = 4
    system_blocks: int = 4
    templates: int = 16
    template_blocks: int = 6
    documents: int = 200
    document_blocks: int = 16
    zipf: float = 1.1
    agents: int = 16
    turns: int = 8
    turn_blocks: int = 2
    fewshot: float = 0.2
    rag: float = 0.4
    output_tokens: tuple[int, int] = (50, 400)
    seed: int = 0


@dataclass(slots=True)
class _Session:
    blocks: list[tuple[object, ...]]
    turn: int = 0


@dataclass(slots=True)
class _Builder:
    spec: PrefixWorkload
    rng: random.Random
    ids: dict[tuple[int, tuple[object, ...]], int] = field(default_factory=dict)
    fresh: int = 0

    def zipf(self, n: int) -> int:
        weights = [1 / (k + 1) ** self.spec.zipf for k in range(n)]
        return self.rng.choices(range(n), weights)[0]

    def unique(self, count: int) -> list[tuple[object, ...]]:
        self.fresh += count
        return [("fresh", self.fresh - j) for j in range(count)]

    def hash_ids(self, contents: list[tuple[object, ...]]) -> tuple[int, ...]:
        """Block ids that name their whole prefix (as Mooncake's do)."""
        out: list[int] = []
        parent = -1
        for c in contents:
            parent = self.ids.setdefault((parent, c), len(self.ids))
            out.append(parent)
        return tuple(out)


def _system(b: _Builder) -> list[tuple[object, ...]]:
    k = b.zipf(b.spec.systems)
    return [("system", k, j) for j in range(b.spec.system_blocks)]


def _agent_turn(b: _Builder, sessions: list[_Session]) -> list[tuple[object, ...]]:
    s = b.spec
    i = b.rng.randrange(s.agents)
    if i >= len(sessions):
        sessions.append(_Session(_system(b)))
        i = len(sessions) - 1
    session = sessions[i]
    if session.turn >= s.turns:
        session = sessions[i] = _Session(_system(b))
    session.blocks += b.unique(s.turn_blocks)
    session.turn += 1
    prompt = list(session.blocks)
    session.blocks += b.unique(1)  # the answer, part of the next turn's history
    return prompt


def rows(spec: PrefixWorkload) -> list[Row]:
    """The workload's requests, in arrival order."""
    b = _Builder(spec, random.Random(spec.seed))
    sessions: list[_Session] = []
    out: list[Row] = []
    t = 0.0
    for _ in range(spec.requests):
        t += b.rng.expovariate(spec.rate)
        kind = b.rng.random()
        if kind < spec.fewshot:
            k = b.zipf(spec.templates)
            body = [("template", k, j) for j in range(spec.template_blocks)]
            contents = _system(b) + body + b.unique(1)
        elif kind < spec.fewshot + spec.rag:
            d = b.zipf(spec.documents)
            body = [("document", d, j) for j in range(spec.document_blocks)]
            contents = _system(b) + body + b.unique(1)
        else:
            contents = _agent_turn(b, sessions)
        length = (len(contents) - 1) * TRACE_BLOCK_TOKENS + b.rng.randint(1, TRACE_BLOCK_TOKENS)
        out.append(Row(t, length, b.rng.randint(*spec.output_tokens), b.hash_ids(contents)))
    return out


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """``--mix-*`` options for each knob, defaulting to :class:`PrefixWorkload`'s."""
    for name in PrefixWorkload.__dataclass_fields__:
        if name == "output_tokens":
            continue
        default = getattr(PrefixWorkload(), name)
        ap.add_argument(f"--mix-{name.replace('_', '-')}", type=type(default), default=default)


def from_arguments(args: argparse.Namespace) -> PrefixWorkload:
    """The workload the ``--mix-*`` options describe."""
    fields = PrefixWorkload.__dataclass_fields__
    return PrefixWorkload(**{n: getattr(args, f"mix_{n}") for n in fields if n != "output_tokens"})
