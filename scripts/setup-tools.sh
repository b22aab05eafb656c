#!/usr/bin/env bash
# Builds (once) the pinned tools Ostiary runs: opa, etcd, kube-apiserver, helm, and refdiff (the
# docker reference grammar, tools/refdiff, for the differential test of app/images.py).
# Everything is compiled from the Go module proxy into the git-ignored tools folder
# (default: <repo>/.tools/bin); a binary already there at the pinned version is reused.
# and regal (the Rego linter, tools/regal pins it).
# and refreg (a registry with the OCI referrers API, tools/refreg, for the cosign bundle tests).
# Usage: scripts/setup-tools.sh [opa|etcd|kube-apiserver|kube-node|crictl|helm|refdiff|regal|refreg|all]...
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=versions.env
. "$root/scripts/versions.env"
tools="${OSTIARY_TOOLS_DIR:-$root/.tools}"
bin="$tools/bin"
mkdir -p "$bin" "$tools/stamp"
export GOFLAGS="${GOFLAGS:-} -mod=mod"
export CGO_ENABLED=0

stamp_ok() { [ -x "$bin/$1" ] && [ -f "$tools/stamp/$1" ] && [ "$(cat "$tools/stamp/$1")" = "$2" ]; }
stamp() { echo "$2" > "$tools/stamp/$1"; }

build_opa() {
  # An opa the user already has (OSTIARY_OPA or PATH) is used when it is 1.x; otherwise build the pin.
  local have="${OSTIARY_OPA:-$(command -v opa || true)}"
  if [ -n "$have" ] && [ "$have" != "$bin/opa" ] && "$have" version 2>/dev/null | grep -q '^Version: 1\.'; then
    ln -sf "$have" "$bin/opa"; stamp opa "external:$have"; echo "opa: using $have"; return
  fi
  stamp_ok opa "$OPA_VERSION" && { echo "opa $OPA_VERSION: present"; return; }
  echo "opa $OPA_VERSION: building (first time takes a few minutes)"
  GOBIN="$bin" go install "github.com/open-policy-agent/opa@$OPA_VERSION"
  stamp opa "$OPA_VERSION"
}

build_helm() {
  stamp_ok helm "$HELM_VERSION" && { echo "helm $HELM_VERSION: present"; return; }
  echo "helm $HELM_VERSION: building"
  GOBIN="$bin" go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  stamp helm "$HELM_VERSION"
}

build_etcd() {
  stamp_ok etcd "$ETCD_VERSION" && { echo "etcd $ETCD_VERSION: present"; return; }
  echo "etcd $ETCD_VERSION: building"
  local mod="$tools/src/etcd"
  mkdir -p "$mod"
  cat > "$mod/main.go" <<'GO'
// Command etcd is etcd's own server entry point (etcdmain), built for Ostiary's tests.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$mod" && rm -f go.mod go.sum && go mod init ostiary.local/etcd >/dev/null 2>&1 \
    && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" && go mod tidy && go build -o "$bin/etcd" .)
  stamp etcd "$ETCD_VERSION"
}

build_kube_apiserver() {
  stamp_ok kube-apiserver "$KUBERNETES_VERSION" && { echo "kube-apiserver $KUBERNETES_VERSION: present"; return; }
  echo "kube-apiserver $KUBERNETES_VERSION: building (first time takes 10-20 minutes on 2 cores)"
  local mod="$tools/src/kube-apiserver" staging="v0.${KUBERNETES_VERSION#v1.}" minor="${KUBERNETES_VERSION#v1.}"
  minor="${minor%%.*}"
  mkdir -p "$mod"
  # k8s.io/kubernetes refers to its staging modules as v0.0.0 with replace directives to ./staging,
  # which do not apply to a dependent module: replace each with the release matching the pin.
  local gomod
  gomod="$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  {
    echo "module ostiary.local/kube-apiserver"
    echo
    echo "go 1.24"
    echo
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    echo
    grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" | awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
  } > "$mod/go.mod"
  cat > "$mod/tools.go" <<'GO'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
GO
  (cd "$mod" && go mod tidy && go build -ldflags "-X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
      -o "$bin/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver)
  stamp kube-apiserver "$KUBERNETES_VERSION"
}

