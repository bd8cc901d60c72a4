#!/usr/bin/env bash
# Installs the Debian packages weft's tests, demo and benchmarks need.
# Idempotent: does nothing when every tool is already there.
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have ip        || need+=(iproute2)
have nsenter   || need+=(util-linux)
have ping      || need+=(iputils-ping)
have iperf3    || need+=(iperf3)
have wg        || need+=(wireguard-tools)
have dig       || need+=(dnsutils)
have tcpdump   || need+=(tcpdump)
have nft       || need+=(nftables)
have dnsmasq   || need+=(dnsmasq-base)
have dnsperf   || need+=(dnsperf)
have chromium  || need+=(chromium)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "deps: missing ${need[*]}; run 'sudo make deps' (apt-get install)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
