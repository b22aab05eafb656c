#!/usr/bin/env bash
# Sets up everything Ostiary needs on a fresh Debian 12 machine, idempotently:
#   Debian packages: notary, docker-registry, skopeo, gnupg for the trust tests; podman, buildah,
#   mmdebstrap, gcc (and what podman needs) to build the images; containerd, runc, CNI plugins,
#   iptables, conntrack for the real node,
#   a virtualenv .venv with Ostiary and its test dependencies,
#   the pinned tools built from the Go module proxy into .tools/bin (opa, etcd, kube-apiserver, helm),
#   the container images (scripts/build-images.sh: Ostiary's from the Dockerfile, OPA, pause, kubectl).
# Re-running it reuses what is already there.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

need_debs=()
for pair in notary-server:notary notary:notary docker-registry:docker-registry skopeo:skopeo gpg:gnupg; do
  bin="${pair%%:*}"; pkg="${pair##*:}"
  command -v "$bin" >/dev/null 2>&1 || need_debs+=("$pkg")
done
for pkg in podman buildah containerd runc mmdebstrap containernetworking-plugins iptables conntrack \
    uidmap fuse-overlayfs slirp4netns gcc libc6-dev binutils; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need_debs+=("$pkg")
done
if [ ${#need_debs[@]} -gt 0 ]; then
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  echo "setup: installing Debian packages: ${need_debs[*]}"
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need_debs[@]}" >/dev/null \
    || { $sudo_cmd apt-get update >/dev/null && $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need_debs[@]}" >/dev/null; }
  # The package may start a registry service on :5000, containerd its system daemon: Ostiary's tests
  # start their own (the real node's containerd has its own root, state and socket).
  { $sudo_cmd systemctl disable --now docker-registry containerd >/dev/null 2>&1 || true; } 2>/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
stamp=".venv/.ostiary-installed"
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing Python packages into .venv"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[test]'
  touch "$stamp"
fi

scripts/setup-tools.sh all
scripts/build-images.sh all
echo "setup: done"
