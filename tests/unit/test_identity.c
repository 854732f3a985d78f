/* Unit tests for src/identity.c: strict SPIFFE IDs, the identity from the
 * environment pilot-agent reads, and every refusal of certbundle_from_pem.
 * Certificates are made here with the OpenSSL API (src/devca.c's minting);
 * tests/e2e checks the same paths with certificates from the openssl CLI
 * (tests/lab/certs.py). */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "devca.h"
#include "identity.h"

#define ID "spiffe://cluster.local/ns/default/sa/client"

/* ---- SPIFFE IDs ---- */

static int
parse(const char *s, struct spiffe *id)
{
	return spiffe_parse(s, strlen(s), id);
}

static void
test_spiffe_parse_good(void **state)
{
	struct spiffe id;

	assert_int_equal(parse(ID, &id), 0);
	assert_string_equal(id.td, "cluster.local");
	assert_string_equal(id.ns, "default");
	assert_string_equal(id.sa, "client");
	assert_int_equal(parse("spiffe://td_1-x.example/ns/My-ns.1/sa/Sa_2", &id), 0);
	assert_string_equal(id.ns, "My-ns.1");
	/* len, not NUL: the bytes of a SAN need no terminator. */
	assert_int_equal(spiffe_parse(ID "trailing", strlen(ID), &id), 0);
	assert_string_equal(id.sa, "client");
}

static void
test_spiffe_parse_strict(void **state)
{
	static const char *const bad[] = {
		"", "spiffe://", "spiffe:///ns/a/sa/b", "SPIFFE://cluster.local/ns/a/sa/b",
		"spiffe://Cluster.local/ns/a/sa/b", "https://cluster.local/ns/a/sa/b",
		"spiffe://cluster.local", "spiffe://cluster.local/", "spiffe://cluster.local/ns/a",
		"spiffe://cluster.local/ns/a/sa/", "spiffe://cluster.local/ns//sa/b",
		"spiffe://cluster.local/ns/a/sa/b/", "spiffe://cluster.local/ns/a/sa/b/c",
		"spiffe://cluster.local/ns/a/sa/b?x=1", "spiffe://cluster.local/ns/a/sa/b#f",
		"spiffe://cluster.local:443/ns/a/sa/b", "spiffe://user@cluster.local/ns/a/sa/b",
		"spiffe://cluster.local/ns/a%2fb/sa/b", "spiffe://cluster.local/ns/./sa/b",
		"spiffe://cluster.local/ns/../sa/b", "spiffe://cluster.local/sa/b/ns/a",
		"spiffe://cluster.local//ns/a/sa/b", "spiffe://.cluster.local/ns/a/sa/b",
		"spiffe://cluster.local./ns/a/sa/b", "spiffe://cluster.local/NS/a/sa/b",
		"spiffe://cluster.local/ns/a b/sa/b", " spiffe://cluster.local/ns/a/sa/b",
	};
	struct spiffe id;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse(bad[i], &id) != -EINVAL)
			fail_msg("accepted \"%s\"", bad[i]);
	}
	/* A NUL inside the bytes. */
	assert_int_equal(spiffe_parse("spiffe://cluster.local/ns/a\0/sa/b", 32, &id), -EINVAL);
	/* Parts too long for struct spiffe, and the whole too long. */
	char big[1200];
	snprintf(big, sizeof(big), "spiffe://cluster.local/ns/%0200d/sa/b", 0);
	assert_int_equal(parse(big, &id), -EINVAL);
	memset(big, 'a', sizeof(big));
	memcpy(big, "spiffe://", 9);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(parse(big, &id), -EINVAL);
	assert_int_equal(spiffe_parse(NULL, 0, &id), -EINVAL);
}

