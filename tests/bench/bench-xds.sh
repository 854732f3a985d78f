#!/bin/sh
# Builds tests/bench/bench_xds optimised (-O2 -g, no sanitizers) out of the
# tree and runs it: a copy of the sources without build products (the tree
# is usually configured in place, with sanitizers, which forbids a second
# configure), configured in $BENCH_XDS_WORK (default /tmp/bench-xds).
# Usage: tests/bench/bench-xds.sh [workloads [services [workers]]]
# (default 10000 2000 2). BENCH_XDS_REPEAT=N runs it N times.
set -eu
srcdir=$(cd "$(dirname "$0")/../.." && pwd)
work=${BENCH_XDS_WORK:-/tmp/bench-xds}
mkdir -p "$work/src" "$work/build"
tar -C "$srcdir" -cf - \
	--exclude=.git --exclude='*.o' --exclude='*.a' --exclude=.deps --exclude=.dirstamp \
	--exclude=autom4te.cache --exclude=config.status --exclude=config.log --exclude=Makefile \
	--exclude=autoconfig.h --exclude=stamp-h1 --exclude=./outrigger --exclude=./outrigger-init \
	--exclude='*.log' --exclude='*.trs' --exclude=./tests/bench/results \
	--exclude='*.pb-c.c' --exclude='*.pb-c.h' --exclude=proto.stamp \
	--exclude=__pycache__ . | tar -C "$work/src" -xf -
[ -x "$work/src/configure" ] || (cd "$work/src" && ./autogen.sh >/dev/null)
if [ ! -f "$work/build/Makefile" ]; then
	(cd "$work/build" && "$work/src/configure" CFLAGS='-O2 -g' >"$work/configure.log" 2>&1) || {
		tail -30 "$work/configure.log" >&2; exit 1; }
fi
make -C "$work/build" -j2 tests/bench/bench_xds >"$work/build.log" 2>&1 || { tail -40 "$work/build.log" >&2; exit 1; }
n=${BENCH_XDS_REPEAT:-1}
while [ "$n" -gt 0 ]; do
	"$work/build/tests/bench/bench_xds" "$@"
	n=$((n - 1))
done
