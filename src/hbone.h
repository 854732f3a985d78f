/* hbone: HBONE (HTTP/2 CONNECT over mTLS, port 15008), reference
 * xds-hbone.md §3. The server accepts on 15008 (TLS 1.3 only, AES-GCM,
 * ALPN h2, a client certificate of our trust domain required), answers each
 * CONNECT to "<this pod's IP>:<port>" by connecting to the app (200), or
 * 400 / 401 / 503; the client keeps a per-worker pool of mTLS HTTP/2
 * connections to peers' 15008 and opens one CONNECT stream per proxied
 * connection. Both hand the stream and the other side to the relay
 * engine as a tunnel does. */
#ifndef OR_HBONE_H
#define OR_HBONE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "conn-t.h"
#include "h2s.h"

#define HBONE_PORT 15008

struct worker;
struct tunnel;

/* ---- the server's front end, pure (unit tests, fuzz_hbone) ---- */

/* Parses a CONNECT :authority "ip:port" or "[v6]:port" (no host names: a
 * sidecar is addressed by IP) into out. 0 or -EINVAL. */
int hbone_authority_parse(const char *auth, size_t len, struct sockaddr_storage *out);

/* ---- the server (hbone_server.c) ---- */

/* A connection accepted on 15008 by worker w: TLS, HTTP/2, then a tunnel
 * per CONNECT stream. Never fails to the caller (a failure is counted). */
void hbone_accept(struct worker *w, int fd, const struct sockaddr_storage *peer);
/* Drain: GOAWAY on every session of w (open streams finish). Stop: every
 * connection of w closed at once (after tunnel_close_all reset the streams). */
void hbone_drain(struct worker *w);
void hbone_close_all(struct worker *w);

/* ---- the client pool (hbone_pool.c) ---- */

/* ztunnel's POOL_MAX_STREAMS_PER_CONNECTION and pool_unused_release_timeout
 * (reference xds-hbone.md §3.1). */
#define HBONE_POOL_MAX_STREAMS 100
#define HBONE_POOL_IDLE_S 300.0

struct ssl_ctx_st;

/* What a pooled connection is keyed by (ztunnel's: source identity,
 * destination identity, destination IP) and how to reach it. */
struct hbone_dst {
	const char *src_id;		/* our SPIFFE ID (the certificate's) */
	const char *dst_id;		/* the peer workload's SPIFFE ID */
	const char *const *sans;	/* also acceptable: the service's subject_alt_names */
	size_t nsans;
	struct sockaddr_storage addr;	/* the peer's IP at HBONE_PORT */
	struct ssl_ctx_st *ctx;		/* our certificate's client context (certbundle) */
};

struct hbone_pool_opts {
	unsigned max_streams;		/* per connection (0: HBONE_POOL_MAX_STREAMS) */
	double idle_s;			/* a connection without streams is released after */
	double handshake_s;		/* TCP + TLS + the session's start, at most */
};
extern const struct hbone_pool_opts hbone_pool_defaults;

struct hbone_pool_stats {
	uint64_t opened;		/* connections dialled */
	uint64_t established;		/* ... whose TLS (h2) and session came up */
	uint64_t handshake_fail;	/* ... that failed before */
	uint64_t closed;		/* sessions ended (any reason) */
	uint64_t idle_released;		/* ... of which released for idleness */
	uint64_t streams;		/* streams asked for */
};

/* A worker's pool (worker->hbone, made on first use). */
struct hbone_pool;
struct hbone_pool *hbone_pool_new(struct worker *w, struct ev_loop *loop, const struct hbone_pool_opts *o);
void hbone_pool_free(struct hbone_pool *p);
const struct hbone_pool_stats *hbone_pool_stats(const struct hbone_pool *p);
/* Connections (open or opening) of dst's key, or all with dst NULL. */
size_t hbone_pool_conns(const struct hbone_pool *p, const struct hbone_dst *dst);

/* Tests: how a new connection's transport is made instead of TCP + TLS (t
 * conn_init'ed on p's loop; the pool sets its owner). 0 or -errno. */
typedef int hbone_dial_fn(struct hbone_pool *p, struct conn *t, const struct hbone_dst *dst, void *arg);
void hbone_pool_set_dial(struct hbone_pool *p, hbone_dial_fn *dial, void *arg);

/* Opens a CONNECT stream to authority (with extra headers) over a pooled
 * connection to dst: one with room (under the stream limit, the peer's
 * max_concurrent_streams not reached; one still being established is
 * shared), else a new one. c (the caller's, e.g. the tunnel's embedded
 * relay.us) becomes the stream, owned by owner through ready: its
 * handshake op completes when the response arrives (0 for a 2xx;
 * -ECONNREFUSED for another status, hbone_stream_status says which;
 * the connection's error when it failed: only its own streams fail).
 * 0, or -errno with c not open (no connection could be started).
 *
 * The header of 0eb868d returned a conn allocated by the pool; the relay
 * embeds its conns, so the caller now gives its own (and the stream can
 * exist before its connection's session does). */
int hbone_pool_open(struct hbone_pool *p, struct conn *c, const struct hbone_dst *dst, const char *authority,
    const struct h2s_hdr *hdrs, size_t n, conn_ready_fn *ready, void *owner);
/* The same on worker w's pool. */
int hbone_pool_connect(struct worker *w, struct conn *c, const struct hbone_dst *dst, const char *authority,
    const struct h2s_hdr *hdrs, size_t n, conn_ready_fn *ready, void *owner);

/* The request's headers (reference xds-hbone.md §3.2). baggage: ours
 * (k8s.cluster.name, k8s.namespace.name, k8s.deployment.name or
 * k8s.pod.name, service.name, service.version from the environment
 * pilot-agent reads and the pod's labels), made once per worker; NULL on
 * OOM. traceparent: a fresh W3C id ("00-<32 hex>-<16 hex>-00"), out at
 * least 56 bytes; 0 or -errno. */
struct config;
const char *hbone_baggage(struct worker *w, const struct config *cfg);
int hbone_baggage_build(char *out, size_t len, const char *cluster_id);
int hbone_traceparent(char *out, size_t len);

/* A stream conn: the server's verified SPIFFE ID ("" none or not yet), its
 * response status (0 before), whether c is one. */
const char *hbone_stream_peer_id(const struct conn *c);
int hbone_stream_status(const struct conn *c);
bool hbone_is_stream(const struct conn *c);

#endif
