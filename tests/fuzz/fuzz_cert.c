/* Fuzz target: the certificate and identity parsing path of src/identity.c
 * on arbitrary bytes. The input is split at "\n@@\n" into chain, key and
 * roots PEM for certbundle_from_pem(); the whole input also goes through
 * spiffe_parse() and, as DER, through d2i_X509() and x509_spiffe_id() (a
 * peer's certificate reaches it so). Whatever the input: refused with a
 * message, or accepted with an identity that spiffe_parse() accepts. */
#include "autoconfig.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "identity.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A fixed "now" (2027-01-15) keeps the seed corpus's certificates valid. */
#define FUZZ_NOW ((time_t)1800000000)
#define SEP "\n@@\n"

static const uint8_t *
find_sep(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i + 4 <= n; i++)
		if (memcmp(p + i, SEP, 4) == 0)
			return p + i;
	return NULL;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *part[3] = { data, NULL, NULL }, *end = data + size, *s;
	size_t len[3] = { size, 0, 0 };
	struct certbundle *b = NULL;
	char err[256] = "", id[SPIFFE_ID_MAX];
	struct spiffe sp;
	const unsigned char *p = data;
	X509 *x;
	int rc;

	/* SPIFFE IDs: a parse that succeeds formats back to the same bytes. */
	if (spiffe_parse((const char *)data, size, &sp) == 0) {
		if (spiffe_format(id, sizeof(id), sp.td, sp.ns, sp.sa) < 0 || strlen(id) != size ||
		    memcmp(id, data, size) != 0)
			__builtin_trap();
	}
	/* DER, as a peer sends it. */
	if ((x = d2i_X509(NULL, &p, (long)size))) {
		if (x509_spiffe_id(x, id, sizeof(id), &sp) == 0 && spiffe_parse(id, strlen(id), NULL) < 0)
			__builtin_trap();
		X509_free(x);
	}
	ERR_clear_error();
	/* PEM, as the sources hand it over. */
	for (int i = 1; i < 3; i++) {
		if (!(s = find_sep(part[i - 1], len[i - 1])))
			break;
		len[i - 1] = (size_t)(s - part[i - 1]);
		part[i] = s + 4;
		len[i] = (size_t)(end - part[i]);
	}
	rc = certbundle_from_pem((const char *)part[0], len[0], (const char *)part[1], len[1],
	    (const char *)part[2], len[2], "fuzz", FUZZ_NOW, &b, err, sizeof(err));
	if (rc == 0) {
		if (!b || spiffe_parse(b->identity, strlen(b->identity), NULL) < 0 || !b->leaf || !b->key)
			__builtin_trap();
		certbundle_unref(b);
	} else if (b || !err[0]) {
		__builtin_trap();
	}
	return 0;
}
