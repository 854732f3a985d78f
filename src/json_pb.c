/* json_pb: proto3 JSON (https://protobuf.dev/programming-guides/json/)
 * decoded into protobuf-c structs, driven by the generated descriptors alone.
 *
 * The output is laid out as protobuf_c_message_unpack would lay it out
 * (allocated with the caller's allocator, defaults from protobuf_c_message_init,
 * repeated fields as n_ + array, oneof cases set, strings NUL-terminated), so
 * protobuf_c_message_free_unpacked frees it and the xDS path can unpack the
 * same types from protobuf. Every sub-decoder either succeeds or leaves its
 * destination as it was, so a message that fails half-way is always in a
 * state free_unpacked accepts. Well-known types are recognised by full name
 * (google.protobuf.Duration...), not by their generated symbols: only
 * jpb_register_wkts names those. FieldMask is not mapped (no mesh proto we
 * hold uses it); an Any of one is refused as "no JSON mapping". */
#include "autoconfig.h"

#include "json_pb.h"

#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/empty.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JPB_DEFAULT_DEPTH 64
#define JPB_DEFAULT_MAX_BYTES (64u << 20)
/* Up to this many keys an object is checked for duplicates pairwise;
 * above it, by sorting a copy of its key pointers. */
#define DUP_PAIRWISE 16

/* One decode's state: the JSON path of the value being decoded, grown and cut
 * back as the walk goes down and up, the depth, and where errors go. */
struct dec {
	const struct jpb_opts *o;
	ProtobufCAllocator *a;
	struct jpb_err *err;
	unsigned depth, max_depth;
	size_t allocated, max_bytes;	/* what the output holds, and its bound */
	bool too_big;			/* an allocation was refused for the bound */
	size_t plen;
	char path[JPB_PATH_LEN];
};

/* ---- allocation: the default matches protobuf-c's own (malloc/free), so
 * protobuf_c_message_free_unpacked(m, NULL) frees what we made with NULL. */

static void *
sys_alloc(void *data, size_t size)
{
	(void)data;
	return malloc(size);
}

static void
sys_free(void *data, void *p)
{
	(void)data;
	free(p);
}

static ProtobufCAllocator sys_allocator = { sys_alloc, sys_free, NULL };

/* Output memory is bounded per decode: "{}" is 3 bytes of JSON but a whole
 * struct (hundreds of bytes for some Envoy types) in a list. */
static void *
xalloc(struct dec *x, size_t size)
{
	size = size ? size : 1;
	if (size > x->max_bytes - x->allocated) {
		x->too_big = true;
		return NULL;
	}
	x->allocated += size;
	return x->a->alloc(x->a->allocator_data, size);
}

static void
xfree(struct dec *x, void *p)
{
	if (p)
		x->a->free(x->a->allocator_data, p);
}

/* ---- paths and errors */

/* Appends text to the path, each byte outside printable ASCII as '?' (keys
 * are arbitrary bytes and the path goes into logs and JSON). Returns the
 * length to cut back to. */
