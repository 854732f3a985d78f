/* identity: SPIFFE IDs (parse, format, from the environment pilot-agent
 * reads) and certificate bundles: PEM from a source, checked once (key
 * matches, valid now, one SPIFFE URI SAN, chains to the mesh roots), then
 * immutable and shared by reference. */
#include "autoconfig.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "identity.h"

/* A PEM input larger than this is refused before OpenSSL sees it: a chain
 * of a few certificates is a few KiB; BIO_new_mem_buf takes an int. */
#define PEM_MAX (1u << 20)

static void seterr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* SPIFFE trust domain characters (SPIFFE-ID spec §2.1: lower case only). */
static bool
td_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

/* Path segment characters (SPIFFE-ID spec §2.2: letters, digits, '.', '-',
 * '_'; no percent-encoding). Kubernetes names are a subset. */
static bool
seg_char(unsigned char c)
{
	return td_char(c) || (c >= 'A' && c <= 'Z');
}

/* Copies the run of allowed characters at p (up to end) into out; the run
 * must be non-empty, fit, and (for path segments) not be "." or "..". */
static int
take(const char **p, const char *end, bool (*ok)(unsigned char), char *out, size_t outlen, bool segment)
{
	const char *s = *p;
	size_t n;

	while (*p < end && ok((unsigned char)**p))
		(*p)++;
	n = (size_t)(*p - s);
	if (n == 0 || n >= outlen)
		return -EINVAL;
	if (segment && ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.')))
		return -EINVAL;
	memcpy(out, s, n);
	out[n] = '\0';
	return 0;
}

static int
expect(const char **p, const char *end, const char *lit)
{
	size_t n = strlen(lit);

	if ((size_t)(end - *p) < n || memcmp(*p, lit, n) != 0)
		return -EINVAL;
	*p += n;
	return 0;
}

int
spiffe_parse(const char *uri, size_t len, struct spiffe *id)
{
	const char *p = uri, *end = uri + len;
	struct spiffe tmp;

	/* Anything that is not exactly td, "/ns/", ns, "/sa/", sa stops a take()
	 * or an expect(): '%', '?', '#', '@', ':', '/' in a part, NUL, upper
	 * case in the trust domain, an empty segment or a trailing slash. */
	if (!uri || len >= SPIFFE_ID_MAX)
		return -EINVAL;
	if (expect(&p, end, "spiffe://") < 0 ||
	    take(&p, end, td_char, tmp.td, sizeof(tmp.td), false) < 0 ||
	    expect(&p, end, "/ns/") < 0 ||
	    take(&p, end, seg_char, tmp.ns, sizeof(tmp.ns), true) < 0 ||
	    expect(&p, end, "/sa/") < 0 ||
	    take(&p, end, seg_char, tmp.sa, sizeof(tmp.sa), true) < 0 || p != end)
		return -EINVAL;
	/* A trust domain is a DNS-like name: no leading/trailing dot. */
	if (tmp.td[0] == '.' || tmp.td[strlen(tmp.td) - 1] == '.')
		return -EINVAL;
	if (id)
		*id = tmp;
	return 0;
}

int
spiffe_format(char *out, size_t len, const char *td, const char *ns, const char *sa)
{
	char buf[SPIFFE_ID_MAX + 1];
	int n;

	if (!td || !ns || !sa || !*td || !*ns || !*sa)
		return -EINVAL;
	n = snprintf(buf, sizeof(buf), "spiffe://%s/ns/%s/sa/%s", td, ns, sa);
	if (n < 0 || (size_t)n >= sizeof(buf) || spiffe_parse(buf, (size_t)n, NULL) < 0)
		return -EINVAL;
	if ((size_t)n >= len)
		return -ENOSPC;
	memcpy(out, buf, (size_t)n + 1);
	return 0;
}

/* The first of the variables that is set and not empty, else NULL. */
static const char *
env_first(const char *a, const char *b)
{
	const char *v = getenv(a);

	if ((!v || !*v) && b)
		v = getenv(b);
	return v && *v ? v : NULL;
}

int
identity_from_env(struct spiffe *id, char *err, size_t errlen)
{
	/* pilot-agent: TRUST_DOMAIN (default cluster.local), POD_NAMESPACE,
	 * SERVICE_ACCOUNT; the injector also sets the node metadata
	 * ISTIO_META_SERVICE_ACCOUNT (and a VM's ISTIO_META_NAMESPACE). */
	const char *td = env_first("TRUST_DOMAIN", NULL);
	const char *ns = env_first("POD_NAMESPACE", "ISTIO_META_NAMESPACE");
	const char *sa = env_first("SERVICE_ACCOUNT", "ISTIO_META_SERVICE_ACCOUNT");
	char uri[SPIFFE_ID_MAX];

	if (!td)
		td = "cluster.local";
	if (!ns) {
		seterr(err, errlen, "POD_NAMESPACE (or ISTIO_META_NAMESPACE) is not set");
		return -ENOENT;
	}
	if (!sa) {
		seterr(err, errlen, "SERVICE_ACCOUNT (or ISTIO_META_SERVICE_ACCOUNT) is not set");
		return -ENOENT;
	}
	if (spiffe_format(uri, sizeof(uri), td, ns, sa) < 0 || spiffe_parse(uri, strlen(uri), id) < 0) {
		seterr(err, errlen, "spiffe://%.100s/ns/%.100s/sa/%.100s is not a valid SPIFFE ID", td, ns, sa);
		return -EINVAL;
	}
	return 0;
}

int
x509_spiffe_id(X509 *x, char *out, size_t len, struct spiffe *id)
{
	GENERAL_NAMES *names;
	const ASN1_IA5STRING *uri = NULL;
	int crit = -1, nuri = 0, rc;

	names = X509_get_ext_d2i(x, NID_subject_alt_name, &crit, NULL);
	if (!names) {
		ERR_clear_error();
		/* -2: the extension is there more than once (RFC 5280 forbids it). */
		return crit == -2 || crit >= 0 ? -EINVAL : -ENOENT;
	}
	for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
		if (g->type == GEN_URI) {
			uri = g->d.uniformResourceIdentifier;
			nuri++;
		}
	}
	if (nuri == 0)
		rc = -ENOENT;
	else if (nuri > 1)
		rc = -EINVAL;
	else if (spiffe_parse((const char *)ASN1_STRING_get0_data(uri), (size_t)ASN1_STRING_length(uri), id) < 0)
		rc = -EINVAL;
	else if ((size_t)ASN1_STRING_length(uri) >= len)
		rc = -ENOSPC;
	else {
		memcpy(out, ASN1_STRING_get0_data(uri), (size_t)ASN1_STRING_length(uri));
		out[ASN1_STRING_length(uri)] = '\0';
		rc = 0;
	}
	GENERAL_NAMES_free(names);
	return rc;
}

