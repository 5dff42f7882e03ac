#!/usr/bin/env bash
# Relay-pool throughput bench: the same `blast send` of N recipients over DOMAINS domains,
# once through one relay (`transport = "smtp://…"`) and once through a pool of three
# (`relays = [three smtp://…]`), each relay a Postfix smtp-sink on loopback, with the same
# total connections. Rounds alternate (one, pool, one, pool, …) so machine drift hits both
# alike; prints the median rates and the ratio pool/one. On one machine the sinks share its
# cores with blast, so the figure shows what the pool costs (choosing relays, per-relay
# sessions), not the capacity a fleet of relay machines adds.
#
#   bash benches/pool.sh                   # N=50000, ROUNDS=3
#   N=20000 ROUNDS=1 bash benches/pool.sh
#
# Environment: N (default 50000), DOMAINS (default 1000), CONNS (default 16), ROUNDS
# (default 3), BLAST (use this binary instead of building target/release/blast), KEEP=1.
# Needs /usr/sbin/smtp-sink (postfix).
set -euo pipefail

N=${N:-50000}
DOMAINS=${DOMAINS:-1000}
CONNS=${CONNS:-16}
ROUNDS=${ROUNDS:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

BENCH=pool-bench
source "$ROOT/benches/common/lib.sh"

SINK=/usr/sbin/smtp-sink
[[ -x $SINK ]] || die "missing $SINK: apt-get install postfix (as root)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/blast-pool.XXXXXX")
PIDS=()
PORTS=()
stop_sinks() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    PIDS=(); PORTS=()
}
cleanup() {
    stop_sinks
    if [[ ${KEEP:-0} == 1 ]]; then log "pool-bench: kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

count_of() { tr '\r' '\n' < "$1" | grep -Eo 'mesg=[0-9]+' | tail -n1 | cut -d= -f2 || echo 0; }

# Starts smtp-sink number $1 on a free loopback port (appends to PORTS and PIDS).
start_sink() {
    local k=$1 tries port pid
    for tries in $(seq 10); do
        port=$(( 20000 + RANDOM % 40000 ))
        port_free "$port" || continue
        : > "$WORK/sink$k.out"
        timeout 7200 "$SINK" -c -u nobody "127.0.0.1:$port" 1000 > "$WORK/sink$k.out" 2> "$WORK/sink$k.err" &
        pid=$!
        if wait_listening "$pid" "$port"; then PORTS+=("$port"); PIDS+=("$pid"); return 0; fi
        kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
    done
    die "could not start smtp-sink: $(cat "$WORK/sink$k.err" 2>/dev/null)"
}


if [[ -n ${BLAST:-} ]]; then
    BLAST=$(realpath "$BLAST")
else
    log "pool-bench: cargo build --release"
    timeout 1800 cargo build --release --quiet
    BLAST="$ROOT/target/release/blast"
fi
[[ -x $BLAST ]] || die "no executable $BLAST"

awk -v n="$N" -v d="$DOMAINS" 'BEGIN {
    split("Ann Bob Chloe Dmitri Eva Farid Greta Hugo", fn, " ");
    print "email,first_name";
    for (i = 0; i < n; i++) printf "user%d@d%d.bench.test,%s\n", i, i % d, fn[i % 8 + 1];
}' > "$WORK/list.csv"
{
    echo 'Hello {{first_name}},'
    echo
    for i in $(seq 20); do
        echo "  * Offer $i for {{first_name}}: 20% off garden furniture, free delivery on orders over 50 EUR."
    done
    echo
    echo 'The Acme team'
} > "$WORK/bench.txt.hbs"

# One send through `one` relay or the `pool` of three, into fresh sinks; sets run_rate.
run() {
    local kind=$1 relays n k
    rm -rf "$WORK/state"
    n=1; [[ $kind == pool ]] && n=3
    for k in $(seq "$n"); do start_sink "$k"; done
    if [[ $kind == pool ]]; then
        relays="relays = [\"smtp://127.0.0.1:${PORTS[0]}\", \"smtp://127.0.0.1:${PORTS[1]}\", \"smtp://127.0.0.1:${PORTS[2]}\"]"
    else
        relays="transport = \"smtp://127.0.0.1:${PORTS[0]}\""
    fi
    cat > "$WORK/campaign.toml" <<EOF
[campaign]
id = "pool-bench"
from = "Acme News <news@acme.example>"
subject = "Offers for {{first_name}}"
text = "bench.txt.hbs"
lists = ["list.csv"]
state_dir = "state"

[lane]
$relays
source_ip = "127.0.0.1"
helo = "blast.acme.example"
connections = $CONNS
per_domain_connections = $CONNS
starttls = "off"
EOF
    local t0 t1 rc
    t0=$(now)
    set +e
    timeout 900 "$BLAST" send "$WORK/campaign.toml" --quiet > "$WORK/blast.out" 2> "$WORK/blast.err"
    rc=$?
    set -e
    t1=$(now)
    sleep 0.3
    local total=0 c shares=""
    for k in $(seq "$n"); do c=$(count_of "$WORK/sink$k.out"); total=$(( total + ${c:-0} )); shares="$shares ${c:-0}"; done
    stop_sinks
    [[ $rc -eq 0 ]] || { cat "$WORK/blast.out" "$WORK/blast.err" >&2; die "blast send ($kind) exited with $rc"; }
    [[ $total -eq $N ]] || die "sinks counted $total messages ($kind), expected $N"
    run_rate=$(rate "$N" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')")
    log "pool-bench: $kind: $run_rate msg/s (per relay:$shares)"
}

: > "$WORK/one.rates"; : > "$WORK/pool.rates"
for r in $(seq "$ROUNDS"); do
    run one; echo "$run_rate" >> "$WORK/one.rates"
    run pool; echo "$run_rate" >> "$WORK/pool.rates"
done
one_med=$(median < "$WORK/one.rates"); pool_med=$(median < "$WORK/pool.rates")
echo "one relay: $one_med msg/s  3-relay pool: $pool_med msg/s  ratio pool/one: $(awk -v a="$pool_med" -v b="$one_med" 'BEGIN { printf "%.2f", a / b }')  (N=$N, $CONNS connections, median of $ROUNDS)"
