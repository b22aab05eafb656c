"""gunicorn settings for Ostiary (`ostiary serve` applies them; usable with `gunicorn -c` too).

One worker: it owns the local OPA process and the Kubernetes watches. Threads serve requests
concurrently; admissions spend their time waiting on Notary and OPA, not on the CPU.
"""

workers = 1
worker_class = "gthread"
threads = 8
timeout = 30
graceful_timeout = 10
keepalive = 30
accesslog = "-"
errorlog = "-"
loglevel = "info"
preload_app = False
