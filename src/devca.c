/* devca: a development CA (`outrigger ca init|issue`): a self-signed EC P-256
 * mesh root and workload leaves shaped as the Istio CA issues them (empty
 * subject, one critical URI SAN, digitalSignature|keyEncipherment,
 * serverAuth+clientAuth), written in Istio's file layout. */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "devca.h"
#include "identity.h"

#define EXIT_USAGE 2

EVP_PKEY *
devca_key(void)
{
	return EVP_EC_gen("P-256");
}

static int
add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
	int ok = e && X509_add_ext(x, e, -1);

	X509_EXTENSION_free(e);
	return ok ? 0 : -EINVAL;
}

/* The URI SANs, built as GENERAL_NAMEs (not through the config syntax, in
 * which a ',' in a value would split it). RFC 5280 §4.2.1.6: critical when
 * the subject is empty. */
static int
add_uris(X509 *x, const char *const *uris, int n, bool critical)
{
	GENERAL_NAMES *names = GENERAL_NAMES_new();
	int rc = -ENOMEM;

	if (!names)
		return -ENOMEM;
	for (int i = 0; i < n; i++) {
		GENERAL_NAME *g = GENERAL_NAME_new();
		ASN1_IA5STRING *s = ASN1_IA5STRING_new();
		if (!g || !s || !ASN1_STRING_set(s, uris[i], (int)strlen(uris[i]))) {
			GENERAL_NAME_free(g);
			ASN1_IA5STRING_free(s);
			goto out;
		}
		GENERAL_NAME_set0_value(g, GEN_URI, s);
		if (!sk_GENERAL_NAME_push(names, g)) {
			GENERAL_NAME_free(g);
			goto out;
		}
	}
	rc = X509_add1_ext_i2d(x, NID_subject_alt_name, names, critical ? 1 : 0, X509V3_ADD_DEFAULT) == 1 ?
	    0 : -EINVAL;
out:
	GENERAL_NAMES_free(names);
	return rc;
}

X509 *
devca_cert(const struct devca_cert *spec, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key)
{
	unsigned char serial[16];
	X509_NAME *name = NULL;
	BIGNUM *bn = NULL;
	X509V3_CTX ctx;
	X509 *x;

	if (!(x = X509_new()) || !X509_set_version(x, X509_VERSION_3))
		goto fail;
	/* 128 random bits, positive (RFC 5280 §4.1.2.2: at most 20 octets). */
	if (RAND_bytes(serial, sizeof(serial)) != 1)
		goto fail;
	serial[0] &= 0x7f;
	serial[0] |= 0x01;
	if (!(bn = BN_bin2bn(serial, sizeof(serial), NULL)) ||
	    !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)))
		goto fail;
	if (!(name = X509_NAME_new()))
		goto fail;
	if (spec->org && !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)spec->org,
	    -1, -1, 0))
		goto fail;
	if (spec->cn && !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)spec->cn,
	    -1, -1, 0))
		goto fail;
	if (!X509_set_subject_name(x, name) ||
	    !X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name))
		goto fail;
	if (!ASN1_TIME_set(X509_getm_notBefore(x), spec->not_before) ||
	    !ASN1_TIME_set(X509_getm_notAfter(x), spec->not_after) || !X509_set_pubkey(x, key))
		goto fail;
	X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
	if (spec->ca) {
		if (add_ext(x, &ctx, NID_basic_constraints, "critical,CA:TRUE") < 0 ||
		    add_ext(x, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign") < 0 ||
		    add_ext(x, &ctx, NID_subject_key_identifier, "hash") < 0)
			goto fail;
	} else {
		if (add_ext(x, &ctx, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
		    add_ext(x, &ctx, NID_key_usage, "critical,digitalSignature,keyEncipherment") < 0 ||
		    add_ext(x, &ctx, NID_ext_key_usage, "serverAuth,clientAuth") < 0)
			goto fail;
		if (issuer && add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always") < 0)
			goto fail;
	}
	if (spec->nuris && add_uris(x, spec->uris, spec->nuris, !spec->org && !spec->cn) < 0)
		goto fail;
	if (!X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()))
		goto fail;
	X509_NAME_free(name);
	BN_free(bn);
	return x;
fail:
	ERR_clear_error();
	X509_NAME_free(name);
	BN_free(bn);
	X509_free(x);
	return NULL;
}

/* Writes dir/name through a temporary file and rename(2), so a proxy that
 * watches dir never reads half a file. */
static int
write_pem(const char *dir, const char *name, mode_t mode, X509 *cert, EVP_PKEY *key)
{
	char path[PATH_MAX], tmp[PATH_MAX];
	FILE *fp;
	int fd, ok;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path) ||
	    (size_t)snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name) >= sizeof(tmp))
		return -ENAMETOOLONG;
	unlink(tmp);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)) < 0)
		return -errno;
	if (fchmod(fd, mode) < 0 || !(fp = fdopen(fd, "w"))) {
		int e = -errno;
		close(fd);
		unlink(tmp);
		return e;
	}
	ok = cert ? PEM_write_X509(fp, cert) : PEM_write_PrivateKey(fp, key, NULL, NULL, 0, NULL, NULL);
	ok = fflush(fp) == 0 && ok;
	ok = fsync(fileno(fp)) == 0 && ok;
	if (fclose(fp) != 0 || !ok) {
		unlink(tmp);
		return -EIO;
	}
	if (rename(tmp, path) < 0) {
		int e = -errno;
		unlink(tmp);
		return e;
	}
	return 0;
}

