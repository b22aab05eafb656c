#!/usr/bin/env bash
# Builds (once) the container images the real-cluster tests run, with podman and no image registry:
#   base     localhost/ostiary-base:bookworm  Debian 12 minbase made here from Debian packages (mmdebstrap)
#   ostiary  localhost/ostiary:<version>      the project's Dockerfile on that base (podman build --pull=never)
#   opa      localhost/opa:<OPA_VERSION>      the static .tools/bin/opa alone (FROM scratch)
#   pause    localhost/pause:<tag>            build/pause/linux/pause.c of k8s.io/kubernetes@KUBERNETES_VERSION
#   kubectl  localhost/kubectl:<KUBERNETES_VERSION>  the static .tools/bin/kubectl alone (chart hooks)
# Each image is in podman's local storage and saved as a docker-archive in the git-ignored tools folder
# (.tools/images/NAME.tar, for `ctr -n k8s.io images import`); .tools/images/images.env names them.
# An image is rebuilt only when its inputs changed (a stamp of their hashes, like setup-tools.sh);
# the binaries come from scripts/setup-tools.sh, which must run first.
# Usage: scripts/build-images.sh [base|ostiary|opa|pause|kubectl|all]...
# Environment: OSTIARY_DEBIAN_MIRROR (the base's and the build's Debian archive), OSTIARY_BUILD_CA (the
# CA bundle pip is handed; default the system's), OSTIARY_IMAGE_OPA / OSTIARY_IMAGE_KUBECTL (other
# static binaries than .tools/bin's), CONTAINERS_CONF (default scripts/containers.conf).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=versions.env
. "$root/scripts/versions.env"
tools="${OSTIARY_TOOLS_DIR:-$root/.tools}"
out="$tools/images"
mkdir -p "$out/stamp"
# One build at a time per tools folder (several worktrees may share it).
exec 9>"$out/.lock"
flock 9
# runc and lower ulimits on this machine kind (see the file); an explicit CONTAINERS_CONF wins.
export CONTAINERS_CONF="${CONTAINERS_CONF:-$root/scripts/containers.conf}"
opa_bin="${OSTIARY_IMAGE_OPA:-$tools/bin/opa}"
kubectl_bin="${OSTIARY_IMAGE_KUBECTL:-$tools/bin/kubectl}"
# Handed to pip for the one build step that downloads (a build secret: nothing of it stays in a layer).
build_ca="${OSTIARY_BUILD_CA:-/etc/ssl/certs/ca-certificates.crt}"

base_ref=localhost/ostiary-base:bookworm
ostiary_version="$(sed -n 's/^version *= *//p' "$root/setup.cfg")"
ostiary_ref="localhost/ostiary:$ostiary_version"
opa_ref="localhost/opa:${OPA_VERSION#v}"
kubectl_ref="localhost/kubectl:$KUBERNETES_VERSION"

declare -A seconds=()
base_checked=""

for cmd in podman mmdebstrap gcc readelf go python3 flock; do
  command -v "$cmd" >/dev/null || { echo "build-images: $cmd is missing: run scripts/setup.sh (it installs the Debian packages)" >&2; exit 1; }
done

# run_logged NAME CMD...: the command's output goes to $out/NAME.log, shown (its end) only on failure.
run_logged() {
  local log="$out/$1.log"; shift
  "$@" > "$log" 2>&1 || { tail -n 40 "$log" >&2; echo "build-images: failed: $* (whole log: $log)" >&2; exit 1; }
}
hash_of() { sha256sum | cut -c1-16; }
files_hash() { # path and content of each file given, in order
  local f
  for f in "$@"; do printf '%s\0' "${f#"$root"/}"; sha256sum < "$f"; done | hash_of
}
image_id() { podman image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }

# fresh NAME REF WANT: the stamp says WANT and podman holds REF (re-loaded from the archive when the
# storage lost it), and the archive (for images that have one) exists.
fresh() {
  local name="$1" ref="$2" want="$3" tar="$out/$1.tar"
  [ -f "$out/stamp/$name" ] && [ "$(cat "$out/stamp/$name")" = "$want" ] || return 1
  if [ "$name" = base ]; then podman image exists "$ref"; return; fi
  [ -f "$tar" ] || return 1
  podman image exists "$ref" || podman load -q -i "$tar" >/dev/null || return 1
  [ -n "$(image_id "$ref")" ]
}

finish() { # NAME REF WANT: save the docker-archive and write the stamp last
  local name="$1" ref="$2" want="$3"
  if [ "$name" != base ]; then
    rm -f "$out/$name.tar.tmp"
    podman save -q --format docker-archive -o "$out/$name.tar.tmp" "$ref"
    mv "$out/$name.tar.tmp" "$out/$name.tar"
  fi
  echo "$ref" > "$out/stamp/$name.ref"
  echo "$want" > "$out/stamp/$name"
  seconds[$name]=$((SECONDS - started))
}

