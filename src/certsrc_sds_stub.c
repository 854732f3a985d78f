/* certsrc_sds_stub: a STAND-IN for the SDS source, so that the identity
 * branch links on its own. The real certsrc_sds_start is in src/sds.c
 * (branch sds): when merging it, DELETE this file and its line in
 * src/local.mk. (A weak symbol would not do: a weak definition in a static
 * library keeps the linker from pulling the real object out of the
 * archive.) */
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
