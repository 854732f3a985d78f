#!/bin/sh
# Replay every fuzz target's seed corpus (make check, non-fuzzing builds).
srcdir=${srcdir:-.}
for t in config admin init json_pb model grpc cert sds sniff tls xrec ondemand xds hbone authz appscrape; do
	./tests/fuzz/replay_$t "$srcdir"/tests/fuzz/corpus/$t/* || exit 1
done
