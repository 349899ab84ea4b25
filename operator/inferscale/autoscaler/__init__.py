"""The autoscaler: a pure policy (``policy``) and, beside it, the signals that feed it.

``policy.decide`` turns one observation of a model's load into a replica count, with every bit of
memory it needs passed in and out as a :class:`~inferscale.autoscaler.policy.History`. It has no
clock and no I/O, so the operator and the what-if simulator (``inferscale whatif``) run the same
code, one against Prometheus and wall time, the other against a trace in virtual time.
``report`` (pure too) turns a decision into the model's status fields, ``ScalingActive``
condition and Event, with ``floornews`` saying why a floor keeps replicas standing
(``ScalingLimited``); ``spillcost``, ``spillprice`` and ``pricebook`` price the cost-aware
mode; ``prometheus`` is the one module here that does I/O.
"""
