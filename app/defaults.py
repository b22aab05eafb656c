"""Every serving default, defined once. `ostiary serve`'s options, ServeConfig, the Reviewer,
app/gunicorn_conf.py and the worker's settings (app/serving.py) read them from here, and
tests/unit/test_defaults.py holds them to it, so a default cannot differ between the CLI, a bare
`gunicorn -c app/gunicorn_conf.py` run and the library."""

from __future__ import annotations

LISTEN = "127.0.0.1:8443"
BUDGET_SECONDS = 8.0  # one admission, end to end (keep under the webhook's timeoutSeconds)
TRUST_CACHE_TTL = 60.0  # seconds verified trust data (and signature results) are reused
MAX_TRUST_RECORDS = 10_000  # trust-on-first-use records kept
THREADS = 8  # request threads of the one worker
# An UPDATE carries object and oldObject, each up to the API server's 3 MiB request limit.
MAX_BODY = 7 * 1024 * 1024
# The buffering worker (app/serving.py): slow and idle clients.
TLS_HANDSHAKE_TIMEOUT = 5.0
HEADER_TIMEOUT = 10.0  # from the accept (or a kept-alive request's first byte) to the end of the head
BODY_TIMEOUT = 10.0  # from the end of the head to the end of the Content-Length body
SEND_TIMEOUT = 10.0  # a thread writing a response to a client that does not read
MAX_BUFFERED_BYTES = 64 * 1024 * 1024  # request bytes held in memory by all connections together
PEER_SHARE = 0.5  # of connections and buffered bytes one client address may hold (docs/security.md)
WORKER_CONNECTIONS = 1000  # open connections at most
