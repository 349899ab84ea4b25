"""Client access in the router: the credentials it holds, and who may send what.

:class:`Access` holds the current :class:`~inferscale.router.credentials.RouterCredentials` and
the index of client-key digests built from them; :meth:`Access.replace` swaps both in with one
assignment, so a request sees the old credentials or the new ones, never a mix. Provider
backends read their API keys through :meth:`Access.provider_key` at the moment they call the
provider, so a rotated key is used from the next request on.

Failure behaviour: credentials older than the ones held raise
:class:`~inferscale.router.credentials.StaleCredentialsError` (the admin API answers 409, the
file watcher ignores them); an invalid document is refused whole, and the error never quotes it.
"""

from __future__ import annotations

from pathlib import Path

from inferscale.router.credentials import (
    KeyIndex,
    RouterCredentials,
    StaleCredentialsError,
)


class Access:
    """The router's credentials and client-access checks."""

    def __init__(self, *, require_client_key: bool = False) -> None:
        """No credentials yet; ``require_client_key`` forces keys whatever they say."""
        self.force_required = require_client_key
        self.credentials: RouterCredentials | None = None
        self.keys = KeyIndex.build(())
        self.provider_keys: dict[str, str] = {}
        self.required = require_client_key

    @property
    def version(self) -> int:
        """Version of the credentials held (0 before any)."""
        return self.credentials.version if self.credentials is not None else 0

    def replace(self, credentials: RouterCredentials) -> bool:
        """Install ``credentials``; False when they are the ones already held.

        Raises:
            StaleCredentialsError: older than the ones held, or the same version with other
                content.
        """
        held = self.credentials
        if held is not None:
            if credentials.version < held.version:
                raise StaleCredentialsError(
                    f"credentials version {credentials.version} is older than {held.version}"
                )
            if credentials.version == held.version:
                if credentials.same_content(held):
                    return False
                raise StaleCredentialsError(
                    f"credentials version {credentials.version} are already held with other content"
                )
        keys = KeyIndex.build(credentials.client_keys)
        provider_keys = {k: v.get_secret_value() for k, v in credentials.provider_keys.items()}
        # Each is one assignment; readers take what they need in one step (no await between).
        self.keys, self.provider_keys, self.credentials = keys, provider_keys, credentials
        self.required = self.force_required or credentials.require_client_key
        return True

    def provider_key(self, provider_id: str) -> str | None:
        """The API key of provider ``<namespace>/<name>``, or ``None`` when none is held."""
        return self.provider_keys.get(provider_id)


def load_credentials_file(path: Path) -> RouterCredentials:
    """The credentials stored in ``path`` (JSON, as the operator writes them).

    Raises:
        OSError: unreadable.
        ValueError: not valid credentials (the message never quotes the file).
    """
    return RouterCredentials.model_validate_json(path.read_bytes())