static size_t
path_add(struct dec *x, const char *pre, const char *s, const char *post)
{
	size_t old = x->plen, cap = sizeof(x->path) - 4;	/* room for "..." */
	const char *parts[3] = { pre, s, post };

	for (int k = 0; k < 3; k++) {
		for (const char *p = parts[k]; p && *p; p++) {
			if (x->plen >= cap) {
				memcpy(x->path + cap, "...", 4);
				x->plen = sizeof(x->path) - 1;
				return old;
			}
			unsigned char c = (unsigned char)*p;
			x->path[x->plen++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
		}
	}
	x->path[x->plen] = '\0';
	return old;
}

static size_t
path_key(struct dec *x, const char *key)
{
	return path_add(x, x->plen ? "." : NULL, key, NULL);
}

static size_t
path_index(struct dec *x, int i)
{
	char b[24];

	snprintf(b, sizeof(b), "[%d]", i);
	return path_add(x, NULL, b, NULL);
}

static size_t
path_mapkey(struct dec *x, const char *key)
{
	char b[68];

	/* A map key can be long; the path needs only enough to find it. */
	snprintf(b, sizeof(b), "%.64s", key);
	return path_add(x, "[\"", b, "\"]");
}

static void
path_cut(struct dec *x, size_t len)
{
	x->plen = len;
	x->path[len] = '\0';
}

static int fail(struct dec *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Records "path: reason" (the first error only: callers return at once). */
static int
fail(struct dec *x, const char *fmt, ...)
{
	va_list ap;
	int n;

	n = snprintf(x->err->msg, sizeof(x->err->msg), "%s: ", x->plen ? x->path : "$");
	if (n < 0 || (size_t)n >= sizeof(x->err->msg))
		n = 0;
	va_start(ap, fmt);
	vsnprintf(x->err->msg + n, sizeof(x->err->msg) - (size_t)n, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static int
oom(struct dec *x)
{
	if (x->too_big) {
		fail(x, "the decoded message would take more than %zu bytes", x->max_bytes);
		return -EFBIG;
	}
	fail(x, "out of memory");
	return -ENOMEM;
}

/* What a JSON value is, for "expected X, got Y"; strings show their start. */
static const char *
jdesc(const cJSON *v, char *buf, size_t len)
{
	if (cJSON_IsString(v)) {
		char s[40];
		size_t i;
		for (i = 0; i < sizeof(s) - 1 && v->valuestring[i]; i++) {
			unsigned char c = (unsigned char)v->valuestring[i];
			s[i] = c >= 0x20 && c < 0x7f && c != '"' ? (char)c : '?';
		}
		s[i] = '\0';
		snprintf(buf, len, "a string (\"%s%s\")", s, v->valuestring[i] ? "..." : "");
		return buf;
	}
	if (cJSON_IsNull(v))
		return "null";
	if (cJSON_IsBool(v))
		return "a boolean";
	if (cJSON_IsNumber(v)) {
		snprintf(buf, len, "a number (%.17g)", v->valuedouble);
		return buf;
	}
	if (cJSON_IsArray(v))
		return "a list";
	if (cJSON_IsObject(v))
		return "an object";
	return "an invalid value";
}

#define FAIL_GOT(x, v, what) \
	({ char _b[80]; fail((x), "expected %s, got %s", (what), jdesc((v), _b, sizeof(_b))); })

/* ---- the type registry (for Any's @type) */

static const ProtobufCMessageDescriptor **registry;
static size_t n_registry, cap_registry;

static int
reg_cmp(const void *k, const void *e)
{
	return strcmp((const char *)k, (*(const ProtobufCMessageDescriptor *const *)e)->name);
}

const ProtobufCMessageDescriptor *
jpb_lookup(const char *full_name)
{
	const ProtobufCMessageDescriptor **p;

	if (!n_registry)
		return NULL;
	p = bsearch(full_name, registry, n_registry, sizeof(*registry), reg_cmp);
	return p ? *p : NULL;
}

int
jpb_register(const ProtobufCMessageDescriptor *d)
{
	const ProtobufCMessageDescriptor *have = jpb_lookup(d->name);
	size_t i;

	if (have)
		return have == d ? 0 : -EEXIST;
	if (n_registry == cap_registry) {
		size_t cap = cap_registry ? cap_registry * 2 : 64;
		const ProtobufCMessageDescriptor **n = realloc(registry, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		registry = n;
		cap_registry = cap;
	}
	for (i = n_registry; i > 0 && strcmp(registry[i - 1]->name, d->name) > 0; i--)
		registry[i] = registry[i - 1];
	registry[i] = d;
	n_registry++;
	return 0;
}

int
jpb_register_wkts(void)
{
	static const ProtobufCMessageDescriptor *const wkts[] = {
		&google__protobuf__any__descriptor, &google__protobuf__duration__descriptor,
		&google__protobuf__empty__descriptor, &google__protobuf__struct__descriptor,
		&google__protobuf__value__descriptor, &google__protobuf__list_value__descriptor,
		&google__protobuf__timestamp__descriptor, &google__protobuf__double_value__descriptor,
		&google__protobuf__float_value__descriptor, &google__protobuf__int64_value__descriptor,
		&google__protobuf__uint64_value__descriptor, &google__protobuf__int32_value__descriptor,
		&google__protobuf__uint32_value__descriptor, &google__protobuf__bool_value__descriptor,
		&google__protobuf__string_value__descriptor, &google__protobuf__bytes_value__descriptor,
	};
	int rc;

	for (size_t i = 0; i < sizeof(wkts) / sizeof(wkts[0]); i++)
		if ((rc = jpb_register(wkts[i])) < 0)
			return rc;
	return 0;
}

/* ---- names */

void
jpb_json_name(const char *name, char *buf, size_t len)
{
	size_t n = 0;
	bool up = false;

	if (!len)
		return;
	for (const char *p = name; *p && n + 1 < len; p++) {
		if (*p == '_') {
			up = true;
		} else {
			buf[n++] = up && *p >= 'a' && *p <= 'z' ? (char)(*p - 'a' + 'A') : *p;
			up = false;
		}
	}
	buf[n] = '\0';
}

/* key equals the JSON name of field name, without building it. */
static bool
json_name_eq(const char *name, const char *key)
{
	bool up = false;

	for (const char *p = name; *p; p++) {
		if (*p == '_') {
			up = true;
			continue;
		}
		char c = up && *p >= 'a' && *p <= 'z' ? (char)(*p - 'a' + 'A') : *p;
		up = false;
		if (*key++ != c)
			return false;
	}
	return *key == '\0';
}

/* A JSON key names a field by its JSON name or its original name (the
 * mapping requires parsers to accept both). */
static const ProtobufCFieldDescriptor *
find_field(const ProtobufCMessageDescriptor *d, const char *key)
{
	const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, key);

	if (f)
		return f;
	for (unsigned i = 0; i < d->n_fields; i++)
		if (json_name_eq(d->fields[i].name, key))
			return &d->fields[i];
	return NULL;
}

static bool
is_wkt(const ProtobufCMessageDescriptor *d, const char *short_name)
{
	return strncmp(d->name, "google.protobuf.", 16) == 0 && strcmp(d->name + 16, short_name) == 0;
}

/* Types whose JSON form is not an object of their fields; inside an Any
 * they appear as {"@type": ..., "value": <that form>}. */
static const char *const special_wkts[] = {
	"Any", "Duration", "Timestamp", "Struct", "Value", "ListValue",
	"DoubleValue", "FloatValue", "Int64Value", "UInt64Value", "Int32Value",
	"UInt32Value", "BoolValue", "StringValue", "BytesValue",
};

static bool
is_special(const ProtobufCMessageDescriptor *d)
{
	if (strncmp(d->name, "google.protobuf.", 16) != 0)
		return false;
	for (size_t i = 0; i < sizeof(special_wkts) / sizeof(special_wkts[0]); i++)
		if (strcmp(d->name + 16, special_wkts[i]) == 0)
			return true;
	return false;
}

static bool
is_wrapper(const ProtobufCMessageDescriptor *d)
{
	static const char *const w[] = { "DoubleValue", "FloatValue", "Int64Value",
		"UInt64Value", "Int32Value", "UInt32Value", "BoolValue", "StringValue", "BytesValue" };

	if (strncmp(d->name, "google.protobuf.", 16) != 0)
		return false;
	for (size_t i = 0; i < sizeof(w) / sizeof(w[0]); i++)
		if (strcmp(d->name + 16, w[i]) == 0)
			return true;
	return false;
}

/* protoc makes a map<K, V> field a repeated message <Parent>.<Field>Entry,
 * nested in the parent, with key = 1 and value = 2; protobuf-c keeps no map
 * flag, but protoc refuses any other nested type of that name. */
static bool
is_map(const ProtobufCMessageDescriptor *parent, const ProtobufCFieldDescriptor *f)
{
	const ProtobufCMessageDescriptor *e;
	size_t pl;
	const char *s;
	bool up = true;

	if (f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE)
		return false;
	e = f->descriptor;
	pl = strlen(parent->name);
	if (e->n_fields != 2 || e->fields[0].id != 1 || e->fields[1].id != 2 ||
	    strcmp(e->fields[0].name, "key") != 0 || strcmp(e->fields[1].name, "value") != 0 ||
	    strncmp(e->name, parent->name, pl) != 0 || e->name[pl] != '.')
		return false;
	s = e->name + pl + 1;
	for (const char *p = f->name; *p; p++) {
		if (*p == '_') {
			up = true;
			continue;
		}
		char c = up && *p >= 'a' && *p <= 'z' ? (char)(*p - 'a' + 'A') : *p;
		up = false;
		if (*s++ != c)
			return false;
	}
	return strcmp(s, "Entry") == 0;
}

/* ---- objects: duplicate keys (RFC 8259 leaves them undefined; cJSON keeps
 * both, and the last would silently win) */

static int
keycmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The first duplicated key of obj, NULL if none; *nomem on allocation failure. */
static const char *
dup_key(const cJSON *obj, bool *nomem)
{
	const char **keys, *dup = NULL;
	size_t n = 0, i = 0;
	const cJSON *c;

	*nomem = false;
	cJSON_ArrayForEach(c, obj)
		n++;
	if (n <= DUP_PAIRWISE) {
		cJSON_ArrayForEach(c, obj)
			for (const cJSON *p = obj->child; p != c; p = p->next)
				if (strcmp(p->string, c->string) == 0)
					return c->string;
		return NULL;
	}
	if (!(keys = malloc(n * sizeof(*keys)))) {
		*nomem = true;
		return NULL;
	}
	cJSON_ArrayForEach(c, obj)
		keys[i++] = c->string;
	qsort(keys, n, sizeof(*keys), keycmp);
	for (i = 1; i < n && !dup; i++)
		if (strcmp(keys[i - 1], keys[i]) == 0)
			dup = keys[i];
	free(keys);
	return dup;
}

static int
check_object(struct dec *x, const cJSON *v, const char *what)
{
	const char *dup;
	bool nomem;

	if (!cJSON_IsObject(v))
		return FAIL_GOT(x, v, what);
	if ((dup = dup_key(v, &nomem))) {
		size_t at = path_key(x, dup);
		int rc = fail(x, "duplicate key");
		path_cut(x, at);
		return rc;
	}
	return nomem ? oom(x) : 0;
}

/* ---- scalars */

/* Valid UTF-8 (no overlong forms, surrogates or code points past U+10FFFF):
 * proto3 strings must be, and protobuf's parsers refuse the rest. */
static bool
utf8_ok(const unsigned char *s)
{
	while (*s) {
		unsigned c = *s, n, cp;
		if (c < 0x80) {
			s++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			n = 1, cp = c & 0x1f;
		else if (c >= 0xe0 && c <= 0xef)
			n = 2, cp = c & 0x0f;
		else if (c >= 0xf0 && c <= 0xf4)
			n = 3, cp = c & 0x07;
		else
			return false;
		for (unsigned i = 1; i <= n; i++) {
			if ((s[i] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i] & 0x3f);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		s += n + 1;
	}
	return true;
}

/* A decimal integer string: optional '-', digits, nothing else. canonical
 * also refuses leading zeros and "-0" (map keys: "1" and "01" would be two
 * JSON keys but one protobuf key). */
static int
parse_dec(const char *s, bool canonical, bool *neg, uint64_t *mag)
{
	const char *p = s;
	uint64_t m = 0;

	*neg = *p == '-';
	if (*neg)
		p++;
	if (*p < '0' || *p > '9')
		return -EINVAL;
	if (canonical && p[0] == '0' && (p[1] || *neg))
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (m > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
			return -ERANGE;
		m = m * 10 + (uint64_t)(*p - '0');
	}
	if (*p)
		return -EINVAL;
	*mag = m;
	return 0;
}

/* An integer field's value from a JSON number or string, in [lo, hi] (signed)
 * or [0, uhi] (unsigned). A JSON number is a double in cJSON, exact only
 * below 2^53: larger ones must be strings (proto3 JSON writes 64-bit
 * integers as strings anyway), or we would store a rounded value. */
static int
get_int(struct dec *x, const cJSON *v, bool is_signed, int64_t lo, int64_t hi, uint64_t uhi,
    int64_t *sv, uint64_t *uv)
{
	bool neg;
	uint64_t mag;

	if (cJSON_IsNumber(v)) {
		double d = v->valuedouble;
		if (!isfinite(d) || d != floor(d))
			return fail(x, "expected an integer, got %.17g", d);
		if (fabs(d) >= 9007199254740992.0) {
			if (is_signed ? hi <= INT32_MAX : uhi <= UINT32_MAX)
				return fail(x, "integer out of range");
			return fail(x, "%.17g: integers from 2^53 up lose precision as JSON numbers; "
			    "write them as strings", d);
		}
		neg = d < 0;
		mag = (uint64_t)fabs(d);
	} else if (cJSON_IsString(v)) {
		int rc = parse_dec(v->valuestring, false, &neg, &mag);
		if (rc == -EINVAL)
			return FAIL_GOT(x, v, "an integer");
		if (rc < 0)
			return fail(x, "integer \"%.30s\" out of range", v->valuestring);
	} else {
		return FAIL_GOT(x, v, "an integer");
	}
	if (is_signed) {
		if (neg ? mag > (uint64_t)-(lo + 1) + 1 : mag > (uint64_t)hi)
			return fail(x, "integer out of range [%" PRId64 ", %" PRId64 "]", lo, hi);
		*sv = neg ? (int64_t)(0 - mag) : (int64_t)mag;
	} else {
		if ((neg && mag) || mag > uhi)
			return fail(x, "integer out of range [0, %" PRIu64 "]", uhi);
		*uv = mag;
	}
	return 0;
}

/* The JSON number grammar (RFC 8259 §6), for numbers given as strings. */
static bool
json_number_syntax(const char *p)
{
	if (*p == '-')
		p++;
	if (*p == '0')
		p++;
	else if (*p >= '1' && *p <= '9')
		while (*p >= '0' && *p <= '9')
			p++;
	else
		return false;
	if (*p == '.') {
		p++;
		if (*p < '0' || *p > '9')
			return false;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	if (*p == 'e' || *p == 'E') {
		p++;
		if (*p == '+' || *p == '-')
			p++;
		if (*p < '0' || *p > '9')
			return false;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	return *p == '\0';
}

static int
get_double(struct dec *x, const cJSON *v, bool is_float, double *out)
{
	double d;

	if (cJSON_IsNumber(v)) {
		d = v->valuedouble;
		if (!isfinite(d))
			return fail(x, "number out of range");
	} else if (cJSON_IsString(v)) {
		const char *s = v->valuestring;
		if (strcmp(s, "NaN") == 0) {
			*out = NAN;
			return 0;
		}
		if (strcmp(s, "Infinity") == 0 || strcmp(s, "-Infinity") == 0) {
			*out = s[0] == '-' ? -INFINITY : INFINITY;
			return 0;
		}
		if (!json_number_syntax(s))
			return FAIL_GOT(x, v, "a number, \"NaN\", \"Infinity\" or \"-Infinity\"");
		d = strtod(s, NULL);
		if (!isfinite(d))
			return fail(x, "number out of range");
	} else {
		return FAIL_GOT(x, v, "a number");
	}
	/* Out of range is what would not round to a finite float: below half
	 * an ulp past FLT_MAX rounds to FLT_MAX, so "3.4028235e38" (the
	 * shortest form of FLT_MAX, what json_format and our encoder print) is
	 * FLT_MAX. Python's parser refuses it; we read back what we write. */
	if (is_float && fabs(d) >= 0x1.ffffffp+127)
		return fail(x, "%g out of range for a float", d);
	*out = d;
	return 0;
}

/* Base64, standard or URL-safe alphabet, with or without padding, as the
 * mapping asks parsers to accept; nothing else (no spaces, no stray '='). */
static int
b64_val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+' || c == '-')
		return 62;
	if (c == '/' || c == '_')
		return 63;
	return -1;
}

static int
get_bytes(struct dec *x, const cJSON *v, ProtobufCBinaryData *out)
{
	const char *s;
	size_t len, n, pad = 0, o = 0;
	uint8_t *buf;
	uint32_t acc = 0;
	unsigned bits = 0;

	if (!cJSON_IsString(v))
		return FAIL_GOT(x, v, "base64 bytes (a string)");
	s = v->valuestring;
	len = strlen(s);
	while (len > 0 && s[len - 1] == '=' && pad < 2)
		len--, pad++;
	for (size_t i = 0; i < len; i++)
		if (b64_val((unsigned char)s[i]) < 0)
			return fail(x, "not base64: byte %zu is '%c'", i,
			    s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?');
	if ((pad && (len + pad) % 4) || len % 4 == 1)
		return fail(x, "not base64: bad length or padding");
	n = len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0);
	if (!n) {
		out->len = 0;
		out->data = NULL;
		return 0;
	}
	if (!(buf = xalloc(x, n)))
		return oom(x);
	for (size_t i = 0; i < len; i++) {
		acc = acc << 6 | (uint32_t)b64_val((unsigned char)s[i]);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			buf[o++] = (uint8_t)(acc >> bits);
		}
	}
	out->len = o;
	out->data = buf;
	return 0;
}

static int
get_string(struct dec *x, const cJSON *v, char **out)
{
	size_t len;
	char *s;

	if (!cJSON_IsString(v))
		return FAIL_GOT(x, v, "a string");
	if (!utf8_ok((const unsigned char *)v->valuestring))
		return fail(x, "string is not valid UTF-8");
	len = strlen(v->valuestring);
	if (!(s = xalloc(x, len + 1)))
		return oom(x);
	memcpy(s, v->valuestring, len + 1);
	*out = s;
	return 0;
}

/* ---- values by type */

static size_t
elem_size(ProtobufCType t)
{
	switch (t) {
	case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32: case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32:
		return 4;
	case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64:
		return 8;
	case PROTOBUF_C_TYPE_FLOAT:
		return sizeof(float);
	case PROTOBUF_C_TYPE_DOUBLE:
		return sizeof(double);
	case PROTOBUF_C_TYPE_BOOL:
		return sizeof(protobuf_c_boolean);
	case PROTOBUF_C_TYPE_ENUM:
		return sizeof(int);
	case PROTOBUF_C_TYPE_STRING:
		return sizeof(char *);
	case PROTOBUF_C_TYPE_BYTES:
		return sizeof(ProtobufCBinaryData);
	case PROTOBUF_C_TYPE_MESSAGE:
		return sizeof(ProtobufCMessage *);
	}
	return 0;
}

static int dec_message(struct dec *x, const cJSON *v, const ProtobufCMessageDescriptor *d,
    ProtobufCMessage **out);

/* Decodes v as one value of field f's type into dst (the member, or an array
 * slot). Returns 0, 1 when an unknown enum name was skipped (ignore_unknown),
 * or -errno. dst is written only on success. */
static int
dec_value(struct dec *x, const cJSON *v, const ProtobufCFieldDescriptor *f, void *dst)
{
	int64_t sv = 0;
	uint64_t uv = 0;
	double dv;
	int rc;

	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32: case PROTOBUF_C_TYPE_SFIXED32:
		if ((rc = get_int(x, v, true, INT32_MIN, INT32_MAX, 0, &sv, &uv)) < 0)
			return rc;
		*(int32_t *)dst = (int32_t)sv;
		return 0;
	case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
		if ((rc = get_int(x, v, true, INT64_MIN, INT64_MAX, 0, &sv, &uv)) < 0)
			return rc;
		*(int64_t *)dst = sv;
		return 0;
	case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32:
		if ((rc = get_int(x, v, false, 0, 0, UINT32_MAX, &sv, &uv)) < 0)
			return rc;
		*(uint32_t *)dst = (uint32_t)uv;
		return 0;
	case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64:
		if ((rc = get_int(x, v, false, 0, 0, UINT64_MAX, &sv, &uv)) < 0)
			return rc;
		*(uint64_t *)dst = uv;
		return 0;
	case PROTOBUF_C_TYPE_FLOAT:
		if ((rc = get_double(x, v, true, &dv)) < 0)
			return rc;
		*(float *)dst = (float)dv;
		return 0;
	case PROTOBUF_C_TYPE_DOUBLE:
		if ((rc = get_double(x, v, false, &dv)) < 0)
			return rc;
		*(double *)dst = dv;
		return 0;
	case PROTOBUF_C_TYPE_BOOL:
		if (!cJSON_IsBool(v))
			return FAIL_GOT(x, v, "true or false");
		*(protobuf_c_boolean *)dst = cJSON_IsTrue(v);
		return 0;
	case PROTOBUF_C_TYPE_ENUM: {
		const ProtobufCEnumDescriptor *e = f->descriptor;
		if (cJSON_IsNull(v) && strcmp(e->name, "google.protobuf.NullValue") == 0) {
			*(int *)dst = 0;
			return 0;
		}
		if (cJSON_IsString(v)) {
			const ProtobufCEnumValue *ev =
			    protobuf_c_enum_descriptor_get_value_by_name(e, v->valuestring);
			if (!ev) {
				if (x->o->ignore_unknown)
					return 1;
				return fail(x, "unknown %s value \"%.40s\"", e->name, v->valuestring);
			}
			*(int *)dst = ev->value;
			return 0;
		}
		if (!cJSON_IsNumber(v))
			return FAIL_GOT(x, v, "an enum name or number");
		if ((rc = get_int(x, v, true, INT32_MIN, INT32_MAX, 0, &sv, &uv)) < 0)
			return rc;
		/* proto3 enums are open: keep the number, but tell the caller. */
		if (!protobuf_c_enum_descriptor_get_value(e, (int)sv) && x->err->unknown_enums++ == 0)
			snprintf(x->err->unknown_enum_path, sizeof(x->err->unknown_enum_path), "%s",
			    x->plen ? x->path : "$");
		*(int *)dst = (int)sv;
		return 0;
	}
	case PROTOBUF_C_TYPE_STRING:
		return get_string(x, v, (char **)dst);
	case PROTOBUF_C_TYPE_BYTES:
		return get_bytes(x, v, (ProtobufCBinaryData *)dst);
	case PROTOBUF_C_TYPE_MESSAGE:
		return dec_message(x, v, f->descriptor, (ProtobufCMessage **)dst);
	}
	return fail(x, "field %s has an unknown type %d", f->name, (int)f->type);
}

/* JSON null means the default, except where null is itself a value. */
static bool
null_is_value(const ProtobufCFieldDescriptor *f)
{
	if (f->type == PROTOBUF_C_TYPE_MESSAGE)
		return is_wkt(f->descriptor, "Value");
	if (f->type == PROTOBUF_C_TYPE_ENUM)
		return strcmp(((const ProtobufCEnumDescriptor *)f->descriptor)->name,
		    "google.protobuf.NullValue") == 0;
	return false;
}

/* Frees one decoded element of type t (the rest of a failed list). */
static void
free_elem(struct dec *x, ProtobufCType t, void *p)
{
	if (t == PROTOBUF_C_TYPE_STRING)
		xfree(x, *(char **)p);
	else if (t == PROTOBUF_C_TYPE_BYTES)
		xfree(x, ((ProtobufCBinaryData *)p)->data);
	else if (t == PROTOBUF_C_TYPE_MESSAGE && *(ProtobufCMessage **)p)
		protobuf_c_message_free_unpacked(*(ProtobufCMessage **)p, x->a);
}

/* Frees n decoded elements and their array. */
static void
free_array(struct dec *x, ProtobufCType t, void *arr, size_t n)
{
	size_t sz = elem_size(t);

	for (size_t i = 0; i < n; i++)
		free_elem(x, t, (char *)arr + i * sz);
	xfree(x, arr);
}

static int
dec_repeated(struct dec *x, const cJSON *v, const ProtobufCFieldDescriptor *f, ProtobufCMessage *m)
{
	size_t sz = elem_size(f->type), n = 0, cnt = 0;
	const cJSON *e;
	char *arr;
	int rc = 0, i = 0;

	if (!cJSON_IsArray(v))
		return FAIL_GOT(x, v, "a list");
	cJSON_ArrayForEach(e, v)
		cnt++;
	if (!cnt)
		return 0;
	if (!(arr = xalloc(x, cnt * sz)))
		return oom(x);
	memset(arr, 0, cnt * sz);
	cJSON_ArrayForEach(e, v) {
		size_t at = path_index(x, i++);
		if (cJSON_IsNull(e) && !null_is_value(f))
			rc = fail(x, "null is not allowed in a list");
		else
			rc = dec_value(x, e, f, arr + n * sz);
		path_cut(x, at);
		if (rc < 0)
			goto fail;
		if (rc == 0)
			n++;
	}
	*(size_t *)((char *)m + f->quantifier_offset) = n;
	*(void **)((char *)m + f->offset) = arr;
	if (!n)
		*(void **)((char *)m + f->offset) = (xfree(x, arr), NULL);
	return 0;
fail:
	free_array(x, f->type, arr, n);
	return rc;
}

/* A map key from its JSON key string, by the entry's key type. */
static int
dec_map_key(struct dec *x, const char *k, const ProtobufCFieldDescriptor *kf, void *dst)
{
	bool neg;
	uint64_t mag;
	bool is_signed = false;
	uint64_t max = 0;

	switch (kf->type) {
	case PROTOBUF_C_TYPE_STRING: {
		cJSON tmp = { .type = cJSON_String, .valuestring = (char *)k };
		return get_string(x, &tmp, (char **)dst);
	}
	case PROTOBUF_C_TYPE_BOOL:
		if (strcmp(k, "true") && strcmp(k, "false"))
			return fail(x, "a bool map key must be \"true\" or \"false\"");
		*(protobuf_c_boolean *)dst = k[0] == 't';
		return 0;
	case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32: case PROTOBUF_C_TYPE_SFIXED32:
		is_signed = true;
		max = INT32_MAX;
		break;
	case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
		is_signed = true;
		max = INT64_MAX;
		break;
	case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32:
		max = UINT32_MAX;
		break;
	case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64:
		max = UINT64_MAX;
		break;
	default:
		return fail(x, "map key of unsupported type %d", (int)kf->type);
	}
	if (parse_dec(k, true, &neg, &mag) < 0 || (neg && !is_signed) ||
	    (neg ? mag > max + 1 : mag > max))
		return fail(x, "map key is not a canonical integer in range");
	if (elem_size(kf->type) == 4) {
		if (is_signed)
			*(int32_t *)dst = neg ? (int32_t)(0 - (int64_t)mag) : (int32_t)mag;
		else
			*(uint32_t *)dst = (uint32_t)mag;
	} else {
		if (is_signed)
			*(int64_t *)dst = neg ? (int64_t)(0 - mag) : (int64_t)mag;
		else
			*(uint64_t *)dst = mag;
	}
	return 0;
}

static int
dec_map(struct dec *x, const cJSON *v, const ProtobufCFieldDescriptor *f, ProtobufCMessage *m)
{
	const ProtobufCMessageDescriptor *ed = f->descriptor;
	const ProtobufCFieldDescriptor *kf = &ed->fields[0], *vf = &ed->fields[1];
	ProtobufCMessage **arr;
	size_t n = 0, cnt = 0;
	const cJSON *e;
	int rc;

	if ((rc = check_object(x, v, "an object (a map)")) < 0)
		return rc;
	cJSON_ArrayForEach(e, v)
		cnt++;
	if (!cnt)
		return 0;
	if (!(arr = xalloc(x, cnt * sizeof(*arr))))
		return oom(x);
	cJSON_ArrayForEach(e, v) {
		size_t at = path_mapkey(x, e->string);
		ProtobufCMessage *em = xalloc(x, ed->sizeof_message);
		if (!em) {
			rc = oom(x);
			path_cut(x, at);
			goto fail;
		}
		protobuf_c_message_init(ed, em);
		rc = dec_map_key(x, e->string, kf, (char *)em + kf->offset);
		if (rc == 0) {
			if (cJSON_IsNull(e) && !null_is_value(vf))
				rc = fail(x, "null is not allowed as a map value");
			else
				rc = dec_value(x, e, vf, (char *)em + vf->offset);
		}
		path_cut(x, at);
		if (rc < 0) {
			protobuf_c_message_free_unpacked(em, x->a);
			goto fail;
		}
		if (rc == 1) {	/* unknown enum name skipped: drop the entry */
			protobuf_c_message_free_unpacked(em, x->a);
			continue;
		}
		arr[n++] = em;
	}
	*(size_t *)((char *)m + f->quantifier_offset) = n;
	*(void **)((char *)m + f->offset) = arr;
	if (!n)
		*(void **)((char *)m + f->offset) = (xfree(x, arr), NULL);
	return 0;
fail:
	free_array(x, PROTOBUF_C_TYPE_MESSAGE, arr, n);
	return rc;
}

/* One JSON member into its field of m (d is m's descriptor). */
static int
dec_field(struct dec *x, const cJSON *v, const ProtobufCMessageDescriptor *d,
    const ProtobufCFieldDescriptor *f, ProtobufCMessage *m)
{
	uint32_t *kase = NULL;
	int rc;

	if (cJSON_IsNull(v) && (f->label == PROTOBUF_C_LABEL_REPEATED || !null_is_value(f)))
		return 0;
	if (f->label == PROTOBUF_C_LABEL_REPEATED)
		return is_map(d, f) ? dec_map(x, v, f, m) : dec_repeated(x, v, f, m);
	if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
		kase = (uint32_t *)((char *)m + f->quantifier_offset);
		if (*kase) {
			const ProtobufCFieldDescriptor *o = protobuf_c_message_descriptor_get_field(d, *kase);
			return fail(x, "only one field of a oneof may be set, and %s already is",
			    o ? o->name : "another");
		}
	}
	rc = dec_value(x, v, f, (char *)m + f->offset);
	if (rc == 0 && kase)
		*kase = f->id;
	return rc < 0 ? rc : 0;
}

/* The members of object v into m, except the key skip (Any's "@type"). */
static int
dec_fields(struct dec *x, const cJSON *v, const ProtobufCMessageDescriptor *d, ProtobufCMessage *m,
    const char *skip)
{
	uint8_t seen_small[64], *seen = seen_small;
	const cJSON *item;
	int rc;

	if ((rc = check_object(x, v, "an object")) < 0)
		return rc;
	if (d->n_fields > sizeof(seen_small) && !(seen = malloc(d->n_fields)))
		return oom(x);
	memset(seen, 0, d->n_fields);
	cJSON_ArrayForEach(item, v) {
		const ProtobufCFieldDescriptor *f;
		size_t at;

		if (skip && strcmp(item->string, skip) == 0)
			continue;
		f = find_field(d, item->string);
		at = path_key(x, item->string);
		if (!f) {
			if (x->o->ignore_unknown) {
				path_cut(x, at);
				continue;
			}
			rc = fail(x, "unknown field (%s has no field of that name)", d->name);
			goto out;
		}
		if (seen[f - d->fields]++) {
			rc = fail(x, "field %s given twice (by its name and its JSON name)", f->name);
			goto out;
		}
		rc = dec_field(x, item, d, f, m);
		path_cut(x, at);
		if (rc < 0)
			goto out;
	}
	rc = 0;
out:
	if (seen != seen_small)
		free(seen);
	return rc;
}

/* ---- well-known types */

static const ProtobufCFieldDescriptor *
wkt_field(struct dec *x, const ProtobufCMessageDescriptor *d, unsigned id, ProtobufCType t)
{
	const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(d, id);

	if (!f || f->type != t) {
		fail(x, "%s: descriptor has no field %u of the expected type", d->name, id);
		return NULL;
	}
	return f;
}

#define MEMBER(m, f, T) (*(T *)((char *)(m) + (f)->offset))

/* The fraction of a second after the '.' of a Duration or Timestamp: 1 to 9
 * digits, as nanoseconds in *ns. Returns what follows, or NULL. */
static const char *
frac_nanos(const char *p, int64_t *ns)
{
	int digits = 0;

	for (*ns = 0; *p >= '0' && *p <= '9'; p++) {
		if (++digits > 9)
			return NULL;
		*ns = *ns * 10 + (*p - '0');
	}
	if (!digits)
		return NULL;
	for (int i = digits; i < 9; i++)
		*ns *= 10;
	return p;
}

/* "-1.5s": optional '-', seconds, optional '.' and 1 to 9 digits, 's'; in
 * ±315,576,000,000 s (10,000 years), nanos of the seconds' sign. */
static int
dec_duration(struct dec *x, const cJSON *v, const ProtobufCMessageDescriptor *d, ProtobufCMessage *m)
{
	const ProtobufCFieldDescriptor *fs = wkt_field(x, d, 1, PROTOBUF_C_TYPE_INT64);
	const ProtobufCFieldDescriptor *fn = wkt_field(x, d, 2, PROTOBUF_C_TYPE_INT32);
	const char *p;
	bool neg;
	int64_t sec = 0, ns = 0;

	if (!fs || !fn)
		return -EINVAL;
	if (!cJSON_IsString(v))
		return FAIL_GOT(x, v, "a duration string such as \"1.5s\"");
	p = v->valuestring;
	neg = *p == '-';
	p += neg;
	if (*p < '0' || *p > '9')
		goto bad;
	for (; *p >= '0' && *p <= '9'; p++) {
		sec = sec * 10 + (*p - '0');
		if (sec > 315576000000LL)
			return fail(x, "duration out of range (at most 315576000000s)");
	}
	if (*p == '.' && !(p = frac_nanos(p + 1, &ns)))
		goto bad;
	if (p[0] != 's' || p[1])
		goto bad;
	MEMBER(m, fs, int64_t) = neg ? -sec : sec;
	MEMBER(m, fn, int32_t) = (int32_t)(neg ? -ns : ns);
	return 0;
bad:
	return FAIL_GOT(x, v, "a duration string such as \"1.5s\"");
}

static int64_t
days_from_civil(int64_t y, unsigned mo, unsigned d)
{
	y -= mo <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static bool
digits_at(const char *p, int n, unsigned *out)
{
	unsigned v = 0;

	for (int i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		v = v * 10 + (unsigned)(p[i] - '0');
	}
	*out = v;
	return true;
}

/* RFC 3339 "1972-01-01T10:00:20.021Z" or with "+01:00", 0001-01-01 to
 * 9999-12-31 (the Timestamp's range). */
static int
dec_timestamp(struct dec *x, const cJSON *v, const ProtobufCMessageDescriptor *d, ProtobufCMessage *m)
{
	static const unsigned mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	const ProtobufCFieldDescriptor *fs = wkt_field(x, d, 1, PROTOBUF_C_TYPE_INT64);
	const ProtobufCFieldDescriptor *fn = wkt_field(x, d, 2, PROTOBUF_C_TYPE_INT32);
	unsigned y, mo, dd, h, mi, s, oh = 0, om = 0;
	int64_t secs, ns = 0;
	const char *p;

	if (!fs || !fn)
		return -EINVAL;
	if (!cJSON_IsString(v))
		goto bad;
	p = v->valuestring;
	if (strlen(p) < 20 || !digits_at(p, 4, &y) || p[4] != '-' || !digits_at(p + 5, 2, &mo) ||
	    p[7] != '-' || !digits_at(p + 8, 2, &dd) || p[10] != 'T' || !digits_at(p + 11, 2, &h) ||
	    p[13] != ':' || !digits_at(p + 14, 2, &mi) || p[16] != ':' || !digits_at(p + 17, 2, &s))
		goto bad;
	if (y < 1 || mo < 1 || mo > 12 || dd < 1 || dd > mdays[mo - 1] || h > 23 || mi > 59 || s > 59)
		goto bad;
	if (mo == 2 && dd == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
		goto bad;
	p += 19;
	if (*p == '.' && !(p = frac_nanos(p + 1, &ns)))
		goto bad;
	secs = days_from_civil(y, mo, dd) * 86400 + h * 3600 + mi * 60 + s;
	if (p[0] == 'Z' && !p[1]) {
		/* UTC */
	} else if ((p[0] == '+' || p[0] == '-') && digits_at(p + 1, 2, &oh) && p[3] == ':' &&
	    digits_at(p + 4, 2, &om) && !p[6] && oh <= 23 && om <= 59) {
		int64_t off = (int64_t)oh * 3600 + om * 60;
		secs += p[0] == '+' ? -off : off;
	} else {
		goto bad;
	}
	if (secs < -62135596800LL || secs > 253402300799LL)
		return fail(x, "timestamp out of range (0001-01-01 to 9999-12-31)");
	MEMBER(m, fs, int64_t) = secs;
	MEMBER(m, fn, int32_t) = (int32_t)ns;
	return 0;
bad:
	return FAIL_GOT(x, v, "an RFC 3339 timestamp such as \"1972-01-01T10:00:20.021Z\"");
}

/* google.protobuf.Value: any JSON value, in its oneof "kind". */
static int
dec_value_wkt(struct dec *x, const cJSON *v, const ProtobufCMessageDescriptor *d, ProtobufCMessage *m)
{
	static const struct { int json; unsigned id; ProtobufCType t; } kinds[] = {
		{ cJSON_NULL, 1, PROTOBUF_C_TYPE_ENUM },
		{ cJSON_Number, 2, PROTOBUF_C_TYPE_DOUBLE },
		{ cJSON_String, 3, PROTOBUF_C_TYPE_STRING },
		{ cJSON_True, 4, PROTOBUF_C_TYPE_BOOL },
		{ cJSON_False, 4, PROTOBUF_C_TYPE_BOOL },
		{ cJSON_Object, 5, PROTOBUF_C_TYPE_MESSAGE },
		{ cJSON_Array, 6, PROTOBUF_C_TYPE_MESSAGE },
	};
	const ProtobufCFieldDescriptor *f = NULL;
	int rc;

	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]) && !f; i++)
		if ((v->type & 0xff) == kinds[i].json && !(f = wkt_field(x, d, kinds[i].id, kinds[i].t)))
			return -EINVAL;
	if (!f)
		return FAIL_GOT(x, v, "a JSON value");
	if (f->id == 2 && !isfinite(v->valuedouble))
		return fail(x, "number out of range");
	if ((rc = dec_value(x, v, f, (char *)m + f->offset)) < 0)
		return rc;
	*(uint32_t *)((char *)m + f->quantifier_offset) = f->id;
	return 0;
}

static int
dec_any(struct dec *x, const cJSON *v, ProtobufCMessage **inner);

/* google.protobuf.Any: the inner message decoded, packed into value, with
 * type_url as given; the caller's on_any may keep the decoded message. */
static int
dec_any_wkt(struct dec *x, const cJSON *v, const ProtobufCMessageDescriptor *d, ProtobufCMessage *m)
{
	const ProtobufCFieldDescriptor *ft = wkt_field(x, d, 1, PROTOBUF_C_TYPE_STRING);
	const ProtobufCFieldDescriptor *fv = wkt_field(x, d, 2, PROTOBUF_C_TYPE_BYTES);
	const cJSON *t;
	ProtobufCMessage *inner = NULL;
	ProtobufCBinaryData val = { 0, NULL };
	char *url = NULL;
	int rc;

	if (!ft || !fv)
		return -EINVAL;
	if ((rc = check_object(x, v, "an object (an Any)")) < 0)
		return rc;
	if (!v->child)
		return 0;	/* {} is the empty Any, as protobuf's parsers read it */
	if ((rc = dec_any(x, v, &inner)) < 0)
		return rc;
	t = cJSON_GetObjectItemCaseSensitive(v, "@type");
	if ((rc = get_string(x, t, &url)) < 0)
		goto out;
	val.len = protobuf_c_message_get_packed_size(inner);
	if (val.len) {
		if (!(val.data = xalloc(x, val.len))) {
			rc = oom(x);
			goto out;
		}
		protobuf_c_message_pack(inner, val.data);
	}
	if (x->o->on_any) {
		rc = x->o->on_any(x->o->ctx, x->plen ? x->path : "$", inner->descriptor, inner);
		if (rc < 0) {
			fail(x, "refused by the caller (%s)", inner->descriptor->name);
			goto out;
		}
		if (rc == 1)
			inner = NULL;
	}
	MEMBER(m, ft, char *) = url;
	MEMBER(m, fv, ProtobufCBinaryData) = val;
	url = NULL;
	val.data = NULL;
	rc = 0;
out:
	xfree(x, url);
	xfree(x, val.data);
	if (inner)
		protobuf_c_message_free_unpacked(inner, x->a);
	return rc;
}

static int dec_message_skip(struct dec *x, const cJSON *v, const ProtobufCMessageDescriptor *d,
    ProtobufCMessage **out, const char *skip);

/* The message an Any in JSON form holds, of the registered type @type names:
 * its fields beside "@type", or, for a type with a JSON form of its own
 * (Duration, Struct, a wrapper...), that form under "value". */
static int
dec_any(struct dec *x, const cJSON *v, ProtobufCMessage **inner)
{
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(v, "@type"), *c;
	const ProtobufCMessageDescriptor *d;
	const char *name;
	size_t at;
	int rc;

	if ((rc = check_object(x, v, "an object (an Any)")) < 0)
		return rc;
	if (!t)
		return fail(x, "an Any needs \"@type\"");
	at = path_key(x, "@type");
	if (!cJSON_IsString(t)) {
		rc = FAIL_GOT(x, t, "a type URL string");
		path_cut(x, at);
		return rc;
	}
	name = strrchr(t->valuestring, '/');
	name = name ? name + 1 : t->valuestring;
	if (!(d = jpb_lookup(name))) {
		char b[208];
		size_t k;
		for (k = 0; k < sizeof(b) - 1 && t->valuestring[k]; k++) {
			unsigned char ch = (unsigned char)t->valuestring[k];
			b[k] = ch >= 0x20 && ch < 0x7f && ch != '"' ? (char)ch : '?';
		}
		b[k] = '\0';
		rc = fail(x, "unknown type \"%s%s\"", b, t->valuestring[k] ? "..." : "");
		path_cut(x, at);
		return rc;
	}
	path_cut(x, at);
	if (!is_special(d))
		return dec_message_skip(x, v, d, inner, "@type");
	cJSON_ArrayForEach(c, v) {
		if (strcmp(c->string, "@type") == 0 || strcmp(c->string, "value") == 0)
			continue;
		if (x->o->ignore_unknown)
			continue;
		at = path_key(x, c->string);
		rc = fail(x, "unknown field (an Any of %s has only \"@type\" and \"value\")", d->name);
		path_cut(x, at);
		return rc;
	}
	if (!(c = cJSON_GetObjectItemCaseSensitive(v, "value")))
		return fail(x, "an Any of %s needs \"value\"", d->name);
	at = path_key(x, "value");
	rc = dec_message(x, c, d, inner);
	path_cut(x, at);
	return rc;
}

/* ---- messages */

static int
dec_message_skip(struct dec *x, const cJSON *v, const ProtobufCMessageDescriptor *d,
    ProtobufCMessage **out, const char *skip)
{
	ProtobufCMessage *m;
	int rc;

	if (x->depth >= x->max_depth)
		return fail(x, "nested deeper than %u", x->max_depth);
	if (!(m = xalloc(x, d->sizeof_message)))
		return oom(x);
	protobuf_c_message_init(d, m);
	x->depth++;
	if (skip || !is_special(d))
		rc = dec_fields(x, v, d, m, skip);
	else if (is_wkt(d, "Any"))
		rc = dec_any_wkt(x, v, d, m);
	else if (is_wkt(d, "Duration"))
		rc = dec_duration(x, v, d, m);
	else if (is_wkt(d, "Timestamp"))
		rc = dec_timestamp(x, v, d, m);
	else if (is_wkt(d, "Value"))
		rc = dec_value_wkt(x, v, d, m);
	else if (is_wkt(d, "Struct")) {
		const ProtobufCFieldDescriptor *f = wkt_field(x, d, 1, PROTOBUF_C_TYPE_MESSAGE);
		rc = !f ? -EINVAL : !is_map(d, f) ? fail(x, "%s: field 1 is not a map", d->name) :
		    dec_map(x, v, f, m);
	} else if (is_wkt(d, "ListValue")) {
		const ProtobufCFieldDescriptor *f = wkt_field(x, d, 1, PROTOBUF_C_TYPE_MESSAGE);
		rc = !f ? -EINVAL : dec_repeated(x, v, f, m);
	} else if (is_wrapper(d)) {
		/* A wrapper is its bare value; null (the field unset) never gets here. */
		const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(d, 1);
		rc = !f ? fail(x, "%s: descriptor has no field 1", d->name) :
		    dec_value(x, v, f, (char *)m + f->offset);
		if (rc > 0)
			rc = 0;
	} else {
		rc = fail(x, "%s: no JSON mapping", d->name);
	}
	x->depth--;
	if (rc < 0) {
		protobuf_c_message_free_unpacked(m, x->a);
		return rc;
	}
	*out = m;
	return 0;
}

static int
dec_message(struct dec *x, const cJSON *v, const ProtobufCMessageDescriptor *d, ProtobufCMessage **out)
{
	return dec_message_skip(x, v, d, out, NULL);
}

/* ---- entry points */

static void
dec_init(struct dec *x, const char *path, const struct jpb_opts *opts, ProtobufCAllocator *alloc,
    struct jpb_err *err)
{
	static const struct jpb_opts defaults;

	memset(x, 0, sizeof(*x));
	x->o = opts ? opts : &defaults;
	x->a = alloc ? alloc : &sys_allocator;
	x->err = err;
	x->max_depth = x->o->max_depth ? x->o->max_depth : JPB_DEFAULT_DEPTH;
	x->max_bytes = x->o->max_bytes ? x->o->max_bytes : JPB_DEFAULT_MAX_BYTES;
	err->msg[0] = '\0';
	err->unknown_enums = 0;
	err->unknown_enum_path[0] = '\0';
	if (path && *path)
		path_add(x, NULL, path, NULL);
}

int
jpb_decode(const cJSON *j, const ProtobufCMessageDescriptor *d, const char *path,
    const struct jpb_opts *opts, ProtobufCAllocator *alloc, ProtobufCMessage **out,
    struct jpb_err *err)
{
	struct dec x;

	*out = NULL;
	dec_init(&x, path, opts, alloc, err);
	if (cJSON_IsNull(j) && !is_wkt(d, "Value"))
		return FAIL_GOT(&x, j, "a JSON value for a message");
	return dec_message(&x, j, d, out);
}

int
jpb_decode_any(const cJSON *j, const char *path, const struct jpb_opts *opts,
    ProtobufCAllocator *alloc, ProtobufCMessage **out, struct jpb_err *err)
{
	struct dec x;

	*out = NULL;
	dec_init(&x, path, opts, alloc, err);
	return dec_any(&x, j, out);
}

/* ---- encoding: protobuf-c structs into proto3 JSON, as Python's
 * google.protobuf.json_format.MessageToDict prints by default (JSON names,
 * fields at their default left out, 64-bit integers as strings, enums by
 * name). Where a part has no JSON form (an Any of a type not registered, or
 * whose value does not decode; a Duration or Timestamp out of range; nesting
 * past the bound) the encoder does not fail: it writes a marker object with
 * "@error" there and counts it, so one odd resource never hides a whole
 * /config_dump. A string that is not valid UTF-8 (protobuf-c does not check
 * what it unpacks) has each bad byte replaced by U+FFFD, also counted. */

struct enc {
	unsigned depth, max_depth;
	unsigned marks;
	bool oom;
};

static cJSON *enc_message(struct enc *e, const ProtobufCMessage *m);

/* Every cJSON constructor returns NULL on OOM: note it once, here. */
static cJSON *
enc_ok(struct enc *e, cJSON *j)
{
	if (!j)
		e->oom = true;
	return j;
}

static void
enc_add(struct enc *e, cJSON *obj, const char *key, cJSON *v)
{
	if (!v || !obj) {
		e->oom = true;
		cJSON_Delete(v);
		return;
	}
	if (!cJSON_AddItemToObject(obj, key, v)) {
		e->oom = true;
		cJSON_Delete(v);
	}
}

/* {"@type": url, "@error": why} (no "@type" when url is NULL). */
static cJSON *
enc_mark(struct enc *e, const char *url, const char *why)
{
	cJSON *o = enc_ok(e, cJSON_CreateObject());

	e->marks++;
	if (o && url)
		enc_add(e, o, "@type", cJSON_CreateString(url));
	if (o)
		enc_add(e, o, "@error", cJSON_CreateString(why));
	return o;
}

/* A string as JSON: bytes that are not UTF-8 become U+FFFD. */
static cJSON *
enc_string(struct enc *e, const char *s)
{
	const unsigned char *p;
	char *fixed, *o;
	cJSON *j;

	if (!s)
		s = "";
	if (utf8_ok((const unsigned char *)s))
		return enc_ok(e, cJSON_CreateString(s));
	e->marks++;
	if (!(fixed = malloc(strlen(s) * 3 + 1))) {
		e->oom = true;
		return NULL;
	}
	for (p = (const unsigned char *)s, o = fixed; *p;) {
		char one[5] = { 0 };
		size_t n = *p < 0x80 ? 1 : *p >= 0xc2 && *p <= 0xdf ? 2 : *p >= 0xe0 && *p <= 0xef ? 3 :
		    *p >= 0xf0 && *p <= 0xf4 ? 4 : 0;
		bool good = n > 0;
		for (size_t i = 1; good && i < n; i++)
			good = (p[i] & 0xc0) == 0x80;
		if (good) {
			memcpy(one, p, n);
			good = utf8_ok((const unsigned char *)one);
		}
		if (good) {
			memcpy(o, p, n);
			o += n;
			p += n;
		} else {
			memcpy(o, "\xef\xbf\xbd", 3);
			o += 3;
			p++;
		}
	}
	*o = '\0';
	j = enc_ok(e, cJSON_CreateString(fixed));
	free(fixed);
	return j;
}

/* Standard base64 with padding (what json_format writes). */
static cJSON *
enc_bytes(struct enc *e, const ProtobufCBinaryData *b)
{
	static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t n = b->len, o = 0;
	char *s;
	cJSON *j;

	if (!(s = malloc((n + 2) / 3 * 4 + 1))) {
		e->oom = true;
		return NULL;
	}
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)b->data[i] << 16 | (i + 1 < n ? (uint32_t)b->data[i + 1] << 8 : 0) |
		    (i + 2 < n ? b->data[i + 2] : 0);
		s[o++] = abc[v >> 18 & 63];
		s[o++] = abc[v >> 12 & 63];
		s[o++] = i + 1 < n ? abc[v >> 6 & 63] : '=';
		s[o++] = i + 2 < n ? abc[v & 63] : '=';
	}
	s[o] = '\0';
	j = enc_ok(e, cJSON_CreateString(s));
	free(s);
	return j;
}

/* A float as its shortest decimal form that reads back as the same float
 * (json_format's ToShortestFloat), so 0.1f prints 0.1, not 0.100000001. */
static double
shortest_float(float f)
{
	char b[32];

	for (int prec = 6; prec < 9; prec++) {
		snprintf(b, sizeof(b), "%.*g", prec, (double)f);
		if (strtof(b, NULL) == f)
			return strtod(b, NULL);
	}
	snprintf(b, sizeof(b), "%.9g", (double)f);
	return strtod(b, NULL);
}

/* A finite number. cJSON prints "%.15g" whenever that reads back within an
 * epsilon, which is not exact (DBL_MAX would print as 1.79769313486232e308,
 * past DBL_MAX): a number whose 15 digits do not give it back exactly is
 * put in the tree as raw JSON text in its shortest exact form, which
 * cJSON prints as it is (cJSON_IsRaw; jpb_decode takes only parsed trees). */
static cJSON *
enc_number(struct enc *e, double d)
{
	char b[32];

	snprintf(b, sizeof(b), "%.15g", d);
	if (strtod(b, NULL) == d)
		return enc_ok(e, cJSON_CreateNumber(d));
	snprintf(b, sizeof(b), "%.16g", d);
	if (strtod(b, NULL) != d)
		snprintf(b, sizeof(b), "%.17g", d);
	return enc_ok(e, cJSON_CreateRaw(b));
}

static cJSON *
enc_double(struct enc *e, double d)
{
	if (isnan(d))
		return enc_ok(e, cJSON_CreateString("NaN"));
	if (isinf(d))
		return enc_ok(e, cJSON_CreateString(d < 0 ? "-Infinity" : "Infinity"));
	return enc_number(e, d);
}

static cJSON *
enc_int64(struct enc *e, bool is_signed, uint64_t v)
{
	char b[24];

	if (is_signed)
		snprintf(b, sizeof(b), "%" PRId64, (int64_t)v);
	else
		snprintf(b, sizeof(b), "%" PRIu64, v);
	return enc_ok(e, cJSON_CreateString(b));
}

/* A message field's value that is absent where one must be printed (a map
 * entry without its value): the type's default, as Python prints it. */
static cJSON *
enc_default_message(struct enc *e, const ProtobufCMessageDescriptor *d)
{
	ProtobufCMessage *m = calloc(1, d->sizeof_message);
	cJSON *j;

	if (!m) {
		e->oom = true;
		return NULL;
	}
	protobuf_c_message_init(d, m);
	j = enc_message(e, m);
	free(m);
	return j;
}

/* One value of field f's type at p (the member, or an array slot). */
static cJSON *
enc_value(struct enc *e, const ProtobufCFieldDescriptor *f, const void *p)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32: case PROTOBUF_C_TYPE_SFIXED32:
		return enc_ok(e, cJSON_CreateNumber(*(const int32_t *)p));
	case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32:
		return enc_ok(e, cJSON_CreateNumber(*(const uint32_t *)p));
	case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
		return enc_int64(e, true, (uint64_t)*(const int64_t *)p);
	case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64:
		return enc_int64(e, false, *(const uint64_t *)p);
	case PROTOBUF_C_TYPE_FLOAT: {
		float v = *(const float *)p;
		return isfinite(v) ? enc_number(e, shortest_float(v)) : enc_double(e, v);
	}
	case PROTOBUF_C_TYPE_DOUBLE:
		return enc_double(e, *(const double *)p);
	case PROTOBUF_C_TYPE_BOOL:
		return enc_ok(e, cJSON_CreateBool(*(const protobuf_c_boolean *)p));
	case PROTOBUF_C_TYPE_ENUM: {
		const ProtobufCEnumDescriptor *ed = f->descriptor;
		const ProtobufCEnumValue *ev;
		int v = *(const int *)p;
		if (strcmp(ed->name, "google.protobuf.NullValue") == 0)
			return enc_ok(e, cJSON_CreateNull());
		/* proto3 enums are open: a number no value has stays a number. */
		if ((ev = protobuf_c_enum_descriptor_get_value(ed, v)))
			return enc_ok(e, cJSON_CreateString(ev->name));
		return enc_ok(e, cJSON_CreateNumber(v));
	}
	case PROTOBUF_C_TYPE_STRING:
		return enc_string(e, *(char *const *)p);
	case PROTOBUF_C_TYPE_BYTES:
		return enc_bytes(e, (const ProtobufCBinaryData *)p);
	case PROTOBUF_C_TYPE_MESSAGE: {
		const ProtobufCMessage *sub = *(ProtobufCMessage *const *)p;
		return sub ? enc_message(e, sub) : enc_default_message(e, f->descriptor);
	}
	}
	return enc_mark(e, NULL, "field of an unknown type");
}