/* Never prompt for a passphrase: an encrypted key is refused. */
static int
no_password(char *buf, int size, int rwflag, void *u)
{
	(void)buf, (void)size, (void)rwflag, (void)u;
	return -1;
}

/* Every certificate of a PEM text, in order, into a new stack. Refuses an
 * input with none, or with a block that does not decode (the PEM reader
 * skips text between blocks, as every tool does). */
static int
read_certs(const char *pem, size_t len, const char *what, STACK_OF(X509) **out, char *err, size_t errlen)
{
	STACK_OF(X509) *sk;
	BIO *bio;
	X509 *x;
	unsigned long e;

	*out = NULL;
	if (!pem || len == 0) {
		seterr(err, errlen, "%s: empty", what);
		return -EINVAL;
	}
	if (len > PEM_MAX) {
		seterr(err, errlen, "%s: larger than %u bytes", what, PEM_MAX);
		return -EINVAL;
	}
	if (!(sk = sk_X509_new_null()) || !(bio = BIO_new_mem_buf(pem, (int)len))) {
		sk_X509_free(sk);
		seterr(err, errlen, "%s: out of memory", what);
		return -ENOMEM;
	}
	ERR_clear_error();
	while ((x = PEM_read_bio_X509(bio, NULL, no_password, NULL))) {
		if (!sk_X509_push(sk, x)) {
			X509_free(x);
			goto oom;
		}
	}
	/* The loop ends at the end of the text (no start line) or at a bad block. */
	e = ERR_peek_last_error();
	if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)
		e = 0;
	ERR_clear_error();
	BIO_free(bio);
	if (e || sk_X509_num(sk) == 0) {
		seterr(err, errlen, "%s: %s", what, e ? "a PEM block that is no valid X.509 certificate" :
		    "no PEM certificate in it");
		sk_X509_pop_free(sk, X509_free);
		return -EINVAL;
	}
	*out = sk;
	return 0;
