"""Exceptions of the Notary v1 verifier: one class per failure kind.

Every `TrustError` carries the TUF role the failure is about (`role`, e.g. "root", "snapshot",
"targets/alice"; None when no role applies) and a `reason` a person can act on. `str(error)` is
"<role>: <reason>", which is what ends up in the facts document and in denial messages.
"""

from __future__ import annotations

from app.errors import VerificationError


class TrustError(VerificationError):
    """Base class: the trust data could not be verified."""

    def __init__(self, role: str | None, reason: str) -> None:
        self.role = role
        self.reason = reason
        super().__init__(f"{role}: {reason}" if role is not None else reason)

    def __str__(self) -> str:
        return f"{self.role}: {self.reason}" if self.role is not None else self.reason


class MalformedMetadata(TrustError):
    """Not JSON, wrong structure or types, floats, duplicate keys, bad base64, ..."""


class WrongType(MalformedMetadata):
    """The `_type` field does not name the role the document was loaded as."""


class KeyIdMismatch(MalformedMetadata):
    """A key is listed under an id that is not the sha256 of its canonical JSON."""


class UnknownKeyType(TrustError):
    """A key bound to a role has a type this verifier does not know."""


class BadSignature(TrustError):
    """A signature by one of the role's keys did not verify, and the threshold was not met."""


class ThresholdNotMet(TrustError):
    """Fewer distinct keys of the role signed than its threshold requires."""


class CertificateError(TrustError):
    """An x509 key's certificate is expired, not yet valid, or (root) names another GUN."""


class ExpiredMetadata(TrustError):
    """The role's `expires` is not after the reference time."""


class RollbackAttack(TrustError):
    """The role's version is lower than a version seen before."""


class HashMismatch(TrustError):
    """The bytes received do not hash to what the timestamp or snapshot lists."""


class LengthMismatch(TrustError):
    """The bytes received do not have the length the timestamp or snapshot lists."""


class MissingRole(TrustError):
    """A role the trust data lists (or requires) is not available."""


class BadRootRotation(TrustError):
    """A new root is not signed by the trusted root's keys, or its version goes back."""


class DelegationError(TrustError):
    """A delegation is invalid: not delegated by its parent, bad name, or a target outside its paths."""


class LoadOrderError(RuntimeError):
    """A programming error: TrustedRepository's methods were called out of order.

    Not a TrustError: it says nothing about the trust data, only about the caller.
    """


class LimitExceeded(TrustError):
    """The trust data has more of something (keys, roles, paths, targets, bytes) than Ostiary reads."""


class DeadlineExceeded(TrustError):
    """Verification itself (not the server) ran past the admission's deadline."""


class ServiceError(TrustError):
    """The trust service could not produce a result (no server configured, internal error)."""


# --- fetching (app/notary/client.py, app/offline/replay.py) ---------------------------------------


class FetchError(TrustError):
    """Fetching a role failed (network, TLS, HTTP status, size, time, authorization)."""


class ServerUnreachable(FetchError):
    """No answer could be had: the connection, the TLS handshake, the request or the reading failed."""


class UnexpectedStatus(FetchError):
    """The server answered with an HTTP status other than 200, 401 or 404."""


class RoleNotServed(FetchError):
    """The server answered 404 for the role: it does not have it."""


class FetchTimeout(FetchError):
    """The deadline passed before the role arrived."""


class WorkersBusy(FetchTimeout):
    """The deadline passed before a trust worker was free to start fetching."""


class ResponseTooLarge(FetchError):
    """The role is bigger than max_response_bytes."""


class AuthorizationFailed(FetchError):
    """The server demanded a token and no credential (nor anonymous access) obtained one it accepts."""


class RememberedFailure(FetchError):
    """The server failed moments ago for the same repository and credentials; not asked again yet."""

    unreachable = False  # the remembered failure was a connection failure (see service.shown_error)


# --- the trust service's own failures (app/notary/service.py) ---------------------------------------


class NoTrustServer(ServiceError):
    """No Notary server is configured or known for the image's registry."""


class ServerNotAllowed(ServiceError):
    """A namespace policy names a trust server the operator does not allow (serve --trust-server-allow)."""


class InsecureTrustServer(ServiceError):
    """The configured trust server is not an https URL."""


class UnusableRootPins(ServiceError):
    """The pinned root material (policy `rootSecrets`, `--root-pins`) cannot be read."""


class RecordUnavailable(ServiceError):
    """The durable trust-on-first-use record cannot be read or written."""


class InternalError(ServiceError):
    """A bug: something other than a TrustError went wrong; the image fails closed."""


class RecordConflict(BadRootRotation):
    """The root served (or recorded by another process) contradicts the recorded root."""


class BadImageReference(TrustError):
    """The image reference cannot be parsed, so there is no repository to verify."""