/* Whether field f of m is printed: json_format lists the fields
 * ListFields() returns, i.e. those present: a oneof member that is the set
 * case (even at its default), a message that is set, a field with explicit
 * presence whose has_ flag is set, a repeated field with elements, and
 * otherwise a proto3 scalar that is not zero ("" and empty bytes are). */
static bool
enc_present(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
	const char *member = (const char *)m + f->offset;
	const char *q = (const char *)m + f->quantifier_offset;

	if (f->label == PROTOBUF_C_LABEL_REPEATED)
		return *(const size_t *)q > 0;
	if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
		return *(const uint32_t *)q == f->id;
	if (f->type == PROTOBUF_C_TYPE_MESSAGE)
		return *(ProtobufCMessage *const *)member != NULL;
	if (f->label == PROTOBUF_C_LABEL_REQUIRED)
		return true;
	if (f->type == PROTOBUF_C_TYPE_STRING) {
		const char *s = *(char *const *)member;
		if (f->label == PROTOBUF_C_LABEL_OPTIONAL)
			return s && s != f->default_value;
		return s && *s;
	}
	if (f->label == PROTOBUF_C_LABEL_OPTIONAL)
		return *(const protobuf_c_boolean *)q;
	if (f->type == PROTOBUF_C_TYPE_BYTES)
		return ((const ProtobufCBinaryData *)member)->len > 0;
	/* Zero by its bits: -0.0 is present, as in protobuf's own runtimes. */
	for (size_t i = 0, n = elem_size(f->type); i < n; i++)
		if (member[i])
			return true;
	return false;
}

