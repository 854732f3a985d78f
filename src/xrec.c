/* xrec: the TLS 1.3 record layer of an established conn (RFC 8446 §5,
 * §4.6, §7.1-7.3), after OpenSSL's handshake. See xrec.h. */
#include "autoconfig.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "xrec.h"

#define HDR 5			/* type, legacy version, length */
#define TAG 16			/* the AEAD tag, all three suites */
#define MAX_CT (XREC_MAX_PLAIN + 256)	/* a record's length field at most */
#define RB_CAP (HDR + MAX_CT)		/* one record whole, or the start of several */
#define KU_REC (HDR + 4 + 1 + 1 + TAG)	/* a KeyUpdate record */
#define DATA_REC (HDR + XREC_MAX_PLAIN + 1 + TAG)

/* RFC 8446 §6 alert descriptions we send or name. */
enum {
	AL_CLOSE_NOTIFY = 0, AL_UNEXPECTED_MESSAGE = 10, AL_BAD_RECORD_MAC = 20,
	AL_RECORD_OVERFLOW = 22, AL_ILLEGAL_PARAMETER = 47, AL_DECODE_ERROR = 50,
	AL_INTERNAL_ERROR = 80, AL_USER_CANCELED = 90,
};

/* Records under one key before we send a KeyUpdate (§5.5: AES-GCM is good
 * for 2^24.5 full records; half of that, and ChaCha20 shares it). */
static uint64_t ku_records = (uint64_t)1 << 23;

void
xrec_set_ku_records(uint64_t n)
{
	ku_records = n ? n : (uint64_t)1 << 23;
}

static const struct suite {
	uint16_t id;
	const char *cipher, *md;
	size_t keylen, hlen;
} suites[] = {
	{ 0x1301, "AES-128-GCM", "SHA256", 16, 32 },
	{ 0x1302, "AES-256-GCM", "SHA384", 32, 48 },
	{ 0x1303, "ChaCha20-Poly1305", "SHA256", 32, 32 },
};
#define NSUITES (sizeof(suites) / sizeof(suites[0]))

/* Fetched once: an implicit fetch per record or per key would cost a
 * lookup in the provider store each time. */
static EVP_CIPHER *ciphers[NSUITES];
static EVP_MD *mds[NSUITES];
static pthread_once_t fetch_once = PTHREAD_ONCE_INIT;

static void
fetch_all(void)
{
	for (size_t i = 0; i < NSUITES; i++) {
		ciphers[i] = EVP_CIPHER_fetch(NULL, suites[i].cipher, NULL);
		mds[i] = EVP_MD_fetch(NULL, suites[i].md, NULL);
	}
}

struct xdir {
	EVP_CIPHER_CTX *aead;
	uint8_t secret[XREC_MAX_SECRET];
	uint8_t iv[12];
	uint64_t seq;		/* the next record's sequence number */
	unsigned updates;	/* KeyUpdates under which this direction rotated */
};

struct xrec {
	int fd;
	unsigned si;		/* suites[si] */
	struct xdir rd, wr;
	/* Receive: rb holds [0, rend) of what the socket gave; [roff, rend)
	 * is not opened yet; [poff, poff + plen) is the opened data record's
	 * content not yet read. rb exists only while it holds bytes. */
	uint8_t *rb;
	uint32_t roff, rend, poff, plen;
	uint8_t hs_hdr[4], hs_have;	/* a post-handshake message's header so far */
	uint32_t hs_skip;		/* bytes of a NewSessionTicket still to skip */
	bool ku_body;		/* a KeyUpdate's header ended the last record */
	bool server;		/* we are: no ticket comes to us */
	uint8_t quiet;		/* records in a row with no data for the reader */
	bool eof;		/* close_notify or a FIN between records */
	bool told;		/* recv has returned the end or the failure */
	bool ku_owed;		/* the peer asked for our KeyUpdate */
	bool shut;		/* close_notify (or a fatal alert) sealed: nothing after */
	int err;		/* sticky -errno */
	char detail[64];
	/* Send: wb[woff, wlen) sealed but not taken by the socket; wpt the
	 * data bytes it carries (reported once it is flushed). */
	uint8_t *wb;
	uint32_t woff, wlen;
	size_t wpt;
};

