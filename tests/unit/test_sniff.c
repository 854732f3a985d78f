/* Unit tests for src/sniff.c: real ClientHellos recorded from openssl
 * s_client and curl (tests/unit/golden/sniff, capture.sh), every cut of
 * them, the same hellos split over several records, and broken ones. */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sniff.h"

struct vec {
	const char *file;
	const char *sni;
	const char *alpn[4];	/* the offer, in order; NULL-terminated */
	bool istio;
};

static const struct vec vectors[] = {
	{ "openssl-istio.bin", "x", { "istio" }, true },
	{ "openssl-envoy-tcp.bin", "outbound_.8080_._.reviews.default.svc.cluster.local",
	  { "istio-peer-exchange", "istio" }, true },
	{ "openssl-istio-http11.bin", "outbound|8080||reviews.default.svc.cluster.local",
	  { "istio-http/1.1", "istio", "http/1.1" }, true },
	{ "openssl-tls12-bare.bin", "", { NULL }, false },
	{ "curl-https.bin", "localhost", { "h2", "http/1.1" }, false },
	{ "curl-http11.bin", "app.example", { "http/1.1" }, false },
};

static size_t
load(const char *name, uint8_t *buf, size_t cap)
{
	char path[512];
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "%s/%s", SNIFF_GOLDEN_DIR, name);
	f = fopen(path, "rb");
	assert_non_null(f);
	n = fread(buf, 1, cap, f);
	fclose(f);
	assert_true(n > 9 && n < cap);
	return n;
}

/* The record's length as its header says (the vector may hold more). */
static size_t
record_len(const uint8_t *b)
{
	return 5 + ((size_t)b[3] << 8 | b[4]);
}

static void
check_hello(const struct sniff_hello *h, const struct vec *v)
{
	size_t n = 0, off = 0;

	assert_string_equal(h->sni, v->sni);
	assert_int_equal(h->istio, v->istio);
	assert_false(h->partial);
	for (; v->alpn[n]; n++) {
		size_t l = strlen(v->alpn[n]);
		assert_true(off + 1 + l <= h->alpn_len);
		assert_int_equal(h->alpn[off], l);
		assert_memory_equal(h->alpn + off + 1, v->alpn[n], l);
		off += 1 + l;
		assert_true(sniff_alpn_has(h, v->alpn[n]));
	}
	assert_int_equal(off, h->alpn_len);
	assert_false(sniff_alpn_has(h, "istio-h3"));
	assert_false(sniff_alpn_has(h, "ist"));
}

/* Every cut of a hello is MORE, asking for more than it has and no more
 * than the whole. */
static void
check_cuts(const uint8_t *b, size_t whole)
{
	struct sniff_hello h;

	for (size_t k = 0; k < whole; k++) {
		enum sniff_verdict v = sniff_tls(b, k, &h);
		if (v != SNIFF_MORE)
			fail_msg("cut at %zu of %zu: verdict %d, want MORE", k, whole, (int)v);
		if (h.need <= k || h.need > whole)
			fail_msg("cut at %zu of %zu: need %zu", k, whole, h.need);
	}
}

static void
test_real_hellos(void **state)
{
	uint8_t buf[20000];
	struct sniff_hello h;

	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		size_t n = load(vectors[i].file, buf, sizeof(buf)), whole = record_len(buf);

		assert_true(whole <= n);
		assert_int_equal(sniff_tls(buf, n, &h), SNIFF_TLS);
		check_hello(&h, &vectors[i]);
		assert_int_equal(sniff_tls(buf, whole, &h), SNIFF_TLS);
		check_hello(&h, &vectors[i]);
		check_cuts(buf, whole);
	}
}

/* The same handshake message in records of the sizes given (0 or past
 * the list: the rest in one record): TLS allows a ClientHello to be fragmented (RFC 8446 §5.1). */
static size_t
reframe(const uint8_t *rec, const size_t *sizes, size_t nsizes, uint8_t *out)
{
	const uint8_t *msg = rec + 5;
	size_t left = record_len(rec) - 5, o = 0;

	for (size_t i = 0; left; i++) {
		size_t take = i < nsizes && sizes[i] && sizes[i] < left ? sizes[i] : left;
		out[o] = 0x16, out[o + 1] = 3, out[o + 2] = 1;
		out[o + 3] = (uint8_t)(take >> 8), out[o + 4] = (uint8_t)take;
		memcpy(out + o + 5, msg, take);
		o += 5 + take, msg += take, left -= take;
	}
	return o;
}

