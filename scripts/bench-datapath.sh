#!/usr/bin/env bash
# =============================================================================
# bench-datapath.sh - weft's pod-to-pod datapath with real peers, next to raw
# baselines built by hand in the same run (the baselines of docs/baselines.md)
# =============================================================================
# Two "hosts" (netns bdA, bdB) joined by one veth, the underlay (MTU 1500).
#   weft-<transport>  `weft launch` in each host (private /run/wireguard per
#                     host), one pod per host made by the real weft-cni;
#                     transports wireguard (with a secret), vxlan and direct
#                     (--insecure --transport X). Torn down with `weft reset`
#                     between transports.
#   weft-X-nomasq     the same with --no-masquerade: no nat table, so no
#                     connection tracking (what the masquerade costs)
#   raw baselines     in the same two hosts, built by hand like limits.sh
#                     (raw-X-masq: with the same masquerade rule as weft's
#                     in an nft table bdmasq, so conntrack is on):
#     underlay        bdA -> bdB over the veth (no pods)
#     raw-hostgw      pod bdPA -> bdA -route-> bdB -> pod bdPB, no encap (1500)
#     raw-vxlan       pods over kernel VXLAN (VNI 42, port 4790), MTU 1450
#     stock-wg        pods over stock wireguard-go (same module version weft
#                     vendors, `wireguard-go -f`), MTU 1420, port 51830
# For each config: ping RTT (200 x 10 ms, median), iperf3 TCP 1 and 4 streams
# (-t $DUR), UDP at fixed rates $RATES Gbit/s (-t $UDUR, payload MTU-28,
# receiver buffer -w $UDP_WIN; "" = iperf3's default). Rounds interleave the
# configs. Report: median [min-max] and ratios weft/baseline of medians:
#   weft-wireguard / stock-wg, weft-vxlan / raw-vxlan, weft-direct / raw-hostgw.
# Names: netns bd*, links bd*, underlay 10.97.0.0/24, raw pods 10.244.1/2.0/24,
# weft pods in weft's default 10.32.0.0/12. Traffic stays in these namespaces.
# Usage: scripts/bench-datapath.sh [all|teardown|report]   (root; `make build` first)
#        scripts/bench-datapath.sh up [TRANSPORT]: build the bed, raw host-gw
#        routes and weft with TRANSPORT (default direct), and leave it up for
#        poking (pods bdPA/bdPB raw, bdwA/bdwB weft; `teardown` ends it)
# Env:   REPS=1 DUR=10 UDUR=5 RATES="0.5 1.0" UDP_WIN=4M W=/tmp/bench-datapath
#        CFGS="underlay raw-hostgw raw-vxlan stock-wg weft-direct weft-vxlan weft-wireguard"
# =============================================================================
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
W=${W:-/tmp/bench-datapath}
REPS=${REPS:-1}
DUR=${DUR:-10}
UDUR=${UDUR:-5}
RATES=${RATES:-"0.5 1.0"}
UDP_WIN=${UDP_WIN-4M}
CFGS=${CFGS:-"underlay raw-hostgw raw-vxlan stock-wg weft-direct weft-vxlan weft-wireguard"}
BIN=$ROOT/bin
A=bdA B=bdB PA=bdPA PB=bdPB

log() { echo "[$(date +%T)] $*" >&2; }
source "$ROOT/scripts/benchlib.sh"  # iperf, ping_rtt
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
# inhost A|B argv...: in the host netns with a private /run/wireguard (weft's)
inhost() {
  local h=$1; shift
  nsenter --net=/var/run/netns/bd$h -- unshare --mount --propagation private \
    sh -c "mkdir -p /run/wireguard && mount --bind $W/h$h/wireguard /run/wireguard && exec \"\$@\"" sh "$@"
}
addr() { [[ $1 == A ]] && echo 10.97.0.1 || echo 10.97.0.2; }

