"""The local Kubernetes of DESIGN.md section 5: a real control plane as processes, no Docker.

It owns everything ``inferscale cluster`` starts on this machine: the PKI (``pki``), the
upstream binaries' whereabouts (``assets``), the component processes (``process``,
``control``), KWOK's simulated nodes (``kwok``), the pod launcher that runs the pods of its
own nodes as local processes (``launcher``, ``pods``, ``images``), their network
namespaces (``network``) and Prometheus with file-based discovery (``prometheus``).

It is development and test tooling: nothing in the operator, router or sim imports it.
"""