/* Where a record is sealed before the socket takes it: held records are
 * copied out, so a conn owns no send buffer unless the socket is full. */
static __thread uint8_t scratch[KU_REC + DATA_REC];

static int fail(struct xrec *r, int err, int alert, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* --- keys -------------------------------------------------------------------- */

/* HKDF-Expand-Label(secret, label, "", len) (§7.1) for len <= the hash
 * length: HKDF-Expand's first block, one HMAC. */
static int
expand_label(struct xrec *r, const uint8_t *secret, const char *label, uint8_t *out, size_t len)
{
	uint8_t info[2 + 1 + 6 + 16 + 1 + 1], t[EVP_MAX_MD_SIZE];
	size_t ll = strlen(label), n = 0;
	unsigned tl = 0;

	info[n++] = (uint8_t)(len >> 8);
	info[n++] = (uint8_t)len;
	info[n++] = (uint8_t)(6 + ll);
	memcpy(info + n, "tls13 ", 6);
	n += 6;
	memcpy(info + n, label, ll);
	n += ll;
	info[n++] = 0;		/* an empty context */
	info[n++] = 1;		/* T(1) */
	if (!HMAC(mds[r->si], secret, (int)suites[r->si].hlen, info, n, t, &tl) || tl < len)
		return -1;
	memcpy(out, t, len);
	OPENSSL_cleanse(t, sizeof(t));
	return 0;
}

/* The key and IV of d's current secret, into its AEAD context. */
static int
dir_keys(struct xrec *r, struct xdir *d, int enc)
{
	uint8_t key[32];
	int rc = -1;

	if (expand_label(r, d->secret, "key", key, suites[r->si].keylen) == 0 &&
	    expand_label(r, d->secret, "iv", d->iv, sizeof(d->iv)) == 0 &&
	    EVP_CipherInit_ex(d->aead, ciphers[r->si], NULL, key, NULL, enc) == 1)
		rc = 0;
	OPENSSL_cleanse(key, sizeof(key));
	d->seq = 0;
	return rc;
}

/* KeyUpdate (§7.2): the next secret, its keys, sequence numbers from 0. */
static int
dir_update(struct xrec *r, struct xdir *d, int enc)
{
	uint8_t next[XREC_MAX_SECRET];
	size_t hlen = suites[r->si].hlen;

	if (expand_label(r, d->secret, "traffic upd", next, hlen) < 0)
		return -1;
	memcpy(d->secret, next, hlen);
	OPENSSL_cleanse(next, sizeof(next));
	d->updates++;
	return dir_keys(r, d, enc);
}

/* §5.3: the IV xor the sequence number, left-padded to its length. */
static void
nonce_of(const struct xdir *d, uint8_t nonce[12])
{
	memcpy(nonce, d->iv, 12);
	for (int i = 0; i < 8; i++)
		nonce[4 + i] ^= (uint8_t)(d->seq >> (56 - 8 * i));
}

struct xrec *
xrec_new(int fd, bool server, uint16_t suite, const uint8_t *rd_secret, const uint8_t *wr_secret,
    size_t hlen, uint64_t rd_seq, uint64_t wr_seq)
{
	struct xrec *r;
	unsigned si;

	pthread_once(&fetch_once, fetch_all);
	for (si = 0; si < NSUITES && suites[si].id != suite; si++)
		;
	if (si == NSUITES || hlen != suites[si].hlen || !ciphers[si] || !mds[si] || !(r = calloc(1, sizeof(*r))))
		return NULL;
	r->fd = fd;
	r->server = server;
	r->si = si;
	memcpy(r->rd.secret, rd_secret, hlen);
	memcpy(r->wr.secret, wr_secret, hlen);
	if (!(r->rd.aead = EVP_CIPHER_CTX_new()) || !(r->wr.aead = EVP_CIPHER_CTX_new()) ||
	    dir_keys(r, &r->rd, 0) < 0 || dir_keys(r, &r->wr, 1) < 0) {
		xrec_free(r);
		return NULL;
	}
	r->rd.seq = rd_seq;
	r->wr.seq = wr_seq;
	return r;
}

void
xrec_free(struct xrec *r)
{
	if (!r)
		return;
	EVP_CIPHER_CTX_free(r->rd.aead);
	EVP_CIPHER_CTX_free(r->wr.aead);
	free(r->rb);
	free(r->wb);
	OPENSSL_cleanse(r, sizeof(*r));
	free(r);
}

/* --- records ------------------------------------------------------------------ */

/* Seals content type `type` with n bytes of pt into out (n + 22 bytes, no
 * padding): the record's length, or -1. */
static int
seal(struct xrec *r, uint8_t type, const void *pt, size_t n, uint8_t *out)
{
	struct xdir *d = &r->wr;
	size_t clen = n + 1 + TAG;
	uint8_t nonce[12];
	int l;

	out[0] = 23;		/* application_data, as every protected record */
	out[1] = 3;
	out[2] = 3;
	out[3] = (uint8_t)(clen >> 8);
	out[4] = (uint8_t)clen;
	if (n)
		memcpy(out + HDR, pt, n);
	out[HDR + n] = type;
	nonce_of(d, nonce);
	if (EVP_EncryptInit_ex(d->aead, NULL, NULL, NULL, nonce) != 1 ||
	    EVP_EncryptUpdate(d->aead, NULL, &l, out, HDR) != 1 ||
	    EVP_EncryptUpdate(d->aead, out + HDR, &l, out + HDR, (int)(n + 1)) != 1 || (size_t)l != n + 1 ||
	    EVP_EncryptFinal_ex(d->aead, out + HDR + n + 1, &l) != 1 ||
	    EVP_CIPHER_CTX_ctrl(d->aead, EVP_CTRL_AEAD_GET_TAG, TAG, out + HDR + n + 1) != 1)
		return -1;
	d->seq++;
	return (int)(HDR + clen);
}

/* Best effort, once: a fatal alert before we give up on the conn (nothing
 * is sent after it, and never into the middle of a held record). */
static void
send_alert(struct xrec *r, int desc)
{
	uint8_t a[2] = { 2, (uint8_t)desc }, rec[HDR + 2 + 1 + TAG];
	int n;

	if (r->shut || r->wb)
		return;
	r->shut = true;
	if ((n = seal(r, 21, a, sizeof(a), rec)) > 0)
		(void)send(r->fd, rec, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
}

static int
fail(struct xrec *r, int err, int alert, const char *fmt, ...)
{
	va_list ap;

	if (r->err)
		return r->err;
	r->err = err;
	va_start(ap, fmt);
	vsnprintf(r->detail, sizeof(r->detail), fmt, ap);
	va_end(ap);
	if (alert >= 0)
		send_alert(r, alert);
	return err;
}

/* A KeyUpdate's body p[0], the last byte of its record (§5.1: a key
 * change ends a record): the read key moves on. */
static int
rx_key_update(struct xrec *r, const uint8_t *p, size_t n)
{
	if (n != 1)
		return fail(r, -EPROTO, AL_UNEXPECTED_MESSAGE, "KeyUpdate not at the end of its record");
	if (p[0] > 1)
		return fail(r, -EPROTO, AL_ILLEGAL_PARAMETER, "KeyUpdate request %u", p[0]);
	if (p[0] == 1)
		r->ku_owed = true;
	if (dir_update(r, &r->rd, 0) < 0)
		return fail(r, -EPROTO, AL_INTERNAL_ERROR, "KeyUpdate: key derivation");
	return 0;
}

/* OpenSSL's bound on a TLS 1.3 ticket message, about. */
#define MAX_TICKET (128 * 1024)

/* Post-handshake messages (§4.6), in the content of one record: tickets
 * (to a client) are skipped (we resume through OpenSSL's sessions only,
 * taken before the hand-over), a KeyUpdate rotates the read key; a message
 * may span records, but a KeyUpdate must end its record (§5.1). */
static int
rx_handshake(struct xrec *r, const uint8_t *p, size_t n)
{
	if (n == 0)
		return fail(r, -EPROTO, AL_UNEXPECTED_MESSAGE, "empty handshake record");
	if (r->ku_body) {
		r->ku_body = false;
		return rx_key_update(r, p, n);
	}
	while (n) {
		uint32_t mlen;
		uint8_t type;

		if (r->hs_skip) {
			size_t k = n < r->hs_skip ? n : r->hs_skip;
			p += k;
			n -= k;
			r->hs_skip -= (uint32_t)k;
			continue;
		}
		while (r->hs_have < 4 && n) {
			r->hs_hdr[r->hs_have++] = *p++;
			n--;
		}
		if (r->hs_have < 4)
			break;
		r->hs_have = 0;
		type = r->hs_hdr[0];
		mlen = (uint32_t)r->hs_hdr[1] << 16 | (uint32_t)r->hs_hdr[2] << 8 | r->hs_hdr[3];
		if (type == 4 && !r->server) {	/* NewSessionTicket */
			if (mlen > MAX_TICKET)
				return fail(r, -EPROTO, AL_DECODE_ERROR, "ticket of %u bytes", mlen);
			r->hs_skip = mlen;
			continue;
		}
		if (type != 24)
			return fail(r, -EPROTO, AL_UNEXPECTED_MESSAGE, "post-handshake message %u", type);
		if (mlen != 1)
			return fail(r, -EPROTO, AL_DECODE_ERROR, "KeyUpdate of %u bytes", mlen);
		if (n == 0) {
			r->ku_body = true;	/* in the next record, alone */
			return 0;
		}
		return rx_key_update(r, p, n);
	}
	return 0;
}

/* What one opened record says: its content at p (n bytes, in rb). */
static int
rx_record(struct xrec *r, uint8_t type, uint8_t *p, size_t n)
{
	if (type != 22 && (r->hs_have || r->hs_skip || r->ku_body))
		return fail(r, -EPROTO, AL_UNEXPECTED_MESSAGE, "record of type %u inside a handshake message", type);
	/* Records that give the reader nothing (empty data, tickets, KeyUpdates,
	 * user_canceled) are bounded in a row, as OpenSSL bounds empty ones: a
	 * peer must not hold the worker in one read. */
	if ((type != 23 || n == 0) && ++r->quiet > 32)
		return fail(r, -EPROTO, AL_UNEXPECTED_MESSAGE, "32 records in a row without data");
	switch (type) {
	case 23:
		r->poff = (uint32_t)(p - r->rb);
		r->plen = (uint32_t)n;	/* 0: an empty data record, allowed */
		if (n)
			r->quiet = 0;
		return 0;
	case 21:
		if (n != 2)
			return fail(r, -EPROTO, AL_DECODE_ERROR, "alert of %zu bytes", n);
		if (p[1] == AL_CLOSE_NOTIFY)
			r->eof = true;
		else if (p[1] != AL_USER_CANCELED)	/* a close_notify follows it */
			return fail(r, -EPROTO, -1, "TLS alert %u from the peer", p[1]);
		return 0;
	case 22:
		return rx_handshake(r, p, n);
	default:
		return fail(r, -EPROTO, AL_UNEXPECTED_MESSAGE, "inner content type %u", type);
	}
}

/* Opens the record at h (length field clen, whole in rb) in place. */
static int
rx_open(struct xrec *r, uint8_t *h, size_t clen)
{
	struct xdir *d = &r->rd;
	uint8_t nonce[12], *ct = h + HDR;
	size_t n = clen - TAG;
	int l;

	nonce_of(d, nonce);
	if (EVP_DecryptInit_ex(d->aead, NULL, NULL, NULL, nonce) != 1 ||
	    EVP_DecryptUpdate(d->aead, NULL, &l, h, HDR) != 1 ||
	    EVP_DecryptUpdate(d->aead, ct, &l, ct, (int)n) != 1 ||
	    EVP_CIPHER_CTX_ctrl(d->aead, EVP_CTRL_AEAD_SET_TAG, TAG, ct + n) != 1 ||
	    EVP_DecryptFinal_ex(d->aead, ct + n, &l) != 1)
		return fail(r, -EPROTO, AL_BAD_RECORD_MAC, "bad record MAC (record %llu)", (unsigned long long)d->seq);
	d->seq++;
	if (n > XREC_MAX_PLAIN + 1)	/* content, type and padding (§5.4) */
		return fail(r, -EPROTO, AL_RECORD_OVERFLOW, "record plaintext of %zu bytes", n);
	while (n && ct[n - 1] == 0)	/* padding */
		n--;
	if (n == 0)
		return fail(r, -EPROTO, AL_UNEXPECTED_MESSAGE, "record without a content type");
	return rx_record(r, ct[n - 1], ct, n - 1);
}

/* Opens the records rb holds whole, until one has data for the reader, the
 * stream ends or fails: so pending() is exact, as no socket event would
 * come for bytes already read. */
static void
rx_advance(struct xrec *r)
{
	while (!r->plen && !r->eof && !r->err && r->rend - r->roff >= HDR) {
		uint8_t *h = r->rb + r->roff;
		size_t clen = (size_t)h[3] << 8 | h[4];

		if (h[0] != 23) {
			fail(r, -EPROTO, AL_UNEXPECTED_MESSAGE, "record type %u after the handshake", h[0]);
			return;
		}
		if (clen < 1 + TAG || clen > MAX_CT) {
			fail(r, -EPROTO, AL_RECORD_OVERFLOW, "record length %zu", clen);
			return;
		}
		if (r->rend - r->roff < HDR + clen)
			return;
		r->roff += (uint32_t)(HDR + clen);
		if (rx_open(r, h, clen) < 0)
			return;
	}
}

/* No bytes held: no buffer (an idle conn's memory). */
static void
rx_tidy(struct xrec *r)
{
	if (r->rb && !r->plen && (r->roff == r->rend || r->eof || r->err)) {
		free(r->rb);
		r->rb = NULL;
		r->roff = r->rend = r->poff = 0;
	}
}

ssize_t
xrec_recv(struct xrec *r, void *buf, size_t len)
{
	for (;;) {
		ssize_t n;

		if (r->plen) {
			size_t k = len < r->plen ? len : r->plen;
			memcpy(buf, r->rb + r->poff, k);
			r->poff += (uint32_t)k;
			r->plen -= (uint32_t)k;
			if (!r->plen) {
				rx_advance(r);
				rx_tidy(r);
			}
			return (ssize_t)k;
		}
		if (r->err || r->eof) {
			rx_tidy(r);
			r->told = true;
			return r->err ? r->err : 0;
		}
		if (!r->rb && !(r->rb = malloc(RB_CAP)))
			return fail(r, -ENOMEM, -1, "out of memory");
		if (r->roff) {
			memmove(r->rb, r->rb + r->roff, r->rend - r->roff);
			r->rend -= r->roff;
			r->roff = 0;
		}
		n = recv(r->fd, r->rb + r->rend, RB_CAP - r->rend, 0);
		if (n > 0) {
			r->rend += (uint32_t)n;
			rx_advance(r);
			continue;
		}
		if (n == 0) {
			if (r->rend > r->roff)
				fail(r, -ECONNRESET, -1, "end of stream inside a record");
			else
				r->eof = true;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			rx_tidy(r);
			return -EAGAIN;
		}
		fail(r, -errno, -1, "read: %s", strerror(errno));
	}
}

/* --- sending ------------------------------------------------------------------ */

/* out (len bytes, sealed) to the socket; what it does not take is held.
 * pt: the data bytes it carries, returned once it is all sent. */
static ssize_t
tx(struct xrec *r, const uint8_t *out, size_t len, size_t pt)
{
	ssize_t k;

	do
		k = send(r->fd, out, len, MSG_NOSIGNAL);
	while (k < 0 && errno == EINTR);
	if (k == (ssize_t)len)
		return (ssize_t)pt;
	if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
		return fail(r, -errno, -1, "write: %s", strerror(errno));
	if (k < 0)
		k = 0;
	/* Sealed: its sequence number is spent, so these very bytes go. */
	if (!(r->wb = malloc(len - (size_t)k)))
		return fail(r, -ENOMEM, -1, "out of memory");
	memcpy(r->wb, out + k, len - (size_t)k);
	r->woff = 0;
	r->wlen = (uint32_t)(len - (size_t)k);
	r->wpt = pt;
	return -EAGAIN;
}

int
xrec_flush(struct xrec *r)
{
	ssize_t k;

	if (r->err)
		return r->err;
	if (!r->wb)
		return 0;
	do
		k = send(r->fd, r->wb + r->woff, r->wlen - r->woff, MSG_NOSIGNAL);
	while (k < 0 && errno == EINTR);
	if (k < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK ? -EAGAIN :
		    fail(r, -errno, -1, "write: %s", strerror(errno));
	r->woff += (uint32_t)k;
	if (r->woff < r->wlen)
		return -EAGAIN;
	free(r->wb);
	r->wb = NULL;
	r->woff = r->wlen = 0;
	return 0;
}

ssize_t
xrec_send(struct xrec *r, const void *buf, size_t len)
{
	size_t n = len < XREC_MAX_PLAIN ? len : XREC_MAX_PLAIN, off = 0;
	int k;

	if (r->err)
		return r->err;
	if (r->wb || r->wpt) {	/* (xrec_shutdown may have flushed it) */
		int rc = xrec_flush(r);
		size_t held = r->wpt;
		if (rc < 0)
			return rc;
		r->wpt = 0;
		if (held)
			return (ssize_t)(held < len ? held : len);
	}
	if (r->shut)
		return -EPIPE;
	if (len == 0)
		return 0;
	if (r->ku_owed || r->wr.seq >= ku_records) {
		/* Ours, before the data (§4.6.3): update_not_requested. */
		static const uint8_t ku[5] = { 24, 0, 0, 1, 0 };
		if ((k = seal(r, 22, ku, sizeof(ku), scratch)) < 0 || dir_update(r, &r->wr, 1) < 0)
			return fail(r, -EPROTO, -1, "KeyUpdate: key derivation");
		r->ku_owed = false;
		off = (size_t)k;
	}
	if ((k = seal(r, 23, buf, n, scratch + off)) < 0)
		return fail(r, -EPROTO, -1, "encrypt");
	return tx(r, scratch, off + (size_t)k, n);
}

int
xrec_shutdown(struct xrec *r)
{
	static const uint8_t a[2] = { 1, AL_CLOSE_NOTIFY };
	uint8_t rec[HDR + 2 + 1 + TAG];
	int n, rc;

	if (r->err)
		return r->err;
	if (r->shut)
		return r->wb ? -EAGAIN : 0;
	if ((n = seal(r, 21, a, sizeof(a), rec)) < 0)
		return fail(r, -EPROTO, -1, "encrypt");
	r->shut = true;
	if ((rc = xrec_flush(r)) == -EAGAIN) {
		/* Behind a held record: after it. */
		uint8_t *wb = realloc(r->wb, r->wlen + (size_t)n);
		if (!wb)
			return fail(r, -ENOMEM, -1, "out of memory");
		memcpy(wb + r->wlen, rec, (size_t)n);
		r->wb = wb;
		r->wlen += (uint32_t)n;
		return -EAGAIN;
	}
	if (rc < 0)
		return rc;
	return (int)tx(r, rec, (size_t)n, 0);
}

int
xrec_seal(struct xrec *r, uint8_t type, const void *pt, size_t n, uint8_t *out)
{
	return n > XREC_MAX_PLAIN ? -1 : seal(r, type, pt, n, out);
}

int
xrec_rekey_wr(struct xrec *r)
{
	return dir_update(r, &r->wr, 1);
}

/* --- what it holds --------------------------------------------------------------- */

size_t
xrec_pending(const struct xrec *r)
{
	if (r->plen)
		return r->plen;
	return (r->eof || r->err) && !r->told ? 1 : 0;
}

bool
xrec_blocked(const struct xrec *r)
{
	return r->wb != NULL;
}

const char *
xrec_detail(const struct xrec *r)
{
	return r->detail;
}

uint64_t
xrec_wr_seq(const struct xrec *r)
{
	return r->wr.seq;
}

unsigned
xrec_key_updates(const struct xrec *r, bool sent)
{
	return sent ? r->wr.updates : r->rd.updates;
}
