#!/bin/sh
# Builds tests/bench/bench_hbone optimised (-O2, no sanitizers: ASan's
# allocator hides the heap from mallinfo2) by hand, out of the tree, and
# runs it: heap per idle HBONE stream, each side. Usage:
# tests/bench/bench-hbone.sh [streams per session (100)] [sessions (10)].
# Needs cc, libev, libnghttp2.
set -eu
srcdir=$(cd "$(dirname "$0")/../.." && pwd)
work=${BENCH_HBONE_WORK:-/tmp/bench-hbone}
rm -rf "$work"
mkdir -p "$work"
printf '#define _GNU_SOURCE 1\n' >"$work/autoconfig.h"
${CC:-cc} -std=gnu11 -O2 -g -DNDEBUG -I"$work" -I"$srcdir/src" \
	"$srcdir/tests/bench/bench_hbone.c" "$srcdir/src/h2s.c" "$srcdir/src/pool.c" "$srcdir/src/conn.c" "$srcdir/src/sock.c" \
	$(pkg-config --cflags --libs libnghttp2) -lev -lpthread -o "$work/bench_hbone"
exec "$work/bench_hbone" "$@"
