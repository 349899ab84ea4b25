"""The router: the OpenAI-compatible data plane in front of every engine replica.

``table`` (the routing table the operator pushes) and ``picking`` (the pickers) are pure;
``app`` is the aiohttp server that does the I/O. See docs/router.md.
"""
