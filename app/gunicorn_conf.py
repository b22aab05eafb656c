"""gunicorn settings for Ostiary (`ostiary serve` applies them; usable with `gunicorn -c` too).

One worker: it owns the local OPA process and the Kubernetes watches. Threads serve requests
concurrently; admissions spend their time waiting on Notary and OPA, not on the CPU.

The worker class (app/serving.py) reads every request on its event loop under deadlines and only
then gives it to a thread, so slow or idle clients cannot hold the threads. Its own settings
(the *_timeout and max_* below) are registered when app.serving is imported: `ostiary serve`
does that first; a bare `gunicorn -c` run uses their defaults, which are the values below.
Environment overrides follow gunicorn's convention: GUNICORN_CMD_ARGS="--worker-connections 200".
"""

from app import defaults

workers = 1
worker_class = "app.serving.OstiaryWorker"
threads = defaults.THREADS
worker_connections = defaults.WORKER_CONNECTIONS  # beyond: an idle connection is closed, else 503/reset
timeout = 30
graceful_timeout = 10
keepalive = 30  # seconds an idle kept-alive connection stays open (on the loop, not on a thread)
# The worker's own settings (app/serving.py); what each means: app/defaults.py.
tls_handshake_timeout = defaults.TLS_HANDSHAKE_TIMEOUT
header_timeout = defaults.HEADER_TIMEOUT
body_timeout = defaults.BODY_TIMEOUT
send_timeout = defaults.SEND_TIMEOUT
max_buffered_bytes = defaults.MAX_BUFFERED_BYTES
peer_share = defaults.PEER_SHARE
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
