/* Unit tests for src/certsrc.c and src/certsrc_files.c: the order in which
 * the source is picked, and the files source on a real event loop: the
 * first load, rotation, a half-written pair that must not be reported, a
 * refusal reported once that keeps the running certificate, files that
 * appear after start. Certificates from src/devca.c's minting. */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/pem.h>

#include "certsrc.h"
#include "config.h"
#include "devca.h"
#include "identity.h"
#include "server.h"
#include "snapshot.h"

static char tmp[64];
static EVP_PKEY *rkey;
static X509 *root;

static void
write_file(const char *dir, const char *name, const char *text)
{
	char path[256], t[300];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	snprintf(t, sizeof(t), "%s.new", path);
	assert_non_null(fp = fopen(t, "w"));
	fputs(text, fp);
	assert_int_equal(fclose(fp), 0);
	assert_int_equal(rename(t, path), 0);
}

static char *
pem_of(X509 *x, EVP_PKEY *k)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data, *out;
	long n;

	assert_true(x ? PEM_write_bio_X509(b, x) : PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL));
	n = BIO_get_mem_data(b, &data);
	out = strndup(data, (size_t)n);
	BIO_free(b);
	return out;
}

/* A leaf for sa, valid from an hour ago for `days`; its key and chain PEM. */
struct leaf {
	char *chain, *key;
	char serial[64];
};

static void mint_until(struct leaf *l, const char *sa, time_t not_before, time_t not_after);

static void
mint(struct leaf *l, const char *sa, long days)
{
	time_t now = time(NULL);

	if (days < 0)
		mint_until(l, sa, now - 7200, now - 3600);
	else
		mint_until(l, sa, now - 3600, now + days * 86400);
}

static void
mint_until(struct leaf *l, const char *sa, time_t not_before, time_t not_after)
{
	char id[128];
	const char *uris[1] = { id };
	struct devca_cert spec = { .uris = uris, .nuris = 1, .not_before = not_before,
		.not_after = not_after };
	EVP_PKEY *k = devca_key();
	X509 *x;

	snprintf(id, sizeof(id), "spiffe://cluster.local/ns/default/sa/%s", sa);
	assert_non_null(x = devca_cert(&spec, k, root, rkey));
	l->chain = pem_of(x, NULL);
	l->key = pem_of(NULL, k);
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	char *hex = BN_bn2hex(bn);
	for (char *p = hex; *p; p++)
		if (*p >= 'A' && *p <= 'F')
			*p = (char)(*p - 'A' + 'a');
	snprintf(l->serial, sizeof(l->serial), "%s", hex);
	OPENSSL_free(hex);
	BN_free(bn);
	X509_free(x);
	EVP_PKEY_free(k);
}

static void
leaf_free(struct leaf *l)
{
	free(l->chain);
	free(l->key);
}

static int
setup(void **state)
{
	time_t now = time(NULL);
	struct devca_cert ca = { .ca = true, .org = "cluster.local", .cn = "root", .not_before = now - 3600,
		.not_after = now + 86400 * 10 };
	struct config cfg;

	snprintf(tmp, sizeof(tmp), "/tmp/test_certsrc.XXXXXX");
	if (!mkdtemp(tmp))
		return -1;
	rkey = devca_key();
	root = devca_cert(&ca, rkey, NULL, NULL);
	config_defaults(&cfg);
	server.snap = snapshot_new(&cfg, NULL, 1);
	return root && server.snap ? 0 : -1;
}

static int
teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
	if (system(cmd) != 0)
		return -1;
	snapshot_unref(server.snap);
	server.snap = NULL;
	X509_free(root);
	EVP_PKEY_free(rkey);
	return 0;
}

static void
test_pick_order(void **state)
{
	char etc[128], other[128], empty[128];
	struct config cfg;
	const char *dir;

	snprintf(etc, sizeof(etc), "%s/etc-certs", tmp);
	snprintf(other, sizeof(other), "%s/partial", tmp);
	snprintf(empty, sizeof(empty), "%s/none", tmp);
	mkdir(etc, 0755);
	mkdir(other, 0755);
	write_file(etc, "cert-chain.pem", "x");
	write_file(etc, "key.pem", "x");
	write_file(etc, "root-cert.pem", "x");
	write_file(other, "cert-chain.pem", "x");
	write_file(other, "key.pem", "x");	/* no root-cert.pem */

	config_defaults(&cfg);
	assert_int_equal(certsrc_pick(&cfg, empty, &dir), CERTSRC_NONE);
	assert_null(dir);
	snprintf(cfg.ca_addr, sizeof(cfg.ca_addr), "istiod:15012");
	assert_int_equal(certsrc_pick(&cfg, empty, &dir), CERTSRC_CA);
	snprintf(cfg.sds_socket, sizeof(cfg.sds_socket), "/run/sds.sock");
	assert_int_equal(certsrc_pick(&cfg, empty, &dir), CERTSRC_SDS);
	/* /etc/certs only counts with all three files in it. */
	assert_int_equal(certsrc_pick(&cfg, other, &dir), CERTSRC_SDS);
	assert_int_equal(certsrc_pick(&cfg, etc, &dir), CERTSRC_FILES);
	assert_string_equal(dir, etc);
	/* A named directory wins over everything, even an empty one. */
	snprintf(cfg.cert_dir, sizeof(cfg.cert_dir), "%s", empty);
	assert_int_equal(certsrc_pick(&cfg, etc, &dir), CERTSRC_FILES);
	assert_string_equal(dir, empty);
	assert_string_equal(certsrc_kind_names[CERTSRC_CA], "istio-ca");
}