# ---------------------------------------------------------------- raw setup
setup_bed() {
  mkdir -p "$W/logs" "$W/keys" "$W/json" "$W/hA/wireguard" "$W/hB/wireguard"; : > "$W/pids"
  for ns in $A $B $PA $PB; do ip netns add $ns; nsx $ns ip link set lo up; done
  ip link add bda0 netns $A type veth peer name bdb0 netns $B
  nsx $A ip addr add 10.97.0.1/24 dev bda0; nsx $A ip link set bda0 up
  nsx $B ip addr add 10.97.0.2/24 dev bdb0; nsx $B ip link set bdb0 up
  for ns in $A $B; do nsx $ns sysctl -qw net.ipv4.ip_forward=1; done
  # raw pods (limits.sh: limA2/limPA0 ...)
  ip link add bda2 netns $A type veth peer name bdpa0 netns $PA
  ip link add bdb2 netns $B type veth peer name bdpb0 netns $PB
  nsx $A ip addr add 10.244.1.1/24 dev bda2; nsx $A ip link set bda2 up
  nsx $PA ip addr add 10.244.1.2/24 dev bdpa0; nsx $PA ip link set bdpa0 up
  nsx $B ip addr add 10.244.2.1/24 dev bdb2; nsx $B ip link set bdb2 up
  nsx $PB ip addr add 10.244.2.2/24 dev bdpb0; nsx $PB ip link set bdpb0 up
  # raw kernel VXLAN (VNI 42; port 4790 so weft's 4789 stays free)
  nsx $A ip link add bdvx0 type vxlan id 42 dstport 4790 remote 10.97.0.2 local 10.97.0.1 dev bda0
  nsx $B ip link add bdvx0 type vxlan id 42 dstport 4790 remote 10.97.0.1 local 10.97.0.2 dev bdb0
  nsx $A ip addr add 10.100.0.1/24 dev bdvx0; nsx $A ip link set bdvx0 mtu 1450 up
  nsx $B ip addr add 10.100.0.2/24 dev bdvx0; nsx $B ip link set bdvx0 mtu 1450 up
  # stock wireguard-go (UAPI in the root /var/run/wireguard: unique names bdwgA/bdwgB)
  go build -o "$W/wireguard-go" golang.zx2c4.com/wireguard
  for s in A B; do
    ip netns exec bd$s env LOG_LEVEL=error "$W/wireguard-go" -f bdwg$s > "$W/logs/bdwg$s.log" 2>&1 &
    echo "$! wg" >> "$W/pids"
    (umask 077; wg genkey > "$W/keys/$s"); wg pubkey < "$W/keys/$s" > "$W/keys/$s.pub"
  done
  for _ in $(seq 50); do [[ -S /var/run/wireguard/bdwgA.sock && -S /var/run/wireguard/bdwgB.sock ]] && break; sleep 0.1; done
  nsx $A wg set bdwgA listen-port 51830 private-key "$W/keys/A" peer "$(cat "$W/keys/B.pub")" endpoint 10.97.0.2:51830 allowed-ips 10.101.0.2/32,10.244.2.0/24
  nsx $B wg set bdwgB listen-port 51830 private-key "$W/keys/B" peer "$(cat "$W/keys/A.pub")" endpoint 10.97.0.1:51830 allowed-ips 10.101.0.1/32,10.244.1.0/24
  nsx $A ip addr add 10.101.0.1/24 dev bdwgA; nsx $A ip link set bdwgA mtu 1420 up
  nsx $B ip addr add 10.101.0.2/24 dev bdwgB; nsx $B ip link set bdwgB mtu 1420 up
  ip netns exec $B iperf3 -s > "$W/logs/iperf3-B.log" 2>&1 & echo "$! iperf3" >> "$W/pids"
  ip netns exec $PB iperf3 -s > "$W/logs/iperf3-PB.log" 2>&1 & echo "$! iperf3" >> "$W/pids"
}

# raw_path hostgw|vxlan|wg: how bdA/bdB route the remote raw pod range, and the pod MTU
raw_path() {
  local mtu
  case $1 in
    hostgw) nsx $A ip route replace 10.244.2.0/24 via 10.97.0.2 dev bda0
            nsx $B ip route replace 10.244.1.0/24 via 10.97.0.1 dev bdb0; mtu=1500 ;;
    vxlan)  nsx $A ip route replace 10.244.2.0/24 via 10.100.0.2 dev bdvx0
            nsx $B ip route replace 10.244.1.0/24 via 10.100.0.1 dev bdvx0; mtu=1450 ;;
    wg)     nsx $A ip route replace 10.244.2.0/24 dev bdwgA
            nsx $B ip route replace 10.244.1.0/24 dev bdwgB; mtu=1420 ;;
  esac
  nsx $PA ip route replace default via 10.244.1.1 dev bdpa0 mtu $mtu
  nsx $PB ip route replace default via 10.244.2.1 dev bdpb0 mtu $mtu
  echo $mtu
}

# raw_masq add|delete: the raw pods' egress masquerade, the same nat rule
# weft installs (so the baseline pays for connection tracking too)
raw_masq() {
  local h
  for h in $A $B; do
    if [[ $1 == add ]]; then
      nsx $h nft -f - <<'NFT'
table ip bdmasq {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 masquerade
  }
}
NFT
    else
      nsx $h nft delete table ip bdmasq 2>/dev/null || true
    fi
  done
}