static void
test_spiffe_format(void **state)
{
	char out[SPIFFE_ID_MAX], small[20];

	assert_int_equal(spiffe_format(out, sizeof(out), "cluster.local", "default", "client"), 0);
	assert_string_equal(out, ID);
	assert_int_equal(spiffe_format(small, sizeof(small), "cluster.local", "default", "client"), -ENOSPC);
	assert_int_equal(spiffe_format(out, sizeof(out), "", "default", "client"), -EINVAL);
	assert_int_equal(spiffe_format(out, sizeof(out), "cluster.local", "a/b", "client"), -EINVAL);
	assert_int_equal(spiffe_format(out, sizeof(out), "Cluster.local", "a", "b"), -EINVAL);
	assert_int_equal(spiffe_format(out, sizeof(out), "cluster.local", "a", "b?c"), -EINVAL);
}

static void
clear_env(void)
{
	unsetenv("TRUST_DOMAIN");
	unsetenv("POD_NAMESPACE");
	unsetenv("ISTIO_META_NAMESPACE");
	unsetenv("SERVICE_ACCOUNT");
	unsetenv("ISTIO_META_SERVICE_ACCOUNT");
}

static void
test_identity_from_env(void **state)
{
	struct spiffe id;
	char err[256];

	clear_env();
	assert_int_equal(identity_from_env(&id, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "POD_NAMESPACE"));
	setenv("POD_NAMESPACE", "shop", 1);
	assert_int_equal(identity_from_env(&id, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "SERVICE_ACCOUNT"));
	setenv("ISTIO_META_SERVICE_ACCOUNT", "cart", 1);
	assert_int_equal(identity_from_env(&id, err, sizeof(err)), 0);
	assert_string_equal(id.td, "cluster.local");
	assert_string_equal(id.ns, "shop");
	assert_string_equal(id.sa, "cart");
	/* SERVICE_ACCOUNT wins over the metadata; TRUST_DOMAIN is read. */
	setenv("SERVICE_ACCOUNT", "cart-v2", 1);
	setenv("TRUST_DOMAIN", "example.org", 1);
	assert_int_equal(identity_from_env(&id, err, sizeof(err)), 0);
	assert_string_equal(id.sa, "cart-v2");
	assert_string_equal(id.td, "example.org");
	/* Empty counts as unset. */
	setenv("POD_NAMESPACE", "", 1);
	setenv("ISTIO_META_NAMESPACE", "vm-ns", 1);
	assert_int_equal(identity_from_env(&id, err, sizeof(err)), 0);
	assert_string_equal(id.ns, "vm-ns");
	setenv("SERVICE_ACCOUNT", "a/b", 1);
	assert_int_equal(identity_from_env(&id, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "not a valid SPIFFE ID"));
	clear_env();
}

/* ---- certificates ---- */

struct pki {
	EVP_PKEY *rkey, *ikey, *lkey, *okey;
	X509 *root, *inter, *other;
};

static struct pki pki;

static X509 *
mk(const char *const *uris, int n, time_t nb, time_t na, EVP_PKEY *key, X509 *iss, EVP_PKEY *ikey)
{
	struct devca_cert spec = { .uris = uris, .nuris = n, .not_before = nb, .not_after = na };
	X509 *x = devca_cert(&spec, key, iss, ikey);

	assert_non_null(x);
	return x;
}

static int
setup(void **state)
{
	time_t now = time(NULL);
	struct devca_cert ca = { .ca = true, .org = "cluster.local", .cn = "root",
		.not_before = now - 3600, .not_after = now + 86400 * 10 };

	pki.rkey = devca_key();
	pki.ikey = devca_key();
	pki.lkey = devca_key();
	pki.okey = devca_key();
	pki.root = devca_cert(&ca, pki.rkey, NULL, NULL);
	ca.cn = "intermediate";
	pki.inter = devca_cert(&ca, pki.ikey, pki.root, pki.rkey);
	ca.cn = "other root";
	pki.other = devca_cert(&ca, pki.okey, NULL, NULL);
	return pki.root && pki.inter && pki.other ? 0 : -1;
}

static int
teardown(void **state)
{
	X509_free(pki.root);
	X509_free(pki.inter);
	X509_free(pki.other);
	EVP_PKEY_free(pki.rkey);
	EVP_PKEY_free(pki.ikey);
	EVP_PKEY_free(pki.lkey);
	EVP_PKEY_free(pki.okey);
	return 0;
}

