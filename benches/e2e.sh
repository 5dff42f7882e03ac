#!/usr/bin/env bash
# End-to-end throughput bench: `blast send` of N recipients (~2 KB messages, 16 connections,
# no rate limit) into Postfix's smtp-sink on loopback, against Postfix's smtp-source sending
# the same number of 2 KB messages into the same kind of sink. Prints both rates and the ratio.
#
#   bash benches/e2e.sh                 # N=100000
#   N=20000 bash benches/e2e.sh         # fewer messages
#
# The blast figure is the wall time of the whole `blast send --quiet` (import, hygiene,
# render, send, per-recipient state), not a send loop in isolation. The release build
# happens first and is not timed. Needs smtp-sink/smtp-source (package `postfix`); when they
# are missing and we are root, they are installed without configuring or starting Postfix.
#
# Environment: N (messages, default 100000), CONNS (connections, default 16), BLAST (use this
# binary instead of building target/release/blast),
# BASELINE (another blast binary: A/B medians, ROUNDS rounds alternating, default 3),
# SINK_BACKLOG (default 1000), KEEP=1 (keep the temp dir), PERF=1 (profile blast with `perf`; slows it, so the rate is not comparable).
#
# DKIM=1: every message signed with RSA-2048 (a key from `blast dkim keygen`), and the
# ceiling printed beside blast's rate is OpenSSL's RSA-2048 signing rate on every core
# (`openssl speed -multi <cores> rsa2048`, measured in this run), since every message costs
# one signature. N defaults to 20000 then.
#   DKIM=1 bash benches/e2e.sh
set -euo pipefail

