#!/bin/sh
# test_json_pb's goldens are still what a real implementation (Python's
# google.protobuf) makes of their JSON with today's jpbtest.proto; skipped
# (77) where python3-protobuf or protoc is missing.
/usr/bin/python3 -c 'import google.protobuf.json_format' 2>/dev/null || exit 77
command -v protoc >/dev/null 2>&1 || exit 77
exec /usr/bin/python3 "${srcdir:-.}/tests/unit/golden/jpb/make.py" --check
