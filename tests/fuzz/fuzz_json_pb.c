/* Fuzz target: the proto3 JSON decoder of src/json_pb.c (behind the strict
 * parse of src/json.c) on arbitrary bytes, into the test message of
 * tests/unit/proto/jpbtest.proto, which has every field kind and well-known
 * type, and into each mesh resource type of src/proto (seeded with the JSON
 * of tests/unit/golden/pb). Whatever the input, it decodes or is refused with a message and no
 * output; a decoded message packs, unpacks with protobuf-c and packs again to
 * the same bytes; ignoring unknown keys never refuses what the strict decode
 * took, and gives the same message; an Any at the top level decodes the
 * same way through jpb_decode_any; and the encoder's JSON of a decoded
 * message, printed, parsed and decoded again, packs to the same bytes with
 * no "@error" marker in it. The same bytes taken as protobuf (what xDS will
 * bring), where protobuf-c unpacks them, encode to text our strict parser
 * takes (no duplicate key, valid UTF-8, no NaN), whatever they hold. */
#include "autoconfig.h"

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "json_pb.h"
#include "jpbtest.pb-c.h"
#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.pb-c.h"
#include "istio/security/authorization.pb-c.h"
#include "istio/security/v1beta1/peer_authentication.pb-c.h"
#include "istio/workload/workload.pb-c.h"

static const ProtobufCMessageDescriptor *const mesh[] = {
	&istio__workload__address__descriptor, &istio__security__authorization__descriptor,
	&istio__security__v1beta1__peer_authentication__descriptor,
	&envoy__config__cluster__v3__cluster__descriptor,
	&envoy__config__endpoint__v3__cluster_load_assignment__descriptor,
	&envoy__config__route__v3__route_configuration__descriptor,
	&envoy__config__listener__v3__listener__descriptor,
	&envoy__extensions__filters__network__tcp_proxy__v3__tcp_proxy__descriptor,
	&envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
setup(void)
{
	static int done;

	if (done)
		return;
	done = 1;
	if (jpb_register_wkts() < 0 || jpb_register(&jpbtest__everything__descriptor) < 0 ||
	    jpb_register(&jpbtest__inner__descriptor) < 0 || jpb_register(&jpbtest__scalars__descriptor) < 0)
		abort();
	for (size_t i = 0; i < sizeof(mesh) / sizeof(mesh[0]); i++)
		if (jpb_register(mesh[i]) < 0)
			abort();
}

/* jpb_encode(m), through its text, decodes back to m's bytes. */
static void
encode_round_trip(const ProtobufCMessage *m, const uint8_t *bytes, size_t len)
{
	unsigned marks = 1;
	cJSON *e = jpb_encode(m, NULL, &marks), *j;
	ProtobufCMessage *back = NULL;
	struct jpb_err err;
	char perr[256], *text;
	uint8_t *again;

	if (!e || marks)
		__builtin_trap();
	if (!(text = cJSON_PrintUnformatted(e)))
		__builtin_trap();
	cJSON_Delete(e);
	if (!(j = json_parse_strict(text, strlen(text), perr, sizeof(perr))))
		__builtin_trap();
	free(text);
	if (jpb_decode(j, m->descriptor, NULL, NULL, NULL, &back, &err) < 0)
		__builtin_trap();
	if (protobuf_c_message_get_packed_size(back) != len || !(again = malloc(len + 1)))
		__builtin_trap();
	protobuf_c_message_pack(back, again);
	if (memcmp(again, bytes, len) != 0)
		__builtin_trap();
	free(again);
	protobuf_c_message_free_unpacked(back, NULL);
	cJSON_Delete(j);
}

/* The packed bytes of a decode (malloc'd, *len set), or NULL if refused. */
static uint8_t *
decode_packed(const cJSON *j, const ProtobufCMessageDescriptor *d, const struct jpb_opts *o,
    size_t *len, int top_any)
{
	ProtobufCMessage *m = NULL, *u;
	struct jpb_err err;
	uint8_t *buf, *again;
	int rc;

	err.msg[0] = '\0';
	rc = top_any ? jpb_decode_any(j, "resources[0]", o, NULL, &m, &err) :
	    jpb_decode(j, d, NULL, o, NULL, &m, &err);
	if (rc < 0) {
		if (m || err.msg[0] == '\0')
			__builtin_trap();
		return NULL;
	}
	if (!m)
		__builtin_trap();
	*len = protobuf_c_message_get_packed_size(m);
	if (!(buf = malloc(*len + 1)) || protobuf_c_message_pack(m, buf) != *len)
		__builtin_trap();
	u = protobuf_c_message_unpack(m->descriptor, NULL, *len, buf);
	if (!u || protobuf_c_message_get_packed_size(u) != *len || !(again = malloc(*len + 1)))
		__builtin_trap();
	protobuf_c_message_pack(u, again);
	if (memcmp(buf, again, *len) != 0)
		__builtin_trap();
	free(again);
	protobuf_c_message_free_unpacked(u, NULL);
	if (!o)
		encode_round_trip(m, buf, *len);
	protobuf_c_message_free_unpacked(m, NULL);
	return buf;
}

/* Arbitrary protobuf bytes as message d: the encoder's text is JSON. */
static void
encode_wire(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t size)
{
	ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, size, data);
	char perr[256], *text;
	cJSON *e, *j;

	if (!m)
		return;
	if (!(e = jpb_encode(m, NULL, NULL)) || !(text = cJSON_PrintUnformatted(e)))
		__builtin_trap();
	if (!(j = json_parse_strict(text, strlen(text), perr, sizeof(perr))))
		__builtin_trap();
	cJSON_Delete(j);
	free(text);
	cJSON_Delete(e);
	protobuf_c_message_free_unpacked(m, NULL);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct jpb_opts lax = { .ignore_unknown = true };
	size_t n1 = 0, n2 = 0;
	uint8_t *strict, *ignoring;
	char err[256];
	cJSON *j;

	setup();
	encode_wire(&jpbtest__everything__descriptor, data, size);
	for (size_t i = 0; i < sizeof(mesh) / sizeof(mesh[0]); i++)
		encode_wire(mesh[i], data, size);
	if (!(j = json_parse_strict((const char *)data, size, err, sizeof(err))))
		return 0;
	for (size_t i = 0; i <= sizeof(mesh) / sizeof(mesh[0]); i++) {
		const ProtobufCMessageDescriptor *d = i ? mesh[i - 1] : &jpbtest__everything__descriptor;
		strict = decode_packed(j, d, NULL, &n1, 0);
		ignoring = decode_packed(j, d, &lax, &n2, 0);
		if (strict && (!ignoring || n1 != n2 || memcmp(strict, ignoring, n1) != 0))
			__builtin_trap();
		free(strict);
		free(ignoring);
	}
	free(decode_packed(j, NULL, NULL, &n1, 1));
	cJSON_Delete(j);
	return 0;
}