/* PEM text of certificates (NULL-terminated list) or of a key. */
static char *
pem_certs(X509 *const *xs)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data, *out;
	long n;

	for (; *xs; xs++)
		assert_true(PEM_write_bio_X509(b, *xs));
	n = BIO_get_mem_data(b, &data);
	out = strndup(data, (size_t)n);
	BIO_free(b);
	return out;
}

static char *
pem_key(EVP_PKEY *k)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data, *out;
	long n;

	assert_true(PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL));
	n = BIO_get_mem_data(b, &data);
	out = strndup(data, (size_t)n);
	BIO_free(b);
	return out;
}

/* certbundle_from_pem over PEM strings; err for the caller to inspect. */
static int
bundle(const char *chain, const char *key, const char *roots, time_t now, struct certbundle **b, char *err)
{
	return certbundle_from_pem(chain, chain ? strlen(chain) : 0, key, key ? strlen(key) : 0, roots,
	    roots ? strlen(roots) : 0, "test", now, b, err, 256);
}

/* A leaf for lkey signed by the root (or the intermediate), valid an hour ago to a day on. */
static X509 *
leaf(const char *id, bool via_inter)
{
	const char *uris[1] = { id };
	time_t now = time(NULL);

	return mk(uris, id ? 1 : 0, now - 3600, now + 86400, pki.lkey, via_inter ? pki.inter : pki.root,
	    via_inter ? pki.ikey : pki.rkey);
}

