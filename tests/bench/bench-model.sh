#!/bin/sh
# Builds tests/bench/bench_model optimised (-O2, no sanitizers) by hand, out
# of the tree, and runs it: the tree is usually configured in place with
# sanitizers, and an in-tree config.status forbids a second, out-of-tree
# configure. Usage: tests/bench/bench-model.sh [workloads [services]]
# (default 10000 2000). Needs cc, protoc-c, libprotobuf-c and libcjson.
# `bench-model.sh --authz [policies]` builds and runs tests/bench/bench_authz
# instead (the authorization check over the same model code).
set -eu
prog=bench_model
if [ "${1:-}" = --authz ]; then
	prog=bench_authz
	shift
fi
srcdir=$(cd "$(dirname "$0")/../.." && pwd)
work=${BENCH_MODEL_WORK:-/tmp/bench-model}
rm -rf "$work"
mkdir -p "$work/proto"
protoc_c=${PROTOC_C:-protoc-c}
protos=$(cd "$srcdir/src/proto" && find . -name '*.proto' | sort)
(cd "$srcdir/src/proto" && $protoc_c --c_out="$work/proto" -I. $protos)
# The sources need only what configure's AC_USE_SYSTEM_EXTENSIONS gives.
printf '#define _GNU_SOURCE 1\n' >"$work/autoconfig.h"
${CC:-cc} -std=gnu11 -O2 -g -DNDEBUG -I"$work" -I"$srcdir/src" -I"$work/proto" \
	$(pkg-config --cflags libcjson libprotobuf-c 2>/dev/null || echo -I/usr/include/cjson) \
	"$srcdir/tests/bench/$prog.c" "$srcdir/src/model.c" "$srcdir/src/model_eds.c" "$srcdir/src/json_pb.c" \
	"$srcdir/src/json.c" "$srcdir/src/pb.c" "$srcdir/src/strbuf.c" "$srcdir/src/authz.c" \
	"$srcdir/src/identity.c" \
	$(find "$work/proto" -name '*.pb-c.c') \
	-lprotobuf-c -lcjson -lssl -lcrypto -lm -o "$work/$prog"
exec "$work/$prog" "$@"