# ---------------------------------------------------------------- weft
weft_up() { # weft_up transport[-nomasq] -> sets WPA WPB (pod netns) WDST (pod B address) WMTU
  local tr=${1%-nomasq} h args
  for h in A B; do
    rm -rf "$W/h$h/data"; mkdir -p "$W/h$h/data"
    args=(--name h$h --data-dir "$W/h$h/data" --socket "$W/h$h/weft.sock" --http-addr "" --advertise "$(addr $h)")
    [[ $tr != wireguard ]] && args+=(--insecure --transport "$tr")
    [[ $1 == *-nomasq ]] && args+=(--no-masquerade)
    if [[ $h == B ]]; then
      [[ $tr == wireguard ]] && args+=(--password-file "$W/hA/data/secret")
      args+=(10.97.0.1)
    fi
    # inline (not inhost): nsenter, unshare and sh exec, so $! is weft itself
    nsenter --net=/var/run/netns/bd$h -- unshare --mount --propagation private \
      sh -c "mkdir -p /run/wireguard && mount --bind $W/h$h/wireguard /run/wireguard && exec \"\$@\"" sh \
      "$BIN/weft" launch "${args[@]}" > "$W/logs/weft-$tr-$h.log" 2>&1 &
    echo "$! weft" >> "$W/pids"; echo $! > "$W/h$h/weft.pid"
    if [[ $h == A && $tr == wireguard ]]; then
      for _ in $(seq 100); do [[ -s $W/hA/data/secret ]] && break; sleep 0.1; done
    fi
  done
  for h in A B; do
    for _ in $(seq 300); do
      st=$("$BIN/weft" --socket "$W/h$h/weft.sock" status --json 2>/dev/null || true)
      [[ $(jq -r '[.peers[] | select(.state=="alive")] | length' <<<"$st" 2>/dev/null) == 2 && $(jq -r .ipam.status <<<"$st") == ready ]] && break
      sleep 0.2
    done
  done
  for h in A B; do
    local pod=bdw$h
    ip netns add $pod; nsx $pod ip link set lo up
    out=$(echo "{\"cniVersion\":\"1.0.0\",\"name\":\"weft\",\"type\":\"weft-cni\",\"socket\":\"$W/h$h/weft.sock\",\"dataDir\":\"$W/h$h/data\"}" |
      inhost $h env CNI_COMMAND=ADD CNI_CONTAINERID=bench-$h CNI_NETNS=/var/run/netns/$pod CNI_IFNAME=eth0 CNI_PATH="$BIN" \
        CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAME=bench;K8S_POD_NAMESPACE=h$h" "$BIN/weft-cni")
    echo "$(jq -r '.ips[0].address' <<<"$out" | cut -d/ -f1)" > "$W/h$h/pod.addr"
  done
  WDST=$(cat "$W/hB/pod.addr")
  WMTU=$(nsx bdwA ip -j link show eth0 | jq '.[0].mtu')
  ip netns exec bdwB iperf3 -s > "$W/logs/iperf3-w$tr.log" 2>&1 & echo "$! iperf3" >> "$W/pids"; echo $! > "$W/wiperf.pid"
  for _ in $(seq 100); do nsx bdwA ping -c 1 -W 1 -q "$WDST" > /dev/null 2>&1 && break; sleep 0.2; done
  log "weft-$tr up: pod $WDST, pod MTU $WMTU, $("$BIN/weft" --socket "$W/hA/weft.sock" status --json | jq -r '[.peers[] | select(.self|not) | .transport] | join(",")')"
}

weft_down() {
  local h
  [[ -f $W/wiperf.pid ]] && { kill "$(cat "$W/wiperf.pid")" 2>/dev/null || true; rm -f "$W/wiperf.pid"; }
  for h in A B; do
    [[ -f $W/h$h/weft.pid ]] && { kill "$(cat "$W/h$h/weft.pid")" 2>/dev/null || true; }
  done
  for h in A B; do
    if [[ -f $W/h$h/weft.pid ]]; then
      for _ in $(seq 100); do [[ -d /proc/$(cat "$W/h$h/weft.pid") ]] || break; sleep 0.1; done
      rm -f "$W/h$h/weft.pid"
    fi
    ip netns list | grep -q "^bd$h\b" && inhost $h "$BIN/weft" reset --socket "$W/h$h/weft.sock" --cni-conf-dir "$W/h$h/cni" --cni-bin-dir "$W/h$h/cni" > /dev/null 2>&1 || true
    for p in "$W"/h$h/wireguard/*.pid; do [[ -f $p ]] && kill "$(cat "$p")" 2>/dev/null; rm -f "$p"; done
    ip netns del bdw$h 2>/dev/null || true
  done
  return 0
}

# ---------------------------------------------------------------- measure
# iperf cfg rep test client_ns dst args...  -> raw.tsv: rep cfg test value extra


measure() { # cfg rep
  local cfg=$1 rep=$2 cns dst mtu r
  case $cfg in
    underlay)   cns=$A; dst=10.97.0.2; mtu=1500 ;;
    raw-hostgw*) cns=$PA; dst=10.244.2.2; mtu=$(raw_path hostgw) ;;
    raw-vxlan*)  cns=$PA; dst=10.244.2.2; mtu=$(raw_path vxlan) ;;
    stock-wg)   cns=$PA; dst=10.244.2.2; mtu=$(raw_path wg) ;;
    weft-*)     weft_up "${cfg#weft-}"; cns=bdwA; dst=$WDST; mtu=$WMTU ;;
  esac
  [[ $cfg == raw-*-masq ]] && raw_masq add
  ip netns exec "$cns" ping -c 3 -i 0.2 -W 2 -q "$dst" > /dev/null || log "WARN: $cfg: $dst does not answer"
  local win=(); [[ -n $UDP_WIN ]] && win=(-w "$UDP_WIN")
  ping_rtt "$cfg" "$rep" "$cns" "$dst"
  iperf "$cfg" "$rep" tcp1 "$cns" "$dst" -t "$DUR" -P 1
  iperf "$cfg" "$rep" tcp4 "$cns" "$dst" -t "$DUR" -P 4
  for r in $RATES; do
    iperf "$cfg" "$rep" "udp@${r}G" "$cns" "$dst" -t "$UDUR" -u -b "${r}G" -l $((mtu - 28)) "${win[@]}"
  done
  [[ $cfg == weft-* ]] && weft_down
  [[ $cfg == raw-*-masq ]] && raw_masq delete
  return 0
}

run() {
  : > "$W/raw.tsv"
  for rep in $(seq "$REPS"); do
    log "=== round $rep/$REPS ==="
    for cfg in $CFGS; do measure "$cfg" "$rep"; done
  done
}

report() {
  python3 - "$W/raw.tsv" "$ROOT/scripts" <<'PY'
import sys
sys.path.insert(0, sys.argv[2])
from benchtable import Table
tb = Table(sys.argv[1]); tests, cfgs = tb.tests, tb.cfgs
tb.print("Pod-to-pod (underlay: host-to-host), median [min-max]; Gbit/s for tcp/udp (received), ms for ping")
print("Ratios of medians weft / baseline (ping: lower is better, the ratio is RTT weft/baseline)")
print("| weft | baseline | " + " | ".join(tests) + " |")
print("|---|---|" + "---|" * len(tests))
for w, b in (("weft-wireguard", "stock-wg"), ("weft-vxlan", "raw-vxlan"), ("weft-direct", "raw-hostgw"),
             ("weft-vxlan", "raw-vxlan-masq"), ("weft-direct", "raw-hostgw-masq"),
             ("weft-wireguard-nomasq", "stock-wg"), ("weft-vxlan-nomasq", "raw-vxlan"), ("weft-direct-nomasq", "raw-hostgw")):
    if w not in cfgs or b not in cfgs: continue
    print(f"| {w} | {b} | " + " | ".join(tb.ratios(w, b)) + " |")
PY
}

teardown() {
  set +e
  weft_down 2>/dev/null
  if [[ -f $W/pids ]]; then
    while read -r pid _; do
      case "$(cat /proc/"$pid"/comm 2>/dev/null)" in wireguard-go|weft|iperf3) kill "$pid" ;; esac
    done < "$W/pids"
    sleep 1
    while read -r pid _; do
      case "$(cat /proc/"$pid"/comm 2>/dev/null)" in wireguard-go|weft|iperf3) kill -9 "$pid" ;; esac
    done < "$W/pids"
    rm -f "$W/pids"
  fi
  for ns in $A $B $PA $PB bdwA bdwB; do ip netns del $ns 2>/dev/null; done
  rm -f /var/run/wireguard/bdwg*.sock
  rm -rf "$W/keys" "$W/hA/data" "$W/hB/data"
  set -e
}

need_build() { [[ -x $BIN/weft && -x $BIN/weft-cni ]] || { echo "run make build first" >&2; exit 1; }; }

case ${1:-all} in
  all)      need_build; trap teardown EXIT; teardown; setup_bed; run; report | tee "$W/report.md" ;;
  up)       need_build; teardown; setup_bed; raw_path hostgw > /dev/null; weft_up "${2:-direct}" ;;
  teardown) teardown ;;
  report)   report ;;
  *) echo "usage: $0 all|up [TRANSPORT]|teardown|report" >&2; exit 1 ;;
esac
