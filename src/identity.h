/* identity: who this proxy is (its SPIFFE ID) and the certificate bundle that
 * proves it: key, chain and mesh roots, checked once when a source (files,
 * the Istio CA, SDS) hands them over, then immutable and shared by every
 * snapshot that serves with them. */
#ifndef OR_IDENTITY_H
#define OR_IDENTITY_H

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

/* "spiffe://<trust domain>/ns/<namespace>/sa/<service account>" */
#define SPIFFE_ID_MAX 512

struct spiffe {
	char td[256];		/* trust domain: lower case letters, digits, '.', '-', '_' */
	char ns[128];
	char sa[128];
};

/* Parses an Istio workload SPIFFE ID (exactly the form above: a trust
 * domain, "ns", a namespace, "sa", a service account; no query, fragment,
 * port, user info, percent-encoding or empty segment). len is uri's length
 * (it need not be NUL-terminated: a SAN's bytes). 0 or -EINVAL. */
int spiffe_parse(const char *uri, size_t len, struct spiffe *id);

/* Writes "spiffe://td/ns/ns/sa/sa" into out; -ENOSPC when it does not fit,
 * -EINVAL when a part is empty or not allowed there. */
int spiffe_format(char *out, size_t len, const char *td, const char *ns, const char *sa);

/* This proxy's identity from the environment, as pilot-agent reads it:
 * TRUST_DOMAIN (default "cluster.local"), POD_NAMESPACE and SERVICE_ACCOUNT
 * (ISTIO_META_* equivalents as fallbacks). 0; -ENOENT when the namespace or
 * the service account is not set (err says which); -EINVAL when a part is
 * not allowed in a SPIFFE ID. */
int identity_from_env(struct spiffe *id, char *err, size_t errlen);

/* A checked certificate bundle. Immutable once made; reference-counted
 * (atomic): the control thread makes it, snapshots and open TLS connections
 * hold it. */
struct certbundle {
	unsigned long refs;
	char source[128];		/* "files /etc/certs", "istio-ca istiod:15012", "sds unix:/..." */
	char identity[SPIFFE_ID_MAX];	/* the leaf's SPIFFE URI SAN */
	struct spiffe id;		/* the same, parsed */
	time_t not_before, not_after;	/* the leaf's validity */
	char serial[64];		/* the leaf's serial number, hex: for logs */
	X509 *leaf;
	STACK_OF(X509) *chain;		/* intermediates after the leaf, as given (may be empty) */
	EVP_PKEY *key;
	STACK_OF(X509) *roots;		/* the mesh trust anchors (at least one) */
	/* The TLS contexts for this bundle, built once by xtls_prepare()
	 * (xtls.h) on the control thread; freed with the bundle. */
	SSL_CTX *server_ctx;		/* inbound mTLS: 15006 (and HBONE later) */
	SSL_CTX *client_ctx;		/* outbound mTLS to mesh peers */
	SSL_CTX *hbone_server_ctx;	/* HBONE (15008): TLS 1.3 only, AES-GCM, ALPN h2 only */
};

/* Checks and wraps PEM text: chain (the leaf first, then intermediates; a
 * root at the end, as the Istio CA returns it, is accepted and dropped from
 * the chain it serves), key (PKCS#8, EC or RSA), roots (one or more). Refuses,
 * with err saying why: garbage or empty PEM, a key that does not match the
 * leaf, a leaf not valid at now (expired or not yet valid), a leaf without
 * exactly one URI SAN that spiffe_parse() accepts, a leaf that does not
 * chain to the roots. source is copied for logs. 0 and *out (one
 * reference), or -errno (-EINVAL bad input, -ENOMEM). */
int certbundle_from_pem(const char *chain, size_t chainlen, const char *key, size_t keylen,
    const char *roots, size_t rootslen, const char *source, time_t now, struct certbundle **out,
    char *err, size_t errlen);

struct certbundle *certbundle_ref(struct certbundle *b);
/* Drops a reference; the last frees the certificates and the contexts. NULL: no-op. */
void certbundle_unref(struct certbundle *b);

/* When a bundle should be replaced: when less than ratio of its lifetime is
 * left, as pilot-agent's SECRET_GRACE_PERIOD_RATIO (0.5: half life), i.e.
 * not_after - (not_after - not_before) * ratio, the ratio moved at random by
 * up to +-jitter (SECRET_GRACE_PERIOD_RATIO_JITTER, 0.01); clamped to the
 * lifetime. */
time_t certbundle_refresh_at(const struct certbundle *b, double ratio, double jitter);

/* The SPIFFE URI SAN of a certificate into out (SPIFFE_ID_MAX), parsed into
 * id when id is not NULL. 0; -ENOENT none; -EINVAL more than one URI SAN, or
 * one that is no SPIFFE workload ID. */
int x509_spiffe_id(X509 *x, char *out, size_t len, struct spiffe *id);

#endif
