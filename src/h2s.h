/* h2s: HTTP/2 sessions in a worker's loop (nghttp2), over any conn (in
 * practice the TLS transport, xtls): the HBONE server's (15008) and the
 * HBONE client pool's. Each CONNECT stream is a struct conn with ops of its
 * own (fd -1, can_splice false): the relay engine (flow.c) moves its bytes
 * exactly as it does a socket's, and flow control maps onto back-pressure
 * (a stream's receive window is given back only as the relay consumes its
 * bytes; a send waits for the peer's window). Not thread-safe: a session
 * belongs to one worker. See HACKING.md, "HTTP/2 sessions". */
#ifndef OR_H2S_H
#define OR_H2S_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "conn-t.h"

struct h2s;
struct worker;

/* Settings we send and the windows we keep (reference xds-hbone.md §3.1:
 * ztunnel's client: stream window 4 MiB, connection window 16 MiB, max
 * frame 1 MiB, header list 16 KiB, 100 streams per connection; server: 200
 * concurrent streams, header list 64 KiB). */
struct h2s_settings {
	uint32_t max_concurrent_streams;
	uint32_t stream_window, conn_window;
	uint32_t max_frame, max_header_list;
};
extern const struct h2s_settings h2s_client_defaults, h2s_server_defaults;

struct h2s_hdr {
	const char *name, *value;	/* lower-case name */
};

/* A request as the server saw it (valid during the call only). */
struct h2s_req {
	const char *method, *authority;	/* never NULL ("" when absent) */
	bool has_scheme_or_path;	/* a CONNECT must have neither (RFC 9113 8.5) */
	const struct h2s_hdr *hdrs;	/* the other fields */
	size_t nhdrs;
};

struct h2s_handler {
	/* Server: a stream's request headers are complete. stream is a conn
	 * the callee takes over (set its ready/owner, conn_arm it); it must
	 * answer with h2s_respond(), at once or later (after connecting to the
	 * app). */
	void (*request)(struct h2s *s, void *ud, struct conn *stream, const struct h2s_req *req);
	/* The session is over (peer gone, GOAWAY with no stream left, protocol
	 * error, h2s_close). Streams still open were reset first (their
	 * owners saw CONN_HUP / an error). The session is freed after. */
	void (*closed)(struct h2s *s, void *ud);
};

/* A session over transport t (its handshake done: TLS with ALPN h2),
 * taking t over: the session is t's owner (ready/owner) and closes it, but
 * t's storage stays the caller's and must live until closed() has returned.
 * NULL on OOM (t is closed). */
struct h2s *h2s_server_new(struct worker *w, struct conn *t, const struct h2s_settings *st,
    const struct h2s_handler *h, void *ud);
struct h2s *h2s_client_new(struct worker *w, struct conn *t, const struct h2s_settings *st,
    const struct h2s_handler *h, void *ud);

/* Server: the response to a stream's request: 200 (then the stream's bytes
 * flow), or an error status (400, 401, 503: the stream ends). 0 or -errno. */
int h2s_respond(struct conn *stream, int status, const struct h2s_hdr *hdrs, size_t n);

/* Client: opens a CONNECT stream to authority with extra headers. The
 * stream is a conn whose handshake op completes when the response headers
 * arrive: 0 for a 2xx, -ECONNREFUSED otherwise (h2s_status() says which),
 * -ECONNRESET when the stream was reset. NULL when the session cannot open
 * another stream now (the peer's limit, GOAWAY) or on OOM. */
struct conn *h2s_connect(struct h2s *s, const char *authority, const struct h2s_hdr *hdrs, size_t n);
int h2s_status(const struct conn *stream);	/* the response :status, 0 before */

/* A stream conn is moved, never copied: the owner that keeps it in its own
 * storage (a relay's ds/us) moves it there with this, so that the session's
 * callbacks and the conn's watcher follow. src is not used after. */
void h2s_stream_move(struct conn *dst, struct conn *src);
bool h2s_is_stream(const struct conn *c);

/* How many streams are open, and whether one more may be opened (the
 * peer's SETTINGS_MAX_CONCURRENT_STREAMS and ours, no GOAWAY). */
unsigned h2s_streams(const struct h2s *s);
bool h2s_can_open(const struct h2s *s);

/* GOAWAY: no new stream; open ones finish (graceful), or everything is
 * reset at once (abort). */
void h2s_close(struct h2s *s, enum conn_close how);

/* The transport the session runs on (for the peer's identity: xtls). */
struct conn *h2s_transport(struct h2s *s);

/* During closed(): why the session ended: 0 (the peer's clean end, GOAWAY
 * done), -EPROTO (a protocol error or a flood: we sent GOAWAY), -ETIMEDOUT
 * (no PING ACK: keep-alive), -ECONNABORTED (h2s_close abort), or the
 * transport's -errno. */
int h2s_end_error(const struct h2s *s);

/* Server keep-alive (seconds): a PING after this long without a frame, and
 * the session ends when its ACK does not come within the timeout. Envoy's
 * HBONE listener: 10 / 20. Tests shorten them; read when a session starts. */
extern ev_tstamp h2s_ka_interval, h2s_ka_timeout;

#endif
