/* grpc: a gRPC client over one HTTP/2 connection (nghttp2) on the control
 * thread's loop (not thread-safe: one loop owns a channel): length-prefixed messages, metadata, deadlines, status and
 * trailers; unary and streaming calls alike. The transport under it is a
 * conn: raw TCP (http://), TLS (xtls, https://) or a Unix socket. Used by
 * the Istio CA client, the SDS client and the xDS client. */
#ifndef OR_GRPC_H
#define OR_GRPC_H

#include <ev.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* grpc-status codes we act on (the rest pass through as numbers). */
enum {
	GRPC_OK = 0,
	GRPC_CANCELLED = 1,
	GRPC_UNKNOWN = 2,
	GRPC_INVALID_ARGUMENT = 3,
	GRPC_DEADLINE_EXCEEDED = 4,
	GRPC_NOT_FOUND = 5,
	GRPC_PERMISSION_DENIED = 7,
	GRPC_RESOURCE_EXHAUSTED = 8,
	GRPC_UNIMPLEMENTED = 12,
	GRPC_INTERNAL = 13,
	GRPC_UNAVAILABLE = 14,	/* also: the connection failed or closed */
	GRPC_UNAUTHENTICATED = 16,
};

struct grpc_target {
	const char *address;	/* "host:port", "[v6]:port" or "unix:/path" */
	SSL_CTX *tls;		/* NULL: plaintext HTTP/2 (h2c prior knowledge) */
	const char *verify_name;	/* with tls: the DNS or SPIFFE name the server must have */
	const char *authority;	/* :authority; NULL: address ("localhost" for unix:) */
	/* Zero means the default for each (a zeroed target is valid). */
	double connect_timeout_s;	/* TCP connect plus TLS handshake; 0: 5 s (ztunnel's) */
	/* While calls are open and nothing arrives for this long, a PING goes
	 * out; no answer within min(10 s, this) fails the connection (a peer
	 * that vanished without a FIN or RST). 0: 30 s (ztunnel's); < 0: off. */
	double keepalive_s;
	size_t max_message;	/* longest response message; 0: GRPC_MAX_MESSAGE */
};

#define GRPC_MAX_MESSAGE (4u << 20)	/* gRPC's default max receive size */

struct grpc_md {
	const char *name, *value;	/* lower-case name */
};

struct grpc_chan;
struct grpc_call;

struct grpc_handler {
	/* One response message (its bytes, without the 5-byte prefix). */
	void (*message)(struct grpc_call *call, void *ud, const uint8_t *msg, size_t len);
	/* The call is over: grpc-status and grpc-message (GRPC_UNAVAILABLE
	 * when the connection failed, GRPC_DEADLINE_EXCEEDED at the deadline,
	 * GRPC_INTERNAL for a malformed response). The call is freed after. */
	void (*done)(struct grpc_call *call, void *ud, int status, const char *message);
};

/* A channel to t (copied). Connects lazily, at the first call; reconnects
 * at a later call after a failure. NULL on OOM. */
struct grpc_chan *grpc_chan_new(struct ev_loop *loop, const struct grpc_target *t);
/* Closes the connection; open calls end without their done being called. */
void grpc_chan_free(struct grpc_chan *ch);

/* Starts a call to path ("/istio.v1.auth.IstioCertificateService/
 * CreateCertificate") with metadata md and a deadline in seconds (0: none).
 * NULL on OOM (nothing is called back). */
struct grpc_call *grpc_call_start(struct grpc_chan *ch, const char *path, const struct grpc_md *md,
    size_t nmd, double deadline_s, const struct grpc_handler *h, void *ud);
/* Queues one request message (copied); last: the client's half-close
 * follows it (unary calls send one message with last). Sent as the
 * server's flow-control window allows; the queue has no bound of its own:
 * our callers send small requests and ACKs. 0, or -EPIPE after last or the
 * call's end, -EMSGSIZE, -ENOMEM. */