static void
test_split_records(void **state)
{
	static const size_t splits[][3] = {
		{ 1 }, { 2 }, { 3 }, { 4 }, { 5 }, { 40 }, { 100, 1, 1 }, { 200 },
	};
	uint8_t buf[20000], out[40000];
	struct sniff_hello h;

	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		load(vectors[i].file, buf, sizeof(buf));
		for (size_t s = 0; s < sizeof(splits) / sizeof(splits[0]); s++) {
			size_t n = reframe(buf, splits[s], 3, out);
			assert_int_equal(sniff_tls(out, n, &h), SNIFF_TLS);
			check_hello(&h, &vectors[i]);
			check_cuts(out, n);
		}
		/* One byte per record: 5 bytes of header for each. */
		size_t n = 0;
		const uint8_t *msg = buf + 5;
		for (size_t k = 0; k < record_len(buf) - 5; k++) {
			out[n] = 0x16, out[n + 1] = 3, out[n + 2] = 3, out[n + 3] = 0, out[n + 4] = 1;
			out[n + 5] = msg[k];
			n += 6;
		}
		assert_true(n <= SNIFF_MAX);
		assert_int_equal(sniff_tls(out, n, &h), SNIFF_TLS);
		check_hello(&h, &vectors[i]);
		/* Anything but a handshake record in between is not TLS to go on with. */
		out[6 * 20] = 0x15;
		assert_int_equal(sniff_tls(out, n, &h), SNIFF_PLAIN);
	}
}

/* --- synthetic hellos ----------------------------------------------------- */

static size_t
put16(uint8_t *p, size_t v)
{
	p[0] = (uint8_t)(v >> 8), p[1] = (uint8_t)v;
	return 2;
}

static size_t
ext(uint8_t *p, unsigned type, const uint8_t *data, size_t len)
{
	put16(p, type);
	put16(p + 2, len);
	memcpy(p + 4, data, len);
	return 4 + len;
}

static size_t
alpn_ext(uint8_t *p, const char *const *names)
{
	uint8_t d[4096];
	size_t o = 2;

	for (; *names; names++) {
		d[o++] = (uint8_t)strlen(*names);
		memcpy(d + o, *names, strlen(*names));
		o += strlen(*names);
	}
	put16(d, o - 2);
	return ext(p, 16, d, o);
}

static size_t
sni_ext(uint8_t *p, const char *name, size_t len)
{
	uint8_t d[600];

	put16(d, 3 + len);
	d[2] = 0;
	put16(d + 3, len);
	memcpy(d + 5, name, len);
	return ext(p, 0, d, 5 + len);
}

/* A ClientHello record around extensions exts (NULL: no extension block). */
static size_t
hello(uint8_t *p, const uint8_t *exts, size_t extlen)
{
	size_t o = 9;

	p[o++] = 3, p[o++] = 3;
	memset(p + o, 0xaa, 32), o += 32;
	p[o++] = 0;
	o += put16(p + o, 2), p[o++] = 0x13, p[o++] = 0x01;
	p[o++] = 1, p[o++] = 0;
	if (exts) {
		o += put16(p + o, extlen);
		memcpy(p + o, exts, extlen);
		o += extlen;
	}
	p[0] = 0x16, p[1] = 3, p[2] = 1;
	put16(p + 3, o - 5);
	p[5] = 1, p[6] = (uint8_t)((o - 9) >> 16), p[7] = (uint8_t)((o - 9) >> 8), p[8] = (uint8_t)(o - 9);
	return o;
}

static void
test_plaintext_from_first_bytes(void **state)
{
	static const char *const plain[] = {
		"GET / HTTP/1.1\r\n", "P", "PRI * HTTP/2.0\r\n", "\x80\x2e\x01\x03\x01",	/* SSLv2 hello */
		"\x16\x02", "\x16\x03\x05", "\x17\x03\x03\x00\x10", "\x15\x03\x03\x00\x02",
		"\x16\x03\x01\x00\x00",		/* an empty record */
		"\x16\x03\x01\x40\x01",		/* 16385: longer than a record may be */
		"\x16\x03\x03\x00\x30\x02",	/* a ServerHello */
		"\x16\x03\x03\x00\x30\x01\x00\x00\x05",	/* a hello too short to be one */
	};
	struct sniff_hello h;

	for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
		size_t n = strlen(plain[i]);
		if (i == 8 || i == 9 || i == 10 || i == 11)
			n = i == 8 || i == 9 ? 5 : i == 10 ? 6 : 9;
		if (sniff_tls((const uint8_t *)plain[i], n, &h) != SNIFF_PLAIN)
			fail_msg("case %zu not plaintext", i);
	}
	assert_int_equal(sniff_tls((const uint8_t *)"", 0, &h), SNIFF_MORE);
	assert_int_equal(h.need, 1);
	assert_int_equal(sniff_tls((const uint8_t *)"\x16\x03", 2, &h), SNIFF_MORE);
	assert_int_equal(h.need, 5);
}