# scratch_image NAME REF CONTAINERFILE FILE...: a FROM-scratch image of the files given.
scratch_image() {
  local name="$1" ref="$2" containerfile="$3"; shift 3
  local ctx="$out/ctx-$name"
  rm -rf "$ctx"; mkdir -p "$ctx"
  cp "$@" "$ctx/"
  printf '%s\n' "$containerfile" > "$ctx/Containerfile"
  run_logged "$name" podman build --pull=never --network=none -t "$ref" -f "$ctx/Containerfile" "$ctx"
  rm -rf "$ctx"
}

require_static() { # a FROM-scratch image needs a binary with no dynamic loader
  [ -x "$1" ] || { echo "build-images: $1 is missing: run $2" >&2; exit 1; }
  if readelf -l "$(readlink -f "$1")" 2>/dev/null | grep -q 'program interpreter'; then
    echo "build-images: $1 is dynamically linked; an image FROM scratch needs a static one (CGO_ENABLED=0): run $2" >&2
    exit 1
  fi
}

base_recipe=(--variant=minbase --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  # what debian:bookworm-slim leaves out too (kept out of later apt installs as well)
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/groff/*'
  --dpkgopt='path-exclude=/usr/share/lintian/*')
debian_mirror="${OSTIARY_DEBIAN_MIRROR:-http://deb.debian.org}"
base_sources=("deb $debian_mirror/debian bookworm main" "deb $debian_mirror/debian bookworm-updates main"
  "deb $debian_mirror/debian-security bookworm-security main")

build_base() {
  [ -n "$base_checked" ] && return
  base_checked=1
  local want
  want="$(printf '%s\n' "${base_recipe[@]}" "${base_sources[@]}" | hash_of)"
  fresh base "$base_ref" "$want" && { echo "base $base_ref: present"; return; }
  echo "base $base_ref: building from Debian packages (about 1-2 minutes)"
  started=$SECONDS
  rm -f "$out/base.rootfs.tar"
  run_logged base mmdebstrap "${base_recipe[@]}" bookworm "$out/base.rootfs.tar" "${base_sources[@]}"
  podman import -q --change 'CMD ["bash"]' "$out/base.rootfs.tar" "$base_ref" >/dev/null
  rm -f "$out/base.rootfs.tar"
  finish base "$base_ref" "$want"
}

build_ostiary() {
  build_base
  build_opa  # the image carries OPA's static binary (custom Rego is read with OPA's parser)
  # The inputs: the Dockerfile, the .dockerignore allow-list and every file it lets in, the base.
  local entries=() files=() want
  mapfile -t entries < <(sed -n 's/^!//p' "$root/.dockerignore")
  mapfile -t files < <(cd "$root" && find "${entries[@]}" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' | LC_ALL=C sort)
  want="$( { files_hash "$root/Dockerfile" "$root/.dockerignore" "${files[@]/#/$root/}"; image_id "$base_ref"; echo "BASE=$base_ref"; image_id "$opa_ref"; } | hash_of)"
  fresh ostiary "$ostiary_ref" "$want" && { echo "ostiary $ostiary_ref: present"; return; }
  echo "ostiary $ostiary_ref: building from the Dockerfile (1-3 minutes)"
  started=$SECONDS
  local secret=()
  [ -s "$build_ca" ] && secret=(--secret "id=pip-ca,src=$build_ca")
  run_logged ostiary podman build --pull=never --network=host --build-arg "BASE=$base_ref" \
    --build-arg "OPA_IMAGE=$opa_ref" "${secret[@]}" \
    -t "$ostiary_ref" "$root"
  finish ostiary "$ostiary_ref" "$want"
}

build_opa() {
  require_static "$opa_bin" "scripts/setup-tools.sh opa"
  local want
  # The chart runs it with `args` only (the entrypoint is opa, as in OPA's own images).
  local containerfile='FROM scratch
COPY opa /opa
USER 65532:65532
ENTRYPOINT ["/opa"]'
  want="$OPA_VERSION:$( { files_hash "$(readlink -f "$opa_bin")"; echo "$containerfile"; } | hash_of)"
  fresh opa "$opa_ref" "$want" && { echo "opa $opa_ref: present"; return; }
  echo "opa $opa_ref: building"
  started=$SECONDS
  scratch_image opa "$opa_ref" "$containerfile" "$(readlink -f "$opa_bin")"
  # Read the whole output before matching: `grep -q` would close the pipe early (podman fails then).
  podman run --rm --network=none "$opa_ref" version | grep "^Version: ${OPA_VERSION#v}\$" >/dev/null \
    || { echo "build-images: $opa_ref does not run as opa ${OPA_VERSION#v}" >&2; exit 1; }
  finish opa "$opa_ref" "$want"
}

build_pause() {
  local dir src tag want ref ctx containerfile='FROM scratch
COPY pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]'
  local cflags=(-Os -Wall -Werror -static)
  dir="$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  src="$dir/build/pause/linux/pause.c"
  tag="$(sed -n 's/^TAG ?= *//p' "$dir/build/pause/Makefile")"
  [ -f "$src" ] && [ -n "$tag" ] || { echo "build-images: no pause.c or TAG in k8s.io/kubernetes@$KUBERNETES_VERSION" >&2; exit 1; }
  ref="localhost/pause:$tag"
  want="$KUBERNETES_VERSION:$tag:$( { files_hash "$src"; gcc --version | head -1; echo "${cflags[*]} $containerfile"; } | hash_of)"
  fresh pause "$ref" "$want" && { echo "pause $ref: present"; return; }
  echo "pause $ref: building"
  started=$SECONDS
  ctx="$(mktemp -d)"
  # As the Makefile beside it builds it (CFLAGS), with this module's version in place of git's.
  gcc "${cflags[@]}" -DVERSION="v$tag-$KUBERNETES_VERSION" -o "$ctx/pause" "$src"
  scratch_image pause "$ref" "$containerfile" "$ctx/pause"
  rm -rf "$ctx"
  podman run --rm --network=none "$ref" -v | grep "^pause.c v$tag" >/dev/null || { echo "build-images: $ref does not run" >&2; exit 1; }
  finish pause "$ref" "$want"
}

