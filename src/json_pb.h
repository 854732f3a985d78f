/* json_pb: the proto3 JSON mapping, decoded into protobuf-c's generated
 * structs by walking their descriptors, and encoded back from them. The
 * decoder is the only JSON-to-message path (static resources now; the xDS
 * client unpacks protobuf into the same types); the encoder is what
 * /config_dump shows. */
#ifndef OR_JSON_PB_H
#define OR_JSON_PB_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>

struct cJSON;

/* Called for every google.protobuf.Any decoded below the top level, after
 * its value was packed: inner is the decoded message of type d, path its JSON
 * path. Return 1 to keep inner (the callee then owns it and frees it with
 * protobuf_c_message_free_unpacked and the same allocator), 0 to let the
 * decoder free it, or -errno to refuse the whole decode (the callee should
 * have said why in its own terms; the decoder reports "refused by caller"). */
typedef int jpb_any_fn(void *ctx, const char *path, const ProtobufCMessageDescriptor *d,
    ProtobufCMessage *inner);

struct jpb_opts {
	/* Skip JSON keys that name no field, and enum names the enum does not
	 * have, instead of refusing them. Off by default, as protobuf's own
	 * parsers (and istioctl, Envoy) default: a misspelt key is an error the
	 * operator must see, not a setting silently not applied. */
	bool ignore_unknown;
	/* Nesting bound in messages, lists and Struct values; 0 means 64. */
	unsigned max_depth;
	/* Bound on the memory the decoded message takes (what the allocator
	 * is asked for); 0 means 64 MiB. Over it the decode fails (-EFBIG). */
	size_t max_bytes;
	jpb_any_fn *on_any;
	void *ctx;
};

#define JPB_ERR_LEN 512
#define JPB_PATH_LEN 256

struct jpb_err {
	char msg[JPB_ERR_LEN];	/* "path: reason" when the decode failed */
	/* Enum numbers the enum does not define. proto3 enums are open, so the
	 * value is kept as the number (as protobuf's parsers do), but a mesh
	 * resource with one must be refused, not misread (ztunnel does): the
	 * caller checks this. */
	unsigned unknown_enums;
	char unknown_enum_path[JPB_PATH_LEN];	/* the first one's path */
};

/* Decodes j (a tree from json_parse_strict) as a message of type d into *out,
 * allocated with alloc (NULL: protobuf-c's default allocator) exactly as
 * protobuf_c_message_unpack would lay it out, so protobuf_c_message_free_unpacked
 * frees it and protobuf_c_message_pack encodes it. path is the JSON path of j
 * for error messages ("resources[3]"; NULL or "" for the root, shown as "$").
 * opts may be NULL. Returns 0, or -EINVAL (bad input, err->msg says where and
 * why), -ENOMEM, -EFBIG (over opts->max_bytes), or the on_any callback's
 * error; *out is NULL on failure. */
int jpb_decode(const struct cJSON *j, const ProtobufCMessageDescriptor *d, const char *path,
    const struct jpb_opts *opts, ProtobufCAllocator *alloc, ProtobufCMessage **out,
    struct jpb_err *err);

/* Decodes j as a google.protobuf.Any in JSON form ({"@type": ..., fields}) and
 * returns the message it holds, of the registered type named by @type, in
 * *out (its descriptor is (*out)->descriptor). No Any is built: static
 * resources are Anys, and their builder wants the message, not its bytes. */
int jpb_decode_any(const struct cJSON *j, const char *path, const struct jpb_opts *opts,
    ProtobufCAllocator *alloc, ProtobufCMessage **out, struct jpb_err *err);

/* Makes type d resolvable from an Any's @type ("type.googleapis.com/" d->name).
 * Call at start-up, before any decode (the table is not locked). Registering
 * the same descriptor twice is a no-op; returns 0, -EEXIST (another
 * descriptor of that name), -ENOMEM. */
int jpb_register(const ProtobufCMessageDescriptor *d);

/* Registers the google.protobuf types of src/proto (Any, Duration, Empty,
 * Struct, Value, ListValue, Timestamp, the wrappers). */
int jpb_register_wkts(void);

/* The registered descriptor of a full name ("istio.workload.Address"), or NULL. */
const ProtobufCMessageDescriptor *jpb_lookup(const char *full_name);

/* The proto3 JSON name of a field (lowerCamelCase of its name, as protoc
 * derives json_name: each '_' dropped and the next character upper-cased)
 * written to buf; protobuf-c 1.4 descriptors do not carry json_name, so our
 * .proto files must not set the json_name option. */
void jpb_json_name(const char *field_name, char *buf, size_t len);

struct jpb_enc_opts {
	/* Nesting bound (messages, lists, Struct values); 0 means 64. What lies
	 * deeper is replaced by an "@error" marker. */
	unsigned max_depth;
};

/* Encodes m as proto3 JSON exactly as Python's json_format.MessageToDict
 * does by default: JSON (lowerCamelCase) names; proto3 scalars at their
 * default left out, but a oneof member, a set message (a wrapper at 0
 * too) and a field with explicit presence kept; 64-bit integers as
 * strings; bytes as padded standard base64; enums by name, a number no
 * value has as that number; floats in their shortest form, NaN and
 * infinities as "NaN", "Infinity", "-Infinity"; maps as objects with
 * string keys (a key repeated on the wire: the last wins); Any as
 * {"@type": url, fields...} or {"@type": url, "value": v} for a type with
 * its own JSON form, unpacked by the type registered for the url
 * (jpb_register); Duration "1.500s" (0, 3, 6 or 9 fractional digits);
 * Timestamp RFC 3339 in UTC ("Z"); wrappers as their bare value;
 * Struct, Value, ListValue as the JSON they hold; Empty as {}.
 * A part that has no JSON form does not fail the whole: it becomes
 * {"@error": why} ({"@type": url, "@error": "type not known"} for an Any
 * of a type not registered, "value does not decode as that type" for one
 * whose bytes do not unpack), as do a Duration or Timestamp out of range
 * and what is nested past opts->max_depth; a string that is not UTF-8 has
 * each bad byte replaced by U+FFFD. Each is counted in *marks (may be
 * NULL). opts may be NULL. Returns the tree (the caller cJSON_Deletes it)
 * or NULL when out of memory. */
struct cJSON *jpb_encode(const ProtobufCMessage *m, const struct jpb_enc_opts *opts, unsigned *marks);

/* m as a google.protobuf.Any in JSON form, the inverse of jpb_decode_any:
 * {"@type": "type.googleapis.com/" full name, fields...} (or "value" for a
 * type with its own JSON form), as static resources are written. */
struct cJSON *jpb_encode_any(const ProtobufCMessage *m, const struct jpb_enc_opts *opts,
    unsigned *marks);

#endif