static X509 *
load_cert(const char *path)
{
	FILE *fp = fopen(path, "r");
	X509 *x = fp ? PEM_read_X509(fp, NULL, NULL, NULL) : NULL;

	if (fp)
		fclose(fp);
	return x;
}

static EVP_PKEY *
load_key(const char *path)
{
	FILE *fp = fopen(path, "r");
	EVP_PKEY *k = fp ? PEM_read_PrivateKey(fp, NULL, NULL, NULL) : NULL;

	if (fp)
		fclose(fp);
	return k;
}

static int
parse_days(const char *s, long *days)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < 1 || v > 36500)
		return -EINVAL;
	*days = v;
	return 0;
}

static void
ca_usage(FILE *fp)
{
	fprintf(fp,
	    "usage: outrigger ca init --dir DIR [--trust-domain TD] [--days N]\n"
	    "       outrigger ca issue --dir DIR --spiffe ID --out OUTDIR [--days N]\n"
	    "\n"
	    "  init   mint a mesh root (EC P-256, self-signed, CA:TRUE; default 3650 days):\n"
	    "         DIR/root-cert.pem and DIR/root-key.pem (mode 0600)\n"
	    "  issue  a workload certificate signed by DIR's root, as the Istio CA issues it\n"
	    "         (URI SAN ID only; default 30 days): OUTDIR/cert-chain.pem, key.pem\n"
	    "         (mode 0600) and root-cert.pem, the layout --cert-dir reads\n");
}

static int
ca_init(const char *dir, const char *td, long days)
{
	char path[PATH_MAX], uri[300];
	const char *uris[1] = { uri };
	struct devca_cert spec = { .ca = true, .org = td, .cn = "outrigger development mesh root",
		.uris = uris, .nuris = 1 };
	EVP_PKEY *key = NULL;
	X509 *cert = NULL;
	int rc;

	if (strlen(td) > 253) {
		fprintf(stderr, "outrigger ca init: trust domain too long\n");
		return EXIT_USAGE;
	}
	snprintf(uri, sizeof(uri), "spiffe://%s", td);
	{
		/* The trust domain must make valid workload IDs. */
		char probe[SPIFFE_ID_MAX];
		if (spiffe_format(probe, sizeof(probe), td, "ns", "sa") < 0) {
			fprintf(stderr, "outrigger ca init: \"%s\" is not a valid trust domain (lower-case letters, "
			    "digits, '.', '-', '_')\n", td);
			return EXIT_USAGE;
		}
	}
	if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
		fprintf(stderr, "outrigger ca init: cannot create %s: %s\n", dir, strerror(errno));
		return 1;
	}
	snprintf(path, sizeof(path), "%s/root-key.pem", dir);
	if (access(path, F_OK) == 0) {
		fprintf(stderr, "outrigger ca init: %s already exists; not replacing a mesh root\n", path);
		return 1;
	}
	spec.not_before = time(NULL) - 3600;	/* an hour of clock skew */
	spec.not_after = time(NULL) + days * 86400;
	if (!(key = devca_key()) || !(cert = devca_cert(&spec, key, NULL, NULL))) {
		fprintf(stderr, "outrigger ca init: cannot make the root certificate\n");
		rc = 1;
		goto out;
	}
	if ((rc = write_pem(dir, "root-key.pem", 0600, NULL, key)) < 0 ||
	    (rc = write_pem(dir, "root-cert.pem", 0644, cert, NULL)) < 0) {
		fprintf(stderr, "outrigger ca init: writing into %s: %s\n", dir, strerror(-rc));
		rc = 1;
		goto out;
	}
	printf("mesh root for trust domain %s: %s/root-cert.pem (key %s/root-key.pem), valid %ld days\n", td,
	    dir, dir, days);
	rc = 0;
out:
	X509_free(cert);
	EVP_PKEY_free(key);
	return rc;
}

