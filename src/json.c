/* json: strict parsing of JSON text into a cJSON tree (see json.h). */
#include "autoconfig.h"

#include "json.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* The length of the JSON number (RFC 8259 §6) at p, 0 if what is there is
 * not one. cJSON hands the run of number characters to strtod, which also
 * takes "01", "1." and "-01.e5"; those are refused before parsing. */
static size_t
number_len(const char *p, const char *end)
{
	const char *s = p;

#define DIGIT(q) ((q) < end && *(q) >= '0' && *(q) <= '9')
	if (p < end && *p == '-')
		p++;
	if (p < end && *p == '0')
		p++;
	else if (DIGIT(p))
		while (DIGIT(p))
			p++;
	else
		return 0;
	if (p < end && *p == '.') {
		if (!DIGIT(p + 1))
			return 0;
		for (p++; DIGIT(p); p++)
			;
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			p++;
		if (!DIGIT(p))
			return 0;
		while (DIGIT(p))
			p++;
	}
	/* A number character right after it ("01", "1.2.3") is part of a bad token. */
	if (DIGIT(p) || (p < end && (*p == '.' || *p == 'e' || *p == 'E' || *p == '+' || *p == '-')))
		return 0;
#undef DIGIT
	return (size_t)(p - s);
}

/* Scans text outside cJSON for what it would accept silently: a \u0000
 * escape inside a string (its C strings end there: "concurrency\u0000x"
 * would read as "concurrency"), or a number outside RFC 8259's grammar; and
 * for nesting deeper than cJSON takes, which it would only report as "not
 * valid JSON". Returns the offset of the first, or -1; *what says which. */
#define OR_STR_(x) #x
#define OR_STR(x) OR_STR_(x)

static long
lax_token_at(const char *text, size_t len, const char **what)
{
	bool in_str = false;
	size_t depth = 0;

	for (size_t i = 0; i < len; i++) {
		if (!in_str) {
			if (text[i] == '[' || text[i] == '{') {
				if (++depth > CJSON_NESTING_LIMIT) {
					*what = "nested deeper than " OR_STR(CJSON_NESTING_LIMIT) " levels";
					return (long)i;
				}
			} else if (text[i] == ']' || text[i] == '}') {
				if (depth)
					depth--;
			} else if (text[i] == '"') {
				in_str = true;
			} else if (text[i] == '-' || (text[i] >= '0' && text[i] <= '9')) {
				size_t n = number_len(text + i, text + len);
				if (!n) {
					*what = "malformed number";
					return (long)i;
				}
				i += n - 1;
			}
		} else if (text[i] == '"') {
			in_str = false;
		} else if (text[i] == '\\' && i + 1 < len) {
			if (text[i + 1] == 'u' && i + 5 < len && memcmp(text + i + 2, "0000", 4) == 0) {
				*what = "\\u0000 (a NUL character) in a string";
				return (long)i;
			}
			i++;	/* the escaped character */
		}
	}
	return -1;
}

cJSON *
json_parse_strict(const char *text, size_t len, char *err, size_t errlen)
{
	const char *end = NULL, *nul, *what = NULL;
	cJSON *root;
	long esc;

	if ((nul = memchr(text, '\0', len))) {
		snprintf(err, errlen, "$: NUL byte at byte %zu", (size_t)(nul - text));
		return NULL;
	}
	if ((esc = lax_token_at(text, len, &what)) >= 0) {
		snprintf(err, errlen, "$: %s at byte %ld", what, esc);
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
