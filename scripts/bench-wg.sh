#!/usr/bin/env bash
# =============================================================================
# bench-wg.sh - weft's userspace WireGuard datapath vs stock wireguard-go
# =============================================================================
# Two network namespaces joined by a veth (the "underlay", MTU 1500) carry two
# WireGuard tunnels side by side, both MTU 1420, both configured with `wg set`:
#   stock  the upstream wireguard-go command (same module version weft vendors,
#          built from the module cache), started the way docs/baselines.md
#          does it: `wireguard-go -f IFACE`
#   weft   weft's datapath process (router/wg.RunDatapath), started as
#          `weft datapath --iface IFACE --mtu 1420` ($WEFT_BIN), or, without
#          WEFT_BIN, as the router/wg test binary in its datapath-helper mode
#          (the same function)
# For each round, each tunnel gets: ping (200 x 10 ms), iperf3 TCP 1 and 4
# streams (-t $DUR), UDP at fixed rates ($RATES Gbit/s, -t $UDUR, payload 1392
# = MTU - 28), each once more with a 4 MB receive buffer (-w $UDP_WIN): on a
# shared 2-core box the receiving iperf3 is often descheduled and its default
# socket buffer (~200 KB, ~1 ms at 1 Gbit/s) overflows whatever the tunnel
# does; UdpRcvbufErrors in the server netns shows it. Rounds interleave the tunnels so machine noise hits both.
# Report: median [min-max] per tunnel and the weft/stock ratio of medians.
#
# Names: netns bwgA bwgB, links bwg*, addresses 10.96.0.0/24 (underlay),
# 10.95.1.0/24 (stock), 10.95.2.0/24 (weft). Traffic stays in these netns.
# Usage: scripts/bench-wg.sh [all|setup|run|report|teardown]  (root)
# Env:   REPS=3 DUR=10 UDUR=5 RATES="0.5 1.0" UDP_WIN=4M W=/tmp/bench-wg WEFT_BIN=
#        WEFT_ENV="GOGC=..."  extra environment for the weft datapath only
# =============================================================================
set -euo pipefail
cd "$(dirname "$0")/.."
W=${W:-/tmp/bench-wg}
BIN=$W/bin
REPS=${REPS:-3}
DUR=${DUR:-10}
UDUR=${UDUR:-5}
RATES=${RATES:-"0.5 1.0"}
CFGS=${CFGS:-"stock weft"}
WEFT_ENV=${WEFT_ENV:-}
UDP_WIN=${UDP_WIN-4M}   # also run each UDP rate with iperf3 -w (receiver socket buffer); "" = off
HZ=$(getconf CLK_TCK)
A=bwgA B=bwgB

log() { echo "[$(date +%T)] $*" >&2; }
source scripts/benchlib.sh  # iperf_values (this script has its own iperf and ping_rtt: they count the datapath's CPU)
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

build() {
  mkdir -p "$BIN"
  go build -o "$BIN/wireguard-go" golang.zx2c4.com/wireguard
  if [[ -z ${WEFT_BIN:-} ]]; then go test -c -o "$BIN/wg.test" ./router/wg; fi
}

# cfg -> "ifaceA ifaceB subnet port"
cfg_def() {
  case $1 in
    stock) echo "bwgsA bwgsB 10.95.1 51830" ;;
    weft)  echo "bwgwA bwgwB 10.95.2 51831" ;;
  esac
}

start_dp() { # start_dp cfg ns iface
  local cfg=$1 ns=$2 ifc=$3
  if [[ $cfg == stock ]]; then
    ip netns exec "$ns" env LOG_LEVEL=error "$BIN/wireguard-go" -f "$ifc" > "$W/logs/$ifc.log" 2>&1 &
  elif [[ -n ${WEFT_BIN:-} ]]; then
    ip netns exec "$ns" env $WEFT_ENV "$WEFT_BIN" datapath --iface "$ifc" --mtu 1420 > "$W/logs/$ifc.log" 2>&1 &
  else
    ip netns exec "$ns" env $WEFT_ENV "$BIN/wg.test" datapath-helper --iface "$ifc" --mtu 1420 > "$W/logs/$ifc.log" 2>&1 &
  fi
  echo "$! $cfg $ns $ifc" >> "$W/pids" # ip netns exec and env exec(): $! is the datapath
}

