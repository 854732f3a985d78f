/* grpc: a gRPC client over one HTTP/2 connection (nghttp2) on the control
 * thread's loop: length-prefixed messages, metadata, deadlines, status and
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
	GRPC_INTERNAL = 13,
	GRPC_UNAVAILABLE = 14,	/* also: the connection failed or closed */
	GRPC_UNAUTHENTICATED = 16,
};

struct grpc_target {
	const char *address;	/* "host:port", "[v6]:port" or "unix:/path" */
	SSL_CTX *tls;		/* NULL: plaintext HTTP/2 (h2c prior knowledge) */
	const char *verify_name;	/* with tls: the DNS or SPIFFE name the server must have */
	const char *authority;	/* :authority; NULL: the host part of address */
};

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
/* Queues one request message; last: the client's half-close follows it
 * (unary calls send one message with last). 0 or -errno. */
int grpc_call_send(struct grpc_call *call, const uint8_t *msg, size_t len, bool last);
/* Ends the call (RST_STREAM CANCEL); done is not called. */
void grpc_call_cancel(struct grpc_call *call);

#endif
