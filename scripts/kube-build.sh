#!/usr/bin/env bash
# kube-build.sh — builds the Kubernetes binaries the real-cluster test harness
# (test/kubebed) runs: kube-apiserver, kube-controller-manager, kube-scheduler,
# kubelet and kube-proxy, from the Go module proxy only (no git clone, no
# release download, no registry).
#
# How: a scratch module that requires k8s.io/kubernetes at $K8S_VERSION, with a
# `replace k8s.io/X => k8s.io/X $STAGING_VERSION` for every staging module that
# kubernetes' own go.mod pins at v0.0.0, and a tools.go that blank-imports the
# five commands. One `go build` links all five; the version variables of
# k8s.io/component-base/version are set so that the Node reports v1.37.2.
#
# Where: ${WEFT_K8S_CACHE:-/var/cache/weft/k8s-$K8S_VERSION}/bin — outside the
# checkout (about 480 MB). The build runs in a temporary directory beside it and
# is renamed into place at the end, so an interrupted build never leaves a half
# cache. A stamp file records the version: when it matches and the five
# binaries exist, the script exits at once (the warm path takes milliseconds).
#
# Cost: cold (empty GOCACHE and module cache) about 1,340 CPU-seconds and
# 2.7 GiB RSS: 23 min on 2 cores shared with other builds (load 4-8), 12-15
# min idle. With a warm GOCACHE a rebuild into an empty cache dir takes 30 s;
# with the cache dir complete the script returns in milliseconds.
#
# Why v1.37: Debian 12's containerd 1.6 has no RuntimeConfig CRI RPC; kubelet
# 1.37 falls back to its configured cgroupDriver, 1.38 will refuse (KEP-4033).
#
#   scripts/kube-build.sh            build if needed, print the bin dir
#   WEFT_K8S_CACHE=/x scripts/kube-build.sh
set -euo pipefail
K8S_VERSION=v1.37.2
STAGING_VERSION=v0.37.2
CACHE=${WEFT_K8S_CACHE:-/var/cache/weft/k8s-$K8S_VERSION}
BINS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
STAMP="k8s $K8S_VERSION staging $STAGING_VERSION bins ${BINS[*]}"

ready() {
  [ -f "$CACHE/stamp" ] && [ "$(cat "$CACHE/stamp")" = "$STAMP" ] || return 1
  local b
  for b in "${BINS[@]}"; do [ -x "$CACHE/bin/$b" ] || return 1; done
}
if ready; then echo "$CACHE/bin"; exit 0; fi

command -v go >/dev/null 2>&1 || { echo "kube-build: go not found" >&2; exit 1; }
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
parent=$(dirname "$CACHE")
mkdir -p "$parent"
# One build at a time: a second caller waits for the first and then finds the cache ready.
exec 9>"$parent/.$(basename "$CACHE").lock"
flock 9
if ready; then echo "$CACHE/bin"; exit 0; fi

tmp=$(mktemp -d "$parent/.$(basename "$CACHE").build.XXXXXX")
chmod 0755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "kube-build: building Kubernetes $K8S_VERSION into $CACHE (cold: 12-25 min on 2 cores)" >&2
mkdir -p "$tmp/src" "$tmp/bin"
cd "$tmp/src"
go mod init weft.local/k8s-build >/dev/null 2>&1
go mod download -json "k8s.io/kubernetes@$K8S_VERSION" >/dev/null
kmod=$(go env GOMODCACHE)/k8s.io/kubernetes@$K8S_VERSION/go.mod
{
  echo
  echo "require k8s.io/kubernetes $K8S_VERSION"
  echo
  echo "replace ("
  # kubernetes' go.mod: `k8s.io/X v0.0.0` in its require blocks (the staging repos)
  awk -v v="$STAGING_VERSION" '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print "\t" $1 " => " $1 " " v}' "$kmod" | sort -u
  echo ")"
} >>go.mod
grep -q '=> k8s.io/api ' go.mod || { echo "kube-build: no staging replaces found in $kmod" >&2; exit 1; }
{
  printf '//go:build tools\n\npackage tools\n\nimport (\n'
  for b in "${BINS[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$b"; done
  printf ')\n'
} >tools.go
go mod tidy
V=k8s.io/component-base/version
minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
pkgs=()
for b in "${BINS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
go build -trimpath \
  -ldflags="-s -w -X $V.gitVersion=$K8S_VERSION -X $V.gitMajor=1 -X $V.gitMinor=$minor -X $V.gitTreeState=clean -X $V.buildDate=1970-01-01T00:00:00Z" \
  -o "$tmp/bin/" "${pkgs[@]}"
for b in "${BINS[@]}"; do [ -x "$tmp/bin/$b" ] || { echo "kube-build: $b missing after build" >&2; exit 1; }; done
echo "$STAMP" >"$tmp/stamp"
rm -rf "$tmp/src"
# Swap in: the old cache (a different version, or half of one) goes aside first.
if [ -e "$CACHE" ]; then mv "$CACHE" "$tmp.old"; fi
mv "$tmp" "$CACHE"
rm -rf "$tmp.old"
trap - EXIT
echo "kube-build: done in $(( $(date +%s) - start )) s" >&2
echo "$CACHE/bin"
