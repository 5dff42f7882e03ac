# Shell helpers shared by the bench scripts. Source it after setting BENCH (the prefix of the
# script's messages): BENCH=mx-bench; source "$ROOT/benches/common/lib.sh"

log() { printf '%s\n' "$*" >&2; }
die() { log "$BENCH: $*"; exit 1; }

# Whether nothing listens on 127.0.0.1:PORT.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_listening PID PORT: succeeds once 127.0.0.1:PORT takes connections; fails when PID has
# exited or after 5 s.
wait_listening() {
    local i
    for i in $(seq 50); do
        kill -0 "$1" 2>/dev/null || return 1
        port_free "$2" || return 0
        sleep 0.1
    done
    return 1
}

# The message count smtp-sink -c last printed to FILE (default $WORK/sink.out).
sink_count() { tr '\r' '\n' < "${1:-$WORK/sink.out}" | grep -Eo 'mesg=[0-9]+' | tail -n1 | cut -d= -f2 || true; }

now() { date +%s.%N; }
# rate N SECONDS: messages per second, rounded.
rate() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%.0f", n / t }'; }
# The median of the numbers on stdin (the mean of the middle two for an even count).
median() { sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.0f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