static void
test_bundle_good(void **state)
{
	X509 *l = leaf(ID, false);
	char *chain = pem_certs((X509 *[]){ l, NULL }), *key = pem_key(pki.lkey);
	char *roots = pem_certs((X509 *[]){ pki.other, pki.root, NULL });
	struct certbundle *b;
	char err[256] = "";

	assert_int_equal(bundle(chain, key, roots, time(NULL), &b, err), 0);
	assert_string_equal(b->identity, ID);
	assert_string_equal(b->id.sa, "client");
	assert_string_equal(b->source, "test");
	assert_int_equal(sk_X509_num(b->chain), 0);
	assert_int_equal(sk_X509_num(b->roots), 2);
	assert_int_equal(b->refs, 1);
	/* Serial: lower-case hex of the certificate's own serial. */
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(l), NULL);
	char *hex = BN_bn2hex(bn);
	assert_int_equal(strcasecmp(hex, b->serial), 0);
	for (const char *p = b->serial; *p; p++)
		assert_true((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'));
	OPENSSL_free(hex);
	BN_free(bn);
	assert_true(b->not_after - b->not_before == 86400 + 3600);
	assert_ptr_equal(certbundle_ref(b), b);
	assert_int_equal(b->refs, 2);
	certbundle_unref(b);
	certbundle_unref(b);
	certbundle_unref(NULL);
	X509_free(l);
	free(chain);
	free(key);
	free(roots);
}

static void
test_bundle_intermediate_and_trailing_root(void **state)
{
	X509 *l = leaf(ID, true);
	char *key = pem_key(pki.lkey), *roots = pem_certs((X509 *[]){ pki.root, NULL });
	char *chain = pem_certs((X509 *[]){ l, pki.inter, NULL });
	char *chain_root = pem_certs((X509 *[]){ l, pki.inter, pki.root, NULL });
	char *no_inter = pem_certs((X509 *[]){ l, NULL });
	struct certbundle *b;
	char err[256] = "";

	assert_int_equal(bundle(chain, key, roots, time(NULL), &b, err), 0);
	assert_int_equal(sk_X509_num(b->chain), 1);
	certbundle_unref(b);
	/* As the Istio CA returns it: the root last is dropped from what is served. */
	assert_int_equal(bundle(chain_root, key, roots, time(NULL), &b, err), 0);
	assert_int_equal(sk_X509_num(b->chain), 1);
	assert_int_equal(X509_cmp(sk_X509_value(b->chain, 0), pki.inter), 0);
	certbundle_unref(b);
	/* Without its intermediate the leaf does not chain. */
	assert_int_equal(bundle(no_inter, key, roots, time(NULL), &b, err), -EINVAL);
	assert_null(b);
	assert_non_null(strstr(err, "does not chain to the roots"));
	X509_free(l);
	free(key);
	free(roots);
	free(chain);
	free(chain_root);
	free(no_inter);
}

static void
expect_refused(const char *chain, const char *key, const char *roots, time_t now, const char *why)
{
	struct certbundle *b = (struct certbundle *)1;
	char err[256] = "";

	assert_int_equal(bundle(chain, key, roots, now, &b, err), -EINVAL);
	assert_null(b);
	if (!strstr(err, why))
		fail_msg("error \"%s\" does not say \"%s\"", err, why);
}

static void
test_bundle_refusals(void **state)
{
	time_t now = time(NULL);
	X509 *l = leaf(ID, false);
	char *chain = pem_certs((X509 *[]){ l, NULL }), *key = pem_key(pki.lkey);
	char *other_key = pem_key(pki.okey), *roots = pem_certs((X509 *[]){ pki.root, NULL });
	char *other_roots = pem_certs((X509 *[]){ pki.other, NULL });

	/* Garbage and empty PEM, in each of the three. */
	expect_refused("", key, roots, now, "certificate chain: empty");
	expect_refused(NULL, key, roots, now, "certificate chain: empty");
	expect_refused("hello, world\n", key, roots, now, "no PEM certificate");
	expect_refused("-----BEGIN CERTIFICATE-----\nAAAA!!!\n-----END CERTIFICATE-----\n", key, roots, now,
	    "no valid X.509");
	expect_refused(chain, "", roots, now, "key: empty");
	expect_refused(chain, "garbage", roots, now, "no PEM private key");
	expect_refused(chain, key, "", now, "root certificates: empty");
	expect_refused(chain, key, "-----BEGIN CERTIFICATE-----\n", now, "root certificates");
	/* A key that is not the leaf's. */
	expect_refused(chain, other_key, roots, now, "the key does not match");
	/* Not valid at now: before notBefore, after notAfter. */
	expect_refused(chain, key, roots, now - 7200, "not valid yet");
	expect_refused(chain, key, roots, now - 3600 - 120, "not valid yet");
	/* A notBefore up to a minute ahead of our clock is a clock's skew (or
	 * a second rounded against time()): taken, as at its start. */
	struct certbundle *early = NULL;
	char eerr[256] = "";
	assert_int_equal(bundle(chain, key, roots, now - 3600 - 30, &early, eerr), 0);
	assert_non_null(early);
	certbundle_unref(early);
	expect_refused(chain, key, roots, now + 2 * 86400, "expired");
	/* Another mesh's root. */
	expect_refused(chain, key, other_roots, now, "does not chain to the roots");

	/* SANs: none, two, not SPIFFE, a bad SPIFFE ID. */
	static const char *const two[] = { ID, "spiffe://cluster.local/ns/default/sa/other" };
	static const char *const http[] = { "https://example.com/x" };
	static const char *const badid[] = { "spiffe://cluster.local/ns/default/sa/client/x" };
	struct { const char *const *uris; int n; const char *why; } sans[] = {
		{ NULL, 0, "no URI SAN" }, { two, 2, "exactly one URI SAN" },
		{ http, 1, "exactly one URI SAN" }, { badid, 1, "exactly one URI SAN" },
	};
	for (size_t i = 0; i < sizeof(sans) / sizeof(sans[0]); i++) {
		X509 *x = mk(sans[i].uris, sans[i].n, now - 60, now + 3600, pki.lkey, pki.root, pki.rkey);
		char *c = pem_certs((X509 *[]){ x, NULL });
		expect_refused(c, key, roots, now, sans[i].why);
		free(c);
		X509_free(x);
	}
	/* Signed by the right name but the wrong key: a forged leaf. */
	X509 *forged = mk((const char *const[]){ ID }, 1, now - 60, now + 3600, pki.lkey, pki.root, pki.okey);
	char *fc = pem_certs((X509 *[]){ forged, NULL });
	expect_refused(fc, key, roots, now, "does not chain");
	free(fc);
	X509_free(forged);

	/* Too large for a PEM input. */
	size_t big = (1u << 20) + 1;
	char *huge = malloc(big + 1);
	memset(huge, 'A', big);
	huge[big] = '\0';
	expect_refused(huge, key, roots, now, "larger than");
	free(huge);

	X509_free(l);
	free(chain);
	free(key);
	free(other_key);
	free(roots);
	free(other_roots);
}

static void
test_x509_spiffe_id(void **state)
{
	static const char *const one[] = { ID };
	static const char *const two[] = { ID, ID };
	time_t now = time(NULL);
	char out[SPIFFE_ID_MAX], tiny[8];
	struct spiffe id;
	X509 *x;

	x = mk(one, 1, now, now + 60, pki.lkey, pki.root, pki.rkey);
	assert_int_equal(x509_spiffe_id(x, out, sizeof(out), &id), 0);
	assert_string_equal(out, ID);
	assert_string_equal(id.ns, "default");
	assert_int_equal(x509_spiffe_id(x, out, sizeof(out), NULL), 0);
	assert_int_equal(x509_spiffe_id(x, tiny, sizeof(tiny), NULL), -ENOSPC);
	X509_free(x);
	x = mk(two, 2, now, now + 60, pki.lkey, pki.root, pki.rkey);
	assert_int_equal(x509_spiffe_id(x, out, sizeof(out), NULL), -EINVAL);
	X509_free(x);
	x = mk(NULL, 0, now, now + 60, pki.lkey, pki.root, pki.rkey);
	assert_int_equal(x509_spiffe_id(x, out, sizeof(out), NULL), -ENOENT);
	/* Two SAN extensions (RFC 5280 forbids it): refused, not the first taken. */
	GENERAL_NAMES *gn = sk_GENERAL_NAME_new_null();
	GENERAL_NAME *g = GENERAL_NAME_new();
	ASN1_IA5STRING *s = ASN1_IA5STRING_new();
	ASN1_STRING_set(s, ID, -1);
	GENERAL_NAME_set0_value(g, GEN_URI, s);
	sk_GENERAL_NAME_push(gn, g);
	assert_int_equal(X509_add1_ext_i2d(x, NID_subject_alt_name, gn, 0, X509V3_ADD_APPEND), 1);
	assert_int_equal(X509_add1_ext_i2d(x, NID_subject_alt_name, gn, 0, X509V3_ADD_APPEND), 1);
	assert_int_equal(x509_spiffe_id(x, out, sizeof(out), NULL), -EINVAL);
	GENERAL_NAMES_free(gn);
	X509_free(x);
}

static void
test_refresh_at(void **state)
{
	struct certbundle b = { .not_before = 1000000, .not_after = 1000000 + 86400 };

	assert_int_equal(certbundle_refresh_at(&b, 0.5, 0), 1000000 + 43200);
	assert_int_equal(certbundle_refresh_at(&b, 0.25, 0), 1000000 + 64800);
	/* Jitter stays within +-1% of the lifetime (864 s), and moves. */
	time_t lo = 1000000 + 43200 - 865, hi = 1000000 + 43200 + 865, first = 0;
	bool moved = false;
	for (int i = 0; i < 200; i++) {
		time_t t = certbundle_refresh_at(&b, 0.5, 0.01);
		assert_true(t >= lo && t <= hi);
		if (i == 0)
			first = t;
		else if (t != first)
			moved = true;
	}
	assert_true(moved);
	/* Clamped to the lifetime. */
	assert_int_equal(certbundle_refresh_at(&b, 2.0, 0), b.not_before);
	assert_int_equal(certbundle_refresh_at(&b, -1.0, 0), b.not_after);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_spiffe_parse_good),
		cmocka_unit_test(test_spiffe_parse_strict),
		cmocka_unit_test(test_spiffe_format),
		cmocka_unit_test(test_identity_from_env),
		cmocka_unit_test(test_bundle_good),
		cmocka_unit_test(test_bundle_intermediate_and_trailing_root),
		cmocka_unit_test(test_bundle_refusals),
		cmocka_unit_test(test_x509_spiffe_id),
		cmocka_unit_test(test_refresh_at),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
