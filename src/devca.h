/* devca: a development CA for the demo, the tests and VMs without istiod:
 * `outrigger ca init` mints a mesh root, `outrigger ca issue` a workload leaf
 * as the Istio CA issues it, in Istio's file layout. The minting functions
 * are also what the unit tests make their certificates with. */
#ifndef OR_DEVCA_H
#define OR_DEVCA_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <time.h>

/* A new EC P-256 key, or NULL. */
EVP_PKEY *devca_key(void);

/* What a certificate says. */
struct devca_cert {
	bool ca;			/* a root / intermediate: CA:TRUE, keyCertSign|cRLSign */
	const char *org, *cn;		/* subject; both NULL: an empty subject (Istio's leaves) */
	const char *const *uris;	/* URI SANs (nuris of them) */
	int nuris;
	time_t not_before, not_after;
};

/* A certificate for key, signed by issuer_key and named after issuer (both
 * NULL: self-signed), with a random 128-bit serial. Leaves get KeyUsage
 * digitalSignature|keyEncipherment and EKU serverAuth+clientAuth, like the
 * Istio CA's. NULL on failure. */
X509 *devca_cert(const struct devca_cert *spec, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key);

/* `outrigger ca ...` (argv[0] is "ca"): the exit code (0, 1 failure, 2 usage). */
int devca_main(int argc, char **argv);

#endif