build_kubectl() {
  require_static "$kubectl_bin" "scripts/setup-tools.sh kube-node"
  # For the chart's hooks: the entrypoint is kubectl; HOME (its discovery cache) under /tmp, the one
  # writable place with a read-only root filesystem.
  local want containerfile='FROM scratch
COPY kubectl /usr/local/bin/kubectl
ENV HOME=/tmp
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/kubectl"]'
  want="$KUBERNETES_VERSION:$( { files_hash "$(readlink -f "$kubectl_bin")"; echo "$containerfile"; } | hash_of)"
  fresh kubectl "$kubectl_ref" "$want" && { echo "kubectl $kubectl_ref: present"; return; }
  echo "kubectl $kubectl_ref: building"
  started=$SECONDS
  scratch_image kubectl "$kubectl_ref" "$containerfile" "$(readlink -f "$kubectl_bin")"
  podman run --rm --network=none "$kubectl_ref" version --client | grep "Client Version: $KUBERNETES_VERSION\$" >/dev/null \
    || { echo "build-images: $kubectl_ref does not run as kubectl $KUBERNETES_VERSION" >&2; exit 1; }
  finish kubectl "$kubectl_ref" "$want"
}

report() { # what is there now: reference, size in podman, archive, built by this run or present
  local name ref tar size was
  {
    echo "# Written by scripts/build-images.sh: the images it built (docker-archives NAME.tar beside this file)."
    for name in ostiary opa pause kubectl; do
      [ -f "$out/stamp/$name.ref" ] && echo "${name^^}_IMAGE=$(cat "$out/stamp/$name.ref")"
    done
  } > "$out/images.env"
  echo "images (podman storage; docker-archives in $out):"
  for name in base ostiary opa pause kubectl; do
    [ -f "$out/stamp/$name.ref" ] || continue
    ref="$(cat "$out/stamp/$name.ref")"
    size="$(podman image inspect --format '{{.Size}}' "$ref" 2>/dev/null | awk '{printf "%.1f MB", $1/1e6}')"
    tar=""; [ -f "$out/$name.tar" ] && tar="$(du -m "$out/$name.tar" | cut -f1) MB archive"
    was=present; [ -n "${seconds[$name]:-}" ] && was="built in ${seconds[$name]} s"
    printf '  %-8s %-36s %10s  %-16s %s\n' "$name" "$ref" "$size" "$tar" "$was"
  done
}

targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(all)
for t in "${targets[@]}"; do
  case "$t" in
    base) build_base ;;
    ostiary) build_ostiary ;;
    opa) build_opa ;;
    pause) build_pause ;;
    kubectl) build_kubectl ;;
    all) build_base; build_ostiary; build_opa; build_pause; build_kubectl ;;
    *) echo "unknown image: $t" >&2; exit 2 ;;
  esac
done
report
