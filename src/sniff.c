/* sniff: TLS or not, from the first bytes of a connection (a strict,
 * bounds-checked reading of the TLS record layer and of a ClientHello,
 * RFC 8446 §4.1.2 and §5.1, RFC 6066 §3, RFC 7301 §3.1). What it accepts is
 * what a TLS server would go on with; anything else is "not TLS", as Envoy's
 * tls_inspector says tls_not_found for a hello BoringSSL refuses. */
#include "autoconfig.h"

#include <string.h>

#include "sniff.h"

#define REC_HANDSHAKE 0x16
#define REC_MAX 16384		/* TLSPlaintext.length: at most 2^14 */
#define HS_CLIENT_HELLO 1
#define EXT_SNI 0
#define EXT_ALPN 16
/* The smallest ClientHello body: version, random, an empty session id, one
 * cipher suite, one compression method. */
#define HELLO_MIN (2 + 32 + 1 + 2 + 2 + 1 + 1)

/* Istio's allIstioMtlsALPNs (reference/xds-hbone.md §4.2): the values its
 * inbound filter chains match to terminate mTLS. */
static const char *const istio_alpns[] = {
	"istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2",
};

/* A bounds-checked reader: every get fails instead of reading past n. */
struct cur {
	const uint8_t *p;
	size_t n;
};

static bool
get_u8(struct cur *c, unsigned *v)
{
	if (c->n < 1)
		return false;
	*v = c->p[0];
	c->p++, c->n--;
	return true;
}

static bool
get_u16(struct cur *c, unsigned *v)
{
	if (c->n < 2)
		return false;
	*v = (unsigned)c->p[0] << 8 | c->p[1];
	c->p += 2, c->n -= 2;
	return true;
}

/* The next len bytes as a reader of their own. */
static bool
get_sub(struct cur *c, size_t len, struct cur *sub)
{
	if (c->n < len)
		return false;
	sub->p = c->p;
	sub->n = len;
	c->p += len, c->n -= len;
	return true;
}

/* A vector with a 1- or 2-byte length prefix. */
static bool
get_vec(struct cur *c, int prefix, struct cur *sub)
{
	unsigned len;

	if (!(prefix == 1 ? get_u8(c, &len) : get_u16(c, &len)))
		return false;
	return get_sub(c, len, sub);
}

/* server_name (RFC 6066 §3): a list of exactly one host_name, as
 * BoringSSL requires; no NUL inside (a C string would cut it). */
static bool
parse_sni(struct cur ext, struct sniff_hello *h)
{
	struct cur list, name;
	unsigned type;

	if (!get_vec(&ext, 2, &list) || ext.n != 0 || !get_u8(&list, &type) || type != 0 ||
	    !get_vec(&list, 2, &name) || list.n != 0 || name.n == 0 || name.n >= sizeof(h->sni) ||
	    memchr(name.p, 0, name.n))
		return false;
	memcpy(h->sni, name.p, name.n);
	h->sni[name.n] = '\0';
	return true;
}

/* application_layer_protocol_negotiation (RFC 7301 §3.1): a non-empty list
 * of non-empty names. The whole offer is checked for Istio's values; the
 * copy keeps the entries that fit. */
static bool
parse_alpn(struct cur ext, struct sniff_hello *h)
{
	struct cur list, name;

	if (!get_vec(&ext, 2, &list) || ext.n != 0 || list.n == 0)
		return false;
	while (list.n) {
		if (!get_vec(&list, 1, &name) || name.n == 0)
			return false;
		for (size_t i = 0; i < sizeof(istio_alpns) / sizeof(istio_alpns[0]); i++)
			if (strlen(istio_alpns[i]) == name.n && memcmp(istio_alpns[i], name.p, name.n) == 0)
				h->istio = true;
		if (h->alpn_len + 1 + name.n <= sizeof(h->alpn)) {
			h->alpn[h->alpn_len] = (uint8_t)name.n;
			memcpy(h->alpn + h->alpn_len + 1, name.p, name.n);
			h->alpn_len += 1 + name.n;
		}
	}
	return true;
}

/* The ClientHello body (after its 4-byte header), exactly. */
static bool
parse_hello(struct cur c, struct sniff_hello *h)
{
	struct cur v, exts, ext;
	uint8_t seen[65536 / 8];
	unsigned major, x;

	if (!get_u8(&c, &major) || major != 3 || !get_u8(&c, &x) ||	/* legacy_version */
	    !get_sub(&c, 32, &v) ||					/* random */
	    !get_vec(&c, 1, &v) || v.n > 32 ||				/* legacy_session_id */
	    !get_vec(&c, 2, &v) || v.n < 2 || v.n % 2 ||		/* cipher_suites */
	    !get_vec(&c, 1, &v) || v.n < 1)				/* legacy_compression_methods */
		return false;
	if (c.n == 0)
		return true;	/* TLS 1.2 and older may send no extensions at all */
	if (!get_vec(&c, 2, &exts) || c.n != 0)
		return false;
	memset(seen, 0, sizeof(seen));
	while (exts.n) {
		unsigned type;

		if (!get_u16(&exts, &type) || !get_vec(&exts, 2, &ext))
			return false;
		/* Each extension at most once (RFC 8446 §4.2). */
		if (seen[type / 8] & (1u << (type % 8)))
			return false;
		seen[type / 8] |= (uint8_t)(1u << (type % 8));
		if (type == EXT_SNI && !parse_sni(ext, h))
			return false;
		if (type == EXT_ALPN && !parse_alpn(ext, h))
			return false;
	}
	return true;
}

