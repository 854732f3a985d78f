/* certsrc_stubs: STAND-INS for the SDS and Istio CA sources, so that the
 * identity branch links on its own. The real ones are certsrc_sds_start in
 * src/sds.c (branch sds) and certsrc_ca_start in src/ca.c (branch grpc):
 * when merging those, DELETE this file and its line in src/local.mk.
 * (Weak symbols would not do: a weak definition in a static library keeps
 * the linker from pulling the real object out of the archive.) */
#include "autoconfig.h"

#include <errno.h>
#include <stdio.h>

#include "certsrc.h"

int
certsrc_sds_start(struct ev_loop *loop, const struct config *cfg, char *err, size_t errlen)
{
	(void)loop, (void)cfg;
	snprintf(err, errlen, "identity.sdsSocket: the SDS source is not built in yet");
	return -ENOSYS;
}

void
certsrc_sds_stop(void)
{
}

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