static void
test_minimal_and_no_extensions(void **state)
{
	uint8_t rec[512];
	struct sniff_hello h;
	size_t n = hello(rec, NULL, 0);

	assert_int_equal(sniff_tls(rec, n, &h), SNIFF_TLS);
	assert_string_equal(h.sni, "");
	assert_int_equal(h.alpn_len, 0);
	assert_false(h.istio);
	/* Bytes after the hello (the next flight, early data) are not looked at. */
	memset(rec + n, 0xee, 100);
	assert_int_equal(sniff_tls(rec, n + 100, &h), SNIFF_TLS);
	n = hello(rec, (const uint8_t *)"", 0);	/* an empty extension block */
	assert_int_equal(sniff_tls(rec, n, &h), SNIFF_TLS);
}

static void
test_broken_extensions(void **state)
{
	static const char *const istio[] = { "istio", NULL };
	uint8_t e[2048], rec[4096];
	struct sniff_hello h;
	size_t el, n;

	/* The good one first, so that each break below is the only fault. */
	el = alpn_ext(e, istio);
	el += sni_ext(e + el, "a.b", 3);
	n = hello(rec, e, el);
	assert_int_equal(sniff_tls(rec, n, &h), SNIFF_TLS);
	assert_true(h.istio);
	assert_string_equal(h.sni, "a.b");

	/* ALPN list length one more than the extension holds. */
	el = alpn_ext(e, istio);
	e[5]++;
	n = hello(rec, e, el);
	assert_int_equal(sniff_tls(rec, n, &h), SNIFF_PLAIN);
	/* An empty protocol name. */
	static const char *const empty[] = { "h2", "", NULL };
	el = alpn_ext(e, empty);
	assert_int_equal(sniff_tls(rec, hello(rec, e, el), &h), SNIFF_PLAIN);
	/* An empty ALPN list. */
	el = ext(e, 16, (const uint8_t *)"\0\0", 2);
	assert_int_equal(sniff_tls(rec, hello(rec, e, el), &h), SNIFF_PLAIN);
	/* The same extension twice. */
	el = alpn_ext(e, istio);
	el += alpn_ext(e + el, istio);
	assert_int_equal(sniff_tls(rec, hello(rec, e, el), &h), SNIFF_PLAIN);
	el = ext(e, 0x1234, (const uint8_t *)"", 0);
	el += ext(e + el, 0x1234, (const uint8_t *)"", 0);
	assert_int_equal(sniff_tls(rec, hello(rec, e, el), &h), SNIFF_PLAIN);
	/* A NUL inside the host name; an empty one; one too long for us. */
	el = sni_ext(e, "a\0b", 3);
	assert_int_equal(sniff_tls(rec, hello(rec, e, el), &h), SNIFF_PLAIN);
	el = sni_ext(e, "", 0);
	assert_int_equal(sniff_tls(rec, hello(rec, e, el), &h), SNIFF_PLAIN);
	char longname[300];
	memset(longname, 'a', sizeof(longname));
	el = sni_ext(e, longname, 256);
	assert_int_equal(sniff_tls(rec, hello(rec, e, el), &h), SNIFF_PLAIN);
	el = sni_ext(e, longname, 255);
	assert_int_equal(sniff_tls(rec, hello(rec, e, el), &h), SNIFF_TLS);
	assert_int_equal(strlen(h.sni), 255);
	/* An extension whose length runs past the block. */
	el = ext(e, 0x77, (const uint8_t *)"abcd", 4);
	e[3] = 9;
	assert_int_equal(sniff_tls(rec, hello(rec, e, el), &h), SNIFF_PLAIN);
	/* The extension block shorter than what follows it in the message. */
	el = ext(e, 0x77, (const uint8_t *)"abcd", 4);
	n = hello(rec, e, el);
	rec[5 + 4 + 2 + 32 + 1 + 4 + 2 + 1]--;	/* the low byte of the block's length */
	assert_int_equal(sniff_tls(rec, n, &h), SNIFF_PLAIN);
	/* A session id longer than 32; an odd cipher suite list. */
	n = hello(rec, NULL, 0);
	rec[9 + 34] = 33;
	assert_int_equal(sniff_tls(rec, n, &h), SNIFF_PLAIN);
	n = hello(rec, NULL, 0);
	rec[9 + 35 + 1] = 3;
	assert_int_equal(sniff_tls(rec, n, &h), SNIFF_PLAIN);
	/* A legacy_version that is not 3.x. */
	n = hello(rec, NULL, 0);
	rec[9] = 2;
	assert_int_equal(sniff_tls(rec, n, &h), SNIFF_PLAIN);
}