static void
test_start_errors(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct config cfg;
	char err[256], path[128];

	config_defaults(&cfg);
	snprintf(cfg.cert_dir, sizeof(cfg.cert_dir), "%s/does-not-exist", tmp);
	assert_int_equal(certsrc_start(loop, &cfg, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "does-not-exist"));
	assert_string_equal(certsrc_name(), "none");
	snprintf(path, sizeof(path), "%s/a-file", tmp);
	write_file(tmp, "a-file", "x");
	snprintf(cfg.cert_dir, sizeof(cfg.cert_dir), "%s", path);
	assert_int_equal(certsrc_start(loop, &cfg, err, sizeof(err)), -ENOTDIR);
	ev_loop_destroy(loop);
}

/* Runs the loop until cond() or the deadline (seconds); returns cond(). */
static bool
run_until(struct ev_loop *loop, bool (*cond)(const void *), const void *arg, double secs)
{
	double end = ev_time() + secs;

	while (!cond(arg) && ev_time() < end)
		ev_run(loop, EVRUN_ONCE);
	return cond(arg);
}

static bool
serving(const void *serial)
{
	return server.snap->certs && strcmp(server.snap->certs->serial, serial) == 0;
}

static uint64_t refused_at_least;

static bool
refused(const void *unused)
{
	(void)unused;
	return server.stats[SM_CERT_REFUSED] >= refused_at_least;
}

static bool
never(const void *unused)
{
	(void)unused;
	return false;
}

static void
test_files_source(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct leaf a, b, c, old;
	char dir[128], err[256], *roots = pem_of(root, NULL);
	struct config cfg;
	uint64_t r0, u0;

	mint(&a, "a", 1);
	mint(&b, "b", 1);
	mint(&c, "c", 1);
	mint(&old, "old", -1);
	snprintf(dir, sizeof(dir), "%s/certs", tmp);
	mkdir(dir, 0755);
	write_file(dir, "root-cert.pem", roots);
	write_file(dir, "key.pem", a.key);
	write_file(dir, "cert-chain.pem", a.chain);
	certsrc_files_tune(0.05, 2.0);
	config_defaults(&cfg);
	snprintf(cfg.cert_dir, sizeof(cfg.cert_dir), "%s", dir);
	r0 = server.stats[SM_CERT_REFUSED];
	u0 = server.stats[SM_CERT_UPDATES];

	/* Loaded before certsrc_start returns. */
	assert_int_equal(certsrc_start(loop, &cfg, err, sizeof(err)), 0);
	assert_non_null(strstr(certsrc_name(), dir));
	assert_non_null(server.snap->certs);
	assert_string_equal(server.snap->certs->identity, "spiffe://cluster.local/ns/default/sa/a");
	assert_string_equal(server.snap->certs->serial, a.serial);
	assert_int_equal(server.stats[SM_CERT_UPDATES], u0 + 1);

	/* Rotation: key then chain, as a writer does; no refusal on the way,
	 * even while the new key sits beside the old chain. */
	write_file(dir, "key.pem", b.key);
	run_until(loop, never, NULL, 0.5);
	assert_int_equal(server.stats[SM_CERT_REFUSED], r0);
	assert_string_equal(server.snap->certs->serial, a.serial);
	write_file(dir, "cert-chain.pem", b.chain);
	assert_true(run_until(loop, serving, b.serial, 5.0));
	assert_int_equal(server.stats[SM_CERT_REFUSED], r0);
	assert_int_equal(server.stats[SM_CERT_UPDATES], u0 + 2);

	/* A mismatch that stays: reported once, after it settles; b serves on. */
	write_file(dir, "key.pem", c.key);
	refused_at_least = r0 + 1;
	assert_true(run_until(loop, refused, NULL, 6.0));
	run_until(loop, never, NULL, 0.5);
	assert_int_equal(server.stats[SM_CERT_REFUSED], r0 + 1);
	assert_string_equal(server.snap->certs->serial, b.serial);
	/* The matching chain arrives late: loaded. */
	write_file(dir, "cert-chain.pem", c.chain);
	assert_true(run_until(loop, serving, c.serial, 5.0));

	/* Garbage, then an expired pair: each refused, c serves on. */
	write_file(dir, "cert-chain.pem", "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n");
	refused_at_least = r0 + 2;
	assert_true(run_until(loop, refused, NULL, 6.0));
	write_file(dir, "key.pem", old.key);
	write_file(dir, "cert-chain.pem", old.chain);
	refused_at_least = r0 + 3;
	assert_true(run_until(loop, refused, NULL, 6.0));
	assert_string_equal(server.snap->certs->serial, c.serial);

	/* Back to a good pair. */
	write_file(dir, "key.pem", a.key);
	write_file(dir, "cert-chain.pem", a.chain);
	assert_true(run_until(loop, serving, a.serial, 5.0));
	certsrc_stop();
	assert_string_equal(server.snap->certs->serial, a.serial);	/* the snapshot keeps its bundle */

	leaf_free(&a);
	leaf_free(&b);
	leaf_free(&c);
	leaf_free(&old);
	free(roots);
	ev_loop_destroy(loop);
}

