#!/usr/bin/env bash
# bench.sh - `make bench`: weft's benchmarks in sequence, each one's output
# tee'd to out/bench/<name>.txt (root; run after `make build`).
#   scripts/bench-datapath.sh  pod-to-pod with real peers vs raw baselines
#   scripts/bench-dns.sh, bench-cni.sh, bench-wg.sh, bench-relay.sh  when present
#   scripts/bench-underlay.sh  macvlan pods by weft-cni vs raw macvlan pods
# Env is passed through (REPS, DUR, ... of each script). A failing benchmark
# is reported and the others still run; the exit code is 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p out/bench
rc=0
for b in datapath dns cni wg underlay relay; do
  s=scripts/bench-$b.sh
  [[ -f $s ]] || continue
  echo "==== $s ($(date +%T))" | tee "out/bench/$b.txt"
  if ! bash "$s" 2>&1 | tee -a "out/bench/$b.txt"; then
    echo "==== $s FAILED" | tee -a "out/bench/$b.txt"; rc=1
  fi
done
echo "results in out/bench/"
exit $rc
