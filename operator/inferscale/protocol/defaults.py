"""Defaults that the API, the operator, the router and the what-if simulator share.

Each number is written once. Where the API already declares it (a CRD field's default), it is
read from there, so ``kubectl explain`` and the router can never disagree.

Pure: no I/O.
"""

from __future__ import annotations

from typing import Final

from inferscale.api.v1alpha1.inference_model import Autoscaling

IN_FLIGHT_PER_REPLICA: Final[int] = int(
    Autoscaling.model_fields["target_in_flight_per_replica"].default
)
"""Requests in flight that one replica should carry (the autoscaling target) and, unless a
route says otherwise, the count at which a router calls a replica saturated and spills over."""

CACHE_SIMILARITY_THRESHOLD: Final[float] = 0.97
"""Cosine similarity of the shipped static encoder's embeddings from which a cached question
counts as the same question (a route's ``cache.threshold`` overrides it). Chosen by
``bench/cache`` on the STS-B dev pairs for a precision of hits of at least 0.95, and checked on
the test pairs (docs/cache.md)."""
