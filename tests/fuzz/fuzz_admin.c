/* Fuzz target: the admin/readiness request parser (src/admin.c), which reads
 * bytes from anyone who can reach port 15021. */
#include "autoconfig.h"

#include <stddef.h>
#include <stdint.h>

#include "admin.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct admin_req r;
	const char *buf = (const char *)data;

	if (admin_parse_request(buf, size, &r) == 0) {
		/* Everything returned lies inside the input. */
		if (r.method != buf || r.path < buf || r.path + r.path_len > buf + size ||
		    (r.query && (r.query < buf || r.query + r.query_len > buf + size)))
			__builtin_trap();
	}
	return 0;
}
