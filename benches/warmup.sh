#!/usr/bin/env bash
# Warm-up cost bench: `blast send` of N recipients (1,000 domains, 16 connections, no rate
# limit) into Postfix's smtp-sink on loopback, without a warm-up and with one whose cap is
# far above N (`warmup = ["100000000/d"]`), so every message pays the warm-up check (a local
# budget per message, a durable reservation in the global state per block of 1,000, the
# outcome tallies) and none is deferred. Rounds alternate; prints the median msg/s of each
# and the ratio.
#
#   bash benches/warmup.sh                  # N=50000, ROUNDS=3
#   N=20000 ROUNDS=5 bash benches/warmup.sh
#
# The figure is the wall time of the whole `blast send --quiet` on a fresh state dir
# (import, render, send, per-recipient state). BLAST=path uses that binary instead of
# building target/release/blast. Needs /usr/sbin/smtp-sink (package `postfix`).
set -euo pipefail

N=${N:-50000}
ROUNDS=${ROUNDS:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SINK=/usr/sbin/smtp-sink
BENCH="warmup bench"
source "$ROOT/benches/common/lib.sh"
[[ -x $SINK ]] || die "$SINK missing: apt-get install postfix (benches/e2e.sh can install it)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/blast-warmup.XXXXXX")
SINK_PID=""
stop_sink() { [[ -n $SINK_PID ]] && { kill "$SINK_PID" 2>/dev/null || true; wait "$SINK_PID" 2>/dev/null || true; SINK_PID=""; }; }
trap 'stop_sink; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM
start_sink() {
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        PORT=$(( 20000 + RANDOM % 40000 ))
        port_free "$PORT" || continue
        timeout 3600 "$SINK" -u nobody "127.0.0.1:$PORT" 1000 > /dev/null 2>&1 &
        SINK_PID=$!
        wait_listening "$SINK_PID" "$PORT" && return 0
        stop_sink
    done
    die "could not start smtp-sink"
}

if [[ -n ${BLAST:-} ]]; then
    BLAST=$(realpath "$BLAST")
else
    log "warmup bench: cargo build --release"
    (cd "$ROOT" && timeout 1800 cargo build --release --quiet)
    BLAST="$ROOT/target/release/blast"
fi

awk -v n="$N" 'BEGIN { print "email,first_name";
    for (i = 0; i < n; i++) printf "user%d@d%d.example.com,Name%d\n", i, i % 1000, i }' > "$WORK/list.csv"
printf 'Hello {{first_name}},\n\nThis is the warm-up bench.\n' > "$WORK/t.txt.hbs"

# campaign.toml for a run: $1 = extra [lane] keys.
campaign() {
    cat > "$WORK/campaign.toml" <<EOT
[campaign]
id = "warmup-bench"
from = "Acme News <news@acme.example>"
subject = "Hello {{first_name}}"
text = "t.txt.hbs"
lists = ["list.csv"]
state_dir = "state"

[lane]
transport = "smtp://127.0.0.1:$PORT"
helo = "blast.acme.example"
connections = 16
per_domain_connections = 16
$1
EOT
}

# One run; prints msg/s.
run() {
    rm -rf "$WORK/state"
    start_sink
    campaign "$1"
    local t0 t1
    t0=$(date +%s.%N)
    (cd "$WORK" && "$BLAST" send campaign.toml --quiet 2> "$WORK/send.err") \
        || die "blast send failed: $(tail -n5 "$WORK/send.err")"
    t1=$(date +%s.%N)
    stop_sink
    grep -q "sent this run $N " "$WORK/send.err" || die "not all $N sent: $(grep 'sent this run' "$WORK/send.err")"
    awk -v n="$N" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f\n", n / (b - a) }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

WARM='warmup = ["100000000/d"]
warmup_start = "2026-01-01"'
plain=(); warm=()
for r in $(seq "$ROUNDS"); do
    p=$(run ""); w=$(run "$WARM")
    log "warmup bench: round $r: without $p msg/s, with warm-up $w msg/s"
    plain+=("$p"); warm+=("$w")
done
mp=$(printf '%s\n' "${plain[@]}" | median)
mw=$(printf '%s\n' "${warm[@]}" | median)
echo "blast send, $N recipients, 16 connections, median of $ROUNDS rounds:"
echo "  without warm-up:           $mp msg/s"
echo "  with warm-up (cap >> N):   $mw msg/s"
awk -v a="$mw" -v b="$mp" 'BEGIN { printf "  ratio with/without:        %.3f\n", a / b }'
