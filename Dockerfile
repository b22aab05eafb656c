# Ostiary webhook image. Build: docker build -t ostiary:dev .
# The chart runs it with OPA as a sidecar; `ostiary serve` starts gunicorn.
#
# The base is Debian 12 (bookworm) with Debian's own python3 (3.11), not python:3.11-slim: the
# project's setup builds this same Dockerfile with no image registry in reach, from a bookworm base
# it makes itself from Debian packages (mmdebstrap, scripts/build-images.sh), and only a Debian base
# makes that tested image and a public build the same distribution and the same Python. Pin the
# public base by digest for a reproducible build:
#   docker build --build-arg BASE=debian:bookworm-slim@sha256:<digest> -t ostiary:dev .
ARG BASE=debian:bookworm-slim
# Ostiary reads a custom Rego module's package with OPA's own parser (`opa parse`, never a regular
# expression: app/policies/directory.py), in every mode, so the image carries the static opa binary
# of the OPA image the chart runs as sidecar (keep in step with scripts/versions.env OPA_VERSION and
# the chart's opa.image.tag). The setup passes the OPA image it builds locally.
ARG OPA_IMAGE=openpolicyagent/opa:1.22.3-static

FROM ${OPA_IMAGE} AS opa

FROM ${BASE} AS runtime
# ca-certificates: the system bundle for an https --opa-url (the trust clients use certifi's).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 ca-certificates \
 && apt-get clean && rm -rf /var/lib/apt/lists/*

FROM runtime AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Ostiary and its dependencies (all have binary wheels: no compiler) into a virtualenv, which the
# final stage copies whole: no wheel, pip or source tree reaches the image. The static Rego library
# goes beside it, without the library's own tests (their data lives in tests/rego-data).
# A build behind a proxy that re-signs HTTPS can hand pip its CA bundle for this step only (nothing
# of it stays anywhere): --secret id=pip-ca,src=/etc/ssl/certs/ca-certificates.crt
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
 && python3 -m venv /opt/ostiary/venv \
 && /opt/ostiary/venv/bin/pip install --no-cache-dir --disable-pip-version-check . \
 && /opt/ostiary/venv/bin/pip uninstall -y --disable-pip-version-check pip setuptools \
 && mkdir -p /opt/ostiary/rego \
 && cp -r rego/ostiary /opt/ostiary/rego/ostiary \
 && rm -f /opt/ostiary/rego/ostiary/*_test.rego

FROM runtime
# XDG_STATE_HOME: `serve --policy-dir` keeps its first-use trust records in $XDG_STATE_HOME/ostiary
# unless --state-dir says otherwise; the user has no home and the root filesystem is meant to be
# read-only, so the default is under /tmp, which the chart (an emptyDir) and `--tmpfs /tmp` make
# writable. Records there live as long as the pod (they survive a container restart, not a new pod).
ENV PATH=/opt/ostiary/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    XDG_STATE_HOME=/tmp/state \
    OSTIARY_OPA=/usr/local/bin/opa \
    OSTIARY_REGO_LIB=/opt/ostiary/rego/ostiary
RUN groupadd --system --gid 10001 ostiary \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin ostiary
COPY --from=build /opt/ostiary /opt/ostiary
COPY --from=opa /opa /usr/local/bin/opa
USER 10001:10001
EXPOSE 8443
ENTRYPOINT ["ostiary"]
CMD ["serve", "--kube", "--listen=0.0.0.0:8443", \
     "--tls-cert=/etc/ostiary/tls/tls.crt", "--tls-key=/etc/ostiary/tls/tls.key", \
     "--opa-url=http://127.0.0.1:8181"]