oom:
	BIO_free(bio);
	sk_X509_pop_free(sk, X509_free);
	seterr(err, errlen, "%s: out of memory", what);
	return -ENOMEM;
}

static int
read_key(const char *pem, size_t len, EVP_PKEY **out, char *err, size_t errlen)
{
	BIO *bio;

	*out = NULL;
	if (!pem || len == 0 || len > PEM_MAX) {
		seterr(err, errlen, "key: %s", len ? "too large" : "empty");
		return -EINVAL;
	}
	if (!(bio = BIO_new_mem_buf(pem, (int)len))) {
		seterr(err, errlen, "key: out of memory");
		return -ENOMEM;
	}
	*out = PEM_read_bio_PrivateKey(bio, NULL, no_password, NULL);
	BIO_free(bio);
	ERR_clear_error();
	if (!*out) {
		seterr(err, errlen, "key: no PEM private key in it (garbage, or encrypted)");
		return -EINVAL;
	}
	return 0;
}

static time_t
asn1_to_time(const ASN1_TIME *t)
{
	struct tm tm;

	if (!t || !ASN1_TIME_to_tm(t, &tm))
		return 0;
	return timegm(&tm);
}

/* The serial as lower-case hex without separators (Envoy's /certs shows it so). */
static void
serial_hex(X509 *x, char *out, size_t len)
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	char *hex = bn ? BN_bn2hex(bn) : NULL;

	snprintf(out, len, "%s", hex ? hex : "?");
	for (char *p = out; *p; p++)
		if (*p >= 'A' && *p <= 'F')
			*p = (char)(*p - 'A' + 'a');
	OPENSSL_free(hex);
	BN_free(bn);
}

/* How far ahead of our clock a certificate's notBefore may be and still be
 * taken (seconds). */
#define CERT_CLOCK_SKEW_S 60

/* X509_verify_cert: leaf to one of roots through chain (untrusted), at now. */
static int
verify_chain(X509 *leaf, STACK_OF(X509) *chain, STACK_OF(X509) *roots, time_t now, char *err,
    size_t errlen)
{
	X509_STORE *store = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	int rc = -ENOMEM, verr;

	if (!store || !ctx)
		goto out;
	for (int i = 0; i < sk_X509_num(roots); i++)
		if (!X509_STORE_add_cert(store, sk_X509_value(roots, i)))
			ERR_clear_error();	/* a duplicate root: harmless */
	if (!X509_STORE_CTX_init(ctx, store, leaf, chain))
		goto out;
	X509_STORE_CTX_set_time(ctx, 0, now);
	if (X509_verify_cert(ctx) == 1) {
		rc = 0;
	} else {
		verr = X509_STORE_CTX_get_error(ctx);
		seterr(err, errlen, "certificate does not chain to the roots: %s",
		    X509_verify_cert_error_string(verr));
		rc = -EINVAL;
	}
out:
	if (rc == -ENOMEM)
		seterr(err, errlen, "out of memory");
	ERR_clear_error();
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	return rc;
}

