/* xtls: the TLS transport (OpenSSL 3) behind the conn ops table, and the TLS
 * contexts of a certificate bundle. A conn becomes TLS by xtls_start_*() on
 * its socket; from then on recv/send/want/pending/close speak TLS and the
 * relay (flow.c) and the stages (tunnel.c) do not know the difference. */
#ifndef OR_XTLS_H
#define OR_XTLS_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

#include "conn-t.h"
#include "identity.h"

/* The ops (conn-t.h) over TLS, through OpenSSL and, after a TLS 1.3
 * handshake, through our record layer (xrec.h) with the same contracts:
 * want() is the socket event OpenSSL last asked for (a read may need
 * EV_WRITE); pending() is SSL_pending() (xrec_pending());
 * shutdown_wr sends close_notify then FIN (the peer reads end of stream and
 * may go on sending); recv returns 0 for close_notify and for a FIN without
 * it (SSL_OP_IGNORE_UNEXPECTED_EOF, as Envoy); close(CONN_ABORT) is an RST
 * without close_notify; unsent() is SIOCOUTQ plus what OpenSSL still holds;
 * can_splice is false. Never raises SIGPIPE (MSG_NOSIGNAL). */
extern const struct conn_ops xtls_ops;

/* Istio's ALPN values (reference/xds-hbone.md §4). We never offer nor select
 * "istio-peer-exchange": we do not speak Envoy's TCP metadata-exchange
 * preamble, and a peer that negotiated it would read our bytes as one. */
#define XTLS_ALPN_ISTIO "istio"

/* Builds b's server_ctx and client_ctx (identity.h): TLS 1.2 to 1.3, Istio's
 * TLS 1.2 cipher suites, b's key and chain, b's roots as the only trust.
 * server: client certificate required; its SPIFFE ID must be of b's trust
 * domain; ALPN: selects "h2" or "http/1.1" when offered, else none (never an
 * istio* value, as Envoy's inbound); session tickets on. client: the peer's
 * SPIFFE ID is checked against what each conn expects (xtls_client_opts).
 * Control thread. 0 or -errno with err. */
int xtls_prepare(struct certbundle *b, char *err, size_t errlen);

/* A client context for a control plane (the Istio CA, xDS): trusts the
 * roots in roots_pem only, presents b's certificate when b is not NULL
 * (xDS after the first certificate), no session cache. NULL with err. */
SSL_CTX *xtls_ctx_control(const char *roots_pem, size_t len, const struct certbundle *b,
    char *err, size_t errlen);

/* Per-worker client sessions for resumption between sidecars, keyed by the
 * peer (address and expected identity): a few single-use TLS 1.3 tickets
 * per peer, max sessions in all (the least recently used peer's go first). */
struct xtls_sessions;
struct xtls_sessions *xtls_sessions_new(size_t max);
void xtls_sessions_free(struct xtls_sessions *s);

struct xtls_client_opts {
	const char *sni;		/* NULL: none sent */
	const unsigned char *alpn;	/* ALPN in wire format (length-prefixed); NULL: none */
	size_t alpn_len;
	/* The peer's certificate must carry one of these SPIFFE IDs (a
	 * workload identity and its service's subject_alt_names); none: any
	 * SPIFFE ID of our trust domain. */
	const char *const *sans;
	size_t nsans;
	/* Control planes: a DNS name (hostname check) or "spiffe://..." the
	 * server's certificate must carry; NULL: none beyond the chain. */
	const char *verify_name;
	struct xtls_sessions *sessions;	/* NULL: no resumption */
	const char *session_key;	/* what a session is reused for (peer address + identity) */
};

/* Makes c (set up by conn_init() on a connected or still connecting
 * socket, raw_ops) a TLS client or server conn: c->ops becomes &xtls_ops and
 * the handshake runs from c->ops->handshake (first completing a pending
 * connect). The conn holds what it needs from ctx and b until closed
 * (references). 0 or -errno (c unchanged). */
int xtls_start_client(struct conn *c, SSL_CTX *ctx, const struct xtls_client_opts *o);
int xtls_start_server(struct conn *c, SSL_CTX *ctx);

/* Why a handshake failed: for the log line and the listener metric. */
enum xtls_fail {
	XTLS_FAIL_NONE,
	XTLS_FAIL_PROTOCOL,	/* not TLS, bad record, no shared version/cipher/group */
	XTLS_FAIL_NO_CERT,	/* the peer sent no certificate */
	XTLS_FAIL_UNTRUSTED,	/* the chain does not lead to our roots */
	XTLS_FAIL_EXPIRED,	/* expired or not yet valid */
	XTLS_FAIL_IDENTITY,	/* no SPIFFE ID, another trust domain, or not one expected */
	XTLS_FAIL_IO,		/* the socket failed or closed during the handshake */
};
extern const char *const xtls_fail_names[];

/* After a completed handshake: the peer's verified SPIFFE ID ("" when it
 * sent none), the ALPN value chosen ("" none), the protocol version name,
 * whether the session was resumed. Before or after a failed one: "" / false,
 * and xtls_failure() says why. */
const char *xtls_peer_id(const struct conn *c);
const char *xtls_alpn(const struct conn *c);
const char *xtls_version(const struct conn *c);
bool xtls_resumed(const struct conn *c);
enum xtls_fail xtls_failure(const struct conn *c, char *detail, size_t len);

/* The conn's SSL (cipher, certificates, for logs and tests), or NULL when c
 * is no TLS conn or its SSL is gone: after the handshake a mesh conn in
 * TLS 1.3 goes to our own record layer (xrec.h) and frees its SSL, unless
 * the environment says OUTRIGGER_TLS_RECORDS=openssl. Owned by the conn. */
SSL *xtls_ssl(const struct conn *c);

/* Whether mesh conns go to our record layer after the handshake (tests;
 * the default is the environment's, read when the first context is made). */
void xtls_set_own_records(bool on);
/* Is c on our record layer now? */
bool xtls_own_records(const struct conn *c);

#endif