/* A map key as its JSON key string (malloc'ed). */
static char *
enc_map_key(const ProtobufCFieldDescriptor *kf, const void *p)
{
	char b[24];

	switch (kf->type) {
	case PROTOBUF_C_TYPE_STRING:
		return strdup(*(char *const *)p ? *(char *const *)p : "");
	case PROTOBUF_C_TYPE_BOOL:
		return strdup(*(const protobuf_c_boolean *)p ? "true" : "false");
	case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32: case PROTOBUF_C_TYPE_SFIXED32:
		snprintf(b, sizeof(b), "%" PRId32, *(const int32_t *)p);
		break;
	case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32:
		snprintf(b, sizeof(b), "%" PRIu32, *(const uint32_t *)p);
		break;
	case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
		snprintf(b, sizeof(b), "%" PRId64, *(const int64_t *)p);
		break;
	case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64:
		snprintf(b, sizeof(b), "%" PRIu64, *(const uint64_t *)p);
		break;
	default:
		snprintf(b, sizeof(b), "?");
		break;
	}
	return strdup(b);
}

struct keyat {
	const char *key;
	size_t i;
};

static int
keyat_cmp(const void *a, const void *b)
{
	const struct keyat *x = a, *y = b;
	int c = strcmp(x->key, y->key);

	return c ? c : x->i < y->i ? -1 : x->i > y->i;
}