int
certbundle_from_pem(const char *chain, size_t chainlen, const char *key, size_t keylen,
    const char *roots, size_t rootslen, const char *source, time_t now, struct certbundle **out,
    char *err, size_t errlen)
{
	struct certbundle *b;
	X509 *last;
	int rc;

	*out = NULL;
	if (!(b = calloc(1, sizeof(*b)))) {
		seterr(err, errlen, "out of memory");
		return -ENOMEM;
	}
	b->refs = 1;
	snprintf(b->source, sizeof(b->source), "%s", source ? source : "");
	if ((rc = read_certs(chain, chainlen, "certificate chain", &b->chain, err, errlen)) < 0 ||
	    (rc = read_key(key, keylen, &b->key, err, errlen)) < 0 ||
	    (rc = read_certs(roots, rootslen, "root certificates", &b->roots, err, errlen)) < 0)
		goto fail;
	b->leaf = sk_X509_shift(b->chain);
	/* The Istio CA returns the chain with its root last: drop a trailing
	 * self-signed certificate from what we serve (the peer has the root;
	 * sending it costs bytes and trust comes from root-cert.pem only). */
	if (sk_X509_num(b->chain) > 0) {
		last = sk_X509_value(b->chain, sk_X509_num(b->chain) - 1);
		if (X509_check_issued(last, last) == X509_V_OK)
			X509_free(sk_X509_pop(b->chain));
	}
	rc = -EINVAL;
	if (X509_check_private_key(b->leaf, b->key) != 1) {
		ERR_clear_error();
		seterr(err, errlen, "the key does not match the certificate");
		goto fail;
	}
	b->not_before = asn1_to_time(X509_get0_notBefore(b->leaf));
	b->not_after = asn1_to_time(X509_get0_notAfter(b->leaf));
	serial_hex(b->leaf, b->serial, sizeof(b->serial));
	/* A certificate that starts a few seconds after our clock is judged at
	 * its start: the CA's clock may run a little ahead of ours, and a
	 * certificate minted right after a second began, against our coarse
	 * time(), starts "1 s from now" (seen with the test CA). Refusing it
	 * would only cost a retry and a CA failure; peers judge it by their
	 * own clocks anyway. */
	if (b->not_before > now && b->not_before - now <= CERT_CLOCK_SKEW_S)
		now = b->not_before;
	if (X509_cmp_time(X509_get0_notBefore(b->leaf), &now) > 0) {
		seterr(err, errlen, "certificate (serial %s) is not valid yet: its notBefore is %lld s from now",
		    b->serial, (long long)(b->not_before - now));
		goto fail;
	}
	if (X509_cmp_time(X509_get0_notAfter(b->leaf), &now) < 0) {
		seterr(err, errlen, "certificate (serial %s) expired %lld s ago", b->serial,
		    (long long)(now - b->not_after));
		goto fail;
	}
	switch (x509_spiffe_id(b->leaf, b->identity, sizeof(b->identity), &b->id)) {
	case 0:
		break;
	case -ENOENT:
		seterr(err, errlen, "certificate (serial %s) has no URI SAN (a SPIFFE ID is required)", b->serial);
		goto fail;
	default:
		seterr(err, errlen, "certificate (serial %s) needs exactly one URI SAN, a SPIFFE workload ID "
		    "spiffe://<trust domain>/ns/<namespace>/sa/<service account>", b->serial);
		goto fail;
	}
	if ((rc = verify_chain(b->leaf, b->chain, b->roots, now, err, errlen)) < 0)
		goto fail;
	*out = b;
	return 0;
fail:
	certbundle_unref(b);
	return rc;
}

struct certbundle *
certbundle_ref(struct certbundle *b)
{
	__atomic_add_fetch(&b->refs, 1, __ATOMIC_RELAXED);
	return b;
}

void
certbundle_unref(struct certbundle *b)
{
	if (!b || __atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	SSL_CTX_free(b->server_ctx);
	SSL_CTX_free(b->client_ctx);
	SSL_CTX_free(b->hbone_server_ctx);
	X509_free(b->leaf);
	sk_X509_pop_free(b->chain, X509_free);
	sk_X509_pop_free(b->roots, X509_free);
	EVP_PKEY_free(b->key);
	free(b);
}

time_t
certbundle_refresh_at(const struct certbundle *b, double ratio, double jitter)
{
	double life = difftime(b->not_after, b->not_before), r = ratio, u;
	uint32_t rnd = 0;

	/* pilot-agent rotates when less than ratio of the lifetime is left
	 * (SECRET_GRACE_PERIOD_RATIO), the ratio moved by up to +-jitter so a
	 * fleet issued together does not renew together. */
	if (jitter > 0) {
		if (RAND_bytes((unsigned char *)&rnd, sizeof(rnd)) != 1)
			rnd = (uint32_t)random();
		u = (double)rnd / 4294967295.0;	/* [0, 1] */
		r += jitter * (2.0 * u - 1.0);
	}
	if (r < 0)
		r = 0;
	if (r > 1)
		r = 1;
	if (life < 0)
		life = 0;
	return b->not_after - (time_t)(life * r);
}
