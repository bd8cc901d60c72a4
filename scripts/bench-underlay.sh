#!/usr/bin/env bash
# =============================================================================
# bench-underlay.sh - macvlan pods made by weft-cni (underlay mode, issue 17)
# against raw macvlan pods configured by hand, on the same switch, same run
# =============================================================================
# A switch (netns buS, bridge br0) and two hosts (buA, buB), each with a veth
# eth0 to the switch: the LAN 10.98.0.0/24, MTU 1500.
#   raw-macvlan   pods buRA/buRB: `ip link add link eth0 type macvlan mode
#                 bridge` in each host, moved into the pod, static addresses
#                 10.98.0.101/.102, nothing else
#   weft-macvlan  `weft launch --insecure --transport direct --underlay-range
#                 10.98.0.128/25` in each host; pods buWA/buWB made by the
#                 real weft-cni with "mode": "macvlan"
# Pod-to-pod A -> B: ping RTT (200 x 10 ms, median), iperf3 TCP 1 and 4
# streams (-t $DUR), UDP at $RATES Gbit/s offered (-t $UDUR, payload 1472).
# Rounds interleave the two configs. Then ADD+DEL latency on host A, N of
# each: a macvlan pod against a routed (overlay) pod, the same peer, each
# command one weft-cni process as under a runtime (p50/p99).
# Report: median [min-max] and weft/raw ratios (target: throughput >= 0.95,
# RTT <= 1.05).
# Usage: scripts/bench-underlay.sh [all|up|teardown|report]  (root; `make build`
#        first; `up` builds the bed and leaves it for poking, `teardown` ends it)
# Env:   REPS=3 DUR=10 UDUR=5 RATES="1.0" N=50 W=/tmp/bench-underlay
# Names: netns bu*, links bu*; traffic stays in these namespaces.
# =============================================================================
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
W=${W:-/tmp/bench-underlay}
REPS=${REPS:-3}
DUR=${DUR:-10}
UDUR=${UDUR:-5}
RATES=${RATES:-"1.0"}
N=${N:-50}
BIN=$ROOT/bin
S=buS A=buA B=buB

log() { echo "[$(date +%T)] $*" >&2; }
source "$ROOT/scripts/benchlib.sh"  # iperf, ping_rtt
nsx() { local ns=$1; shift; nsenter --net=/var/run/netns/"$ns" -- "$@"; }
addr() { [[ $1 == A ]] && echo 10.98.0.1 || echo 10.98.0.2; }
conf() { # conf A|B [mode]
  local m=""; [[ -n ${2:-} ]] && m=",\"mode\":\"$2\""
  echo "{\"cniVersion\":\"1.0.0\",\"name\":\"weft\",\"type\":\"weft-cni\",\"socket\":\"$W/h$1/weft.sock\",\"dataDir\":\"$W/h$1/data\"$m}"
}
cni() { # cni A|B CMD ID NETNS MODE
  conf "$1" "$5" | nsx bu$1 env CNI_COMMAND="$2" CNI_CONTAINERID="$3" CNI_NETNS="$4" CNI_IFNAME=eth0 CNI_PATH="$BIN" \
    CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAME=$3;K8S_POD_NAMESPACE=bench" "$BIN/weft-cni"
}

setup() {
  mkdir -p "$W/logs" "$W/json" "$W/hA" "$W/hB"; : > "$W/pids"
  for ns in $S $A $B buRA buRB buWA buWB; do ip netns add $ns; ip -n $ns link set lo up; done
  ip -n $S link add br0 type bridge; ip -n $S link set br0 up
  for h in A B; do
    ip link add eth0 netns bu$h type veth peer name bus$h netns $S
    ip -n $S link set bus$h master br0 up
    ip -n bu$h addr add "$(addr $h)/24" dev eth0; ip -n bu$h link set eth0 up
  done
  # raw macvlan pods, by hand
  local i=101
  for h in A B; do
    ip -n bu$h link add link eth0 name rmv0 type macvlan mode bridge
    ip -n bu$h link set rmv0 netns buR$h
    ip -n buR$h link set rmv0 name eth0
    ip -n buR$h addr add 10.98.0.$i/24 dev eth0; ip -n buR$h link set eth0 up
    i=$((i + 1))
  done
  # weft in both hosts
  for h in A B; do
    local args=(--name h$h --data-dir "$W/h$h/data" --socket "$W/h$h/weft.sock" --http-addr "" --advertise "$(addr $h)"
      --insecure --transport direct --underlay-range 10.98.0.128/25 --dns-upstream 127.0.0.1:1)
    [[ $h == B ]] && args+=(10.98.0.1)
    # nsenter itself, not the nsx function: $! must be the process that
    # becomes weft (nsenter execs it), or teardown cannot find it by PID
    nsenter --net=/var/run/netns/bu$h -- "$BIN/weft" launch "${args[@]}" > "$W/logs/weft-$h.log" 2>&1 &
    echo "$! weft" >> "$W/pids"
  done
  for h in A B; do
    for _ in $(seq 300); do
      st=$("$BIN/weft" --socket "$W/h$h/weft.sock" status --json 2>/dev/null || true)
      [[ $(jq -r '.underlay.status // ""' <<<"$st" 2>/dev/null) == ready && $(jq -r '.underlay.host_address // ""' <<<"$st") != "" &&
         $(jq -r .ipam.status <<<"$st") == ready && $(jq -r '[.peers[] | select(.state=="alive")] | length' <<<"$st") == 2 ]] && break
      sleep 0.2
    done
  done
  for h in A B; do
    out=$(cni $h ADD bench-$h /var/run/netns/buW$h macvlan)
    jq -r '.ips[0].address' <<<"$out" | cut -d/ -f1 > "$W/h$h/pod.addr"
  done
  log "weft macvlan pods: $(cat "$W/hA/pod.addr") -> $(cat "$W/hB/pod.addr")"
  for p in buRB buWB; do nsenter --net=/var/run/netns/$p -- iperf3 -s > "$W/logs/iperf3-$p.log" 2>&1 & echo "$! iperf3" >> "$W/pids"; done
  sleep 1
}