/* A map field (repeated <Field>Entry) as a JSON object, in the entries'
 * order. The wire may repeat a key; as protobuf's parsers do, the last one
 * wins, so the object never has a key twice. */
static cJSON *
enc_map(struct enc *e, const ProtobufCFieldDescriptor *f, const ProtobufCMessage *m)
{
	const ProtobufCMessageDescriptor *ed = f->descriptor;
	const ProtobufCFieldDescriptor *kf = &ed->fields[0], *vf = &ed->fields[1];
	size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
	ProtobufCMessage *const *arr = *(ProtobufCMessage *const *const *)((const char *)m + f->offset);
	struct keyat *ks = calloc(n ? n : 1, sizeof(*ks));
	bool *skip = calloc(n ? n : 1, sizeof(*skip));
	cJSON *obj = enc_ok(e, cJSON_CreateObject());

	if (!ks || !skip || !obj)
		goto oom;
	for (size_t i = 0; i < n; i++) {
		if (!(ks[i].key = enc_map_key(kf, (const char *)arr[i] + kf->offset)))
			goto oom;
		ks[i].i = i;
	}
	if (n > 1) {
		struct keyat *sorted = malloc(n * sizeof(*sorted));
		if (!sorted)
			goto oom;
		memcpy(sorted, ks, n * sizeof(*sorted));
		qsort(sorted, n, sizeof(*sorted), keyat_cmp);
		for (size_t i = 0; i + 1 < n; i++)
			if (strcmp(sorted[i].key, sorted[i + 1].key) == 0)
				skip[sorted[i].i] = true;
		free(sorted);
	}
	for (size_t i = 0; i < n && !e->oom; i++) {
		cJSON *v;
		if (skip[i])
			continue;
		v = enc_value(e, vf, (const char *)arr[i] + vf->offset);
		if (kf->type == PROTOBUF_C_TYPE_STRING && !utf8_ok((const unsigned char *)ks[i].key)) {
			cJSON *k = enc_string(e, ks[i].key);
			enc_add(e, obj, k && cJSON_IsString(k) ? k->valuestring : "?", v);
			cJSON_Delete(k);
		} else {
			enc_add(e, obj, ks[i].key, v);
		}
	}
	goto out;
oom:
	e->oom = true;
out:
	for (size_t i = 0; ks && i < n; i++)
		free((char *)ks[i].key);
	free(ks);
	free(skip);
	return obj;
}

