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
	uint8_t alpn[256];	/* the client's ALPN offer, wire format: the whole
				 * entries that fit (an entry is never cut) */
	size_t alpn_len;
	bool istio;		/* the offer has one of Istio's mTLS ALPN values
				 * (allIstioMtlsALPNs), wherever it is in the offer */
	bool partial;		/* SNIFF_TLS from a hello larger than SNIFF_MAX:
				 * a TLS handshake, details unknown (istio false) */
	size_t need;		/* SNIFF_MORE: the input length the next step
				 * needs (at most SNIFF_MAX); 0 otherwise */
};

/* The most bytes a verdict may need (a ClientHello of one record, with its
 * header); beyond it the connection is taken as TLS without the details
 * (partial). A ClientHello split over several records (TLS allows it) is
 * put together as long as the records fit in these bytes. */
#define SNIFF_MAX 16389

/* The verdict on the first len bytes of a connection. h is filled for
 * SNIFF_TLS (and its need for SNIFF_MORE). Never reads past buf[len - 1];
 * len above SNIFF_MAX is treated as SNIFF_MAX. */
enum sniff_verdict sniff_tls(const uint8_t *buf, size_t len, struct sniff_hello *h);

/* Whether proto is in the ALPN offer h. */
bool sniff_alpn_has(const struct sniff_hello *h, const char *proto);

#endif
