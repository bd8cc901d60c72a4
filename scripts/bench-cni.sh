#!/usr/bin/env bash
# bench-cni.sh — CNI ADD and DEL latency of weft-cni against the reference
# bridge + host-local plugins (Debian containernetworking-plugins), both
# executed the way a runtime executes them: CNI_* environment, config on
# stdin, one process per command. Reports p50/p99 per command and the
# weft/reference ratio (issue 5 target: <= 1.0).
#
#   sudo scripts/bench-cni.sh                          # reference only
#   sudo WEFT_SOCKET=/run/weft/weft.sock scripts/bench-cni.sh
#   sudo WEFT_SOCKET=/tmp/tb/h1.sock WEFT_NETNS=/var/run/netns/h1 scripts/bench-cni.sh
#
# Inputs (environment):
#   WEFT_SOCKET   control socket of an already-running weft peer; unset = skip weft
#   WEFT_NETNS    netns the peer (and its bridge) lives in; unset = this netns
#   WEFT_CNI      weft-cni binary; unset = built from ./cmd/weft-cni
#   WEFT_BRIDGE   bridge name for weft-cni's config; unset = the peer's answer
#   REF_CNI_DIR   reference plugins (default /usr/lib/cni)
#   N             ADD+DEL pairs per plugin (default 100)
# The reference runs in a throwaway namespace with its own bridge; pods are
# throwaway namespaces. Nothing touches the machine's real interfaces.
set -euo pipefail

N=${N:-100}
REF_CNI_DIR=${REF_CNI_DIR:-/usr/lib/cni}
here=$(cd "$(dirname "$0")/.." && pwd)
die() { echo "bench-cni: $*" >&2; exit 1; }


