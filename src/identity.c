/* identity: SPIFFE IDs and certificate bundles (placeholder until it lands). */
#include "autoconfig.h"

#include <errno.h>
#include <stdlib.h>

#include "identity.h"

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
	X509_free(b->leaf);
	sk_X509_pop_free(b->chain, X509_free);
	sk_X509_pop_free(b->roots, X509_free);
	EVP_PKEY_free(b->key);
	free(b);
}