/* The present fields of m into obj, under their JSON names. */
static void
enc_fields(struct enc *e, const ProtobufCMessage *m, cJSON *obj)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;

	for (unsigned i = 0; i < d->n_fields && !e->oom; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		const char *member = (const char *)m + f->offset;
		char name[128];
		cJSON *v;

		if (!enc_present(m, f))
			continue;
		jpb_json_name(f->name, name, sizeof(name));
		if (f->label != PROTOBUF_C_LABEL_REPEATED) {
			v = enc_value(e, f, member);
		} else if (is_map(d, f)) {
			v = enc_map(e, f, m);
		} else {
			size_t n = *(const size_t *)((const char *)m + f->quantifier_offset), sz = elem_size(f->type);
			const char *arr = *(const char *const *)member;
			v = enc_ok(e, cJSON_CreateArray());
			for (size_t k = 0; v && k < n && !e->oom; k++) {
				cJSON *el = enc_value(e, f, arr + k * sz);
				if (!el || !cJSON_AddItemToArray(v, el)) {
					cJSON_Delete(el);
					e->oom = true;
				}
			}
		}
		enc_add(e, obj, name, v);
	}
}

static bool
enc_wkt_fields(const ProtobufCMessage *m, unsigned id1, ProtobufCType t1, unsigned id2,
    ProtobufCType t2, const ProtobufCFieldDescriptor **f1, const ProtobufCFieldDescriptor **f2)
{
	*f1 = protobuf_c_message_descriptor_get_field(m->descriptor, id1);
	*f2 = id2 ? protobuf_c_message_descriptor_get_field(m->descriptor, id2) : NULL;
	return *f1 && (*f1)->type == t1 && (!id2 || (*f2 && (*f2)->type == t2));
}

