/* pb: helpers over the protobuf-c code generated from src/proto (what
 * protobuf-c leaves to its user): enum values no schema of ours knows. */
#ifndef OR_PB_H
#define OR_PB_H

#include <stdbool.h>
#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

/* Whether value is one of the enum's declared values. protobuf-c decodes
 * proto3 enums as open (any int32 is kept), like every proto3 runtime; a
 * value we do not know must not be misread as a default. */
bool pb_enum_known(const ProtobufCEnumDescriptor *d, int value);

/* Looks for the first enum field anywhere in m (nested messages, repeated
 * fields, map entries, set oneof members) whose value pb_enum_known()
 * refuses. Returns 0 when there is none; else -EINVAL, with the field's
 * path written to path (lowerCamelCase JSON names, "[i]" for a repeated
 * element or map entry, e.g. "workload.tunnelProtocol" or
 * "endpoints[0].lbEndpoints[2].healthStatus", truncated to len) and its
 * value to *value. ztunnel refuses a resource with such a value in most
 * fields (its TryFrom conversions fail and the resource is NACKed): the
 * snapshot builder refuses it the same way. The few fields ztunnel reads
 * leniently are passed over (listed in pb.c with the value an unknown one
 * stands for); every Envoy enum is strict. An Any's value is bytes here;
 * the caller checks the message it decodes from it. */
int pb_find_unknown_enum(const ProtobufCMessage *m, char *path, size_t len, int *value);

/* protobuf-c unpacks recursively with no bound on nesting: a message of
 * nested Struct/Value/ListValue (Metadata holds Structs) a few hundred
 * kilobytes long exhausts the stack. Before unpacking untrusted bytes as
 * d: 0 when no message field nests deeper than max (PB_MAX_DEPTH, the
 * bound protobuf's own runtimes apply), -ELOOP when one does. Malformed
 * bytes pass (the unpack refuses them). */
#define PB_MAX_DEPTH 100
int pb_depth_ok(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len, unsigned max);

#endif
