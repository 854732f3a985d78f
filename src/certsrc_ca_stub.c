/* certsrc_ca_stub: a STAND-IN for the Istio CA source, so that the
 * identity branch links on its own. The real certsrc_ca_start is in
 * src/ca.c (branch grpc): when merging it, DELETE this file and its line in
 * src/local.mk. (A weak symbol would not do: a weak definition in a static
 * library keeps the linker from pulling the real object out of the
 * archive.) */
#include "autoconfig.h"

#include <errno.h>
#include <stdio.h>

#include "certsrc.h"

int
certsrc_ca_start(struct ev_loop *loop, const struct config *cfg, char *err, size_t errlen)
{
	(void)loop, (void)cfg;
	snprintf(err, errlen, "identity.caAddress: the Istio CA source is not built in yet");
	return -ENOSYS;
}

void
certsrc_ca_stop(void)
{
}
