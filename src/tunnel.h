/* tunnel: one captured connection and its pipeline of named stages:
 * accepted -> classified -> (sniffing) -> handshaking -> connecting ->
 * forwarding. Each stage owns the conns until the next takes over; the last
 * hands both to the relay engine (flow.c). Later layers add a stage or a
 * transport here, not a special case in the relay. */
#ifndef OR_TUNNEL_H
#define OR_TUNNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "conn-t.h"
#include "flow.h"
#include "lb.h"
#include "metrics.h"
#include "model.h"

struct od_wait;
struct worker;
struct wsnap;

enum tunnel_state {
	TUN_ACCEPTED,		/* taken from the listener; nothing known yet */
	TUN_CLASSIFIED,		/* original destination known and checked */
	TUN_WAITING,		/* outbound to a destination not known yet: an on-demand lookup (ondemand.h) */
	TUN_SNIFFING,		/* waiting for the first bytes to tell the protocol */
	TUN_HANDSHAKING,	/* the downstream transport's handshake (TLS server) */
	TUN_CONNECTING,		/* the upstream connect and its transport's handshake */
	TUN_FORWARDING,		/* the relay moves bytes (and lingers at the end) */
	TUN_CLOSED,
};

/* Envoy's response flags (its access log's %RESPONSE_FLAGS%, Istio's
 * response_flags label), as the connection earned them: set where the
 * pipeline or the relay fails, read by telemetry and the access log. The
 * order here is the order they are printed in, comma-separated; none is
 * "-". */
#define TUNNEL_RESPONSE_FLAGS(X) \
	X(NO_HEALTHY_UPSTREAM, "UH") \
	X(UPSTREAM_CONNECT_FAILURE, "UF") \
	X(UPSTREAM_OVERFLOW, "UO") \
	X(NO_ROUTE, "NR") \
	X(UPSTREAM_RETRY_LIMIT, "URX") \
	X(NO_CLUSTER, "NC") \
	X(DOWNSTREAM_TERMINATION, "DC") \
	X(UPSTREAM_TERMINATION, "UC") \
	X(STREAM_IDLE_TIMEOUT, "SI") \
	X(DOWNSTREAM_PROTOCOL_ERROR, "DPE") \
	X(UPSTREAM_PROTOCOL_ERROR, "UPE") \
	X(RBAC_DENIED, "RBAC") \
	X(DRAINED, "DR")

enum tunnel_rflag_bit {
#define X(e, s) TRF_BIT_##e,
	TUNNEL_RESPONSE_FLAGS(X)
#undef X
	TRF__COUNT
};
#define TRF(e) (1u << TRF_BIT_##e)

/* The flags of mask as Envoy prints them ("UF,URX"; "-" for none) into buf
 * (at least TUNNEL_RFLAGS_MAX bytes); returns buf. */
#define TUNNEL_RFLAGS_MAX 64
const char *tunnel_rflags_str(uint32_t mask, char *buf, size_t len);