int grpc_call_send(struct grpc_call *call, const uint8_t *msg, size_t len, bool last);
/* Ends the call (RST_STREAM CANCEL); done is not called. */
void grpc_call_cancel(struct grpc_call *call);

/* Counts since start, process-wide (the control thread's channels). */
struct grpc_stats {
	unsigned long long connects, connect_failures, calls, calls_failed;
};
extern struct grpc_stats grpc_stats;

/* --- the response side as pure functions (unit tests, fuzz_grpc) --------- */

/* The message de-framer: 1-byte compressed flag, 4-byte big-endian length,
 * the message; messages may be split across DATA frames or share one. */
struct grpc_deframer {
	uint8_t hdr[5];
	size_t hlen;		/* prefix bytes held */
	uint8_t *buf;		/* the message being reassembled (malloc) */
	size_t len, need;	/* held, and its whole length once the prefix is in */
	size_t max;		/* longest message accepted */
};

typedef int grpc_msg_fn(void *ud, const uint8_t *msg, size_t len);

void grpc_deframer_init(struct grpc_deframer *d, size_t max);
void grpc_deframer_free(struct grpc_deframer *d);
/* Feeds len bytes; fn is called once per whole message (the bytes are valid
 * during the call only) and may stop the feed by returning non-zero, which
 * is returned. -EMSGSIZE: a message is longer than max (RESOURCE_EXHAUSTED);
 * -EPROTO: the compressed flag is set (we offer no grpc-encoding, so the
 * server must not compress: INTERNAL); -ENOMEM. The de-framer is unusable
 * after an error. */
int grpc_deframe(struct grpc_deframer *d, const uint8_t *data, size_t len, grpc_msg_fn *fn, void *ud);
/* Whether a partial message is held (a stream ending then is malformed). */
bool grpc_deframer_partial(const struct grpc_deframer *d);

/* What a response said: the :status and grpc-* headers of its HEADERS and
 * trailers, fed one field at a time (nghttp2's on_header), then the final
 * status. */
struct grpc_resp {
	int http_status;	/* 0: none yet */
	bool grpc_ct;		/* content-type application/grpc[+proto|;...] */
	int grpc_status;	/* -1: none yet */
	char message[256];	/* grpc-message, percent-decoded (cut to fit) */
};
void grpc_resp_init(struct grpc_resp *r);
/* One header field. -EPROTO when malformed: a :status that is no 3-digit
 * number, a grpc-status that is no decimal number. */
int grpc_resp_header(struct grpc_resp *r, const uint8_t *name, size_t nlen, const uint8_t *value,
    size_t vlen);
/* The call's status once the stream ended, message into msg: grpc-status
 * when the response had one and was HTTP 200 gRPC; otherwise the gRPC
 * spec's HTTP-to-gRPC mapping for a non-200 :status; INTERNAL for a 200
 * without grpc-status or gRPC content-type. */
int grpc_resp_status(const struct grpc_resp *r, char *msg, size_t msglen);
/* gRPC's HTTP to gRPC status mapping (doc/http-grpc-status-mapping.md). */
int grpc_status_from_http(int http_status);
/* The status of a stream the server reset (RST_STREAM code), per
 * doc/PROTOCOL-HTTP2.md "Errors". */
int grpc_status_from_h2(uint32_t h2_error);
/* Percent-decodes grpc-message (invalid escapes are kept as they are, as
 * the spec asks) into out (always NUL-terminated, cut to fit). */
void grpc_percent_decode(const uint8_t *in, size_t len, char *out, size_t outlen);
/* The name of a status code ("UNAVAILABLE"); "UNKNOWN_CODE" otherwise. */
const char *grpc_status_str(int code);

/* Splits a target address: "host:port", "[v6]:port" or "unix:/path" into
 * host (or the path, *is_unix set) and port. 0 or -EINVAL. */
int grpc_addr_parse(const char *addr, char *host, size_t hostlen, uint16_t *port, bool *is_unix);

#endif
