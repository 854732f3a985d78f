#!/bin/sh
# Builds tests/bench/bench_xtls optimised (-O2, no sanitizers: ASan's
# allocator hides the heap from mallinfo2) by hand, out of the tree, makes
# test certificates (tests/unit/xtls-certs.py, the openssl CLI) and runs it.
# Usage: tests/bench/bench-xtls.sh [pairs] (default 500). Needs cc, libev,
# libssl, python3 and openssl.
set -eu
srcdir=$(cd "$(dirname "$0")/../.." && pwd)
work=${BENCH_XTLS_WORK:-/tmp/bench-xtls}
rm -rf "$work"
mkdir -p "$work"
printf '#define _GNU_SOURCE 1\n' >"$work/autoconfig.h"
${CC:-cc} -std=gnu11 -O2 -g -DNDEBUG -I"$work" -I"$srcdir/src" \
	"$srcdir/tests/bench/bench_xtls.c" "$srcdir/src/xtls.c" "$srcdir/src/xrec.c" "$srcdir/src/conn.c" \
	"$srcdir/src/sock.c" "$srcdir/src/identity.c" "$srcdir/src/metrics.c" "$srcdir/src/strbuf.c" \
	$(pkg-config --cflags --libs libssl libcrypto) -lev -lpthread -o "$work/bench_xtls"
python3 "$srcdir/tests/unit/xtls-certs.py" "$srcdir/tests/lab" "$work/certs"
exec "$work/bench_xtls" "$work/certs" "$@"