DKIM=${DKIM:-0}
if [[ $DKIM == 1 ]]; then N=${N:-20000}; else N=${N:-100000}; fi
CONNS=${CONNS:-16}
SINK_BACKLOG=${SINK_BACKLOG:-1000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

BENCH=e2e
source "$ROOT/benches/common/lib.sh"

# ---------------------------------------------------------------- Postfix tools
SINK=/usr/sbin/smtp-sink
SOURCE=/usr/sbin/smtp-source
if [[ ! -x $SINK || ! -x $SOURCE ]]; then
    [[ $(id -u) -eq 0 ]] || die "smtp-sink/smtp-source missing: apt-get install postfix (as root)"
    log "e2e: installing postfix for smtp-sink/smtp-source (the daemon is not configured or started)"
    export DEBIAN_FRONTEND=noninteractive
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    # Keep maintainer scripts from starting any daemon while we install.
    policy_rc_created=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        policy_rc_created=1
    fi
    timeout 600 apt-get update -qq
    timeout 900 apt-get install -y -qq --no-install-recommends postfix >/dev/null
    [[ $policy_rc_created -eq 1 ]] && rm -f /usr/sbin/policy-rc.d
    [[ -x $SINK && -x $SOURCE ]] || die "postfix installed but $SINK / $SOURCE not found"
fi

# ---------------------------------------------------------------- temp dir, cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/blast-e2e.XXXXXX")
SINK_PID=""
stop_sink() {
    if [[ -n $SINK_PID ]]; then
        kill "$SINK_PID" 2>/dev/null || true
        wait "$SINK_PID" 2>/dev/null || true
        SINK_PID=""
    fi
}
cleanup() {
    stop_sink
    if [[ ${KEEP:-0} == 1 ]]; then log "e2e: kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# smtp-sink -c writes a running "sess=N quit=N mesg=N" line to stdout (\r between updates);
# the last mesg= is the number of messages the sink accepted since it started.


# Starts a fresh sink (fresh counter) on a free loopback port; sets PORT and SINK_PID.
start_sink() {
    local tries
    for tries in 1 2 3 4 5 6 7 8 9 10; do
        PORT=$(( 20000 + RANDOM % 40000 ))
        port_free "$PORT" || continue
        : > "$WORK/sink.out"
        # The sink runs as `nobody` after binding; it exits by itself after 2 h at most.
        timeout 7200 "$SINK" -c -u nobody "127.0.0.1:$PORT" "$SINK_BACKLOG" > "$WORK/sink.out" 2> "$WORK/sink.err" &
        SINK_PID=$!
        wait_listening "$SINK_PID" "$PORT" && return 0
        stop_sink
    done
    die "could not start smtp-sink: $(cat "$WORK/sink.err" 2>/dev/null)"
}


# ---------------------------------------------------------------- build (not timed)
if [[ -n ${BLAST:-} ]]; then
    BLAST=$(realpath "$BLAST")
    log "e2e: using $BLAST (no build)"
else
    log "e2e: cargo build --release"
    timeout 1800 cargo build --release --quiet
    BLAST="$ROOT/target/release/blast"
fi
[[ -x $BLAST ]] || die "no executable $BLAST"

# ---------------------------------------------------------------- smtp-source, or OpenSSL
if [[ $DKIM == 1 ]]; then
    command -v openssl >/dev/null || die "DKIM=1 needs openssl (apt-get install openssl)"
    log "e2e: openssl speed -seconds 5 -multi $(nproc) rsa2048"
    ossl_rate=$(timeout 120 openssl speed -seconds 5 -multi "$(nproc)" rsa2048 2>/dev/null \
        | awk '/^rsa 2048 bits/ { print int($6) }' | tail -n1)
    [[ -n $ossl_rate ]] || die "could not read openssl speed's rsa2048 sign/s"
fi
start_sink
log "e2e: smtp-source -d -s $CONNS -l 2000 -m $N 127.0.0.1:$PORT"
t0=$(now)
timeout 900 "$SOURCE" -d -s "$CONNS" -l 2000 -m "$N" "127.0.0.1:$PORT" > "$WORK/source.out" 2>&1 \
    || die "smtp-source failed: $(tail -n5 "$WORK/source.out")"
t1=$(now)
sleep 0.3
src_secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
src_count=$(sink_count)
stop_sink
[[ "$src_count" == "$N" ]] || log "e2e: warning: sink counted ${src_count:-nothing} messages from smtp-source, expected $N"
src_rate=$(rate "$N" "$src_secs")

# ---------------------------------------------------------------- blast
log "e2e: generating $N recipients"
# 1,000 domains, a personalised first name and city; ~2 KB per rendered message.
awk -v n="$N" 'BEGIN {
    split("Ann Bob Chloe Dmitri Eva Farid Greta Hugo Ines Jonas Kiri Lena Mateo Nora Omar Pia", fn, " ");
    split("Berlin Lisbon Paris Oslo Madrid Vienna Prague Dublin Rome Warsaw Athens Riga", ct, " ");
    print "email,first_name,city";
    for (i = 0; i < n; i++)
        printf "user%d@d%d.example.com,%s,%s\n", i, i % 1000, fn[i % 16 + 1], ct[i % 12 + 1];
}' > "$WORK/list.csv"

{
    echo 'Hello {{first_name}},'
    echo
    echo 'Spring has arrived in {{city}}, and with it our seasonal offers. This message is'
    echo 'long on purpose: the end-to-end bench sends messages of about two kilobytes, which'
    echo 'is the size of a typical plain-text newsletter.'
    echo
    for i in 1 2 3 4 5 6 7 8 9; do
        echo "  * Offer $i for {{first_name}} in {{city}}: 20% off garden furniture, free delivery"
        echo "    on orders over 50 EUR, valid until the end of the month while stocks last."
    done
    echo
    echo 'You receive this message because you subscribed to Acme News. To stop receiving it,'
    echo 'reply with "unsubscribe" in the subject line.'
    echo
    echo 'See you soon,'
    echo 'The Acme team'
} > "$WORK/bench.txt.hbs"

cat > "$WORK/campaign.toml" <<EOF
[campaign]
id = "e2e-bench"
from = "Acme News <news@acme.example>"
subject = "Spring offers for {{first_name}}"
text = "bench.txt.hbs"
lists = ["list.csv"]
state_dir = "state"

[lane]
transport = "smtp://127.0.0.1:PORT_PLACEHOLDER"
helo = "blast.acme.example"
connections = $CONNS
per_domain_connections = $CONNS
EOF

if [[ $DKIM == 1 ]]; then
    "$BLAST" dkim keygen --domain acme.example --selector bench -o "$WORK/dkim.pem" > "$WORK/dkim.txt"
    printf '\n[dkim]\ndomain = "acme.example"\nselector = "bench"\nkey = "dkim.pem"\n' >> "$WORK/campaign.toml"
fi

cp "$WORK/campaign.toml" "$WORK/campaign.toml.in"

# One `blast send` of the whole list with binary $1 into a fresh sink and a fresh state dir;
# sets blast_secs, blast_rate and the CPU figures.
run_blast() {
    local bin=$1
    rm -rf "$WORK/state"
    start_sink
    sed "s/PORT_PLACEHOLDER/$PORT/" "$WORK/campaign.toml.in" > "$WORK/campaign.toml"
    msg_size=$(cd "$WORK" && "$bin" preview campaign.toml | wc -c)
    log "e2e: blast send ($N recipients, $CONNS connections, $bin) into 127.0.0.1:$PORT"
    perf_cmd=()
    if [[ ${PERF:-0} == 1 ]] && command -v perf >/dev/null; then
        perf_cmd=(perf record -F 999 --call-graph dwarf,16384 -o "$WORK/perf.data" --)
    fi
    t0=$(now)
    set +e
    time_cmd=()
    if [[ -x /usr/bin/time ]]; then
        time_cmd=(/usr/bin/time -f '%U %S %M' -o "$WORK/time.out")
    fi
    timeout 900 /usr/bin/env "${time_cmd[@]}" "${perf_cmd[@]}" "$bin" send "$WORK/campaign.toml" --quiet \
        > "$WORK/blast.out" 2> "$WORK/blast.err"
    blast_rc=$?
    set -e
    t1=$(now)
    sleep 0.3
    blast_secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    blast_count=$(sink_count)
    stop_sink
    if [[ $blast_rc -ne 0 ]]; then
        cat "$WORK/blast.out" "$WORK/blast.err" >&2
        die "blast send exited with $blast_rc"
    fi
    sent=$("$bin" status --json "$WORK/campaign.toml" | grep -Eo '"sent":[0-9]+' | cut -d: -f2)
    [[ "$sent" == "$N" ]] || die "blast status reports sent=${sent:-?}, expected $N"
    [[ "$blast_count" == "$N" ]] || die "sink counted ${blast_count:-nothing} messages from blast, expected $N"
    blast_rate=$(rate "$N" "$blast_secs")
    if [[ ${#perf_cmd[@]} -gt 0 ]]; then
        # Inclusive time of blast's and sled's own functions: where the whole send spends its CPU.
        perf report -i "$WORK/perf.data" --children --sort symbol -g none --percent-limit 1 --stdio 2>/dev/null \
            | grep -E 'blast::|sled::tree::Tree::(insert|get)|IoBufs::write_to_log|_int_malloc|sys_sendto|sys_recvfrom' \
            | grep -v inlined | head -n 40 >&2 || true
    fi

    if [[ -s $WORK/time.out ]]; then
        read -r cpu_user cpu_sys max_rss < <(tail -n1 "$WORK/time.out")
        log "e2e: blast CPU: user ${cpu_user}s + sys ${cpu_sys}s (wall ${blast_secs}s), peak RSS $(( max_rss / 1024 )) MB"
    fi
    log "e2e: $bin: ${blast_rate} msg/s"
}


if [[ -n ${BASELINE:-} ]]; then
    # A/B against another build, alternating A B A B … so machine drift hits both alike.
    BASELINE=$(realpath "$BASELINE")
    ROUNDS=${ROUNDS:-3}
    : > "$WORK/a.rates"; : > "$WORK/b.rates"
    for r in $(seq "$ROUNDS"); do
        run_blast "$BLAST"; echo "$blast_rate" >> "$WORK/a.rates"
        run_blast "$BASELINE"; echo "$blast_rate" >> "$WORK/b.rates"
    done
    a_med=$(median < "$WORK/a.rates"); b_med=$(median < "$WORK/b.rates")
    log "e2e: A (this build) rates: $(tr '\n' ' ' < "$WORK/a.rates")"
    log "e2e: B (baseline)   rates: $(tr '\n' ' ' < "$WORK/b.rates")"
    echo "A: $a_med msg/s (median of $ROUNDS)  B: $b_med msg/s  A/B: $(awk -v a="$a_med" -v b="$b_med" 'BEGIN { printf "%.3f", a / b }')  smtp-source: $src_rate msg/s  A/source: $(awk -v a="$a_med" -v b="$src_rate" 'BEGIN { printf "%.2f", a / b }')"
    exit 0
fi

run_blast "$BLAST"
if [[ $DKIM == 1 ]]; then
    log "e2e: load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
    echo "blast (DKIM RSA-2048, $CONNS connections): $blast_rate msg/s  openssl speed -multi $(nproc) rsa2048: $ossl_rate sign/s  ratio: $(awk -v a="$blast_rate" -v b="$ossl_rate" 'BEGIN { printf "%.2f", a / b }')  (smtp-source unsigned: $src_rate msg/s)"
    exit 0
fi
log "e2e: load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs (other work on the machine skews both rates)"
ratio=$(awk -v a="$blast_rate" -v b="$src_rate" 'BEGIN { printf "%.2f", a / b }')
log "e2e: smtp-source ${src_secs}s, blast ${blast_secs}s for $N messages of ~$msg_size bytes"
echo "smtp-source: $src_rate msg/s  blast: $blast_rate msg/s  ratio: $ratio"
