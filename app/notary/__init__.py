"""Notary v1 trust, shaped like python-tuf: the pure core (metadata.py, pins.py, trusted.py, facts.py,
with keys.py, canonical.py, errors.py), the one walk over a repository (walker.py) and, around them, the
network client, cache, records and service that feed the walk bytes (docs/internals.md)."""
