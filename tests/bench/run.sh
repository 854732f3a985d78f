#!/usr/bin/env bash
# tests/bench/run.sh: the one command behind `make bench` / `make bench-smoke`.
# Installs what the benchmark needs (Debian packages, only when missing), builds an
# optimised Outrigger (-O2 -g, no sanitizers) out of tree from a copy of the source, builds
# the load client and backend, then runs every scenario against every contender
# (tests/bench/orbench.py) and prints where the results are.
#
#   tests/bench/run.sh [--smoke] [orbench.py options...]
#
# Environment: ORBENCH_WORK (default /tmp/orbench) holds the source copy and the build;
# ORBENCH_NO_INSTALL=1 skips apt-get. Must run as root (network namespaces).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
work=${ORBENCH_WORK:-/tmp/orbench}
smoke=0
baseline=${ORBENCH_BASELINE:-}
args=()
while [ $# -gt 0 ]; do
	case "$1" in
	--smoke) smoke=1; args+=("$1") ;;
	--baseline) baseline=${2:?--baseline needs a git ref}; shift ;;
	--baseline=*) baseline=${1#--baseline=} ;;
	*) args+=("$1") ;;
	esac
	shift
done
set -- "${args[@]+"${args[@]}"}"

say() { printf '[orbench] %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
	echo "run.sh: must run as root (the pod lab uses network namespaces)" >&2
	exit 2
fi

# 1. Packages (idempotent: only what is missing). The contenders, the profiler, the plotter.
pkgs="haproxy nginx libnginx-mod-stream gnuplot-nox iptables iproute2 util-linux wrk"
[ "$smoke" = 1 ] || pkgs="$pkgs linux-perf"
missing=
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ] && [ "${ORBENCH_NO_INSTALL:-0}" != 1 ]; then
	say "installing:$missing"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing ||
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing; }
fi
# Installing nginx may start the system service; the benchmark runs its own instances.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active -q nginx 2>/dev/null; then
	systemctl stop nginx || true
fi

# 2. An optimised build out of tree. The checkout may be configured in place by others
# (an in-tree config.status forbids out-of-tree builds), so copy the sources without any
# build products and configure the copy from a separate build directory.
mkdir -p "$work/src" "$work/build" "$work/bin"
say "copying sources to $work/src"
tar -C "$top" -cf - \
	--exclude=.git --exclude='*.o' --exclude='*.a' --exclude=.deps --exclude=.dirstamp \
	--exclude=autom4te.cache --exclude=config.status --exclude=config.log --exclude=Makefile \
	--exclude=autoconfig.h --exclude=stamp-h1 --exclude=./outrigger --exclude=./outrigger-init \
	--exclude='*.log' --exclude='*.trs' --exclude=./build-bench --exclude=./tests/bench/results \
	--exclude='*.pb-c.c' --exclude='*.pb-c.h' --exclude=proto.stamp \
	--exclude=__pycache__ . | tar -C "$work/src" -xf -
if [ ! -x "$work/src/configure" ]; then
	(cd "$work/src" && ./autogen.sh >/dev/null)
fi
if [ ! -f "$work/build/Makefile" ]; then
	say "configuring (CFLAGS='-O2 -g', no sanitizers)"
	(cd "$work/build" && "$work/src/configure" CFLAGS='-O2 -g' >"$work/configure.log" 2>&1) || {
		tail -30 "$work/configure.log" >&2; exit 1; }
fi
say "building outrigger"
make -C "$work/build" -j"$(nproc)" outrigger >"$work/build.log" 2>&1 || { tail -40 "$work/build.log" >&2; exit 1; }
cp "$work/build/outrigger" "$work/bin/outrigger"
# outrigger-init is used when it builds; otherwise the harness installs the same rules itself.
if make -C "$work/build" -j"$(nproc)" outrigger-init >"$work/build-init.log" 2>&1 && [ -x "$work/build/outrigger-init" ]; then
	cp "$work/build/outrigger-init" "$work/bin/outrigger-init"
	export OUTRIGGER_INIT_BIN="$work/bin/outrigger-init"
else
	rm -f "$work/bin/outrigger-init"
	unset OUTRIGGER_INIT_BIN
	say "outrigger-init not built: capture rules from the istio-iptables golden set instead"
fi
# The baseline ("outrigger-prev"): the same build of an earlier commit, for a change's
# before/after in one run. Built from `git archive REF`, in its own source and build trees.
rm -f "$work/bin/outrigger-prev"
if [ -n "$baseline" ]; then
	rev=$(git -C "$top" rev-parse --short "$baseline^{commit}") || { echo "run.sh: --baseline $baseline: not a commit" >&2; exit 2; }
	say "building the baseline outrigger from $baseline ($rev)"
	rm -rf "$work/prev-src" "$work/prev-build"
	mkdir -p "$work/prev-src" "$work/prev-build"
	git -C "$top" archive "$rev" | tar -C "$work/prev-src" -xf -
	(cd "$work/prev-src" && ./autogen.sh >/dev/null 2>&1 &&
		cd "$work/prev-build" && "$work/prev-src/configure" CFLAGS='-O2 -g' >"$work/prev-configure.log" 2>&1 &&
		make -j"$(nproc)" outrigger >"$work/prev-build.log" 2>&1) || {
		tail -30 "$work/prev-build.log" "$work/prev-configure.log" >&2 2>/dev/null; exit 1; }
	cp "$work/prev-build/outrigger" "$work/bin/outrigger-prev"
	ref="$baseline"; [ "${rev#"$baseline"}" = "$rev" ] && [ "${baseline#"$rev"}" = "$baseline" ] && ref="$baseline, $rev"
	export ORBENCH_BASELINE_REF="$ref"