struct tunnel {
	unsigned worker_id;		/* log tag "[w%u c%llu]" */
	unsigned long long id;
	struct worker *w;
	enum listener_kind lst;
	enum tunnel_state state;
	struct relay relay;		/* relay.ds: accepted; relay.us: connected */
	ev_timer timer;			/* the current stage's deadline */
	struct wsnap *snap;		/* the configuration this connection started with */
	struct sockaddr_storage dst;	/* where the upstream connect goes */
	/* The client's address (accept's; for HBONE the HBONE peer's, the
	 * source pod) and when the connection was accepted (ev_now: wall
	 * clock), for authorization, telemetry and access logs. src is
	 * AF_UNSPEC when unknown. */
	union msockaddr src;
	ev_tstamp started;
	uint32_t rflags;		/* TRF(...) bits */
	bool authz_done;		/* inbound, HBONE: the authorization check ran (authz.h) */
	/* The destination as the authorization check judged it (inbound: dst;
	 * HBONE: the CONNECT's target, before applicationTunnel's port replaces
	 * dst's), so that a policy change re-judges what was judged. */
	union msockaddr authz_dst;
	/* For the access log (accesslog.h, written in tunnel_done): the
	 * decision when authz_done (enum authz_verdict) and the deciding
	 * policy's "ns/name" (NULL: none decided; points into t->snap's
	 * snapshot, or t's own copy when authz_policy_owned);
	 * odst: the original destination (dst becomes the endpoint or the
	 * waypoint chosen; AF_UNSPEC until known); us_tried: an upstream
	 * connect was attempted (dst is the upstream host). */
	uint8_t authz_verdict;
	bool us_tried;
	const char *authz_policy;
	bool authz_policy_owned;	/* authz_policy is t's own copy (free it) */
	union msockaddr odst;
	const struct conn_ops *us_ops;	/* the upstream transport, chosen when classified */
	/* The mesh's answer, from the snapshot's model (valid while the tunnel
	 * holds snap): for outbound, the service port the destination was (NULL:
	 * not a VIP), the endpoint chosen and the workload connected to (its
	 * identity, tunnel protocol and application tunnel, for the transports
	 * to come); for inbound, the local workload addressed. */
	const struct msvc_port *svc;
	const struct mendpoint *ep;
	union {
		const struct mworkload *peer;	/* outbound */
		const struct mworkload *local;	/* inbound */
	};
	struct lb_pick pick;		/* the endpoint attempts (svc only) */
	ev_tstamp connect_by;		/* the connect budget's end, over every attempt */
	/* Identity and mTLS. peer_id: the peer's verified SPIFFE ID, for the
	 * close log line and (later) authorization and access logs; malloc'ed,
	 * only for a TLS peer (NULL: plaintext), freed in tunnel_done.
	 * Outbound sets it from the upstream handshake, inbound from the
	 * downstream one. us_mtls: the upstream is an Istio-mTLS peer
	 * (model_peer_mtls), so its TCP connect is followed by a TLS client
	 * handshake in the same connecting stage. us_hbone: the upstream is
	 * an HBONE peer (model_peer_transport): the upstream conn is a CONNECT
	 * stream of the worker's HBONE pool (hbone.h), no socket of its own. */
	char *peer_id;
	bool us_mtls;
	bool us_hbone;
	/* HBONE (tunnel_start_stream): relay.ds is a CONNECT stream (h2s.h)
	 * that waits for its answer: 200 when forwarding starts, 503 when the
	 * connecting stage fails. */
	bool stream_pending;
	/* Inbound only (the sniffing stage, src/tunnel.c stage_sniff): the
	 * port's PeerAuthentication mode (enum pa_mode), the bytes the last
	 * peek saw (a readiness with no more bytes is the client's FIN), and
	 * whether SO_RCVLOWAT was raised to wait for a whole ClientHello (put
	 * back to 1 before anything else reads the socket). hello_timed: the
	 * deadline is now proxy.connectTimeout, for a TLS record begun (its
	 * hello is the handshake's first message: a client that stops inside
	 * it is reset then, not kept for proxy.idleTimeout). */
	uint8_t pa_mode;
	bool lowat;
	bool hello_timed;
	/* On demand (outbound): the connection waited for a lookup once (it
	 * never waits twice: after the answer an unknown destination follows
	 * mesh.outboundTrafficPolicy); odw: its waiter while TUN_WAITING,
	 * allocated only then (the known-destination path allocates nothing). */
	bool od_waited;
	struct od_wait *odw;
	/* PROXY protocol v2 toward the app (tunnel_proxy_protocol): the header,
	 * built once the client and target are known, sent right after the
	 * app's TCP connect and before any payload; malloc'ed only for a local
	 * workload whose applicationTunnel says PROXY (NULL otherwise). */
	struct tunnel_pp *pp;
	/* Through a waypoint (mesh.useWaypoints, stage_route): the CONNECT's
	 * :authority, the original destination (VIP:port or podIP:port), while
	 * dst and peer are the waypoint pod's; malloc'ed only then (NULL). */
	char *wp_authority;
	uint16_t sniffed;
	/* Istio's TCP metrics (telemetry.h): the label set this connection
	 * opened under (NULL: not opened), the flags it had then, the bytes
	 * reported so far; armed: it reached the connecting stage, so it is
	 * reported even if it never forwards; overflow: its set did not fit. */
	struct ltab_ent *tele;
	uint64_t tele_rx, tele_tx;
	uint32_t tele_rflags;
	bool tele_armed;
	bool tele_overflow;
	struct tunnel *prev, *next;	/* worker's list */
};

