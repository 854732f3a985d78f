#!/bin/sh
# Install everything Outrigger needs to build, test, benchmark and demo:
# build dependencies, the test peers (curl, nghttp2 tools, python3-h2, socat,
# tinyproxy, Python's google.protobuf and protoc for the JSON decoder's
# goldens...), and the benchmark contenders (haproxy, nginx). Debian/Ubuntu
# (apt) and Fedora/RHEL (dnf). Idempotent; run as root.
#   packaging/install-deps.sh            everything
#   packaging/install-deps.sh --build    only what the build needs
# The real Envoy API protos the test servers (tests/lab/envoy_protos.py) and
# the protobuf goldens compile come from the npm package @grpc/grpc-js-xds
# (its deps/: envoy-api, xds, googleapis, protoc-gen-validate), installed
# into $OUTRIGGER_TEST_CACHE/npm (default /var/cache/outrigger-test/npm);
# their google/protobuf imports come from libprotobuf-dev (protobuf-devel).
set -eu

GRPC_JS_XDS=1.14.1

scope=${1:-all}

DEB_BUILD="build-essential autoconf automake pkg-config libev-dev libssl-dev libnghttp2-dev
  libnetfilter-queue-dev libcjson-dev libprotobuf-c-dev protobuf-c-compiler libcmocka-dev node-llhttp"
DEB_TEST="iptables nftables iproute2 util-linux procps psmisc curl socat mandoc openssl
  python3 python3-pytest python3-h2 nghttp2-client nghttp2-proxy tinyproxy clang libclang-rt-dev
  haproxy nginx libnginx-mod-stream gnuplot-nox linux-perf strace wrk python3-protobuf protobuf-compiler
  libprotobuf-dev
  python3-grpcio python3-cryptography python3-prometheus-client prometheus"

RPM_BUILD="gcc make autoconf automake pkgconf-pkg-config libev-devel openssl-devel libnghttp2-devel
  libnetfilter_queue-devel cjson-devel protobuf-c-devel protobuf-c-compiler libcmocka-devel llhttp-devel"
RPM_TEST="iptables-nft nftables iproute util-linux procps-ng psmisc curl socat mandoc openssl
  python3 python3-pytest python3-h2 nghttp2 tinyproxy clang compiler-rt haproxy nginx nginx-mod-stream
  gnuplot perf strace python3-protobuf protobuf-compiler protobuf-devel python3-grpcio python3-cryptography"

if [ "$(id -u)" != 0 ]; then
	echo "install-deps.sh: run as root" >&2
	exit 1
fi

if command -v apt-get >/dev/null 2>&1; then
	pkgs=$DEB_BUILD
	[ "$scope" = --build ] || pkgs="$pkgs $DEB_TEST"
	# Node.js (gRPC test control planes, later) may come from elsewhere: only
	# install Debian's when there is none.
	command -v npm >/dev/null 2>&1 || pkgs="$pkgs nodejs npm"
	missing=
	for p in $pkgs; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
	done
	if [ -n "$missing" ]; then
		echo "install-deps.sh: installing:$missing"
		# Packages such as nginx and haproxy must not start system services
		# (they would take ports on this machine): deny starts while installing.
		policy=/usr/sbin/policy-rc.d
		created=
		if [ ! -e "$policy" ]; then
			printf '#!/bin/sh\nexit 101\n' > "$policy"
			chmod +x "$policy"
			created=1
		fi
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		# shellcheck disable=SC2086
		apt-get install -y -qq --no-install-recommends $missing
		[ -z "$created" ] || rm -f "$policy"
	fi
elif command -v dnf >/dev/null 2>&1; then
	pkgs=$RPM_BUILD
	[ "$scope" = --build ] || pkgs="$pkgs $RPM_TEST"
	command -v npm >/dev/null 2>&1 || pkgs="$pkgs nodejs npm"
	# shellcheck disable=SC2086
	dnf install -y -q $pkgs
else
	echo "install-deps.sh: neither apt-get nor dnf found; install by hand:" >&2
	echo "  Debian names: $DEB_BUILD $DEB_TEST" >&2
	exit 1
fi

if [ "$scope" != --build ]; then
	npmdir=${OUTRIGGER_TEST_CACHE:-/var/cache/outrigger-test}/npm
	pkgjson=$npmdir/node_modules/@grpc/grpc-js-xds/package.json
	if ! grep -q "\"version\": \"$GRPC_JS_XDS\"" "$pkgjson" 2>/dev/null; then
		echo "install-deps.sh: npm install @grpc/grpc-js-xds@$GRPC_JS_XDS into $npmdir"
		mkdir -p "$npmdir"
		npm install --prefix "$npmdir" --no-audit --no-fund --ignore-scripts \
			"@grpc/grpc-js-xds@$GRPC_JS_XDS"
	fi
fi
