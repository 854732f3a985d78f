/* json: strict parsing of JSON text into a cJSON tree (see json.h). */
#include "autoconfig.h"

#include "json.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* The offset of the first \u0000 escape inside a JSON string, or -1. */
static long
nul_escape_at(const char *text, size_t len)
{
	bool in_str = false;

	for (size_t i = 0; i < len; i++) {
		if (!in_str) {
			in_str = text[i] == '"';
		} else if (text[i] == '"') {
			in_str = false;
		} else if (text[i] == '\\' && i + 1 < len) {
			if (text[i + 1] == 'u' && i + 5 < len && memcmp(text + i + 2, "0000", 4) == 0)
				return (long)i;
			i++;	/* the escaped character */
		}
	}
	return -1;
}

cJSON *
json_parse_strict(const char *text, size_t len, char *err, size_t errlen)
{
	const char *end = NULL, *nul;
	cJSON *root;
	long esc;

	if ((nul = memchr(text, '\0', len))) {
		snprintf(err, errlen, "$: NUL byte at byte %zu", (size_t)(nul - text));
		return NULL;
	}
	if ((esc = nul_escape_at(text, len)) >= 0) {
		snprintf(err, errlen, "$: \\u0000 (a NUL character) in a string at byte %ld", esc);
		return NULL;
	}
	root = cJSON_ParseWithLengthOpts(text, len, &end, false);
	if (!root) {
		const char *at = cJSON_GetErrorPtr();
		size_t off = at && at >= text && at <= text + len ? (size_t)(at - text) : len;
		unsigned line = 1;
		for (size_t i = 0; i < off; i++)
			line += text[i] == '\n';
		snprintf(err, errlen, "$: not valid JSON (near line %u, byte %zu)", line, off);
		return NULL;
	}
	for (; end && end < text + len; end++) {
		if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r') {
			snprintf(err, errlen, "$: unexpected data after the top-level value (byte %zu)",
			    (size_t)(end - text));
			cJSON_Delete(root);
			return NULL;
		}
	}
	return root;
}
