"""Registry access: pull-secret credentials and the registry token (Bearer) flow.

Kept apart from app/notary because both the Notary client and, later, registry clients need the same
credentials and tokens; nothing here knows about TUF.
"""

from app.registry.credentials import credentials_for, normalize_registry_host

__all__ = ["credentials_for", "normalize_registry_host"]
