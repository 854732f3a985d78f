/* Fuzz target: what the app answers the status port's scrape (src/appscrape.c's
 * response parser and merge, untrusted bytes from any process in the pod),
 * and ISTIO_PROMETHEUS_ANNOTATIONS (inputs starting with '{').
 * A response is fed in two pieces split at the first byte's value, then EOF. */
#include "autoconfig.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "appscrape.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Small enough that the cap is reached by fuzzed inputs. */
#define FUZZ_CAP 4096

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct appscrape_resp r;
	struct strbuf out = { 0 };
	size_t split;
	int rc;

	if (size && data[0] == '{') {
		struct appscrape_cfg c;
		char *s = malloc(size + 1), err[256];

		if (!s)
			return 0;
		memcpy(s, data, size);
		s[size] = '\0';
		if (appscrape_parse_env(s, 15020, &c, err, sizeof(err)) == 0) {
			if (c.ntargets > APPSCRAPE_MAX_TARGETS)
				__builtin_trap();
			for (unsigned i = 0; i < c.ntargets; i++)
				if (!c.t[i].port || c.t[i].port == 15020 || c.t[i].path[0] != '/')
					__builtin_trap();
		} else if (!err[0]) {
			__builtin_trap();
		}
		free(s);
		return 0;
	}
	if (!size)
		return 0;
	split = data[0] % (size > 1 ? size : 1);
	data++;
	size--;
	if (split > size)
		split = size;
	appscrape_resp_init(&r, FUZZ_CAP);
	rc = appscrape_resp_feed(&r, (const char *)data, split);
	if (rc == 0)
		rc = appscrape_resp_feed(&r, (const char *)data + split, size - split);
	if (rc == 0)
		rc = appscrape_resp_eof(&r);
	if (r.body.len > FUZZ_CAP)
		__builtin_trap();
	if (rc == 1) {
		/* llhttp takes any 1-3 digit status ("20"); only 200 is used. */
		if (r.status < 0 || r.status > 999)
			__builtin_trap();
		appscrape_append_body(&out, r.body.p, r.body.len);
		if (out.len && out.p[out.len - 1] != '\n')
			__builtin_trap();
		sb_free(&out);
	}
	appscrape_resp_free(&r);
	return 0;
}
