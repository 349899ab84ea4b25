"""Pure reconcile cores: (spec, observed state, settings) -> desired objects, plans and status.

Nothing here performs I/O, reads the clock or the environment, or imports kopf or a Kubernetes
client (import-linter enforces it). Builders return plain dicts without owner references; the
controller adopts and applies them through ``inferscale.kube``.
"""