tunnel_up() { # tunnel_up cfg
  local ia ib net port
  read -r ia ib net port <<<"$(cfg_def "$1")"
  start_dp "$1" $A "$ia"; start_dp "$1" $B "$ib"
  for _ in $(seq 50); do
    [[ -S /var/run/wireguard/$ia.sock && -S /var/run/wireguard/$ib.sock ]] && break; sleep 0.1
  done
  for s in A B; do (umask 077; wg genkey > "$W/keys/$1$s"); wg pubkey < "$W/keys/$1$s" > "$W/keys/$1$s.pub"; done
  nsx $A wg set "$ia" listen-port "$port" private-key "$W/keys/${1}A" \
    peer "$(cat "$W/keys/${1}B.pub")" endpoint 10.96.0.2:"$port" allowed-ips "$net.2/32"
  nsx $B wg set "$ib" listen-port "$port" private-key "$W/keys/${1}B" \
    peer "$(cat "$W/keys/${1}A.pub")" endpoint 10.96.0.1:"$port" allowed-ips "$net.1/32"
  nsx $A ip addr add "$net.1/24" dev "$ia"; nsx $A ip link set "$ia" mtu 1420 up
  nsx $B ip addr add "$net.2/24" dev "$ib"; nsx $B ip link set "$ib" mtu 1420 up
  nsx $A ping -c 3 -i 0.2 -W 2 -q "$net.2" > /dev/null || { log "$1 tunnel does not answer"; return 1; }
}

setup() {
  mkdir -p "$W/logs" "$W/keys" "$W/json"; : > "$W/pids"
  for ns in $A $B; do ip netns add $ns; nsx $ns ip link set lo up; done
  ip link add bwga0 netns $A type veth peer name bwgb0 netns $B
  nsx $A ip addr add 10.96.0.1/24 dev bwga0; nsx $A ip link set bwga0 up
  nsx $B ip addr add 10.96.0.2/24 dev bwgb0; nsx $B ip link set bwgb0 up
  for c in $CFGS; do tunnel_up "$c"; done
  ip netns exec $B iperf3 -s > "$W/logs/iperf3-server.log" 2>&1 &
  echo "$! iperf3 $B -" >> "$W/pids"
  sleep 0.5
  log "setup done: $CFGS"
}

ticks() { # cpu ticks (user+sys) of the datapath processes of cfg
  local t=0 pid c
  while read -r pid c _; do
    [[ $c == "$1" && -d /proc/$pid ]] && t=$((t + $(awk '{print $14+$15}' /proc/"$pid"/stat)))
  done < "$W/pids"
  echo $t
}

# iperf cfg rep test args... -> raw.tsv: rep cfg test Gbit/s retr|loss% datapath-cores
iperf() {
  local cfg=$1 rep=$2 test=$3; shift 3
  local ia ib net port; read -r ia ib net port <<<"$(cfg_def "$cfg")"
  local js=$W/json/$cfg.$test.$rep.json t0 t1 c0 c1
  c0=$(ticks "$cfg"); t0=$(date +%s.%N)
  timeout 40 ip netns exec $A iperf3 -c "$net.2" -J "$@" > "$js" 2> /dev/null || true
  t1=$(date +%s.%N); c1=$(ticks "$cfg")
  local cores; cores=$(echo "($c1 - $c0) / $HZ / ($t1 - $t0)" | bc -l)
  local val extra
  iperf_values "$js" "$test"
  printf "%s\t%s\t%s\t%.3f\t%s\t%.2f\n" "$rep" "$cfg" "$test" "$val" "$extra" "$cores" >> "$W/raw.tsv"
  log "  $cfg $test rep$rep: $(printf %.3f "$val") Gbit/s extra=$extra datapath-cores=$(printf %.2f "$cores")"
  sleep 1
}

