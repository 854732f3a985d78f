/* pb: helpers over the protobuf-c generated code (see pb.h). */
#include "autoconfig.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "pb.h"
#include "istio/workload/workload.pb-c.h"

bool pb_enum_known(const ProtobufCEnumDescriptor *d, int value)
{
	return protobuf_c_enum_descriptor_get_value(d, value) != NULL;
}

/* Enum fields whose unknown values the upstream consumer accepts, so we do
 * too (pb_find_unknown_enum() passes over them). ztunnel 62d826530e5c reads
 * these without TryFrom: Workload.workload_type through prost's getter
 * (an unknown value reads as DEPLOYMENT), Port.app_protocol as a bare
 * number (no known protocol: no override), Service.visibility with
 * unwrap_or_default (PUBLIC). It refuses every other Workload, Service and
 * Authorization enum it reads (src/state/workload.rs, service.rs,
 * rbac.rs). Envoy enums are all refused: Envoy's own validation
 * (defined_only) refuses every one we declare except
 * LbEndpoint.health_status, Listener.traffic_direction and
 * Listener.drain_type, and for those we prefer refusing to guessing. The
 * reader of a field listed here must map an unknown value as said above. */
static const struct {
	const ProtobufCMessageDescriptor *msg;
	uint32_t field;
} lenient[] = {
	{ &istio__workload__workload__descriptor, 12 },	/* workload_type */
	{ &istio__workload__port__descriptor, 3 },	/* app_protocol */
	{ &istio__workload__service__descriptor, 14 },	/* visibility */
};

static bool is_lenient(const ProtobufCMessageDescriptor *d, const ProtobufCFieldDescriptor *f)
{
	for (size_t i = 0; i < sizeof(lenient) / sizeof(lenient[0]); i++)
		if (lenient[i].msg == d && lenient[i].field == f->id)
			return true;
	return false;
}

/* Appends a field's proto3-JSON name (lowerCamelCase: each underscore
 * dropped, the letter after it upper-cased, as protoc derives json_name) to
 * path at *at. */
static void path_add_name(char *path, size_t len, size_t *at, const char *name)
{
	bool up = false;

	if (*at > 0 && *at + 1 < len)
		path[(*at)++] = '.';
	for (const char *s = name; *s != '\0' && *at + 1 < len; s++) {
		if (*s == '_') {
			up = true;
			continue;
		}
		path[(*at)++] = up && *s >= 'a' && *s <= 'z' ? (char)(*s - 'a' + 'A') : *s;
		up = false;
	}
	path[*at < len ? *at : len - 1] = '\0';
}

static void path_add_index(char *path, size_t len, size_t *at, size_t i)
{
	int n = snprintf(path + *at, len - *at, "[%zu]", i);

	if (n > 0)
		*at = *at + (size_t)n < len ? *at + (size_t)n : len - 1;
}

/* Whether field f of m holds a value to look at: a oneof member only when
 * it is the chosen one; a message pointer only when set. */
static bool field_present(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
	const char *base = (const char *)m;

	if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
		return *(const uint32_t *)(base + f->quantifier_offset) == f->id;
	return true;
}

/* The walk; path (len > 0) is written only when it is not NULL: the
 * common case, a message with no unknown enum, walks without it, and only a
 * hit walks again to name where (writing every field's path took a third of
 * the model's build time). */
static int find(const ProtobufCMessage *m, char *path, size_t len, size_t at, int *value)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;
	const char *base = (const char *)m;

	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		size_t here = at;
		size_t n = 1;
		const void *elems = base + f->offset;
		bool repeated = f->label == PROTOBUF_C_LABEL_REPEATED;

		if (f->type != PROTOBUF_C_TYPE_ENUM && f->type != PROTOBUF_C_TYPE_MESSAGE)
			continue;
		if (!field_present(m, f))
			continue;
		if (repeated) {
			n = *(const size_t *)(base + f->quantifier_offset);
			elems = *(void *const *)(base + f->offset);
		}
		for (size_t k = 0; k < n; k++) {
			here = at;
			if (path) {
				path_add_name(path, len, &here, f->name);
				if (repeated)
					path_add_index(path, len, &here, k);
			}
			if (f->type == PROTOBUF_C_TYPE_ENUM) {
				int v = ((const int *)elems)[k];

				if (!pb_enum_known(f->descriptor, v) && !is_lenient(d, f)) {
					*value = v;
					return -EINVAL;
				}
			} else {
				const ProtobufCMessage *sub = repeated
					? ((ProtobufCMessage *const *)elems)[k]
					: *(ProtobufCMessage *const *)elems;

				if (sub != NULL && find(sub, path, len, here, value) < 0)
					return -EINVAL;
			}
		}
	}
	if (path && at < len)
		path[at] = '\0';
	return 0;
}

int pb_find_unknown_enum(const ProtobufCMessage *m, char *path, size_t len, int *value)
{
	if (len == 0)
		return -EINVAL;
	path[0] = '\0';
	if (find(m, NULL, 0, 0, value) == 0)
		return 0;
	return find(m, path, len, 0, value);
}

/* ---- nesting ---- */

static bool wire_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	*v = 0;
	for (int shift = 0; shift < 64 && *p < end; shift += 7) {
		uint8_t b = *(*p)++;
		*v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80))
			return true;
	}
	return false;
}

/* The walk behind pb_depth_ok(): recursion only into the message fields d
 * declares, at most max deep, so its own stack stays small. */
static int depth_walk(const ProtobufCMessageDescriptor *d, const uint8_t *p, const uint8_t *end,
    unsigned depth, unsigned max)
{
	if (depth > max)
		return -ELOOP;
	while (p < end) {
		const ProtobufCFieldDescriptor *f;
		uint64_t tag, len;
		int rc;

		if (!wire_varint(&p, end, &tag))
			return 0;	/* malformed: the unpack says so */
		switch (tag & 7) {
		case 0:
			if (!wire_varint(&p, end, &len))
				return 0;
			break;
		case 1:
			if (end - p < 8)
				return 0;
			p += 8;
			break;
		case 5:
			if (end - p < 4)
				return 0;
			p += 4;
			break;
		case 2:
			if (!wire_varint(&p, end, &len) || len > (uint64_t)(end - p))
				return 0;
			f = tag >> 3 <= UINT32_MAX ? protobuf_c_message_descriptor_get_field(d, (unsigned)(tag >> 3)) :
			    NULL;
			if (f && f->type == PROTOBUF_C_TYPE_MESSAGE &&
			    (rc = depth_walk(f->descriptor, p, p + len, depth + 1, max)) < 0)
				return rc;
			p += len;
			break;
		default:
			return 0;	/* groups: protobuf-c refuses them */
		}
	}
	return 0;
}

int pb_depth_ok(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len, unsigned max)
{
	return depth_walk(d, data, data + len, 0, max);
}
