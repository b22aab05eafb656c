"""gunicorn settings for Ostiary (`ostiary serve` applies them; usable with `gunicorn -c` too).

One worker: it owns the local OPA process and the Kubernetes watches. Threads serve requests
concurrently; admissions spend their time waiting on Notary and OPA, not on the CPU.

The worker class (app/serving.py) reads every request on its event loop under deadlines and only
then gives it to a thread, so slow or idle clients cannot hold the threads. Its own settings
(the *_timeout and max_* below) are registered when app.serving is imported: `ostiary serve`
does that first; a bare `gunicorn -c` run uses their defaults, which are the values below.
Environment overrides follow gunicorn's convention: GUNICORN_CMD_ARGS="--worker-connections 200".
"""

workers = 1
worker_class = "app.serving.OstiaryWorker"
threads = 8
worker_connections = 1000  # open connections at most; beyond: an idle one is closed, else 503/reset
timeout = 30
graceful_timeout = 10
keepalive = 30  # seconds an idle kept-alive connection stays open (on the loop, not on a thread)
tls_handshake_timeout = 5.0
header_timeout = 10.0  # from the accept (or a kept-alive request's first byte) to the end of the head
body_timeout = 10.0  # from the end of the head to the end of the Content-Length body
send_timeout = 10.0  # a thread writing a response to a client that does not read
max_buffered_bytes = 64 * 1024 * 1024  # request bytes held in memory by all connections together
peer_share = (
    0.5  # of worker_connections and max_buffered_bytes one client address may hold (docs/security.md)
)
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
accesslog = (
    None  # off: the decision log has a line per admission; GUNICORN_CMD_ARGS="--access-logfile -" turns it on
)
errorlog = "-"
logger_class = "app.logsafe.GunicornLogger"  # control characters escaped in every line (app/logsafe.py)
loglevel = "info"
preload_app = False
