#!/bin/sh
# test_xds_store's golden responses are still what a real protobuf
# implementation makes from the REAL Envoy protos (tests/unit/golden/xds/
# make.py --check); skipped (77) where python3-protobuf, protoc or the npm
# package @grpc/grpc-js-xds are missing.
/usr/bin/python3 -c 'import google.protobuf' 2>/dev/null || exit 77
command -v protoc >/dev/null 2>&1 || exit 77
/usr/bin/python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import sds_server; sys.exit(0 if sds_server.envoy_deps() else 1)' \
	"${srcdir:-.}/tests/lab" 2>/dev/null || exit 77
exec /usr/bin/python3 "${srcdir:-.}/tests/unit/golden/xds/make.py" --check
