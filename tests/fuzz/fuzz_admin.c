/* Fuzz target: the admin/readiness request parser (src/admin.c), which reads
 * bytes from anyone who can reach port 15021, and the /logging query
 * (admin_logging: parsed whole before anything is applied). */
#include "autoconfig.h"

#include <stddef.h>
#include <stdint.h>

#include "accesslog.h"
#include "admin.h"
#include "log.h"

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
		/* Any query, as /logging's: a status, a body, no crash; the
		 * switches it may set are put back. */
		struct strbuf sb = { 0 };
		enum log_level l = log_threshold;
		bool post = r.method_len == 4 && __builtin_memcmp(r.method, "POST", 4) == 0;
		int st = admin_logging(r.query, r.query_len, post, &sb);
		if (st != 200 && st != 400 && st != 405 && st != 500)
			__builtin_trap();
		if (!sb.oom && !sb.len)
			__builtin_trap();
		sb_free(&sb);
		log_threshold = l;
		accesslog_enabled = false;
		accesslog_encoding = AL_TEXT;
	}
	return 0;
}