/* The fraction of a second as json_format prints it: none, or 3, 6 or 9
 * digits, the fewest that keep the value ("1.500s", "0.000001s"). */
static void
fmt_frac(char *b, size_t len, int32_t nanos)
{
	if (nanos == 0)
		snprintf(b, len, "%s", "");
	else if (nanos % 1000000 == 0)
		snprintf(b, len, ".%03d", nanos / 1000000);
	else if (nanos % 1000 == 0)
		snprintf(b, len, ".%06d", nanos / 1000);
	else
		snprintf(b, len, ".%09d", nanos);
}

static cJSON *
enc_duration(struct enc *e, const ProtobufCMessage *m)
{
	const ProtobufCFieldDescriptor *fs, *fn;
	int64_t s;
	int32_t n;
	char frac[16], b[48];

	if (!enc_wkt_fields(m, 1, PROTOBUF_C_TYPE_INT64, 2, PROTOBUF_C_TYPE_INT32, &fs, &fn))
		return enc_mark(e, NULL, "Duration: descriptor has not the expected fields");
	s = MEMBER(m, fs, int64_t);
	n = MEMBER(m, fn, int32_t);
	if (s < -315576000000LL || s > 315576000000LL || n < -999999999 || n > 999999999 ||
	    (s < 0 && n > 0) || (s > 0 && n < 0))
		return enc_mark(e, NULL, "Duration out of range or with nanos of the wrong sign");
	fmt_frac(frac, sizeof(frac), n < 0 ? -n : n);
	/* The sign is written apart: "-0.5s" has seconds 0. */
	snprintf(b, sizeof(b), "%s%" PRId64 "%ss", s < 0 || n < 0 ? "-" : "", s < 0 ? -s : s, frac);
	return enc_ok(e, cJSON_CreateString(b));
}

