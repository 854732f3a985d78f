/* Unit tests for src/devca.c: `outrigger ca init|issue` through devca_main:
 * the files it writes are accepted by certbundle_from_pem (the proxy's own
 * check), are shaped as the Istio CA's leaves, have the modes promised, and
 * every bad invocation exits 2 (or 1 for an existing root). The openssl CLI
 * checks the same files in tests/e2e/test_identity.py. */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "devca.h"
#include "identity.h"

static char tmp[64];

static int
run(const char *const *args)
{
	char *argv[16];
	int n = 0;

	for (; args[n]; n++)
		argv[n] = (char *)args[n];
	argv[n] = NULL;
	return devca_main(n, argv);
}

static char *
slurp(const char *dir, const char *name, size_t *len)
{
	char path[256], *buf;
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	assert_non_null(fp = fopen(path, "r"));
	buf = calloc(1, 65536);
	*len = fread(buf, 1, 65535, fp);
	fclose(fp);
	return buf;
}

static mode_t
mode_of(const char *dir, const char *name)
{
	char path[256];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	assert_int_equal(stat(path, &st), 0);
	return st.st_mode & 0777;
}

static void
test_init_and_issue(void **state)
{
	char ca[128], out[128], err[256];
	size_t lc, lk, lr;

	snprintf(ca, sizeof(ca), "%s/ca", tmp);
	snprintf(out, sizeof(out), "%s/leaf", tmp);
	assert_int_equal(run((const char *[]){ "ca", "init", "--dir", ca, "--trust-domain", "example.org",
	    "--days", "20", NULL }), 0);
	assert_int_equal(mode_of(ca, "root-key.pem"), 0600);
	/* Never replaces a root. */
	assert_int_equal(run((const char *[]){ "ca", "init", "--dir", ca, NULL }), 1);
	assert_int_equal(run((const char *[]){ "ca", "issue", "--dir", ca, "--spiffe",
	    "spiffe://example.org/ns/shop/sa/cart", "--out", out, "--days", "2", NULL }), 0);
	assert_int_equal(mode_of(out, "key.pem"), 0600);

	char *chain = slurp(out, "cert-chain.pem", &lc), *key = slurp(out, "key.pem", &lk);
	char *roots = slurp(out, "root-cert.pem", &lr);
	struct certbundle *b;
	time_t now = time(NULL);
	assert_int_equal(certbundle_from_pem(chain, lc, key, lk, roots, lr, "devca", now, &b, err, sizeof(err)), 0);
	assert_string_equal(b->identity, "spiffe://example.org/ns/shop/sa/cart");
	/* Istio's shape: empty subject, 2 days, CA:FALSE, the usages. */
	assert_int_equal(X509_NAME_entry_count(X509_get_subject_name(b->leaf)), 0);
	assert_true(b->not_after - now <= 2 * 86400 && b->not_after - now > 2 * 86400 - 60);
	assert_int_equal(X509_check_ca(b->leaf), 0);
	assert_int_equal(X509_get_key_usage(b->leaf), KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT);
	assert_int_equal(X509_get_extended_key_usage(b->leaf), XKU_SSL_SERVER | XKU_SSL_CLIENT);
	assert_int_equal(EVP_PKEY_get_id(b->key), EVP_PKEY_EC);
	X509 *root = sk_X509_value(b->roots, 0);
	assert_int_equal(X509_check_ca(root), 1);
	assert_int_equal(X509_check_issued(root, root), X509_V_OK);
	char td[64];
	assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(root), NID_organizationName, td, sizeof(td)) > 0);
	assert_string_equal(td, "example.org");
	certbundle_unref(b);
	free(chain);
	free(key);
	free(roots);
}

static void
test_bad_invocations(void **state)
{
	char ca[128], out[128];

	snprintf(ca, sizeof(ca), "%s/ca2", tmp);
	snprintf(out, sizeof(out), "%s/leaf2", tmp);
	static const char *const id = "spiffe://cluster.local/ns/a/sa/b";
	assert_int_equal(run((const char *[]){ "ca", NULL }), 2);
	assert_int_equal(run((const char *[]){ "ca", "frob", NULL }), 2);
	assert_int_equal(run((const char *[]){ "ca", "init", NULL }), 2);
	assert_int_equal(run((const char *[]){ "ca", "init", "--dir", ca, "--days", "0", NULL }), 2);
	assert_int_equal(run((const char *[]){ "ca", "init", "--dir", ca, "--days", "5x", NULL }), 2);
	assert_int_equal(run((const char *[]){ "ca", "init", "--dir", ca, "--trust-domain", "Bad/TD", NULL }), 2);
	assert_int_equal(run((const char *[]){ "ca", "init", "--dir", ca, "extra", NULL }), 2);
	assert_int_equal(run((const char *[]){ "ca", "init", "--dir", ca, "--spiffe", id, NULL }), 2);
	/* No root there yet. */
	assert_int_equal(run((const char *[]){ "ca", "issue", "--dir", ca, "--spiffe", id, "--out", out, NULL }), 1);
	assert_int_equal(run((const char *[]){ "ca", "init", "--dir", ca, NULL }), 0);
	assert_int_equal(run((const char *[]){ "ca", "issue", "--dir", ca, "--out", out, NULL }), 2);
	assert_int_equal(run((const char *[]){ "ca", "issue", "--dir", ca, "--spiffe", "spiffe://x/y", "--out", out,
	    NULL }), 2);
	assert_int_equal(run((const char *[]){ "ca", "issue", "--dir", ca, "--spiffe", id, NULL }), 2);
	assert_int_equal(run((const char *[]){ "ca", "issue", "--dir", ca, "--spiffe", id, "--out", out, NULL }), 0);
}

static int
setup(void **state)
{
	snprintf(tmp, sizeof(tmp), "/tmp/test_devca.XXXXXX");
	return mkdtemp(tmp) ? 0 : -1;
}

static int
teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
	return system(cmd) == 0 ? 0 : -1;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_init_and_issue),
		cmocka_unit_test(test_bad_invocations),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
