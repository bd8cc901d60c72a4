#!/usr/bin/env bash
# weft demo: a 3-host mesh in network namespaces on this machine.
#   scripts/demo.sh up     build, create the test bed, launch a peer per host,
#                          start 2 pods per host with weft-cni, print status,
#                          addresses and a ping matrix, and the status pages
#   scripts/demo.sh down   stop everything and remove every namespace and link
# Nothing is connected to the machine's real interfaces. The status pages are
# forwarded to 127.0.0.1:16784.. in the root namespace by `weft forward`.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-3}
P=${WEFT_DEMO_PREFIX:-wdemo}
STATE=/tmp/$P
BIN=$PWD/bin
TRANSPORT=${TRANSPORT:-auto}

log() { printf '\033[1m== %s\033[0m\n' "$*"; }
inhost() { local h=$1; shift; nsenter --net=/var/run/netns/$P-h$h -- unshare --mount --propagation private sh -c "mount --bind $STATE/h$h/wireguard /run/wireguard && exec \"\$@\"" sh "$@"; }

down() {
  local pids=()
  for pidf in "$STATE"/*/*.pid "$STATE"/h*/wireguard/*.pid; do
    [ -f "$pidf" ] && pids+=("$(cat "$pidf")")
  done
  [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 50); do  # peers leave the mesh gracefully: give them 10 s
    alive=0; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break; sleep 0.2
  done
  [ ${#pids[@]} -gt 0 ] && kill -9 "${pids[@]}" 2>/dev/null || true
  for ns in $(ip netns list | awk '{print $1}' | grep "^$P-" || true); do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$STATE"
  echo "demo removed"
}

up() {
  make -s build
  bash scripts/deps.sh
  down >/dev/null 2>&1 || true
  mkdir -p "$STATE" /run/wireguard
  log "test bed: switch $P-sw and $N hosts on 192.168.77.0/24"
  ip netns add $P-sw
  ip -n $P-sw link add br0 type bridge
  ip -n $P-sw link set br0 up
  for h in $(seq 1 $N); do
    ip netns add $P-h$h
    ip link add $P-h$h type veth peer name $P-s$h
    ip link set $P-h$h netns $P-h$h
    ip link set $P-s$h netns $P-sw
    ip -n $P-sw link set $P-s$h master br0 up
    ip -n $P-h$h link set $P-h$h name eth0
    ip -n $P-h$h addr add 192.168.77.$((10+h))/24 dev eth0
    ip -n $P-h$h link set eth0 up
    ip -n $P-h$h link set lo up
    mkdir -p "$STATE/h$h/wireguard" "$STATE/h$h/cni"
  done
  log "launching peers"
  for h in $(seq 1 $N); do
    args=(--name h$h --data-dir "$STATE/h$h/data" --socket "$STATE/h$h/weft.sock" --http-addr 192.168.77.$((10+h)):6784 --transport "$TRANSPORT")
    [ "$h" -gt 1 ] && args+=(--password-file "$STATE/secret" 192.168.77.11)
    echo "  host h$h: weft launch ${args[*]}"
    # inline (not the inhost function): nsenter, unshare and sh exec, so $! is weft itself
    nsenter --net=/var/run/netns/$P-h$h -- unshare --mount --propagation private \
      sh -c "mount --bind $STATE/h$h/wireguard /run/wireguard && exec \"\$@\"" sh "$BIN/weft" launch "${args[@]}" >"$STATE/h$h/weft.log" 2>&1 &
    echo $! >"$STATE/h$h/weft.pid"
    if [ "$h" -eq 1 ]; then
      for _ in $(seq 50); do [ -s "$STATE/h1/data/secret" ] && break; sleep 0.1; done
      cp "$STATE/h1/data/secret" "$STATE/secret"
    fi
  done
  log "waiting for the mesh"
  for h in $(seq 1 $N); do
    for _ in $(seq 100); do
      alive=$("$BIN/weft" status --json --socket "$STATE/h$h/weft.sock" 2>/dev/null | grep -c '"state": "alive"' || true)
      [ "$alive" = "$N" ] && break; sleep 0.2
    done
  done
  for h in $(seq 1 $N); do
    log "weft status on h$h"
    "$BIN/weft" status --socket "$STATE/h$h/weft.sock" || true
  done
  if [ "${PODS:-1}" = 1 ]; then pods; fi
  if [ "${PODS:-1}" = 1 ] && command -v dig >/dev/null; then
    log "DNS: pod names resolve from every pod (asking its own host's bridge)"
    gw=$(ip -n $P-h$N-p1 route show default | awk '{print $3}')
    for h in $(seq 1 $N); do
      printf '  from h%s-p1: pod1.h%s.weft.local -> %s\n' "$N" "$h" "$(ip netns exec $P-h$N-p1 dig +short +time=2 @"$gw" pod1.h$h.weft.local | tr '\n' ' ')"
    done
  fi
  log "status pages (open them in this machine's browser)"
  for h in $(seq 1 $N); do
    port=$((16783+h))
    "$BIN/weft" forward --netns /var/run/netns/$P-h$h --listen 127.0.0.1:$port --to 192.168.77.$((10+h)):6784 >"$STATE/h$h/forward.log" 2>&1 &
    echo $! >"$STATE/h$h/forward.pid"
    echo "  h$h: http://127.0.0.1:$port/"
  done
  echo
  echo "The demo keeps running. Remove it with: make demo-down"
}

pods() {
  log "starting 2 pods per host with weft-cni"
  for h in $(seq 1 $N); do
    "$BIN/weft" setup-cni --cni-bin "$BIN/weft-cni" --bin-dir "$STATE/h$h/cni" --conf-dir "$STATE/h$h/cni" --socket "$STATE/h$h/weft.sock" --data-dir "$STATE/h$h/data" >/dev/null
    for i in 1 2; do
      pod=$P-h$h-p$i
      ip netns add $pod; ip -n $pod link set lo up
      conf=$(python3 -c 'import json,sys;c=json.load(open(sys.argv[1]));p=c["plugins"][0];p["cniVersion"]=c["cniVersion"];p["name"]=c["name"];print(json.dumps(p))' "$STATE/h$h/cni/10-weft.conflist")
      out=$(echo "$conf" | inhost $h env CNI_COMMAND=ADD CNI_CONTAINERID=demo-h$h-p$i CNI_NETNS=/var/run/netns/$pod CNI_IFNAME=eth0 \
        CNI_PATH="$STATE/h$h/cni" CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAME=pod$i;K8S_POD_NAMESPACE=h$h" "$BIN/weft-cni")
      addr=$(echo "$out" | python3 -c 'import json,sys;print(json.load(sys.stdin)["ips"][0]["address"])')
      echo "  pod$i.h$h ($pod): $addr"
      echo "${addr%/*}" >"$STATE/h$h/p$i.addr"
    done
  done
  log "ping matrix (1 packet each)"
  printf '%-10s' from/to
  for h in $(seq 1 $N); do for i in 1 2; do printf '%-10s' "h$h-p$i"; done; done; echo
  for h in $(seq 1 $N); do for i in 1 2; do
    printf '%-10s' "h$h-p$i"
    for h2 in $(seq 1 $N); do for i2 in 1 2; do
      a=$(cat "$STATE/h$h2/p$i2.addr")
      if ip netns exec $P-h$h-p$i ping -c1 -W2 -q "$a" >/dev/null 2>&1; then printf '%-10s' ok; else printf '%-10s' FAIL; fi
    done; done; echo
  done; done
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
