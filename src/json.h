/* json: the one strict way text becomes a cJSON tree (config file, static
 * resources): no NUL bytes, no \u0000 escapes, numbers as RFC 8259 writes
 * them, nothing after the top-level value. Duplicate keys are left to the
 * walkers, which know the path. */
#ifndef OR_JSON_H
#define OR_JSON_H

#include <stddef.h>

struct cJSON;

/* Parses len bytes of text (not NUL-terminated). Returns the tree (free it
 * with cJSON_Delete) or NULL with "$: reason" in err: a NUL byte or a \u0000
 * escape (cJSON's C strings would end there and silently drop the rest of a
 * key or value), a number outside RFC 8259's grammar ("01", "1."; cJSON's
 * strtod takes them), invalid JSON (with its line and byte), or data after
 * the top-level value (RFC 8259 §2 allows only whitespace). */
struct cJSON *json_parse_strict(const char *text, size_t len, char *err, size_t errlen);

#endif
