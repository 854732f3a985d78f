#!/bin/sh
# Builds tests/bench/bench_telemetry optimised (-O2, no sanitizers) out of the
# tree and runs it (see bench-model.sh for why by hand). Usage:
# tests/bench/bench-telemetry.sh [label-sets] (default 1000).
set -eu
srcdir=$(cd "$(dirname "$0")/../.." && pwd)
work=${BENCH_TELEMETRY_WORK:-/tmp/bench-telemetry}
rm -rf "$work"
mkdir -p "$work"
printf '#define _GNU_SOURCE 1\n' >"$work/autoconfig.h"
${CC:-cc} -std=gnu11 -O2 -g -DNDEBUG -I"$work" -I"$srcdir/src" \
	"$srcdir/tests/bench/bench_telemetry.c" "$srcdir/src/ltab.c" "$srcdir/src/metrics.c" "$srcdir/src/strbuf.c" \
	-o "$work/bench_telemetry"
exec "$work/bench_telemetry" "$@"
