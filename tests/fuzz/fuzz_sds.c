/* Fuzz target: an SDS DiscoveryResponse (src/sds.c), what the agent on the
 * other end of identity.sdsSocket sends: the response, its Any resources,
 * the Secrets in them and their DataSources, to the PEM checks. */
#include "autoconfig.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "sds.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sds_response r;
	char err[512];
	int rc = sds_response_decode(data, size, &r, err, sizeof(err));

	/* A refusal always says why and holds no half-decoded secret; an
	 * accepted half is NUL-terminated at its length. */
	if (rc < 0 && (!err[0] || r.has_cert || r.has_roots || r.chain || r.key || r.roots))
		__builtin_trap();
	if (rc == 0 && ((r.has_cert && (!r.chain || !r.key || r.chain[r.chainlen] || r.key[r.keylen])) ||
	    (r.has_roots && (!r.roots || r.roots[r.rootslen]))))
		__builtin_trap();
	sds_response_free(&r);
	return 0;
}