/* An offer longer than the copy: the flag looks at all of it; the copy
 * keeps whole entries only. */
static void
test_long_alpn_offer(void **state)
{
	const char *names[40];
	char store[40][16];
	uint8_t e[2048], rec[4096];
	struct sniff_hello h;
	size_t i, el, off = 0;

	for (i = 0; i < 30; i++) {
		snprintf(store[i], sizeof(store[i]), "proto-%02zu-xxxxxx", i);	/* 15 bytes */
		names[i] = store[i];
	}
	names[i++] = "istio-h2";
	names[i] = NULL;
	el = alpn_ext(e, names);
	assert_int_equal(sniff_tls(rec, hello(rec, e, el), &h), SNIFF_TLS);
	assert_true(h.istio);
	assert_true(h.alpn_len <= sizeof(h.alpn));
	assert_int_equal(h.alpn_len, 16 * 16);	/* 16 entries of 1 + 15 bytes */
	while (off < h.alpn_len)
		off += 1 + h.alpn[off];
	assert_int_equal(off, h.alpn_len);
	assert_true(sniff_alpn_has(&h, "proto-00-xxxxxx"));
	assert_false(sniff_alpn_has(&h, "istio-h2"));	/* past the copy */
}

/* A hello larger than SNIFF_MAX: TLS, details unknown; never MORE at the
 * bound, so a caller's peek buffer of SNIFF_MAX always gets a verdict. */
static void
test_larger_than_we_look_at(void **state)
{
	static uint8_t e[20000], rec[20100], out[40000];
	static const char *const istio[] = { "istio", NULL };
	struct sniff_hello h;
	size_t el, n;

	el = alpn_ext(e, istio);
	memset(e + el + 4, 0, 17000);
	el += ext(e + el, 21, e + el + 4, 17000);	/* padding (RFC 7685) */
	n = hello(rec, e, el);
	/* Too long for one record (hello() wrote a length that wrapped): put
	 * the message in records of 16,000 bytes. */
	size_t msglen = n - 5, off = 0;
	uint8_t *o = out;
	while (off < msglen) {
		size_t take = msglen - off < 16000 ? msglen - off : 16000;
		o[0] = 0x16, o[1] = 3, o[2] = 1;
		put16(o + 3, take);
		memcpy(o + 5, rec + 5 + off, take);
		o += 5 + take, off += take;
	}
	n = (size_t)(o - out);
	assert_true(n > SNIFF_MAX);
	assert_int_equal(sniff_tls(out, SNIFF_MAX, &h), SNIFF_TLS);
	assert_true(h.partial);
	assert_false(h.istio);
	assert_int_equal(sniff_tls(out, n, &h), SNIFF_TLS);	/* len is capped */
	assert_true(h.partial);
	for (size_t k = 0; k < SNIFF_MAX; k += 997) {
		enum sniff_verdict v = sniff_tls(out, k, &h);
		if (v == SNIFF_MORE)
			assert_true(h.need > k && h.need <= SNIFF_MAX);
		else
			assert_int_equal(v, SNIFF_TLS);
	}
}

/* Found by fuzz_sniff: a hello whose header is split over two records, the
 * second one longer than we look at, and whose length is too small to be
 * one. Every cut said "TLS, larger than we look at" (it waited for the whole
 * long record) where the whole input says "not TLS": a cut must only ask for
 * the next thing it decides on. */
static void
test_cut_never_contradicts_whole(void **state)
{
	static const uint8_t in[] = {
		0x16, 3, 0, 0, 3, 1, 0, 0,		/* a record with 3 bytes of the header */
		0x16, 3, 0, 0x3f, 0xfd, 1, 1, 0, 0,	/* 16,381 more: hello length 1 */
		0, 0, 0, 0, 0x90, 0x2f, 0x23, 1, 0,
	};
	struct sniff_hello h;

	assert_int_equal(sniff_tls(in, sizeof(in), &h), SNIFF_PLAIN);
	for (size_t k = 0; k < sizeof(in); k++) {
		enum sniff_verdict v = sniff_tls(in, k, &h);
		if (v == SNIFF_TLS)
			fail_msg("cut at %zu: TLS, the whole is not", k);
		if (v == SNIFF_MORE && (h.need <= k || h.need > sizeof(in)))
			fail_msg("cut at %zu: need %zu", k, h.need);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_real_hellos),
		cmocka_unit_test(test_split_records),
		cmocka_unit_test(test_plaintext_from_first_bytes),
		cmocka_unit_test(test_minimal_and_no_extensions),
		cmocka_unit_test(test_broken_extensions),
		cmocka_unit_test(test_long_alpn_offer),
		cmocka_unit_test(test_larger_than_we_look_at),
		cmocka_unit_test(test_cut_never_contradicts_whole),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
