#!/bin/sh
# Re-record the ClientHello test vectors of test_sniff.c: a listener on
# loopback keeps the first bytes each real client sends (openssl s_client,
# curl), then closes. The vectors hold random bytes and key shares, so a new
# capture differs byte for byte; test_sniff.c checks only what is stable
# (SNI, ALPN offer, the istio flag, the verdict on every cut).
set -eu
cd "$(dirname "$0")"
port=18443
cap() {
	out=$1; shift
	python3 - "$port" "$out" <<'PY' &
import socket, sys
port, out = int(sys.argv[1]), sys.argv[2]
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port)); s.listen(1); s.settimeout(10)
c, _ = s.accept(); c.settimeout(0.7); data = b""
try:
    while len(data) < 20000:
        b = c.recv(65536)
        if not b:
            break
        data += b
except socket.timeout:
    pass
open(out, "wb").write(data); c.close()
PY
	sleep 0.3
	timeout 5 "$@" >/dev/null 2>&1 </dev/null || true
	wait
}
cap openssl-istio.bin openssl s_client -alpn istio -servername x -connect 127.0.0.1:$port
cap openssl-envoy-tcp.bin openssl s_client -alpn istio-peer-exchange,istio \
	-servername outbound_.8080_._.reviews.default.svc.cluster.local -connect 127.0.0.1:$port
cap openssl-istio-http11.bin openssl s_client -alpn istio-http/1.1,istio,http/1.1 \
	-servername 'outbound|8080||reviews.default.svc.cluster.local' -connect 127.0.0.1:$port
cap openssl-tls12-bare.bin openssl s_client -tls1_2 -noservername -connect 127.0.0.1:$port
cap curl-https.bin curl -sk https://localhost:$port/
cap curl-http11.bin curl -sk --http1.1 https://app.example:$port/ --resolve app.example:$port:127.0.0.1
