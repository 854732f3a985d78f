/* sniff: what the first bytes of an inbound connection are, read with
 * MSG_PEEK so that they still reach whoever takes the connection: a TLS
 * ClientHello (with its SNI and ALPN offer, Envoy's tls_inspector) or
 * anything else (plaintext). Pure functions over a buffer: fuzzed. */
#ifndef OR_SNIFF_H
#define OR_SNIFF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum sniff_verdict {
	SNIFF_MORE,		/* could still be TLS: peek again when more bytes came */
	SNIFF_TLS,		/* a whole, well-formed ClientHello */
	SNIFF_PLAIN,		/* not TLS (or a broken handshake record: not ours to parse) */
};

struct sniff_hello {
	char sni[256];		/* "" when none */
	uint8_t alpn[256];	/* the client's ALPN offer, wire format, truncated to the buffer */
	size_t alpn_len;
	bool istio;		/* the offer has one of Istio's mTLS ALPN values (allIstioMtlsALPNs) */
};

/* The most bytes a verdict may need (a ClientHello of one record, with its
 * header); beyond it the connection is taken as TLS without the details. */
#define SNIFF_MAX 16389

enum sniff_verdict sniff_tls(const uint8_t *buf, size_t len, struct sniff_hello *h);

/* Whether proto is in the ALPN offer h. */
bool sniff_alpn_has(const struct sniff_hello *h, const char *proto);

#endif