/* A directory whose files come after start: refused (counted) at start,
 * then loaded when they appear. */
static void
test_files_appear_later(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	char dir[128], err[256], *roots = pem_of(root, NULL);
	struct config cfg;
	struct leaf a;
	uint64_t r0 = server.stats[SM_CERT_REFUSED];

	mint(&a, "late", 1);
	snprintf(dir, sizeof(dir), "%s/later", tmp);
	mkdir(dir, 0755);
	certsrc_files_tune(0.05, 2.0);
	config_defaults(&cfg);
	snprintf(cfg.cert_dir, sizeof(cfg.cert_dir), "%s", dir);
	assert_int_equal(certsrc_start(loop, &cfg, err, sizeof(err)), 0);
	assert_int_equal(server.stats[SM_CERT_REFUSED], r0 + 1);
	write_file(dir, "root-cert.pem", roots);
	write_file(dir, "key.pem", a.key);
	write_file(dir, "cert-chain.pem", a.chain);
	assert_true(run_until(loop, serving, a.serial, 5.0));
	assert_int_equal(server.stats[SM_CERT_REFUSED], r0 + 1);
	certsrc_stop();
	leaf_free(&a);
	free(roots);
	ev_loop_destroy(loop);
}

/* A certificate about to expire: a warning when it is loaded, an error once
 * it has expired (files do not renew themselves), each once. The log goes to
 * fd 2, redirected to a file here. */
static void
test_expiry_logs(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	char dir[128], err[256], logpath[128], *roots = pem_of(root, NULL), text[8192];
	struct config cfg;
	struct leaf a;
	time_t now = time(NULL);
	int saved, fd;
	ssize_t n;

	mint_until(&a, "short", now - 60, now + 2);
	snprintf(dir, sizeof(dir), "%s/short", tmp);
	mkdir(dir, 0755);
	write_file(dir, "root-cert.pem", roots);
	write_file(dir, "key.pem", a.key);
	write_file(dir, "cert-chain.pem", a.chain);
	snprintf(logpath, sizeof(logpath), "%s/log.txt", tmp);
	assert_true((fd = open(logpath, O_CREAT | O_TRUNC | O_RDWR, 0600)) >= 0);
	saved = dup(2);
	dup2(fd, 2);
	certsrc_files_tune(0.05, 2.0);
	config_defaults(&cfg);
	snprintf(cfg.cert_dir, sizeof(cfg.cert_dir), "%s", dir);
	assert_int_equal(certsrc_start(loop, &cfg, err, sizeof(err)), 0);
	run_until(loop, never, NULL, 4.0);
	certsrc_stop();
	dup2(saved, 2);
	close(saved);
	n = pread(fd, text, sizeof(text) - 1, 0);
	close(fd);
	assert_true(n > 0);
	text[n] = '\0';
	char *warn = strstr(text, "expires in"), *expired = strstr(text, "has EXPIRED");
	if (!warn || !expired)
		fail_msg("log lacks the warning or the error:\n%s", text);
	assert_true(warn < expired);
	assert_null(strstr(warn + 1, "expires in"));
	assert_null(strstr(expired + 1, "has EXPIRED"));
	leaf_free(&a);
	free(roots);
	ev_loop_destroy(loop);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pick_order),
		cmocka_unit_test(test_start_errors),
		cmocka_unit_test(test_files_source),
		cmocka_unit_test(test_files_appear_later),
		cmocka_unit_test(test_expiry_logs),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
