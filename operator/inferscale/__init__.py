"""inferscale: a Kubernetes operator for autoscaled LLM inference replicas.

Importing the package has no side effects; it only carries the version.
"""

__version__ = "0.1.0"
