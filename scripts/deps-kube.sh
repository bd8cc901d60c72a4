#!/usr/bin/env bash
# deps-kube.sh — installs what the real-cluster test harness (test/kubebed)
# needs besides the Kubernetes binaries (scripts/kube-build.sh builds those):
# etcd from Debian, containerd + runc (one containerd per node, started by the
# harness), the reference CNI plugins (loopback is mandatory for containerd;
# bridge, host-local and portmap are the baseline), nftables (kube-proxy's
# nftables mode runs `nft`), iptables (the kubelet's canary chains, in the
# node's netns), conntrack, iproute2, util-linux (nsenter, unshare, flock),
# and crictl, built with the Go module proxy (Debian has none).
# test/kubebed runs it itself before every cluster.
#
# Idempotent and fast: it checks with command -v and for the plugin files
# first, and does nothing when everything is there. Without root it only says what is missing.
#
# No service is left running: the packages would start containerd and etcd
# as system services, but the harness runs its own per node and per cluster.
# A policy-rc.d that denies every start is in place during the install (only
# when none exists already), and a containerd or etcd that the install still
# started (run bare, with no arguments, and not running before) is stopped.
#   CRICTL_VERSION  cri-tools version to build (default v1.37.0)
#   CRICTL_BIN      where crictl goes (default /usr/local/bin)
set -euo pipefail
CRICTL_VERSION=${CRICTL_VERSION:-v1.37.0}
CRICTL_BIN=${CRICTL_BIN:-/usr/local/bin}
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have etcd       || need+=(etcd-server)
have containerd || need+=(containerd)
have runc       || need+=(runc)
have nft        || need+=(nftables)
have iptables   || need+=(iptables)
have conntrack  || need+=(conntrack)
have ip         || need+=(iproute2)
have nsenter    || need+=(util-linux)
have flock      || need+=(util-linux)
for p in loopback bridge host-local portmap; do
  [ -x /usr/lib/cni/$p ] || { need+=(containernetworking-plugins); break; }
done
if [ "$(id -u)" -ne 0 ]; then
  [ ${#need[@]} -eq 0 ] || echo "deps-kube: missing ${need[*]}; run 'sudo scripts/deps-kube.sh'" >&2
  have crictl || echo "deps-kube: missing crictl; run 'sudo scripts/deps-kube.sh'" >&2
  exit 0
fi
if [ ${#need[@]} -gt 0 ]; then
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  # A service start runs the daemon bare (no arguments); the harness and the
  # other test beds always pass --config / --data-dir. Only bare ones count.
  bare() { local p; for p in $(pgrep -x 'containerd|etcd' || true); do
    [ "$(tr -cd '\0' </proc/"$p"/cmdline 2>/dev/null | wc -c)" = 1 ] && echo "$p"; done; true; }
  before=$(bare)
  policy=/usr/sbin/policy-rc.d
  ours=0
  if [ ! -e $policy ]; then
    printf '#!/bin/sh\n# deps-kube.sh: no service starts during the install\nexit 101\n' >$policy
    chmod 0755 $policy
    ours=1
  fi
  cleanup() { [ $ours = 1 ] && rm -f $policy; true; }
  trap cleanup EXIT
  export DEBIAN_FRONTEND=noninteractive
  echo "deps-kube: installing ${need[*]}" >&2
  apt-get update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  cleanup
  trap - EXIT
  # Whatever the install still started (not running before): stop it, ours only.
  for pid in $(bare); do
    case " $(echo $before) " in *" $pid "*) continue ;; esac
    echo "deps-kube: stopping $(cat /proc/$pid/comm 2>/dev/null) (pid $pid) that the install started" >&2
    kill -TERM "$pid" 2>/dev/null || true
  done
fi
if ! have crictl; then
  have go || { echo "deps-kube: go not found: cannot build crictl" >&2; exit 1; }
  echo "deps-kube: building crictl $CRICTL_VERSION into $CRICTL_BIN" >&2
  GOTOOLCHAIN=local GOFLAGS=-buildvcs=false GOBIN=$CRICTL_BIN go install \
    -ldflags "-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" \
    "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
fi
