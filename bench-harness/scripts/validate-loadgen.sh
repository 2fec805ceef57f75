#!/usr/bin/env bash
# Validates shardgate-loadgen against wrk (closed-loop max throughput, within 10%) and oha
# (open-loop percentiles with --latency-correction) on the same target: the mock provider.
#
#   bench-harness/scripts/validate-loadgen.sh [rounds] [seconds]
#
# Installs wrk (Debian) and oha (crates.io, into ~/.cache/shardgate-tools) when missing: this
# is a check for people, not for CI. Writes results/<date>-loadgen-validation/.
set -euo pipefail
ROUNDS=${1:-5}
SECS=${2:-8}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=$ROOT/target/release
DATE=$(date -u +%F)
OUT=$ROOT/results/$DATE-loadgen-validation
mkdir -p "$OUT/raw"
TOOLS=${HOME}/.cache/shardgate-tools
command -v wrk >/dev/null || apt-get install -y wrk >/dev/null
OHA=$(command -v oha || echo "$TOOLS/bin/oha")
[ -x "$OHA" ] || cargo install oha --locked --root "$TOOLS"
[ -x "$BIN/shardgate-loadgen" ] || cargo build --release --bins --manifest-path "$ROOT/Cargo.toml"

PORT=19400
URL=http://127.0.0.1:$PORT/v1/chat/completions
BODY='{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":16}'
LUA=$(mktemp); trap 'kill $(jobs -p) 2>/dev/null || true; rm -f "$LUA"' EXIT
cat > "$LUA" <<L
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.body = '$BODY'
L
taskset -c 1 "$BIN/shardgate-mock" --listen 127.0.0.1:$PORT --shards 1 --driver epoll 2>/dev/null &
sleep 0.5

echo "# $(date -u +%FT%TZ) $(uname -r); mock on core 1, load generators on core 0" | tee "$OUT/raw/log.txt"
# Closed loop: alternate wrk and loadgen, 64 connections, one thread each.
for r in $(seq "$ROUNDS"); do
  w=$(taskset -c 0 wrk -t1 -c64 -d"${SECS}s" -s "$LUA" "$URL" | awk '/Requests\/sec/{print $2}')
  l=$(taskset -c 0 "$BIN/shardgate-loadgen" "$URL" -b "$BODY" -c 64 -d "${SECS}s" --warmup 1s --cores 0 --quiet --json - | python3 -c 'import json,sys; print(json.load(sys.stdin)["ok_rate"])')
  echo "closed round=$r wrk=$w loadgen=$l" | tee -a "$OUT/raw/log.txt"
done
# Open loop at fixed rates: oha --latency-correction against loadgen, alternating.
for rate in 1000 5000; do
  for r in $(seq "$ROUNDS"); do
    taskset -c 0 "$OHA" -q "$rate" -z "${SECS}s" -c 64 --latency-correction --no-tui --output-format json \
      -m POST -d "$BODY" -H 'content-type: application/json' "$URL" > "$OUT/raw/oha-$rate-$r.json"
    taskset -c 0 "$BIN/shardgate-loadgen" "$URL" -b "$BODY" -r "$rate" -c 64 -d "${SECS}s" --warmup 1s --cores 0 --quiet \
      --json "$OUT/raw/loadgen-$rate-$r.json"
    echo "open rate=$rate round=$r done" | tee -a "$OUT/raw/log.txt"
  done
done

python3 - "$OUT" "$ROUNDS" "$SECS" <<'PY'
import json, statistics, sys, re, pathlib
out, rounds, secs = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
log = (out / "raw/log.txt").read_text()
closed = [(float(w), float(l)) for w, l in re.findall(r"closed round=\d+ wrk=([\d.]+) loadgen=([\d.]+)", log)]
wrk_m = statistics.median(w for w, _ in closed); lg_m = statistics.median(l for _, l in closed)
lines = [
    f"# shardgate-loadgen validation ({out.name[:10]})", "",
    "Command: `bench-harness/scripts/validate-loadgen.sh " + f"{rounds} {secs}`" + " (mock provider on core 1, each load generator on core 0, alternating rounds).", "",
    "## Closed loop: max throughput against wrk (64 connections, one thread)", "",
    "| round | wrk req/s | shardgate-loadgen req/s | ratio |", "|---|---|---|---|",
]
for i, (w, l) in enumerate(closed, 1):
    lines.append(f"| {i} | {w:,.0f} | {l:,.0f} | {l / w:.3f} |")
ratio = lg_m / wrk_m
lines += ["", f"Medians: wrk {wrk_m:,.0f}, shardgate-loadgen {lg_m:,.0f}: ratio **{ratio:.3f}** "
          f"({'within' if abs(ratio - 1) <= 0.10 else 'OUTSIDE'} the 10% agreement asked for).", ""]
lines += ["## Open loop: percentiles against oha --latency-correction", "",
          "Both measure latency from each request's intended send time. Medians over the rounds, microseconds.", "",
          "| rate | percentile | oha | shardgate-loadgen | difference |", "|---|---|---|---|---|"]
verdicts = []
for rate in (1000, 5000):
    oha = [json.loads((out / f"raw/oha-{rate}-{r}.json").read_text()) for r in range(1, rounds + 1)]
    lg = [json.loads((out / f"raw/loadgen-{rate}-{r}.json").read_text()) for r in range(1, rounds + 1)]
    for p, ok, lk in (("p50", "p50", "p50"), ("p90", "p90", "p90"), ("p99", "p99", "p99")):
        o = statistics.median(x["latencyPercentiles"][ok] * 1e6 for x in oha)
        l = statistics.median(x["latency_us"][lk] for x in lg)
        verdicts.append((rate, p, o, l))
        lines.append(f"| {rate} | {p} | {o:,.0f} | {l:,.0f} | {l - o:+,.0f} µs ({(l - o) / o * 100:+.0f}%) |")
lines += ["", "oha's achieved rates: " + ", ".join(f"{rate}: " + ", ".join(f"{json.loads((out / f'raw/oha-{rate}-{r}.json').read_text())['summary']['requestsPerSec']:.0f}" for r in range(1, rounds + 1)) for rate in (1000, 5000)), ""]
(out / "README.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
