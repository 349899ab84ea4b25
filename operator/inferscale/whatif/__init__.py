"""The what-if simulator: replay a request trace against autoscaling policies in virtual time.

- ``trace``: reads the shared trace formats (Azure LLM inference CSV, Mooncake JSONL).
- ``policies``: our policy (the real ``autoscaler.policy.decide``) and the baselines it is
  compared with (HPA-like, KEDA-like, KubeAI-like, Dynamo-like, the best fixed fleet) and a
  perfect-foresight oracle sized by the SLO.
- ``cluster``: the simulated replicas (``sim.model.LatencyModel``), the router's real picker and
  the clock; no sleeping, so an hour of trace replays in seconds.
- ``report``: the figures per policy (SLO attainment, total cost, TTFT quantiles, GPU-hours,
  ...) as a table or JSON; ``plots`` draws them with matplotlib.

Everything but ``trace`` (file reading) and ``plots`` (file writing) is pure.
"""
