#!/usr/bin/env bash
# Direct-to-MX throughput bench: the same `blast send` of N recipients over 1,000 domains,
# once with `transport = "mx"` (every domain's MX served by dnsmasq on loopback, all pointing
# at Postfix's smtp-sink through `mx_port`) and once through `transport = "smtp://"` into the
# same kind of sink. Rounds alternate (mx, smtp, mx, smtp, …) so machine drift hits both
# alike; prints the median rates and the ratio mx/smtp (the target: within 10%).
#
#   bash benches/mx.sh                  # N=50000, ROUNDS=3
#   N=20000 ROUNDS=1 bash benches/mx.sh
#
# Environment: N (messages, default 50000), DOMAINS (default 1000), HOSTS (the MX host names
# the domains point at, default 16 — many domains behind a few providers' hosts, as real lists
# are; HOSTS=1000 gives every domain its own host, the worst case), CONNS (connections,
# default 16), ROUNDS (default 3), BLAST (use this binary instead of building
# target/release/blast), KEEP=1 (keep the temp dir). Needs /usr/sbin/dnsmasq
# (dnsmasq-base) and /usr/sbin/smtp-sink (postfix); as root, missing ones are installed
# (Postfix is not configured or started).
set -euo pipefail

N=${N:-50000}
DOMAINS=${DOMAINS:-1000}
HOSTS=${HOSTS:-16}
CONNS=${CONNS:-16}
ROUNDS=${ROUNDS:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

BENCH=mx-bench
source "$ROOT/benches/common/lib.sh"

SINK=/usr/sbin/smtp-sink
DNSMASQ=/usr/sbin/dnsmasq
install_missing() {
    local pkgs=()
    [[ -x $SINK ]] || pkgs+=(postfix)
    [[ -x $DNSMASQ ]] || pkgs+=(dnsmasq-base)
    [[ ${#pkgs[@]} -eq 0 ]] && return 0
    [[ $(id -u) -eq 0 ]] || die "missing ${pkgs[*]}: apt-get install ${pkgs[*]} (as root)"
    export DEBIAN_FRONTEND=noninteractive
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    local policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; policy=1
    fi
    timeout 600 apt-get update -qq
    timeout 900 apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
    [[ $policy -eq 1 ]] && rm -f /usr/sbin/policy-rc.d
    [[ -x $SINK && -x $DNSMASQ ]] || die "installed ${pkgs[*]} but $SINK / $DNSMASQ not found"
}
install_missing

WORK=$(mktemp -d "${TMPDIR:-/tmp}/blast-mx.XXXXXX")
SINK_PID=""
DNS_PID=""
stop_sink() {
    if [[ -n $SINK_PID ]]; then kill "$SINK_PID" 2>/dev/null || true; wait "$SINK_PID" 2>/dev/null || true; SINK_PID=""; fi
}
cleanup() {
    stop_sink
    if [[ -n $DNS_PID ]]; then kill "$DNS_PID" 2>/dev/null || true; wait "$DNS_PID" 2>/dev/null || true; fi
    if [[ ${KEEP:-0} == 1 ]]; then log "mx-bench: kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM


# A fresh smtp-sink (fresh counter) on a free loopback port; sets PORT and SINK_PID.
start_sink() {
    local tries
    for tries in $(seq 10); do
        PORT=$(( 20000 + RANDOM % 40000 ))
        port_free "$PORT" || continue
        : > "$WORK/sink.out"
        timeout 7200 "$SINK" -c -u nobody "127.0.0.1:$PORT" 1000 > "$WORK/sink.out" 2> "$WORK/sink.err" &
        SINK_PID=$!
        wait_listening "$SINK_PID" "$PORT" && return 0
        stop_sink
    done
    die "could not start smtp-sink: $(cat "$WORK/sink.err" 2>/dev/null)"
}

# dnsmasq, authoritative for .test: d0.bench.test … d999.bench.test, MX 10 mx.bench.test,
# which is 127.0.0.1 (the sink). Records with TTL 0 (dnsmasq's default): blast keeps them
# for its 60 s floor, so each domain is looked up once per run.
start_dns() {
    local args=() i tries
    # The domains spread over HOSTS MX hosts (sites), as mail to real lists is: many
    # domains behind a few providers' MX hosts.
    for (( i = 0; i < HOSTS; i++ )); do
        args+=("--host-record=mx$i.bench.test,127.0.0.1")
    done
    for (( i = 0; i < DOMAINS; i++ )); do
        args+=("--mx-host=d$i.bench.test,mx$(( i % HOSTS )).bench.test,10")
    done
    for tries in $(seq 10); do
        DNS_PORT=$(( 20000 + RANDOM % 40000 ))
        port_free "$DNS_PORT" || continue
        timeout 7200 "$DNSMASQ" -k --conf-file=/dev/null --no-resolv --no-hosts --pid-file= \
            --listen-address=127.0.0.1 --bind-interfaces --local=/test/ --port="$DNS_PORT" \
            "${args[@]}" > "$WORK/dns.log" 2>&1 &
        DNS_PID=$!
        wait_listening "$DNS_PID" "$DNS_PORT" && return 0
        kill "$DNS_PID" 2>/dev/null || true; wait "$DNS_PID" 2>/dev/null || true; DNS_PID=""
    done
    die "could not start dnsmasq: $(cat "$WORK/dns.log")"
}


if [[ -n ${BLAST:-} ]]; then
    BLAST=$(realpath "$BLAST")
else
    log "mx-bench: cargo build --release"
    timeout 1800 cargo build --release --quiet
    BLAST="$ROOT/target/release/blast"
fi
[[ -x $BLAST ]] || die "no executable $BLAST"

start_dns
log "mx-bench: dnsmasq with $DOMAINS MX records on 127.0.0.1:$DNS_PORT"

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

# One send with the given [lane] transport lines into a fresh sink and state dir; sets
# run_rate.
run() {
    local kind=$1
    rm -rf "$WORK/state"
    start_sink
    local transport
    if [[ $kind == mx ]]; then
        transport=$(printf 'transport = "mx"\nmx_port = %s' "$PORT")
    else
        transport="transport = \"smtp://127.0.0.1:$PORT\""
    fi
    cat > "$WORK/campaign.toml" <<EOF
[campaign]
id = "mx-bench"
from = "Acme News <news@acme.example>"
subject = "Offers for {{first_name}}"
text = "bench.txt.hbs"
lists = ["list.csv"]
state_dir = "state"

[lane]
$transport
source_ip = "127.0.0.1"
helo = "blast.acme.example"
connections = $CONNS
per_domain_connections = $CONNS
starttls = "off"

[dns]
nameservers = ["127.0.0.1:$DNS_PORT"]
EOF
    local t0 t1 rc
    t0=$(now)
    set +e
    timeout 900 ${TIMEV:-} "$BLAST" send "$WORK/campaign.toml" --quiet > "$WORK/blast.out" 2> "$WORK/blast.err"
    rc=$?
    set -e
    t1=$(now)
    sleep 0.3
    local count; count=$(sink_count)
    stop_sink
    [[ $rc -eq 0 ]] || { cat "$WORK/blast.out" "$WORK/blast.err" >&2; die "blast send ($kind) exited with $rc"; }
    [[ "$count" == "$N" ]] || die "sink counted ${count:-nothing} messages ($kind), expected $N"
    if [[ $kind == mx ]]; then
        local lines; lines=$(wc -l < "$WORK/state/mx-bench/accounting.jsonl")
        [[ $lines -eq $N ]] || die "accounting file has $lines lines, expected $N"
    fi
    run_rate=$(rate "$N" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')")
    log "mx-bench: $kind: $run_rate msg/s"
}

: > "$WORK/mx.rates"; : > "$WORK/smtp.rates"
for r in $(seq "$ROUNDS"); do
    run mx; echo "$run_rate" >> "$WORK/mx.rates"
    run smtp; echo "$run_rate" >> "$WORK/smtp.rates"
done
mx_med=$(median < "$WORK/mx.rates"); smtp_med=$(median < "$WORK/smtp.rates")
log "mx-bench: mx rates: $(tr '\n' ' ' < "$WORK/mx.rates")  smtp rates: $(tr '\n' ' ' < "$WORK/smtp.rates")"
log "mx-bench: load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
echo "mx ($DOMAINS domains via dnsmasq): $mx_med msg/s  smtp://: $smtp_med msg/s  ratio mx/smtp: $(awk -v a="$mx_med" -v b="$smtp_med" 'BEGIN { printf "%.3f", a / b }')  ($N messages, $CONNS connections, median of $ROUNDS)"