build_kube_node() {
  # The one-node cluster of tests/node (issue 19): kubelet, kube-controller-manager, kube-scheduler,
  # kube-proxy and kubectl from the same k8s.io/kubernetes module and version as kube-apiserver (its
  # go.mod, made by build_kube_apiserver, is reused), in one `go build` so they share compilation.
  local cmds=(kubelet kube-controller-manager kube-scheduler kube-proxy kubectl) c missing=0
  for c in "${cmds[@]}"; do stamp_ok "$c" "$KUBERNETES_VERSION" || missing=1; done
  [ "$missing" -eq 0 ] && { echo "kubelet, controller-manager, scheduler, proxy, kubectl $KUBERNETES_VERSION: present"; return; }
  build_kube_apiserver
  echo "kubelet, kube-controller-manager, kube-scheduler, kube-proxy, kubectl $KUBERNETES_VERSION: building (about 6 minutes with a warm Go build cache)"
  local mod="$tools/src/kube-apiserver" minor="${KUBERNETES_VERSION#v1.}" pkgs=()
  minor="${minor%%.*}"
  for c in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  {
    echo "//go:build tools"
    echo
    echo "package tools"
    echo
    echo "import ("
    echo "	_ \"k8s.io/kubernetes/cmd/kube-apiserver\""
    for p in "${pkgs[@]}"; do echo "	_ \"$p\""; done
    echo ")"
  } > "$mod/tools.go"
  mkdir -p "$tools/src/kube-node-out"
  (cd "$mod" && go mod tidy && go build -ldflags "-X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
      -o "$tools/src/kube-node-out/" "${pkgs[@]}")
  for c in "${cmds[@]}"; do mv -f "$tools/src/kube-node-out/$c" "$bin/$c"; stamp "$c" "$KUBERNETES_VERSION"; done
}

build_crictl() {
  # crictl is not packaged in Debian 12; only for looking into the test node's containerd by hand.
  stamp_ok crictl "$CRICTL_VERSION" && { echo "crictl $CRICTL_VERSION: present"; return; }
  echo "crictl $CRICTL_VERSION: building"
  GOBIN="$bin" go install "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
  stamp crictl "$CRICTL_VERSION"
}

build_refdiff() {
  # Built from tools/refdiff (its go.mod pins distribution/reference); the stamp is the version and
  # a hash of the sources, so an edit rebuilds and an unchanged tree costs one sha256sum.
  local src="$root/tools/refdiff" want
  grep -q "github.com/distribution/reference $REFERENCE_VERSION\$" "$src/go.mod" \
    || { echo "tools/refdiff/go.mod does not require distribution/reference $REFERENCE_VERSION (scripts/versions.env)" >&2; exit 1; }
  want="$REFERENCE_VERSION:$(cat "$src/main.go" "$src/go.mod" "$src/go.sum" | sha256sum | cut -c1-16)"
  stamp_ok refdiff "$want" && { echo "refdiff ($want): present"; return; }
  echo "refdiff ($want): building"
  (cd "$src" && go build -o "$bin/refdiff" .)
  stamp refdiff "$want"
}

build_regal() {
  # Built from tools/regal (its go.mod pins github.com/styrainc/regal; `go install mod@version` is
  # refused because the proxy does not list that module's versions, but it serves the pinned one).
  local src="$root/tools/regal" want
  grep -q "github.com/styrainc/regal $REGAL_VERSION\$" "$src/go.mod" \
    || { echo "tools/regal/go.mod does not require styrainc/regal $REGAL_VERSION (scripts/versions.env)" >&2; exit 1; }
  want="$REGAL_VERSION:$(cat "$src/go.mod" "$src/go.sum" | sha256sum | cut -c1-16)"
  stamp_ok regal "$want" && { echo "regal ($want): present"; return; }
  echo "regal ($want): building (first time takes a few minutes)"
  (cd "$src" && go build -o "$bin/regal" github.com/styrainc/regal)
  stamp regal "$want"
}

build_refreg() {
  # Built from tools/refreg (go-containerregistry's registry with the OCI 1.1 referrers API on), the
  # registry the cosign bundle tests replay into (tests/signatures/test_cosign_referrers.py).
  local src="$root/tools/refreg" want
  grep -q "github.com/google/go-containerregistry $GGCR_VERSION\$" "$src/go.mod" \
    || { echo "tools/refreg/go.mod does not require go-containerregistry $GGCR_VERSION (scripts/versions.env)" >&2; exit 1; }
  want="$GGCR_VERSION:$(cat "$src/main.go" "$src/go.mod" "$src/go.sum" | sha256sum | cut -c1-16)"
  stamp_ok refreg "$want" && { echo "refreg ($want): present"; return; }
  echo "refreg ($want): building"
  (cd "$src" && go build -o "$bin/refreg" .)
  stamp refreg "$want"
}

targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(all)
for t in "${targets[@]}"; do
  case "$t" in
    opa) build_opa ;;
    helm) build_helm ;;
    etcd) build_etcd ;;
    kube-apiserver) build_kube_apiserver ;;
    refdiff) build_refdiff ;;
    regal) build_regal ;;
    kube-node) build_kube_node ;;
    crictl) build_crictl ;;
    refreg) build_refreg ;;
    all) build_opa; build_etcd; build_kube_apiserver; build_kube_node; build_helm; build_refdiff; build_regal; build_refreg ;;
    *) echo "unknown tool: $t" >&2; exit 2 ;;
  esac
done
