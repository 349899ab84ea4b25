"""How a stored document (the routing table's ConfigMap, the credentials' Secret) is versioned.

Every document the operator pushes carries a monotonic ``version``; a router refuses one older
than what it holds, and an operator that restarts continues above the version it stored.

Pure: no I/O.
"""

from __future__ import annotations

import json


def stored_version(text: object) -> int | None:
    """The ``version`` of a stored document (a ConfigMap's or Secret's value); ``None`` if none."""
    if not isinstance(text, str):
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    version = doc.get("version") if isinstance(doc, dict) else None
    return version if isinstance(version, int) and not isinstance(version, bool) else None
