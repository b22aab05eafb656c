# Ostiary webhook image. Build: docker build -t ostiary:dev .
# The chart runs it with OPA as a sidecar (openpolicyagent/opa); `ostiary serve` starts gunicorn.

FROM python:3.11-slim AS build
WORKDIR /src
COPY . .
# Wheels for Ostiary and every dependency (all have binary wheels: no compiler needed).
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OSTIARY_REGO_LIB=/opt/ostiary/rego/ostiary
RUN groupadd --system --gid 10001 ostiary \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin ostiary
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels ostiary && rm -rf /wheels
# The static Rego library is read from here (it lives outside the Python package in the repository).
COPY rego/ostiary /opt/ostiary/rego/ostiary
# ... without the library's own tests (their data lives in tests/rego-data, not in the image).
RUN rm -f /opt/ostiary/rego/ostiary/*_test.rego
USER 10001:10001
EXPOSE 8443
ENTRYPOINT ["ostiary"]
CMD ["serve", "--kube", "--listen=0.0.0.0:8443", \
     "--tls-cert=/etc/ostiary/tls/tls.crt", "--tls-key=/etc/ostiary/tls/tls.key", \
     "--opa-url=http://127.0.0.1:8181"]
