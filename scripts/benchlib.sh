# benchlib.sh - measurement helpers of the datapath benchmarks
# (bench-datapath.sh, bench-underlay.sh, bench-wg.sh), sourced. They append
# rows "rep cfg test value extra" to $W/raw.tsv (scripts/benchtable.py reads
# it) and log with the caller's log(); $W and $DUR are the caller's.

# iperf_values JSON TEST sets the caller's val (Gbit/s received) and extra
# (UDP: loss %; TCP: retransmits) from an iperf3 -J result.
iperf_values() {
  if [[ $2 == udp* ]]; then
    val=$(jq -r '(.end.sum_received.bits_per_second // .end.sum.bits_per_second) / 1e9' "$1" 2>/dev/null || echo NaN)
    extra=$(jq -r '.end.sum.lost_percent // "NaN"' "$1" 2>/dev/null || echo NaN)
  else
    val=$(jq -r '.end.sum_received.bits_per_second / 1e9' "$1" 2>/dev/null || echo NaN)
    extra=$(jq -r '.end.sum_sent.retransmits // "NaN"' "$1" 2>/dev/null || echo NaN)
  fi
}

# iperf CFG REP TEST CLIENT_NS DST [iperf3 args...]: one iperf3 run.
iperf() {
  local cfg=$1 rep=$2 test=$3 cns=$4 dst=$5; shift 5
  local js=$W/json/$cfg.$test.$rep.json val extra
  timeout $((DUR + 30)) ip netns exec "$cns" iperf3 -c "$dst" -J "$@" > "$js" 2> /dev/null || true
  iperf_values "$js" "$test"
  printf "%s\t%s\t%s\t%.3f\t%s\n" "$rep" "$cfg" "$test" "$val" "$extra" >> "$W/raw.tsv"
  log "  $cfg $test rep$rep: $(printf %.3f "$val") Gbit/s extra=$extra"
  sleep 1
}

# ping_rtt CFG REP NS DST: the median RTT of 200 pings 10 ms apart.
ping_rtt() {
  local med
  med=$(ip netns exec "$3" ping -n -c 200 -i 0.01 -W 1 "$4" 2>/dev/null | grep -o 'time=[0-9.]*' | cut -d= -f2 | sort -g |
        awk '{a[NR]=$1} END{if(NR==0){print "NaN"; exit} printf "%.4f", a[int((NR+1)/2)]}')
  printf "%s\t%s\tping_ms\t%s\t-\n" "$2" "$1" "$med" >> "$W/raw.tsv"
  log "  $1 ping rep$2: median $med ms"
}
