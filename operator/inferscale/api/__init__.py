"""The API contract: pydantic models of inferscale's custom resources, and the CRD generator.

Everything here is pure: no kopf, no Kubernetes client, no HTTP library (import-linter enforces
it), so the operator, the router, the CLI and the tests all share one source of truth.
"""
