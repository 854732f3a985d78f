/* Fuzz target: the response side of the gRPC client (src/grpc.c): header
 * fields of HEADERS and trailers (:status, content-type, grpc-status,
 * grpc-message with percent-decoding) and the message de-framer over DATA
 * chunks cut anywhere, then the final status. These are the bytes a control
 * plane (or whoever answers at its address) sends us.
 * Input: a sequence of records, each a tag byte then
 *   'H' nlen vlen name value   one header field (lengths one byte each)
 *   'D' len data                one DATA chunk (length one byte)
 *   anything else               end of the stream */
#include "autoconfig.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "grpc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct seen {
	size_t msgs, bytes, max;
};

static int
on_msg(void *ud, const uint8_t *m, size_t n)
{
	struct seen *s = ud;
	volatile uint8_t sink = 0;

	if (n > s->max)
		__builtin_trap();	/* the bound is the de-framer's promise */
	for (size_t i = 0; i < n; i++)
		sink ^= m[i];	/* every byte handed out is readable */
	(void)sink;
	s->msgs++;
	s->bytes += n;
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct grpc_resp r;
	struct grpc_deframer d;
	struct seen s = { .max = 4096 };
	char msg[256];
	size_t i = 0;
	bool dead = false;

	grpc_resp_init(&r);
	grpc_deframer_init(&d, s.max);
	while (i < size) {
		uint8_t tag = data[i++];
		if (tag == 'H' && i + 2 <= size) {
			size_t nl = data[i], vl = data[i + 1];
			i += 2;
			if (i + nl + vl > size)
				break;
			(void)grpc_resp_header(&r, data + i, nl, data + i + nl, vl);
			i += nl + vl;
		} else if (tag == 'D' && i + 1 <= size) {
			size_t n = data[i++];
			if (i + n > size)
				n = size - i;
			/* As the client: only a 200 gRPC response is de-framed. */
			if (!dead && r.http_status == 200 && r.grpc_ct && grpc_deframe(&d, data + i, n, on_msg, &s) < 0)
				dead = true;
			i += n;
		} else {
			break;
		}
	}
	int st = grpc_resp_status(&r, msg, sizeof(msg));
	if (st < 0 || strlen(msg) >= sizeof(msg) || strlen(grpc_status_str(st)) == 0)
		__builtin_trap();
	(void)grpc_deframer_partial(&d);
	grpc_deframer_free(&d);
	return 0;
}