ping_rtt() {
  local cfg=$1 rep=$2 ia ib net port; read -r ia ib net port <<<"$(cfg_def "$cfg")"
  local med
  med=$(nsx $A ping -n -c 200 -i 0.01 -W 1 "$net.2" 2>/dev/null | grep -o 'time=[0-9.]*' | cut -d= -f2 | sort -g |
        awk '{a[NR]=$1} END{if(NR==0){print "NaN"; exit} printf "%.4f", a[int((NR+1)/2)]}')
  printf "%s\t%s\tping_ms\t%s\t-\t-\n" "$rep" "$cfg" "$med" >> "$W/raw.tsv"
  log "  $cfg ping rep$rep: median $med ms"
}

run() {
  : > "$W/raw.tsv"
  for rep in $(seq "$REPS"); do
    log "=== round $rep/$REPS ==="
    for cfg in $CFGS; do
      ping_rtt "$cfg" "$rep"
      iperf "$cfg" "$rep" tcp1 -t "$DUR" -P 1
      iperf "$cfg" "$rep" tcp4 -t "$DUR" -P 4
      for r in $RATES; do
        iperf "$cfg" "$rep" "udp@${r}G" -t "$UDUR" -u -b "${r}G" -l 1392
        if [[ -n $UDP_WIN ]]; then
          iperf "$cfg" "$rep" "udp@${r}G-w$UDP_WIN" -t "$UDUR" -u -b "${r}G" -l 1392 -w "$UDP_WIN"
        fi
      done
    done
  done
}

report() {
  python3 - "$W/raw.tsv" <<'PY'
import sys, csv, statistics as st, collections
rows = collections.defaultdict(list)
tests = []
for r in csv.reader(open(sys.argv[1]), delimiter="\t"):
    rows[(r[1], r[2])].append(r)
    if r[2] not in tests: tests.append(r[2])
def num(v):
    try: return float(v)
    except ValueError: return float("nan")
def cell(vals, fmt):
    vals = [v for v in vals if v == v]
    if not vals: return "n/a", float("nan")
    m = st.median(vals)
    return f"{fmt.format(m)} [{fmt.format(min(vals))}-{fmt.format(max(vals))}]", m
print("| test | stock wireguard-go | weft datapath | weft/stock | stock loss%/retr | weft loss%/retr | datapath cores stock / weft |")
print("|---|---|---|---|---|---|---|")
for t in tests:
    fmt = "{:.3f}" if t == "ping_ms" else "{:.2f}"
    s, sm = cell([num(r[3]) for r in rows[("stock", t)]], fmt)
    w, wm = cell([num(r[3]) for r in rows[("weft", t)]], fmt)
    ratio = f"{wm/sm:.2f}" if sm == sm and wm == wm and sm else "n/a"
    ex = lambda c: cell([num(r[4]) for r in rows[(c, t)]], "{:.1f}")[0] if t != "ping_ms" else "-"
    cores = lambda c: f"{st.median([num(r[5]) for r in rows[(c, t)]]):.2f}" if t != "ping_ms" and rows[(c, t)] else "-"
    unit = " ms" if t == "ping_ms" else " Gbit/s"
    print(f"| {t} | {s}{unit} | {w}{unit} | {ratio} | {ex('stock')} | {ex('weft')} | {cores('stock')} / {cores('weft')} |")
PY
}

teardown() {
  set +e
  if [[ -f $W/pids ]]; then
    while read -r pid _; do
      case "$(cat /proc/"$pid"/comm 2>/dev/null)" in wireguard-go|wg.test|weft|iperf3) kill "$pid" ;; esac
    done < "$W/pids"
    sleep 1
    while read -r pid _; do [[ -d /proc/$pid ]] && kill -9 "$pid" 2>/dev/null; done < "$W/pids"
    rm -f "$W/pids"
  fi
  for ns in $A $B; do ip netns del $ns 2>/dev/null; done
  rm -f /var/run/wireguard/bwg*.sock /var/run/wireguard/bwg*.pid
  rm -rf "$W/keys"
  set -e
}

case ${1:-all} in
  setup)    build; setup ;;
  run)      run ;;
  report)   report ;;
  teardown) teardown ;;
  all)      trap teardown EXIT; teardown; build; setup; run; report | tee "$W/report.md" ;;
  *) echo "usage: $0 all|setup|run|report|teardown" >&2; exit 1 ;;
esac
