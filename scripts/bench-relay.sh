#!/usr/bin/env bash
# bench-relay.sh - issue 18's benchmark (root): on a 3-host test bed per
# transport (wireguard, vxlan), TCP (iperf3, 1 stream) and RTT between pods
# on h1 and h3 directly and relayed through h2 (h1-h3 blocked with
# nftables), 3 interleaved rounds; then the time from blocking h1-h3 to the
# pods talking again, p50/p99 over RELAY_TRIALS trials (default 10).
# About 10 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
go test -count=1 -run - -bench 'BenchmarkRelay' -benchtime 1x -timeout 40m -v ./test/ 2>&1 | grep -v 'level='
