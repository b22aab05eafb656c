"""The world suite uses the session fixture `world` of tests/conftest.py (the real notary-server,
notary-signer and docker-registry on loopback, with the standard scenario of tests/support/world.py)."""