/* The inverse of days_from_civil (days since 1970-01-01 to y-m-d). */
static void
civil_from_days(int64_t z, int64_t *y, unsigned *mo, unsigned *d)
{
	z += 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	unsigned doe = (unsigned)(z - era * 146097);
	unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	unsigned mp = (5 * doy + 2) / 153;
	*d = doy - (153 * mp + 2) / 5 + 1;
	*mo = mp < 10 ? mp + 3 : mp - 9;
	*y = (int64_t)yoe + era * 400 + (*mo <= 2);
}

/* RFC 3339 in UTC ("Z"), fractional digits as for Duration. */
static cJSON *
enc_timestamp(struct enc *e, const ProtobufCMessage *m)
{
	const ProtobufCFieldDescriptor *fs, *fn;
	int64_t s, days, y;
	int32_t n;
	unsigned mo, d, sod;
	char frac[16], b[64];

	if (!enc_wkt_fields(m, 1, PROTOBUF_C_TYPE_INT64, 2, PROTOBUF_C_TYPE_INT32, &fs, &fn))
		return enc_mark(e, NULL, "Timestamp: descriptor has not the expected fields");
	s = MEMBER(m, fs, int64_t);
	n = MEMBER(m, fn, int32_t);
	if (s < -62135596800LL || s > 253402300799LL || n < 0 || n > 999999999)
		return enc_mark(e, NULL, "Timestamp out of range (0001-01-01 to 9999-12-31)");
	days = s >= 0 ? s / 86400 : -((-s + 86399) / 86400);
	sod = (unsigned)(s - days * 86400);
	civil_from_days(days, &y, &mo, &d);
	fmt_frac(frac, sizeof(frac), n);
	snprintf(b, sizeof(b), "%04" PRId64 "-%02u-%02uT%02u:%02u:%02u%sZ", y, mo, d, sod / 3600,
	    sod / 60 % 60, sod % 60, frac);
	return enc_ok(e, cJSON_CreateString(b));
}

/* google.protobuf.Value: its kind as a bare JSON value; unset is null. */
static cJSON *
enc_value_wkt(struct enc *e, const ProtobufCMessage *m)
{
	const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(m->descriptor, 1);
	uint32_t kase;

	if (!f || !(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF))
		return enc_mark(e, NULL, "Value: descriptor has not the expected fields");
	kase = *(const uint32_t *)((const char *)m + f->quantifier_offset);
	if (kase == 0 || kase == 1 || !(f = protobuf_c_message_descriptor_get_field(m->descriptor, kase)))
		return enc_ok(e, cJSON_CreateNull());
	return enc_value(e, f, (const char *)m + f->offset);
}

/* An Any: the message it holds, unpacked by its registered type, with
 * "@type" first; a type with a JSON form of its own goes under "value". */
static cJSON *
enc_any(struct enc *e, const ProtobufCMessage *m)
{
	const ProtobufCFieldDescriptor *ft, *fv;
	const ProtobufCMessageDescriptor *d;
	const ProtobufCBinaryData *val;
	const char *url, *name;
	ProtobufCMessage *inner;
	cJSON *obj;

	if (!enc_wkt_fields(m, 1, PROTOBUF_C_TYPE_STRING, 2, PROTOBUF_C_TYPE_BYTES, &ft, &fv))
		return enc_mark(e, NULL, "Any: descriptor has not the expected fields");
	url = MEMBER(m, ft, const char *);
	url = url ? url : "";
	val = &MEMBER(m, fv, ProtobufCBinaryData);
	if (!*url && !val->len)
		return enc_ok(e, cJSON_CreateObject());	/* the empty Any */
	name = strrchr(url, '/');
	name = name ? name + 1 : url;
	if (!(d = jpb_lookup(name)))
		return enc_mark(e, url, "type not known");
	if (!(inner = protobuf_c_message_unpack(d, NULL, val->len, val->data)))
		return enc_mark(e, url, "value does not decode as that type");
	if ((obj = enc_ok(e, cJSON_CreateObject()))) {
		enc_add(e, obj, "@type", enc_string(e, url));
		if (is_special(d))
			enc_add(e, obj, "value", enc_message(e, inner));
		else
			enc_fields(e, inner, obj);
	}
	protobuf_c_message_free_unpacked(inner, NULL);
	return obj;
}

static cJSON *
enc_message(struct enc *e, const ProtobufCMessage *m)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;
	const ProtobufCFieldDescriptor *f, *unused;
	cJSON *j;

	if (e->depth >= e->max_depth)
		return enc_mark(e, NULL, "nested too deep");
	e->depth++;
	if (!is_special(d) || is_wkt(d, "Struct") || is_wkt(d, "ListValue")) {
		if (is_wkt(d, "Struct") && enc_wkt_fields(m, 1, PROTOBUF_C_TYPE_MESSAGE, 0, 0, &f, &unused) &&
		    is_map(d, f)) {
			j = enc_map(e, f, m);
		} else if (is_wkt(d, "ListValue") &&
		    enc_wkt_fields(m, 1, PROTOBUF_C_TYPE_MESSAGE, 0, 0, &f, &unused)) {
			size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
			ProtobufCMessage *const *arr = MEMBER(m, f, ProtobufCMessage *const *);
			j = enc_ok(e, cJSON_CreateArray());
			for (size_t k = 0; j && k < n && !e->oom; k++) {
				/* protobuf-c never unpacks a NULL element; a hand-built
				 * message might hold one: the unset Value is null. */
				cJSON *el = arr[k] ? enc_message(e, arr[k]) : enc_ok(e, cJSON_CreateNull());
				if (!el || !cJSON_AddItemToArray(j, el)) {
					cJSON_Delete(el);
					e->oom = true;
				}
			}
		} else if ((j = enc_ok(e, cJSON_CreateObject()))) {
			enc_fields(e, m, j);
		}
	} else if (is_wkt(d, "Any")) {
		j = enc_any(e, m);
	} else if (is_wkt(d, "Duration")) {
		j = enc_duration(e, m);
	} else if (is_wkt(d, "Timestamp")) {
		j = enc_timestamp(e, m);
	} else if (is_wkt(d, "Value")) {
		j = enc_value_wkt(e, m);
	} else {
		/* A wrapper: its value, even at the default. */
		f = protobuf_c_message_descriptor_get_field(d, 1);
		j = f ? enc_value(e, f, (const char *)m + f->offset) : enc_mark(e, NULL, "wrapper without field 1");
	}
	e->depth--;
	return j;
}

static cJSON *
enc_finish(struct enc *e, cJSON *j, unsigned *marks)
{
	if (marks)
		*marks = e->marks;
	if (e->oom) {
		cJSON_Delete(j);
		return NULL;
	}
	return j;
}

static void
enc_init(struct enc *e, const struct jpb_enc_opts *opts)
{
	memset(e, 0, sizeof(*e));
	e->max_depth = opts && opts->max_depth ? opts->max_depth : JPB_DEFAULT_DEPTH;
}

cJSON *
jpb_encode(const ProtobufCMessage *m, const struct jpb_enc_opts *opts, unsigned *marks)
{
	struct enc e;

	enc_init(&e, opts);
	return enc_finish(&e, enc_message(&e, m), marks);
}

cJSON *
jpb_encode_any(const ProtobufCMessage *m, const struct jpb_enc_opts *opts, unsigned *marks)
{
	struct enc e;
	cJSON *obj, *v;
	char url[288];

	enc_init(&e, opts);
	snprintf(url, sizeof(url), "type.googleapis.com/%s", m->descriptor->name);
	if ((obj = enc_ok(&e, cJSON_CreateObject()))) {
		enc_add(&e, obj, "@type", cJSON_CreateString(url));
		if (is_special(m->descriptor)) {
			e.depth++;
			v = enc_message(&e, m);
			enc_add(&e, obj, "value", v);
		} else {
			e.depth++;
			enc_fields(&e, m, obj);
		}
	}
	return enc_finish(&e, obj, marks);
}
