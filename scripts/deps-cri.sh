#!/usr/bin/env bash
# Installs what the CNI end-to-end test with a real container runtime
# (test/cni_test.go, TestCNIContainerd) needs: containerd + runc from Debian
# packages, and crictl built from sigs.k8s.io/cri-tools with the Go module
# proxy (Debian has no crictl package). Idempotent: does nothing when every
# tool is already there. Without root it only says what is missing (the test
# then skips with the same words).
#   CRICTL_VERSION  cri-tools version to build (default v1.37.0, builds with Go 1.26)
#   CRICTL_BIN      where crictl goes (default /usr/local/bin)
set -euo pipefail
CRICTL_VERSION=${CRICTL_VERSION:-v1.37.0}
CRICTL_BIN=${CRICTL_BIN:-/usr/local/bin}
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have containerd || need+=(containerd)
have runc       || need+=(runc)
have nsenter    || need+=(util-linux)
[ -x /usr/lib/cni/loopback ] || need+=(containernetworking-plugins)
if [ "$(id -u)" -ne 0 ]; then
  [ ${#need[@]} -eq 0 ] || echo "deps-cri: missing ${need[*]}; run 'sudo bash scripts/deps-cri.sh'" >&2
  have crictl || echo "deps-cri: missing crictl; run 'sudo bash scripts/deps-cri.sh'" >&2
  exit 0
fi
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! have crictl; then
  command -v go >/dev/null 2>&1 || { echo "deps-cri: go not found: cannot build crictl" >&2; exit 1; }
  echo "deps-cri: building crictl $CRICTL_VERSION into $CRICTL_BIN" >&2
  GOTOOLCHAIN=local GOFLAGS=-buildvcs=false GOBIN=$CRICTL_BIN go install \
    -ldflags "-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" \
    "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
fi
