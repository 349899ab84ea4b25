"""What crosses the wire between the operator and its routers, written once for both sides.

The routing table (:mod:`.table`), the credentials document (:mod:`.credentials`), the spend
windows and reports (:mod:`.spend`), how a stored document's version is read
(:mod:`.versions`) and the defaults these share (:mod:`.defaults`). The operator compiles and
pushes these documents; the router validates and installs them. Neither side declares a field
of them anywhere else, so a field added here is a field both sides know.

Pure: pydantic models and pure functions; no I/O, no clock, no HTTP library (the import-linter
contracts in ``pyproject.toml`` hold it to that).
"""
