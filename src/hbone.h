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
void hbone_accept(struct worker *w, int fd);
/* Drain: GOAWAY on every session of w (open streams finish). Stop: every
 * connection of w closed at once (after tunnel_close_all reset the streams). */
void hbone_drain(struct worker *w);
void hbone_close_all(struct worker *w);

/* ---- the client pool (hbone_pool.c) ---- */

/* What a pooled connection is keyed by (ztunnel's: source identity,
 * destination identity, destination IP) and how to reach it. */
struct hbone_dst {
	const char *src_id;		/* our SPIFFE ID (the certificate's) */
	const char *dst_id;		/* the peer workload's SPIFFE ID */
	const char *const *sans;	/* also acceptable: the service's subject_alt_names */
	size_t nsans;
	struct sockaddr_storage addr;	/* the peer's IP at HBONE_PORT */
};

/* Opens a CONNECT stream to authority over a pooled connection to dst (a
 * new one when none has room: at most a stream limit per connection, idle
 * connections released). The stream conn's handshake completes when the
 * response arrives (see h2s_connect). NULL with *err set (-ENOMEM,
 * -ECONNREFUSED, ...) when no stream can be had now. */
struct conn *hbone_pool_connect(struct worker *w, const struct hbone_dst *dst, const char *authority,
    const struct h2s_hdr *hdrs, size_t n, int *err);

#endif
