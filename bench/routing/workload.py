"""The routing benchmark's workload: Mooncake trace rows -> prompts and engine parameters.

Shared by ``run_bench.py`` (real time: sims behind the router) and ``virtual.py`` (virtual
time: the sims' latency model and the router's pickers, no HTTP), so both replay the same
requests against the same engine and hash the same prompt prefixes.

Scaling (``scale`` = ``block_words / 512``): one 512-token trace block becomes ``block_words``
five-character words, one sim token each, so a prompt has ``input_length * scale`` tokens.
To keep cache pressure and the prefill share of TTFT those of the real deployment, the
engine scales with the prompts: KV capacity and ``max_model_len`` by ``scale``, prefill and
decode-attention cost per token by ``1 / scale``. Per-step and per-sequence costs and the
output length are not token counts of the prompt and stay as they are. At ``block_words``
512 nothing is scaled at all.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from inferscale.router import picking
from inferscale.sim.model import EngineParams
from inferscale.sim.presets import preset


def add_workload_arguments(ap: argparse.ArgumentParser) -> None:
    """The options both runners share: the replicas, their engine and the prompts."""
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--preset", default="llama-3.1-8b-h100")
    ap.add_argument("--block-words", type=int, default=512, help="words per 512-token block")
    ap.add_argument("--kv-factor", type=float, default=1.0, help="KV cache x the preset's")
    ap.add_argument(
        "--host-factor", type=float, default=0.0, help="host-memory KV tier x the GPU cache"
    )
    ap.add_argument("--max-tokens", type=int, default=0, help="cap on output tokens (0: none)")
    ap.add_argument("--prefix-blocks", type=int, default=2, help="blocks prefixHash hashes")
    ap.add_argument("--load-bound", type=float, default=picking.DEFAULT_LOAD_BOUND)


def default_trace() -> Path:
    """The shared trace beside the checkout (beside the main checkout for a git worktree)."""
    repo = Path(__file__).resolve().parents[2]
    roots = [repo]
    try:
        common = subprocess.run(
            ["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        roots.append(Path(common).parent)
    except (OSError, subprocess.CalledProcessError):
        pass
    for root in roots:
        path = root.parent / "shared" / "traces" / "conversation_trace.jsonl"
        if path.exists():
            return path
    return roots[0].parent / "shared" / "traces" / "conversation_trace.jsonl"


TRACE_BLOCK_TOKENS = 512
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True, slots=True)
class Row:
    """One trace request."""

    at_s: float
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]


def read_rows(path: Path | str, start: int, count: int) -> list[Row]:
    """``count`` rows from row ``start`` of a Mooncake JSONL file (``count`` 0: to the end)."""
    stop = start + count if count > 0 else None
    with open(path) as f:
        return [
            Row(d["timestamp"] / 1000, d["input_length"], d["output_length"], tuple(d["hash_ids"]))
            for d in map(json.loads, itertools.islice(f, start, stop))
        ]


def _word(block: int, j: int) -> str:
    # Five base-36 characters: one sim token, distinct per (block, position).
    n = zlib.crc32(f"{block}:{j}".encode()) % (36**5)
    out = []
    for _ in range(5):
        n, r = divmod(n, 36)
        out.append(_ALPHABET[r])
    return "".join(out)


class Prompts:
    """Prompt text per row; block texts are built once and reused."""

    def __init__(self, block_words: int) -> None:
        """One trace block = ``block_words`` words (a multiple of the sim's 16-token block)."""
        if block_words < 16 or block_words % 16 or block_words > TRACE_BLOCK_TOKENS:
            raise ValueError("block_words must be a multiple of 16 between 16 and 512")
        self.block_words = block_words
        self.scale = block_words / TRACE_BLOCK_TOKENS
        self._blocks: dict[int, list[str]] = {}

    def words(self, block: int) -> list[str]:
        """The words of one trace block."""
        found = self._blocks.get(block)
        if found is None:
            found = self._blocks[block] = [_word(block, j) for j in range(self.block_words)]
        return found

    def tokens(self, row: Row) -> int:
        """Prompt tokens of ``row`` at this scale (its last trace block is partial)."""
        full = (len(row.hash_ids) - 1) * self.block_words
        last = round(row.input_length * self.scale) - full
        return full + min(max(last, 1), self.block_words)

    def text(self, row: Row) -> str:
        """The prompt: each block's words, the last block cut to the row's length."""
        n = self.tokens(row)
        return " ".join(itertools.islice(self._all_words(row), n)) + " "

    def _all_words(self, row: Row) -> Iterator[str]:
        for b in row.hash_ids:
            yield from self.words(b)

    def prefix_chars(self, blocks: int) -> int:
        """Characters of the first ``blocks`` blocks (words of 5 characters and a space)."""
        return blocks * self.block_words * 6


def engine_params(
    preset_name: str, scale: float, kv_factor: float = 1.0, host_factor: float = 0.0
) -> EngineParams:
    """The preset, with every per-prompt-token quantity scaled consistently (module docstring).

    ``kv_factor`` multiplies the GPU KV cache on top (a larger cache also admits more sequences
    at once); ``host_factor`` adds the sim's host-memory tier, that many times the GPU cache
    (blocks evicted from the GPU go there and come back at the PCIe transfer cost).
    """
    p = preset(preset_name)
    bs = p.block_size
    kv = max(bs, round(p.kv_capacity_tokens * kv_factor * scale / bs) * bs)
    return p.model_copy(
        update={
            "kv_capacity_tokens": kv,
            # The presets cap the context at 32k (H100); the trace's prompts reach 126k tokens
            # (7 % exceed 32k), within Llama-3.1-8B's native 128k, which a long-context
            # deployment serves. So: anything that fits the KV cache (output is not scaled).
            "max_model_len": kv,
            "prefill_seconds_per_token": p.prefill_seconds_per_token / scale,
            "decode_seconds_per_context_token": p.decode_seconds_per_context_token / scale,
            "startup_delay_seconds": 0.0,
            "host_kv_capacity_tokens": round(kv * host_factor / bs) * bs,
            "host_transfer_seconds_per_token": p.host_transfer_seconds_per_token / scale,
        }
    )


def engine_flags(params: EngineParams) -> list[str]:
    """``inferscale sim`` flags that set ``params`` on top of any preset."""
    out: list[str] = []
    for name in (
        "max_num_seqs",
        "kv_capacity_tokens",
        "max_model_len",
        "startup_delay_seconds",
        "step_base_seconds",
        "prefill_overhead_seconds",
        "prefill_seconds_per_token",
        "decode_seconds_per_seq",
        "decode_seconds_per_context_token",
        "host_kv_capacity_tokens",
        "host_transfer_seconds_per_token",
    ):
        out += ["--" + name.replace("_", "-"), repr(getattr(params, name))]
    return out


def output_tokens(row: Row, cap: int) -> int:
    """Tokens to generate: the trace's output length, capped when ``cap`` > 0."""
    return max(1, min(row.output_length, cap) if cap > 0 else row.output_length)


def reuse(rows: list[Row], block_tokens: int = TRACE_BLOCK_TOKENS) -> dict[str, object]:
    """How much of the workload an unbounded cache could serve, and how long reuse waits.

    A request reuses the leading blocks that any earlier request had (a block id names its
    whole prefix). Each reused block's distance is counted back to the last request that had
    it, in requests and in seconds; the figures are the 10th, 50th and 90th percentiles over
    reused blocks (so a long shared prefix weighs by its length, and a one-block system prompt
    every request shares counts once per request), and the reusable share of prompt tokens is
    the hit rate of a perfect cache.
    """
    last: dict[int, tuple[int, float]] = {}
    dist_n: list[int] = []
    dist_s: list[float] = []
    reusable = total = 0
    for i, row in enumerate(rows):
        shared = 0
        for b in row.hash_ids:
            seen = last.get(b)
            if seen is None:
                break
            shared += 1
            dist_n.append(i - seen[0])
            dist_s.append(row.at_s - seen[1])
        reusable += min(shared * block_tokens, row.input_length)
        total += row.input_length
        for b in row.hash_ids:
            last[b] = (i, row.at_s)
    dist_n.sort()
    dist_s.sort()

    def q(xs: list[int] | list[float], f: float) -> float:
        return float(xs[int(f * (len(xs) - 1))]) if xs else float("nan")

    return {
        "reusable_token_share": round(reusable / total, 3) if total else 0.0,
        "reuse_distance_requests_p10_p50_p90": [q(dist_n, f) for f in (0.1, 0.5, 0.9)],
        "reuse_distance_seconds_p10_p50_p90": [round(q(dist_s, f), 1) for f in (0.1, 0.5, 0.9)],
    }