measure() { # cfg rep
  local cfg=$1 rep=$2 cns dst r
  case $cfg in
    raw-macvlan)  cns=buRA; dst=10.98.0.102 ;;
    weft-macvlan) cns=buWA; dst=$(cat "$W/hB/pod.addr") ;;
  esac
  nsx "$cns" ping -c 3 -i 0.2 -W 2 -q "$dst" > /dev/null || log "WARN: $cfg: $dst does not answer"
  ping_rtt "$cfg" "$rep" "$cns" "$dst"
  iperf "$cfg" "$rep" tcp1 "$cns" "$dst" -t "$DUR" -P 1
  iperf "$cfg" "$rep" tcp4 "$cns" "$dst" -t "$DUR" -P 4
  for r in $RATES; do iperf "$cfg" "$rep" "udp@${r}G" "$cns" "$dst" -t "$UDUR" -u -b "${r}G" -l 1472; done
}

# addlat MODE: N ADD+DEL pairs on host A; latencies (ms) to $W/add-MODE.txt
addlat() {
  local mode=$1 i t0 t1 id
  : > "$W/add-$mode.txt"; : > "$W/del-$mode.txt"
  ip netns add buLat; ip -n buLat link set lo up
  for i in $(seq "$N"); do
    id=lat-$mode-$i
    t0=${EPOCHREALTIME/./}; cni A ADD "$id" /var/run/netns/buLat "$mode" > /dev/null; t1=${EPOCHREALTIME/./}
    echo "$(( (t1 - t0) ))" >> "$W/add-$mode.txt"
    t0=${EPOCHREALTIME/./}; cni A DEL "$id" /var/run/netns/buLat "$mode" > /dev/null; t1=${EPOCHREALTIME/./}
    echo "$(( (t1 - t0) ))" >> "$W/del-$mode.txt"
  done
  ip netns del buLat
}

run() {
  : > "$W/raw.tsv"
  for rep in $(seq "$REPS"); do
    log "=== round $rep/$REPS ==="
    for cfg in raw-macvlan weft-macvlan; do measure "$cfg" "$rep"; done
  done
  log "=== ADD/DEL latency, $N each ==="
  addlat macvlan; addlat routed
}

report() {
  python3 - "$W" "$ROOT/scripts" <<'PY'
import sys
sys.path.insert(0, sys.argv[2])
from benchtable import Table
W = sys.argv[1]
tb = Table(W + "/raw.tsv")
tb.print("Macvlan pod to pod across hosts, median [min-max] of rounds; Gbit/s received for tcp/udp, ms for ping")
print("| ratio weft/raw | " + " | ".join(tb.ratios("weft-macvlan", "raw-macvlan")) + " |")
print()
def pct(v, p):
    v = sorted(v); return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]
print("CNI latency on one host, ms (one weft-cni process per command)")
print("| mode | ADD p50 | ADD p99 | DEL p50 | DEL p99 |")
print("|---|---|---|---|---|")
res = {}
for m in ("routed", "macvlan"):
    a = [int(x) / 1000 for x in open(f"{W}/add-{m}.txt") if x.strip()]
    d = [int(x) / 1000 for x in open(f"{W}/del-{m}.txt") if x.strip()]
    res[m] = (pct(a, 50), pct(a, 99))
    print(f"| {m} | {pct(a,50):.1f} | {pct(a,99):.1f} | {pct(d,50):.1f} | {pct(d,99):.1f} |")
print(f"| ratio macvlan/routed | {res['macvlan'][0]/res['routed'][0]:.2f} | {res['macvlan'][1]/res['routed'][1]:.2f} | | |")
PY
}

teardown() {
  set +e
  if [[ -f $W/pids ]]; then
    while read -r pid _; do
      case "$(cat /proc/"$pid"/comm 2>/dev/null)" in weft|iperf3) kill "$pid" ;; esac
    done < "$W/pids"
    sleep 1
    while read -r pid _; do
      case "$(cat /proc/"$pid"/comm 2>/dev/null)" in weft|iperf3) kill -9 "$pid" ;; esac
    done < "$W/pids"
    rm -f "$W/pids"
  fi
  for ns in buLat buWA buWB buRA buRB $A $B $S; do ip netns del $ns 2>/dev/null; done
  rm -rf "$W/hA" "$W/hB"
  set -e
}

need_build() { [[ -x $BIN/weft && -x $BIN/weft-cni ]] || { echo "run make build first" >&2; exit 1; }; }

case ${1:-all} in
  all)      need_build; trap teardown EXIT; teardown; setup; run; report | tee "$W/report.md" ;;
  up)       need_build; teardown; setup ;;
  teardown) teardown ;;
  report)   report ;;
  *) echo "usage: $0 all|up|teardown|report" >&2; exit 1 ;;
esac
