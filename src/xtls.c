/* xtls: the TLS transport (placeholder until the transport lands: every
 * entry refuses, so nothing can believe it has TLS). */
#include "autoconfig.h"

#include <errno.h>
#include <stdio.h>

#include "xtls.h"

const char *const xtls_fail_names[] = { "none", "protocol", "no_cert", "untrusted", "expired", "identity", "io" };

int
xtls_prepare(struct certbundle *b, char *err, size_t errlen)
{
	(void)b;
	snprintf(err, errlen, "TLS is not built in yet");
	return -ENOSYS;
}
