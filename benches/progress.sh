#!/usr/bin/env bash
# The progress display's cost and redraw rate (issue 15, item 1).
#
# Sends N recipients (N unique addresses in 50 domains) to `blast sink` on
# loopback, ROUNDS times each way, alternating: `blast send --quiet` (no display) and
# `blast send`, both on a pseudo-terminal (`script`, 80 columns), and prints the median wall times,
# their ratio, and the terminal's redraws per second (each redraw starts by moving the cursor
# up over the block and clearing its first line, `ESC[nA CR ESC[2K`: counted in the typescript). Compare in one run, as a ratio: the machine's speed
# varies from day to day.
#
#   N=50000 ROUNDS=3 bash benches/progress.sh          # BLAST=path to bench a given binary
set -euo pipefail
N=${N:-50000}
ROUNDS=${ROUNDS:-3}
BLAST=${BLAST:-$(cd "$(dirname "$0")/.." && pwd)/target/debug/blast}
[[ -x $BLAST ]] || { echo "no blast binary at $BLAST (cargo build, or BLAST=path)" >&2; exit 1; }
command -v script >/dev/null || { echo "needs script(1) (util-linux)" >&2; exit 1; }
tmp=$(mktemp -d)
sink_pid=
cleanup() { [[ -n $sink_pid ]] && kill "$sink_pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BLAST" sink --listen "127.0.0.1:$port" >/dev/null 2>&1 &
sink_pid=$!
sleep 0.5
printf 'Hello {{first_name}}.\n' > "$tmp/t.txt"
python3 - "$tmp/l.csv" "$N" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    f.write("email,first_name\n")
    for i in range(int(sys.argv[2])):
        f.write(f"u{i}@d{i % 50}.example,N{i}\n")
PY
campaign() {
    cat > "$tmp/$1.toml" <<TOML
[campaign]
id = "$1"
from = "news@acme.example"
subject = "Hi {{first_name}}"
text = "t.txt"
lists = ["l.csv"]
state_dir = "state"
[lane]
transport = "smtp://127.0.0.1:$port"
helo = "blast.test"
TOML
}
now() { date +%s.%N; }
quiet=() display=() redraws=()
for r in $(seq "$ROUNDS"); do
    campaign "q$r"; campaign "d$r"
    # Both on the pseudo-terminal, so the only difference is the display.
    t0=$(now)
    script -qfec "stty cols 80 rows 24; $BLAST send $tmp/q$r.toml --quiet" /dev/null >/dev/null
    t1=$(now)
    quiet+=("$(echo "$t1 - $t0" | bc)")
    t0=$(now)
    script -qfec "stty cols 80 rows 24; $BLAST send $tmp/d$r.toml" "$tmp/ts$r" >/dev/null
    t1=$(now)
    w=$(echo "$t1 - $t0" | bc)
    display+=("$w")
    n=$(python3 -c 'import re,sys; print(len(re.findall(rb"\x1b\[\d+A\r\x1b\[2K", open(sys.argv[1],"rb").read())))' "$tmp/ts$r")
    redraws+=("$(echo "scale=1; $n / $w" | bc)")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mq=$(median "${quiet[@]}"); md=$(median "${display[@]}")
echo "N=$N rounds=$ROUNDS  --quiet: ${mq}s  display on a pty: ${md}s  display/quiet: $(echo "scale=3; $md / $mq" | bc)"
echo "redraws per second (each round): ${redraws[*]}   (indicatif is capped at 10/s)"
