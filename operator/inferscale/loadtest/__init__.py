"""``inferscale loadtest``: open-loop load against any OpenAI-compatible endpoint.

Pure parts (no I/O, no clock): :mod:`.arrivals` (when requests start), :mod:`.trace` (replayed
traces), :mod:`.prompts` (prompt text of a given size), :mod:`.stats` (windows, percentiles,
counters), :mod:`.report` (live view and summary text, JSON) and :mod:`.promtext` (Prometheus text
parsing). The I/O parts are :mod:`.client` (one request over aiohttp), :mod:`.observe` (the
cluster's InferenceModels and the router's ``/metrics``, shared with ``inferscale top``) and
:mod:`.runner` (the scheduler that ties them together).
"""
