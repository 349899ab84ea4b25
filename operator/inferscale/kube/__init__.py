"""The only package that talks to the Kubernetes API through the ``kubernetes`` client.

Everything above it sees plain dicts, the :class:`~inferscale.kube.client.KubeApi` protocol, and
the errors of :mod:`inferscale.errors`.
"""