# run_plugin BIN CMD ID PODNS CONF CNI_PATH -> prints elapsed ns; runs in the
# current netns (bench re-enters the script inside the plugin's netns, so
# each command costs exactly one fork+exec, as under a runtime).
run_plugin() {
  local bin=$1 cmd=$2 id=$3 pod=$4 conf=$5 path=$6 t0 t1 out
  t0=${EPOCHREALTIME/./}
  if ! out=$(CNI_COMMAND="$cmd" CNI_CONTAINERID="$id" CNI_NETNS="$pod" CNI_IFNAME=eth0 CNI_PATH="$path" \
      CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=p$id" "$bin" <"$conf"); then
    echo "bench-cni: $(basename "$bin") $cmd $id failed: $out" >&2
    return 1
  fi
  t1=${EPOCHREALTIME/./}
  echo $(((t1 - t0) * 1000))
}

# loop NAME BIN CONF CNI_PATH PODNS OUTDIR N -> OUTDIR/NAME.add, NAME.del (ns per line)
loop() {
  local name=$1 bin=$2 conf=$3 path=$4 pod=$5 out=$6 n=$7 i id
  : >"$out/$name.add"; : >"$out/$name.del"
  for ((i = 0; i < 3; i++)); do # warm-up: page cache, peer connections
    id=$tag-warm-$name-$i
    run_plugin "$bin" ADD "$id" "$pod" "$conf" "$path" >/dev/null
    run_plugin "$bin" DEL "$id" "$pod" "$conf" "$path" >/dev/null
  done
  for ((i = 0; i < n; i++)); do
    id=$tag-$name-$i
    run_plugin "$bin" ADD "$id" "$pod" "$conf" "$path" >>"$out/$name.add"
    run_plugin "$bin" DEL "$id" "$pod" "$conf" "$path" >>"$out/$name.del"
  done
  # what one fork+exec of a trivial program costs here, for the report
  local t0 t1
  t0=${EPOCHREALTIME/./}; /bin/true; t1=${EPOCHREALTIME/./}
  echo $(((t1 - t0) * 1000)) >"$out/$name.exec"
}

if [ "${1:-}" = __loop ]; then
  shift
  tag=$1; shift
  loop "$@"
  exit
fi

# bench NAME NETNS_PATH BIN CONF CNI_PATH PODNS
bench() {
  nsenter --net="$2" bash "$0" __loop "$tag" "$1" "$3" "$4" "$5" "$6" "$tmp" "$N" || die "$1 benchmark failed"
}

# pct FILE P -> the P-th percentile in ms (nearest rank)
pct() {
  sort -n "$1" | awk -v p="$2" '{v[NR]=$1} END {i=int((p/100)*NR+0.999999); if(i<1)i=1; printf "%.2f", v[i]/1e6}'
}

tag=wfb$(printf '%04x' $((RANDOM * 2 % 65536)))
[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces)"
[ -x "$REF_CNI_DIR/bridge" ] && [ -x "$REF_CNI_DIR/host-local" ] || die "reference plugins missing in $REF_CNI_DIR (apt-get install containernetworking-plugins)"
tmp=$(mktemp -d /tmp/bench-cni.XXXXXX)
cleanup() {
  for n in "$tag-ref" "$tag-rpod" "$tag-wpod"; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

# --- reference: bridge + host-local in a throwaway host namespace ---
ip netns add "$tag-ref"
ip netns add "$tag-rpod"
cat >"$tmp/ref.json" <<JSON
{"cniVersion":"1.0.0","name":"$tag","type":"bridge","bridge":"${tag}br","isGateway":true,"hairpinMode":true,"ipMasq":false,
 "ipam":{"type":"host-local","dataDir":"$tmp/ipam","ranges":[[{"subnet":"10.213.0.0/16","gateway":"10.213.0.1"}]],"routes":[{"dst":"0.0.0.0/0"}]}}
JSON
echo "bench-cni: reference bridge+host-local, $N ADD+DEL ..." >&2
bench ref "/var/run/netns/$tag-ref" "$REF_CNI_DIR/bridge" "$tmp/ref.json" "$REF_CNI_DIR" "/var/run/netns/$tag-rpod"

# --- weft-cni against an already-running peer ---
have_weft=0
if [ -z "${WEFT_SOCKET:-}" ]; then
  echo "bench-cni: WEFT_SOCKET not set: skipping weft-cni (start a peer with 'weft launch' and pass its socket)" >&2
else
  [ -S "$WEFT_SOCKET" ] || die "WEFT_SOCKET=$WEFT_SOCKET is not a socket: is the peer running?"
  weft_ns=${WEFT_NETNS:-/proc/self/ns/net}
  [ "$weft_ns" = /proc/self/ns/net ] && weft_ns=/proc/$$/ns/net
  bin=${WEFT_CNI:-}
  if [ -z "$bin" ]; then
    bin=$tmp/weft-cni
    (cd "$here" && go build -o "$bin" ./cmd/weft-cni) || die "build weft-cni failed"
  fi
  br=""
  [ -n "${WEFT_BRIDGE:-}" ] && br=",\"bridge\":\"$WEFT_BRIDGE\""
  printf '{"cniVersion":"1.0.0","name":"weft","type":"weft-cni","socket":"%s","dataDir":"%s"%s}\n' \
    "$WEFT_SOCKET" "$tmp/weftdata" "$br" >"$tmp/weft.json"
  ip netns add "$tag-wpod"
  echo "bench-cni: weft-cni ($bin), $N ADD+DEL ..." >&2
  bench weft "$weft_ns" "$bin" "$tmp/weft.json" "$(dirname "$bin")" "/var/run/netns/$tag-wpod"
  have_weft=1
fi

# --- report ---
printf '\nCNI latency over %d pods, ms (one fork+exec of /bin/true here: %s ms)\n' "$N" "$(awk '{printf "%.2f", $1/1e6}' "$tmp/ref.exec")"
printf '%-22s %8s %8s %8s %8s\n' plugin "ADD p50" "ADD p99" "DEL p50" "DEL p99"
row() { printf '%-22s %8s %8s %8s %8s\n' "$1" "$(pct "$tmp/$2.add" 50)" "$(pct "$tmp/$2.add" 99)" "$(pct "$tmp/$2.del" 50)" "$(pct "$tmp/$2.del" 99)"; }
row "bridge+host-local" ref
if [ "$have_weft" = 1 ]; then
  row weft-cni weft
  ratio() { awk -v a="$(pct "$tmp/weft.$1" "$2")" -v b="$(pct "$tmp/ref.$1" "$2")" 'BEGIN{printf "%.2f", a/b}'; }
  printf '%-22s %8s %8s %8s %8s\n' "ratio weft/ref" "$(ratio add 50)" "$(ratio add 99)" "$(ratio del 50)" "$(ratio del 99)"
fi
