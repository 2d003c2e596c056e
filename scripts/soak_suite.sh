#!/usr/bin/env bash
# The suite, N runs in a row on a clean clone of HEAD, while another process keeps one core busy:
#   bash scripts/soak_suite.sh [N=10] [PYTEST_ARGS...]
# Stops at the first failing run. The clone's first run does its own set-up (scripts/dev test),
# as on a fresh machine. Logs: $SOAK_DIR/run-K.log (default a new folder under /tmp).
set -euo pipefail
runs="${1:-10}"
[ $# -gt 0 ] && shift
here="$(cd "$(dirname "$0")/.." && pwd)"
dir="${SOAK_DIR:-$(mktemp -d /tmp/scrapy-gateway-soak.XXXXXX)}"
git clone -q "$here" "$dir/clone"
cd "$dir/clone"
python3 -c 'while True: pass' &  # the busy core
burner=$!
trap 'kill $burner 2>/dev/null || true' EXIT
for run in $(seq 1 "$runs"); do
    start=$(date +%s)
    if bash scripts/dev test -q "$@" >"$dir/run-$run.log" 2>&1; then
        echo "run $run/$runs: $(grep -E "^[0-9]+ passed" "$dir/run-$run.log" | tail -1) ($(( $(date +%s) - start )) s)"
    else
        echo "run $run/$runs FAILED ($(( $(date +%s) - start )) s): see $dir/run-$run.log"
        grep -E "^(FAILED|ERROR)" "$dir/run-$run.log" || true
        exit 1
    fi
done
echo "$runs runs in a row passed at $(git rev-parse --short HEAD), one core kept busy"