/* A record header at buf (5 bytes there): a handshake record of a sane length. */
static bool
record_ok(const uint8_t *r, size_t *len)
{
	if (r[0] != REC_HANDSHAKE || r[1] != 3 || r[2] > 4)
		return false;
	*len = (size_t)r[3] << 8 | r[4];
	return *len >= 1 && *len <= REC_MAX;
}

static enum sniff_verdict
more(struct sniff_hello *h, size_t need)
{
	if (need > SNIFF_MAX) {
		/* Bigger than we look at: a TLS handshake all the same. */
		memset(h, 0, sizeof(*h));
		h->partial = true;
		return SNIFF_TLS;
	}
	h->need = need;
	return SNIFF_MORE;
}

static enum sniff_verdict
finish(const uint8_t *msg, size_t hslen, struct sniff_hello *h)
{
	struct cur body = { msg + 4, hslen };

	if (!parse_hello(body, h)) {
		memset(h, 0, sizeof(*h));
		return SNIFF_PLAIN;
	}
	return SNIFF_TLS;
}

enum sniff_verdict
sniff_tls(const uint8_t *buf, size_t len, struct sniff_hello *h)
{
	uint8_t msg[SNIFF_MAX];	/* the handshake message, when it spans records */
	size_t reclen, got = 0, off = 0, hslen = 0;

	memset(h, 0, sizeof(*h));
	if (len > SNIFF_MAX)
		len = SNIFF_MAX;
	/* Decide "not TLS" from as few bytes as tell it: a plaintext client
	 * that sent one byte is not kept waiting. */
	if (len < 1)
		return more(h, 1);
	if (buf[0] != REC_HANDSHAKE || (len >= 2 && buf[1] != 3) || (len >= 3 && buf[2] > 4))
		return SNIFF_PLAIN;
	if (len < 5)
		return more(h, 5);
	if (!record_ok(buf, &reclen))
		return SNIFF_PLAIN;
	if (len >= 6 && buf[5] != HS_CLIENT_HELLO)
		return SNIFF_PLAIN;
	if (len >= 9 && reclen >= 4) {	/* the handshake header is in this record */
		hslen = (size_t)buf[6] << 16 | (size_t)buf[7] << 8 | buf[8];
		if (hslen < HELLO_MIN)
			return SNIFF_PLAIN;
		/* The common case: the whole hello in the first record. */
		if (4 + hslen <= reclen)
			return len >= 9 + hslen ? finish(buf + 5, hslen, h) : more(h, 9 + hslen);
	}
	/* The hello goes on in the next records (or its header is not all
	 * here yet): put the handshake bytes together, record by record. */
	while (off + 5 <= len) {
		size_t take;

		if (!record_ok(buf + off, &reclen))
			return SNIFF_PLAIN;	/* no alert or other record may come in between */
		take = reclen < len - off - 5 ? reclen : len - off - 5;
		memcpy(msg + got, buf + off + 5, take);
		got += take;
		if (got >= 4) {
			hslen = (size_t)msg[1] << 16 | (size_t)msg[2] << 8 | msg[3];
			if (msg[0] != HS_CLIENT_HELLO || hslen < HELLO_MIN)
				return SNIFF_PLAIN;
			if (got >= 4 + hslen)
				return finish(msg, hslen, h);
		}
		if (take < reclen) {
			/* This record is cut: wait for the next thing to decide
			 * on (the handshake header, then the hello's end), or the
			 * record's end if that comes first. Never further: a
			 * record longer than we look at must not make a hello
			 * whose header is bad count as TLS. */
			size_t rest = reclen - take, want = got < 4 ? 4 - got : 4 + hslen - got;
			return more(h, len + (want < rest ? want : rest));
		}
		off += 5 + reclen;
	}
	/* At a record boundary: at least the next header. */
	return more(h, off + 5);
}

bool
sniff_alpn_has(const struct sniff_hello *h, const char *proto)
{
	size_t plen = strlen(proto), i = 0;

	while (i < h->alpn_len && i + 1 + h->alpn[i] <= h->alpn_len) {
		if (h->alpn[i] == plen && memcmp(h->alpn + i + 1, proto, plen) == 0)
			return true;
		i += 1 + h->alpn[i];
	}
	return false;
}
