"""Ostiary's own errors: one root, a small tree under it.

An error Ostiary raises on purpose is an ``OstiaryError``: it says, for a person, what could not
be done and why. Anything else that escapes (a RuntimeError, a KeyError, an AttributeError) is a
bug, and is shown as one: the webhook denies with "an Ostiary bug" and logs the traceback; the
`ostiary` command prints the traceback and exits 3 (app/cli/__init__.py), never 2 (input error).

    OstiaryError                 Ostiary's own errors
    ├── InputError               what was given cannot be used: a file, an option, a policy, a
    │   │                        request body, an image reference (also a ValueError); CLI exit 2
    │   └── ConfigError          an option or a configuration file (token, pins, trusted root, ...)
    ├── VerificationError        trust data or a signature could not be verified (the image's
    │                            facts say why; a denial, never an allow)
    └── UnavailableError         something Ostiary needs did not answer or could not be used
        └── OpaUnavailable       OPA: no binary, did not start, unreachable, or answered an error

The families of the parts join the tree by their base class (docs/internals.md, "Errors"):
app.policies.model.PolicyError, app.yamlio.DocumentError, app.images.InvalidImageReference and
the offline commands' input errors are InputErrors; app.notary.errors.TrustError and the signature
verifiers' errors are VerificationErrors; app.kube.client.KubeError is an UnavailableError;
app.opa.client.OpaError and app.opa.process.OpaNotFound / OpaStartFailed are OpaUnavailable.
"""

from __future__ import annotations


class OstiaryError(Exception):
    """An error Ostiary raises on purpose; its text is written for a person."""


class InputError(OstiaryError, ValueError):
    """What was given to Ostiary cannot be used (a file, an option, a policy, a request)."""


class ConfigError(InputError):
    """An option or a configuration file cannot be used; the message names it."""


class VerificationError(OstiaryError):
    """Trust data or a signature could not be verified; the message says which part and why."""


class UnavailableError(OstiaryError):
    """Something Ostiary needs (OPA, the Kubernetes API, a registry, a trust server, the state
    store) did not answer or could not be used; trying again later may succeed."""


class OpaUnavailable(UnavailableError):
    """OPA could not be found, started or reached, or answered with an error."""
