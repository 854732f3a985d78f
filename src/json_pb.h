/* json_pb: the proto3 JSON mapping, decoded into protobuf-c's generated
 * structs by walking their descriptors. It is the only JSON-to-message path
 * (static resources now; the xDS client unpacks protobuf into the same types). */
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

#endif
