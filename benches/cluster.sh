#!/usr/bin/env bash
# What a fleet costs one machine: `blast send --config` of N recipients into Postfix's
# smtp-sink on loopback, once with a blast.toml without `[cluster]` and once with
# `[cluster] redis` pointing at a redis-server started here (loopback, no persistence), the
# same campaign and limits otherwise. Prints both rates and the ratio (cluster / local).
#
#   bash benches/cluster.sh             # N=50000, ROUNDS=3 alternating local, cluster
#   N=20000 ROUNDS=1 bash benches/cluster.sh
#   BLAST=target/release/blast bash benches/cluster.sh   # a built binary, no build
#
# The limits are set above what the machine sends (RATE, default 100000/s globally and
# SITE_RATE, default 5000/s per domain over 1,000 domains; per_domain_connections 16), so
# the machine is the bottleneck and the figure is the overhead of taking every token and
# connection lease from Redis (in 50 ms batches) instead of locally. Needs smtp-sink (package
# `postfix`, see benches/e2e.sh) and redis-server (package `redis-server`).
set -euo pipefail

N=${N:-50000}
CONNS=${CONNS:-16}
ROUNDS=${ROUNDS:-3}
RATE=${RATE:-100000/s}
SITE_RATE=${SITE_RATE:-5000/s}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BENCH=cluster
source "$ROOT/benches/common/lib.sh"

SINK=/usr/sbin/smtp-sink
[[ -x $SINK ]] || die "smtp-sink missing: run benches/e2e.sh once (it installs postfix's tools) or apt-get install postfix"
command -v redis-server >/dev/null || die "redis-server missing: apt-get install redis-server"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/blast-cluster.XXXXXX")
SINK_PID=""; REDIS_PID=""
stop_sink() { [[ -n $SINK_PID ]] && { kill "$SINK_PID" 2>/dev/null || true; wait "$SINK_PID" 2>/dev/null || true; SINK_PID=""; }; }
cleanup() {
    stop_sink
    [[ -n $REDIS_PID ]] && { kill "$REDIS_PID" 2>/dev/null || true; wait "$REDIS_PID" 2>/dev/null || true; }
    if [[ ${KEEP:-0} == 1 ]]; then log "cluster: kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { local p; for _ in $(seq 20); do p=$(( 20000 + RANDOM % 40000 )); port_free "$p" && { echo "$p"; return; }; done; die "no free port"; }
start_sink() {
    PORT=$(free_port)
    : > "$WORK/sink.out"
    timeout 7200 "$SINK" -c -u nobody "127.0.0.1:$PORT" 1000 > "$WORK/sink.out" 2> "$WORK/sink.err" &
    SINK_PID=$!
    wait_listening "$SINK_PID" "$PORT" && return 0
    die "smtp-sink did not start: $(cat "$WORK/sink.err")"
}

if [[ -n ${BLAST:-} ]]; then
    BLAST=$(realpath "$BLAST")
    log "cluster: using $BLAST (no build)"
else
    log "cluster: cargo build --release"
    timeout 1800 cargo build --release --quiet
    BLAST="$ROOT/target/release/blast"
fi

RPORT=$(free_port)
timeout 7200 redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no > "$WORK/redis.log" 2>&1 &
REDIS_PID=$!
for _ in $(seq 50); do port_free "$RPORT" || break; sleep 0.1; done
port_free "$RPORT" && die "redis-server did not start: $(cat "$WORK/redis.log")"

awk -v n="$N" 'BEGIN { print "email,first_name"; for (i = 0; i < n; i++) printf "user%d@d%d.example.com,Ann\n", i, i % 1000 }' > "$WORK/list.csv"
printf 'Hello {{first_name}},\n\nA plain newsletter of a few lines, the same for both runs.\n' > "$WORK/t.txt.hbs"
printf '[serve]\nstate_dir = "global"\n\n[priority]\ntransport = "outbox:pq"\n' > "$WORK/local.toml"
cp "$WORK/local.toml" "$WORK/cluster.toml"
printf '\n[cluster]\nredis = "redis://127.0.0.1:%s"\nmachine = "bench"\n' "$RPORT" >> "$WORK/cluster.toml"

# One send with blast.toml $1 into a fresh sink and fresh state; sets secs and rate.
run() {
    local cfg=$1
    rm -rf "$WORK/state" "$WORK/global"
    start_sink
    cat > "$WORK/campaign.toml" <<EOF
[campaign]
id = "cluster-bench"
from = "Acme News <news@acme.example>"
subject = "Hello {{first_name}}"
text = "t.txt.hbs"
lists = ["list.csv"]
state_dir = "state"

[lane]
transport = "smtp://127.0.0.1:$PORT"
helo = "blast.acme.example"
connections = $CONNS
per_domain_connections = $CONNS
rate = "$RATE"
burst = 100

[lane.per_domain]
default = "$SITE_RATE"
EOF
    local t0 t1
    t0=$(now)
    timeout 900 "$BLAST" send "$WORK/campaign.toml" --config "$WORK/$cfg" --quiet > "$WORK/out" 2> "$WORK/err" \
        || { cat "$WORK/out" "$WORK/err" >&2; die "blast send ($cfg) failed"; }
    t1=$(now)
    sleep 0.3
    local got; got=$(sink_count); stop_sink
    [[ "$got" == "$N" ]] || die "$cfg: the sink counted ${got:-nothing} messages, expected $N"
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    rate=$(awk -v n="$N" -v t="$secs" 'BEGIN { printf "%.0f", n / t }')
    log "cluster: $cfg: $N in ${secs}s = $rate msg/s"
}

: > "$WORK/local.rates"; : > "$WORK/cluster.rates"
for _ in $(seq "$ROUNDS"); do
    run local.toml; echo "$rate" >> "$WORK/local.rates"
    run cluster.toml; echo "$rate" >> "$WORK/cluster.rates"
done
l=$(median < "$WORK/local.rates"); c=$(median < "$WORK/cluster.rates")
log "cluster: load average $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
echo "local: $l msg/s  [cluster] redis: $c msg/s (median of $ROUNDS)  cluster/local: $(awk -v a="$c" -v b="$l" 'BEGIN { printf "%.2f", a / b }')"
