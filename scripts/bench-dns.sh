#!/usr/bin/env bash
# bench-dns.sh — weft's DNS server against dnsmasq, same machine, same run.
#
# Both serve the same NAMES in-domain names (weft.local) from the same hosts
# file on 127.0.0.1; dnsperf queries them in turn (alternating, ROUNDS
# times) and the script prints queries/s and p99 latency for both and the
# weft/dnsmasq ratio. qps comes from a plain dnsperf run, p99 from a second
# run with per-query latencies (-v), because printing every query slows
# dnsperf itself down.
#
# Until the daemon serves DNS, weft's side is ./dns/internal/benchserver:
# a real dns.Server loaded with the names and a no-op transport.
#
#   scripts/bench-dns.sh                      # defaults below
#   NAMES=1000 DURATION=10 CLIENTS=4 ROUNDS=2 scripts/bench-dns.sh
set -euo pipefail

NAMES=${NAMES:-1000}
DURATION=${DURATION:-10}        # seconds per dnsperf run
CLIENTS=${CLIENTS:-4}           # dnsperf -c
ROUNDS=${ROUNDS:-1}             # alternating rounds, results averaged
WEFT_PORT=${WEFT_PORT:-5301}
DNSMASQ_PORT=${DNSMASQ_PORT:-5302}

cd "$(dirname "$0")/.."
for tool in dnsperf dnsmasq dig go; do
	command -v "$tool" >/dev/null || { echo "bench-dns: $tool not found" >&2; exit 1; }
done

tmp=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$tmp"
}
trap cleanup EXIT

# The names: name-N.weft.local -> 10.32.x.y, and one A query per name.
for ((i = 0; i < NAMES; i++)); do
	echo "10.32.$((i / 250)).$((i % 250 + 1)) name-$i.weft.local"
done >"$tmp/hosts"
awk '{print $2, "A"}' "$tmp/hosts" >"$tmp/queries"

go build -o "$tmp/benchserver" ./dns/internal/benchserver
"$tmp/benchserver" -listen "127.0.0.1:$WEFT_PORT" -hosts "$tmp/hosts" 2>"$tmp/weft.log" &
pids+=($!)
dnsmasq --keep-in-foreground --conf-file=/dev/null --pid-file= --user=root \
	--port="$DNSMASQ_PORT" --listen-address=127.0.0.1 --bind-interfaces \
	--no-resolv --no-hosts --addn-hosts="$tmp/hosts" --local=/weft.local/ \
	--cache-size=10000 2>"$tmp/dnsmasq.log" &
pids+=($!)

wait_answer() { # port
	for _ in $(seq 100); do
		if [ "$(dig +short +time=1 +tries=1 @127.0.0.1 -p "$1" name-0.weft.local A 2>/dev/null)" = "10.32.0.1" ]; then
			return 0
		fi
		sleep 0.1
	done
	echo "bench-dns: nothing answers on 127.0.0.1:$1" >&2
	cat "$tmp"/*.log >&2
	exit 1
}
wait_answer "$WEFT_PORT"
wait_answer "$DNSMASQ_PORT"

qps() { # port -> queries/s and lost
	dnsperf -s 127.0.0.1 -p "$1" -d "$tmp/queries" -c "$CLIENTS" -l "$DURATION" >"$tmp/out" 2>&1
	awk '/Queries per second:/ {q=$4} /Queries lost:/ {l=$3} END {printf "%.0f %s\n", q, l}' "$tmp/out"
}
p99() { # port -> p99 latency in ms
	dnsperf -s 127.0.0.1 -p "$1" -d "$tmp/queries" -c "$CLIENTS" -l "$DURATION" -v 2>/dev/null |
		awk '$1 == ">" {print $NF}' | sort -g |
		awk '{a[NR] = $1} END {i = int(NR * 0.99); if (i < 1) i = 1; if (NR == 0) print "nan"; else printf "%.3f\n", a[i] * 1000}'
}

declare -A sum_qps sum_p99 lost
for ((r = 1; r <= ROUNDS; r++)); do
	for who in dnsmasq weft; do
		port=$DNSMASQ_PORT
		[ "$who" = weft ] && port=$WEFT_PORT
		read -r q l < <(qps "$port")
		p=$(p99 "$port")
		echo "round $r $who: $q q/s, lost $l, p99 $p ms" >&2
		sum_qps[$who]=$(awk -v a="${sum_qps[$who]:-0}" -v b="$q" 'BEGIN {print a + b}')
		sum_p99[$who]=$(awk -v a="${sum_p99[$who]:-0}" -v b="$p" 'BEGIN {print a + b}')
		lost[$who]=$(( ${lost[$who]:-0} + l ))
	done
done

echo
echo "dnsperf -c $CLIENTS -l $DURATION, $NAMES names, $ROUNDS round(s), $(nproc) CPUs"
printf "%-10s %12s %10s %8s\n" server "queries/s" "p99 (ms)" lost
for who in dnsmasq weft; do
	printf "%-10s %12.0f %10.3f %8d\n" "$who" \
		"$(awk -v s="${sum_qps[$who]}" -v n="$ROUNDS" 'BEGIN {print s / n}')" \
		"$(awk -v s="${sum_p99[$who]}" -v n="$ROUNDS" 'BEGIN {print s / n}')" "${lost[$who]}"
done
awk -v w="${sum_qps[weft]}" -v d="${sum_qps[dnsmasq]}" -v pw="${sum_p99[weft]}" -v pd="${sum_p99[dnsmasq]}" \
	'BEGIN {printf "ratio weft/dnsmasq: %.2fx queries/s, p99 %.2fx (lower is better)\n", w / d, pw / pd}'
