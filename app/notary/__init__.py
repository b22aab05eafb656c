"""Notary v1 trust: the pure verifier (verify.py, keys.py, canonical.py, facts.py, errors.py) and,
around it, the network client, cache and service that feed it bytes."""
