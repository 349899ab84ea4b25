"""Installing the operator's documents: the routing table and the credentials.

Both arrive two ways: pushed to the admin API (:mod:`.admin`), or read from the files a
ConfigMap and a Secret mount (at start, then whenever the file changes). Either way they are
validated against :mod:`inferscale.protocol` and installed only when newer than the ones held.

Failure behaviour: an unreadable or invalid file is logged and skipped (the router keeps what
it holds); a file older than what was pushed is ignored. A credentials document is never quoted
in a log line or an error (it holds keys): only the paths and kinds of its problems are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from pydantic import ValidationError

from inferscale.protocol.credentials import RouterCredentials, StaleCredentialsError
from inferscale.protocol.table import RoutingTable, StaleTableError
from inferscale.router.access import Access, load_credentials_file
from inferscale.router.settings import RouterSettings
from inferscale.router.table import EndpointTable

log = logging.getLogger("inferscale.router")


def apply_table(table: EndpointTable, routing: RoutingTable, source: str) -> bool:
    """Install ``routing`` (StaleTableError when older); log what changed."""
    changed = table.replace(routing)
    if changed:
        ready = sum(len(m.ready) for m in table.models.values())
        log.info(
            "routing table applied",
            extra={"version": routing.version, "source": source, "ready": ready},
        )
    return changed


def apply_credentials(access: Access, credentials: RouterCredentials, source: str) -> bool:
    """Install ``credentials`` (StaleCredentialsError when older); log the counts only."""
    changed = access.replace(credentials)
    if changed:
        log.info(
            "credentials applied",
            extra={
                "version": credentials.version,
                "source": source,
                "providers": len(credentials.provider_ids()),
                "client_keys": len(credentials.client_keys),
            },
        )
    return changed


def problems(error: ValidationError) -> str:
    """The first few problems as ``path: message``, never the input (it may hold keys)."""
    found = error.errors(include_url=False, include_input=False, include_context=False)[:5]
    return "; ".join(f"{'.'.join(str(x) for x in p['loc']) or 'body'}: {p['msg']}" for p in found)


def load_table_file(path: Path) -> RoutingTable:
    """The table stored in ``path`` (JSON or YAML; a ConfigMap key holds either).

    Raises:
        OSError: unreadable.
        ValueError: not a valid table (pydantic's ValidationError is a ValueError).
    """
    text = path.read_text()
    if text.lstrip().startswith("{"):
        return RoutingTable.model_validate_json(text)
    import yaml

    return RoutingTable.model_validate(yaml.safe_load(text))


def initial_table(settings: RouterSettings) -> EndpointTable:
    """An EndpointTable holding the table file's table, if there is a usable one."""
    table = EndpointTable()
    if settings.table_file:
        path = Path(settings.table_file)
        try:
            table.replace(load_table_file(path))
        except (OSError, ValueError) as error:
            log.warning("no usable routing table in %s: %s", path, error)
    return table


def initial_credentials(access: Access, settings: RouterSettings) -> None:
    """Load the credentials file into ``access``, if there is a usable one."""
    if not settings.credentials_file:
        return
    path = Path(settings.credentials_file)
    try:
        apply_credentials(access, load_credentials_file(path), str(path))
    except OSError as error:
        log.warning("no usable credentials in %s: %s", path, error)
    except ValidationError as error:
        log.warning("no usable credentials in %s: %s", path, problems(error))


async def reload_table(table: EndpointTable, path: Path) -> None:
    """Install the table file's table if it is newer; log a file that is unusable."""
    try:
        routing = await asyncio.to_thread(load_table_file, path)
        apply_table(table, routing, str(path))
    except StaleTableError:
        pass  # the operator already pushed something newer
    except (OSError, ValueError) as error:
        log.warning("table file unusable: %s", error)


async def reload_credentials(access: Access, path: Path) -> None:
    """Install the credentials file's document if it is newer; never quote it."""
    try:
        credentials = await asyncio.to_thread(load_credentials_file, path)
        apply_credentials(access, credentials, str(path))
    except StaleCredentialsError:
        pass  # the operator already pushed something newer
    except OSError as error:
        log.warning("credentials file unreadable: %s", error)
    except ValidationError as error:
        log.warning("credentials file invalid: %s", problems(error))


async def watch_file(
    path: Path, load: Callable[[Path], Awaitable[None]], every: float, stop: asyncio.Event
) -> None:
    """Re-read ``path`` when it changes (a ConfigMap or Secret update); until ``stop``."""
    seen = _mtime(path)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
        mtime = _mtime(path)
        if mtime is None or mtime == seen:
            continue
        seen = mtime
        await load(path)


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def read_admin_token(settings: RouterSettings) -> str | None:
    """The admin token: the file (a mounted Secret) wins over the setting."""
    if settings.admin_token_file:
        token = Path(settings.admin_token_file).read_text().strip()
        return token or None
    return settings.admin_token or None