static int
ca_issue(const char *dir, const char *id, const char *out, long days)
{
	char path[PATH_MAX];
	const char *uris[1] = { id };
	struct devca_cert spec = { .uris = uris, .nuris = 1 };
	EVP_PKEY *rkey = NULL, *key = NULL;
	X509 *root = NULL, *cert = NULL;
	int rc = 1;

	if (spiffe_parse(id, strlen(id), NULL) < 0) {
		fprintf(stderr, "outrigger ca issue: \"%s\" is not a SPIFFE workload ID "
		    "(spiffe://<trust domain>/ns/<namespace>/sa/<service account>)\n", id);
		return EXIT_USAGE;
	}
	snprintf(path, sizeof(path), "%s/root-cert.pem", dir);
	if (!(root = load_cert(path))) {
		fprintf(stderr, "outrigger ca issue: cannot read the root certificate %s\n", path);
		goto out;
	}
	snprintf(path, sizeof(path), "%s/root-key.pem", dir);
	if (!(rkey = load_key(path)) || X509_check_private_key(root, rkey) != 1) {
		fprintf(stderr, "outrigger ca issue: cannot read %s, or it is not the root's key\n", path);
		goto out;
	}
	if (mkdir(out, 0755) < 0 && errno != EEXIST) {
		fprintf(stderr, "outrigger ca issue: cannot create %s: %s\n", out, strerror(errno));
		goto out;
	}
	spec.not_before = time(NULL) - 300;	/* a little clock skew, as the Istio CA allows */
	spec.not_after = time(NULL) + days * 86400;
	{
		/* Not beyond the root: the chain would stop verifying first. */
		struct tm tm;
		if (ASN1_TIME_to_tm(X509_get0_notAfter(root), &tm) && timegm(&tm) < spec.not_after)
			spec.not_after = timegm(&tm);
	}
	if (!(key = devca_key()) || !(cert = devca_cert(&spec, key, root, rkey))) {
		fprintf(stderr, "outrigger ca issue: cannot make the certificate\n");
		goto out;
	}
	/* The key first: a watching proxy sees the pair complete only when the
	 * chain lands, and waits while they do not match. */
	if ((rc = write_pem(out, "key.pem", 0600, NULL, key)) < 0 ||
	    (rc = write_pem(out, "cert-chain.pem", 0644, cert, NULL)) < 0 ||
	    (rc = write_pem(out, "root-cert.pem", 0644, root, NULL)) < 0) {
		fprintf(stderr, "outrigger ca issue: writing into %s: %s\n", out, strerror(-rc));
		rc = 1;
		goto out;
	}
	printf("%s: %s/cert-chain.pem, %s/key.pem, %s/root-cert.pem, valid %ld days\n", id, out, out, out, days);
	rc = 0;
out:
	ERR_clear_error();
	X509_free(cert);
	X509_free(root);
	EVP_PKEY_free(key);
	EVP_PKEY_free(rkey);
	return rc;
}

int
devca_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, 'd' },
		{ "trust-domain", required_argument, NULL, 't' },
		{ "spiffe", required_argument, NULL, 's' },
		{ "out", required_argument, NULL, 'o' },
		{ "days", required_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *dir = NULL, *td = "cluster.local", *id = NULL, *out = NULL, *days_s = NULL, *cmd;
	long days;
	int c;

	if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		ca_usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? EXIT_USAGE : 0;
	}
	cmd = argv[1];
	if (strcmp(cmd, "init") != 0 && strcmp(cmd, "issue") != 0) {
		fprintf(stderr, "outrigger ca: unknown command '%s'\n", cmd);
		ca_usage(stderr);
		return EXIT_USAGE;
	}
	/* The command is the "program name" of its own option list; optind 0
	 * makes glibc's getopt start afresh (main() has not parsed yet, but
	 * the tests call this again and again). */
	argc--;
	argv++;
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 'd': dir = optarg; break;
		case 't': td = optarg; break;
		case 's': id = optarg; break;
		case 'o': out = optarg; break;
		case 'n': days_s = optarg; break;
		case 'h': ca_usage(stdout); return 0;
		default:
			fprintf(stderr, "outrigger ca %s: %s '%s'\n", cmd, c == ':' ? "missing value for" :
			    "unknown option", argv[optind - 1]);
			ca_usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "outrigger ca %s: unexpected argument '%s'\n", cmd, argv[optind]);
		return EXIT_USAGE;
	}
	days = strcmp(cmd, "init") == 0 ? 3650 : 30;
	if (days_s && parse_days(days_s, &days) < 0) {
		fprintf(stderr, "outrigger ca %s: --days expects a whole number from 1 to 36500, got '%s'\n", cmd,
		    days_s);
		return EXIT_USAGE;
	}
	if (!dir) {
		fprintf(stderr, "outrigger ca %s: --dir is required\n", cmd);
		return EXIT_USAGE;
	}
	if (strcmp(cmd, "init") == 0) {
		if (id || out) {
			fprintf(stderr, "outrigger ca init: --spiffe and --out belong to 'ca issue'\n");
			return EXIT_USAGE;
		}
		return ca_init(dir, td, days);
	}
	if (!id || !out) {
		fprintf(stderr, "outrigger ca issue: --spiffe and --out are required\n");
		return EXIT_USAGE;
	}
	return ca_issue(dir, id, out, days);
}