const char *tunnel_state_str(enum tunnel_state s);

/* The downstream counter of an inbound TLS handshake failure's reason (an
 * enum xtls_fail: 15006's and the HBONE server's), LM_DOWNSTREAM_CX_TLS_FAIL_*. */
enum listener_metric tunnel_ds_tls_metric(int f);

/* Take over an accepted socket fd from listener kind on worker w: find the
 * original destination, connect, and carry the bytes. Never fails to the
 * caller: a connection that cannot be served is closed and counted. */
void tunnel_accept(struct worker *w, enum listener_kind kind, int fd, const struct sockaddr_storage *src);

/* tunnel_accept() with the destination given: for tests and for callers
 * that chose the destination themselves (the client's address is the
 * socket's peer). Returns the tunnel, or NULL when it
 * was closed at once (the failure is counted). */
struct tunnel *tunnel_start(struct worker *w, enum listener_kind kind, int fd,
    const struct sockaddr_storage *dst);

/* The app connection of inbound tunnel t starts with a PROXY protocol v2
 * header (proxyv2.h) from client (the original source) to target (the HBONE
 * :authority, which t->dst may differ from by applicationTunnel.port)
 * carrying t->peer_id (the source's SPIFFE ID) as TLV 0xD0, as ztunnel
 * writes it (reference xds-hbone.md §3.5). For the HBONE server's tunnels
 * whose local workload says applicationTunnel PROXY; ztunnel's plaintext
 * inbound (15006) writes none, nor do we there. Call before the connecting
 * stage, after t->peer_id is set. 0, -ENOMEM, or proxyv2_build's error. */
int tunnel_proxy_protocol(struct tunnel *t, const struct sockaddr *client, const struct sockaddr *target);
/* HBONE: a tunnel whose downstream is the CONNECT stream `stream` (moved
 * into the tunnel), to dst (the app), from src (the HBONE peer's address)
 * and the peer whose verified SPIFFE
 * ID is peer_id (copied; the close log line's). The connecting and
 * forwarding stages are the same as for a socket; the stream is answered
 * 200 once the app is connected and 503 when it is not. Returns the tunnel,
 * or NULL when it was closed at once (the stream answered and counted).
 * pp_client and pp_target (both or neither): the local workload's
 * applicationTunnel says PROXY, so the app connection starts with a PROXY
 * v2 header from the original client to the CONNECT's target
 * (tunnel_proxy_protocol); NULL: none. authz_dst: the destination the
 * caller's authorization check allowed (kept for tunnel_recheck_authz); az:
 * its decision, for the access log (NULL: none was made). */
struct authz_result;
struct tunnel *tunnel_start_stream(struct worker *w, struct conn *stream, const struct sockaddr_storage *dst,
    const struct sockaddr_storage *src, const char *peer_id, const struct sockaddr_storage *pp_client, const struct sockaddr_storage *pp_target,
    const struct sockaddr_storage *authz_dst, const struct authz_result *az);
/* The access log line of an HBONE stream refused before it became a tunnel:
 * the peer at src, its SPIFFE ID peer_id, asking for dst (NULL: not known);
 * az: authorization's decision for a 401 (NULL for the others); rflags: the
 * TRF(...) bits of the refusal (RBAC_DENIED is added for a denial). Nothing
 * when the access log is off. */
void tunnel_log_refused_stream(struct worker *w, const struct sockaddr_storage *src,
    const struct sockaddr_storage *dst, const char *peer_id, const struct authz_result *az, uint32_t rflags);

/* Reset every tunnel of w, both sides (worker stop, end of the drain period:
 * a connection cut short must not look complete to either end). */
void tunnel_close_all(struct worker *w);
/* The worker took a new snapshot: its inbound and HBONE tunnels already
 * authorized (connecting or forwarding) are authorized again under it (authorization.closeDeniedConnections);
 * those now denied are reset and counted (downstream_cx_authz_closed). */
void tunnel_recheck_authz(struct worker *w);

#endif
