"""The fault suite: real routers and sims on loopback, one fault each, every request counted.

Each scenario (``scenarios.py``) starts its fleet (``fleet.py``: ``inferscale sim`` and
``inferscale router`` processes on 127.0.0.1, a mock hosted provider), drives an open-loop load
that records every request (``load.py``, ``ledger.py``), injects one fault while the load runs,
and checks its own bound. ``test_faults.py`` runs the short form under pytest (CI);
``python -m e2e.faults`` runs the longer form and writes the table of ``docs/reliability.md``.
"""