fi
for prog in orbench-load orbench-server; do
	cc -std=gnu11 -O2 -g -Wall -Wextra -o "$work/bin/$prog" "$here/$prog.c"
done
chmod 755 "$work" "$work/bin" "$work/bin/"*

# The on-demand scaling scenario (issue 10) has a lab and a control plane of its own
# (tests/bench/ondemand.py), not the contenders' topology: `--scenarios ondemand` runs it
# alone, at 1k, 10k and 100k workloads (a smoke run: 1k only).
ondemand=0
prev=
for a in "$@"; do
	[ "$prev" = --scenarios ] && [ "$a" = ondemand ] && ondemand=1
	[ "$a" = --scenarios=ondemand ] && ondemand=1
	prev=$a
done
od_args=()
[ "$smoke" = 1 ] && od_args=(--sizes 1000 --out "$work/results/ondemand")
[ -n "${ORBENCH_ONDEMAND_SIZES:-}" ] && od_args+=(--sizes "$ORBENCH_ONDEMAND_SIZES")
[ -n "${ORBENCH_REPEAT:-}" ] && od_args+=(--repeat "$ORBENCH_REPEAT")
if [ "$ondemand" = 1 ]; then
	say "on-demand scaling scenario"
	export PYTHONDONTWRITEBYTECODE=1
	exec timeout 3600 /usr/bin/python3 "$here/ondemand.py" --bins "$work/bin" "${od_args[@]}"
fi

# The control-plane push end to end (issue 10): tests/bench/xdspush.py, a lab pod with
# tests/lab/xds_server.py pushing 10,000 workloads and 2,000 services, then one at a time,
# to a running sidecar (the xds_apply_us gauge and VmRSS). `--scenarios xdspush` runs it
# alone (a smoke run: 1,000 workloads, 3 incremental pushes).
xdspush=0
prev=
for a in "$@"; do
	[ "$prev" = --scenarios ] && [ "$a" = xdspush ] && xdspush=1
	[ "$a" = --scenarios=xdspush ] && xdspush=1
	prev=$a
done
xp_args=()
[ "$smoke" = 1 ] && xp_args=(--workloads 1000 --incremental 3 --out "$work/results/xdspush")
[ -n "${ORBENCH_REPEAT:-}" ] && xp_args+=(--repeat "$ORBENCH_REPEAT")
if [ "$xdspush" = 1 ]; then
	say "control-plane push scenario"
	export PYTHONDONTWRITEBYTECODE=1
	exec timeout 1800 /usr/bin/python3 "$here/xdspush.py" --bins "$work/bin" "${xp_args[@]}"
fi

# The model's build benchmark (10,000 workloads, 2,000 services; a smoke run a tenth of
# that): its figures go into the report beside the data-path scenarios.
model_args=()
if [ "$smoke" = 1 ]; then nm="1000 200"; else nm="10000 2000"; fi
say "model build benchmark ($nm)"
if BENCH_MODEL_WORK="$work/bench-model" sh "$here/bench-model.sh" $nm >"$work/model-bench.txt" 2>&1; then
	model_args=(--model-bench "$work/model-bench.txt")
else
	tail -20 "$work/model-bench.txt" >&2
	exit 1
fi

# The authorization check's cost per connection (issue 12: 100 policies bound to the
# workload; bench_authz over the same model code): into the report beside the mtls pairs.
say "authorization check benchmark (100 policies)"
if BENCH_MODEL_WORK="$work/bench-authz" sh "$here/bench-model.sh" --authz 100 >"$work/authz-bench.txt" 2>&1; then
	model_args+=(--authz-bench "$work/authz-bench.txt")
else
	tail -20 "$work/authz-bench.txt" >&2
	exit 1
fi

# 3. Run.
profile=${ORBENCH_PROFILE-outrigger,haproxy}
syscalls=${ORBENCH_SYSCALLS-outrigger,outrigger-prev,haproxy}
[ "$smoke" = 1 ] && profile= && syscalls=
export PYTHONDONTWRITEBYTECODE=1
say "running ($( [ "$smoke" = 1 ] && echo smoke || echo full ))"
# A smoke run's results are scratch (CI): keep them out of the source tree.
results=()
[ "$smoke" = 1 ] && results=(--results "$work/results")
rc=0
/usr/bin/python3 "$here/orbench.py" --bins "$work/bin" --workdir "$work/run" \
	--profile "$profile" --syscalls "$syscalls" "${results[@]}" "${model_args[@]}" "$@" || rc=$?
# A run of every scenario (no --scenarios) also runs the two xDS scenarios (issue 10),
# which have labs of their own: on-demand scaling, then the control-plane push.
all=1
for a in "$@"; do case $a in --scenarios|--scenarios=*) all=0 ;; esac; done
if [ "$all" = 1 ]; then
	say "on-demand scaling scenario"
	timeout 3600 /usr/bin/python3 "$here/ondemand.py" --bins "$work/bin" "${od_args[@]}" || rc=$?
	say "control-plane push scenario"
	timeout 1800 /usr/bin/python3 "$here/xdspush.py" --bins "$work/bin" "${xp_args[@]}" || rc=$?
fi
exit $rc
