/* tunnel: one captured connection and its pipeline of named stages, from
 * accept to the relay. */
#include "autoconfig.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "accesslog.h"
#include "authz.h"
#include "conn.h"
#include "h2s.h"
#include "hbone.h"
#include "log.h"
#include "ondemand.h"
#include "peerauth.h"
#include "proxyv2.h"
#include "snapshot.h"
#include "sniff.h"
#include "sock.h"
#include "telemetry.h"
#include "tunnel.h"
#include "identity.h"
#include "worker-t.h"
#include "xtls.h"

/* Istio's inbound passthrough source: the capture rules RETURN traffic from
 * it on lo, so our connection to the app is not captured again. */
static const char passthrough_v4[] = "127.0.0.6";
static const char passthrough_v6[] = "::6";
/* TPROXY: replies to a foreign source carry the mark that routes them back to us. */
#define TPROXY_MARK 1337

static void tunnel_ready(struct conn *c, int what);
static void tunnel_timer_cb(struct ev_loop *loop, ev_timer *tm, int revents);
static bool stage_connect(struct tunnel *t);
static bool stage_next(struct tunnel *t);
static bool hbone_hs_fail(struct tunnel *t, int err);
static void wait_timeout(struct tunnel *t);

const char *
tunnel_state_str(enum tunnel_state s)
{
	switch (s) {
	case TUN_ACCEPTED: return "accepted";
	case TUN_CLASSIFIED: return "classified";
	case TUN_WAITING: return "waiting";
	case TUN_SNIFFING: return "sniffing";
	case TUN_HANDSHAKING: return "handshaking";
	case TUN_CONNECTING: return "connecting";
	case TUN_FORWARDING: return "forwarding";
	case TUN_CLOSED: return "closed";
	}
	return "?";
}

struct tunnel_pp {
	uint16_t len;
	uint8_t hdr[PROXYV2_MAX];
};

static inline uint64_t *
tstat(struct tunnel *t, enum listener_metric m)
{
	return &t->w->stats.lst[t->lst][m];
}

/* a (NULL or not IP: AF_UNSPEC) in the tunnel's 28 bytes m; unmap: an
 * IPv4-mapped IPv6 address (a dual-stack listener's) as the IPv4 one. */
static void
msock_set(union msockaddr *m, const struct sockaddr_storage *a, bool unmap)
{
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)a;

	memset(m, 0, sizeof(*m));
	if (a && a->ss_family == AF_INET)
		memcpy(&m->in4, a, sizeof(m->in4));
	else if (a && a->ss_family == AF_INET6 && unmap && IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
		m->in4.sin_family = AF_INET;
		m->in4.sin_port = s6->sin6_port;
		memcpy(&m->in4.sin_addr, s6->sin6_addr.s6_addr + 12, 4);
	} else if (a && a->ss_family == AF_INET6)
		memcpy(&m->in6, a, sizeof(m->in6));
	else
		m->sa.sa_family = AF_UNSPEC;
}

/* The identities of t for the access log: inbound (15006, HBONE) the peer
 * is the source and we are the destination (ours only when the peer was
 * verified: plaintext has no principal); outbound we are the source when
 * the upstream spoke mTLS or HBONE, and the peer is the destination. */
static void
tunnel_principals(const struct tunnel *t, const char **src, const char **dst)
{
	const struct certbundle *b = t->snap ? t->snap->s->certs : NULL;
	const char *ours = b && *b->identity ? b->identity : NULL;

	if (t->lst == LST_OUTBOUND) {
		*src = t->peer_id && (t->us_mtls || t->us_hbone) ? ours : NULL;
		*dst = t->peer_id;
	} else {
		*src = t->peer_id;
		*dst = t->peer_id || t->lst == LST_HBONE ? ours : NULL;
	}
}

/* Envoy's cluster names, as an Istio sidecar's access log shows them:
 * outbound through a service port "outbound|<port>||<hostname>", else the
 * EDS cluster listing the address, else PassthroughCluster (BlackHoleCluster
 * when REGISTRY_ONLY refused it); inbound "inbound|<port>||". */
static const char *
tunnel_cluster(const struct tunnel *t, char *buf, size_t len)
{
	struct meds_hit hit;

	if (t->lst != LST_OUTBOUND) {
		if (t->dst.ss_family != AF_INET && t->dst.ss_family != AF_INET6)
			return NULL;
		snprintf(buf, len, "inbound|%u||", sock_addr_port(&t->dst));
		return buf;
	}
	if (t->rflags & TRF(NO_ROUTE))
		return "BlackHoleCluster";
	if (t->svc && model_cluster_name(buf, len, t->svc->svc, t->svc->port) < (int)len)
		return buf;
	if (!t->us_tried)
		return NULL;
	if (t->snap && model_eds_at(t->snap->s->model, &t->dst, &hit) && hit.cluster && *hit.cluster)
		return hit.cluster;
	return "PassthroughCluster";
}

/* The connection's access log line (accesslog.h), when the log is on. */
static void
tunnel_access_log(const struct tunnel *t, ev_tstamp now)
{
	char remote[SOCK_ADDR_STRLEN] = "", local[SOCK_ADDR_STRLEN] = "", up[SOCK_ADDR_STRLEN] = "";
	char flags[TUNNEL_RFLAGS_MAX], cluster[320], term[300] = "";
	uint32_t rf = t->rflags;
	struct accesslog_rec rec = { 0 };

	if (t->relay.ended & RELAY_END_DS_RESET)
		rf |= TRF(DOWNSTREAM_TERMINATION);
	if (t->relay.ended & RELAY_END_US_RESET)
		rf |= TRF(UPSTREAM_TERMINATION);
	if (t->relay.ended & RELAY_END_IDLE)
		rf |= TRF(STREAM_IDLE_TIMEOUT);
	if (t->src.sa.sa_family == AF_INET || t->src.sa.sa_family == AF_INET6)
		sock_sa_str(&t->src.sa, remote, sizeof(remote));
	if (t->odst.sa.sa_family == AF_INET || t->odst.sa.sa_family == AF_INET6)
		sock_sa_str(&t->odst.sa, local, sizeof(local));
	if (t->us_tried)
		sock_addr_str(&t->dst, up, sizeof(up));
	/* Envoy's RBAC filter's CONNECTION_TERMINATION_DETAILS. */
	if (t->authz_done && t->authz_verdict == AUTHZ_DENY)
		snprintf(term, sizeof(term), "rbac_access_denied_matched_policy[%s]",
		    t->authz_policy ? t->authz_policy : "none");
	rec.start = t->started;
	rec.duration_ms = now > t->started ? (uint64_t)((now - t->started) * 1000.0) : 0;
	rec.direction = t->lst == LST_OUTBOUND ? "outbound" : "inbound";
	rec.listener = listener_names[t->lst];
	rec.downstream_remote = remote;
	rec.downstream_local = local;
	rec.upstream_host = up;
	rec.upstream_cluster = tunnel_cluster(t, cluster, sizeof(cluster));
	rec.bytes_received = t->relay.rx_bytes;
	rec.bytes_sent = t->relay.tx_bytes;
	rec.response_flags = tunnel_rflags_str(rf, flags, sizeof(flags));
	rec.termination = term;
	tunnel_principals(t, &rec.source_principal, &rec.destination_principal);
	rec.authz_policy = t->authz_done ? t->authz_policy : NULL;
	rec.authz_decision = t->authz_done ? authz_verdict_str((enum authz_verdict)t->authz_verdict) : NULL;
	accesslog_emit(&rec);
}

/* The decision of an authorization check on t, for the access log: the
 * policy name is kept as a pointer, valid while t holds its snapshot (a
 * check under a newer snapshot keeps a copy of its own). */
static void
tunnel_note_authz(struct tunnel *t, const struct snapshot *by, const struct authz_result *res)
{
	t->authz_done = true;
	t->authz_verdict = (uint8_t)res->verdict;
	if (t->authz_policy_owned)
		free((char *)t->authz_policy);
	t->authz_policy_owned = false;
	if (!res->policy || (t->snap && by == t->snap->s))
		t->authz_policy = res->policy;
	else {
		/* Judged under a newer snapshot than t holds: that one may go
		 * before t does (and a policy's counter slot may be reused), so
		 * t keeps its own copy. Rare: only a connection that began
		 * before a policy change and was judged after it. */
		t->authz_policy = strdup(res->policy);
		t->authz_policy_owned = t->authz_policy != NULL;
		if (!t->authz_policy)
			t->authz_policy = "(out of memory)";
	}
}

/* The relay closed both conns: the connection is over. */
static void
tunnel_done(struct relay *r)
{
	struct tunnel *t = (struct tunnel *)((char *)r - offsetof(struct tunnel, relay));
	struct worker *w = t->w;

	ev_timer_stop(w->loop, &t->timer);
	if (accesslog_on())
		tunnel_access_log(t, ev_time());
	if (w->tunnel_walk == t)
		w->tunnel_walk = t->next;
	if (t->prev)
		t->prev->next = t->next;
	else
		w->tunnels = t->next;
	if (t->next)
		t->next->prev = t->prev;
	/* At debug, as every per-connection line: the default log must stay
	 * quiet at the data path's rate (an access log is the place for one
	 * line per connection at info). */
	clog_debug(t, "closed (was %s%s%s)%s%s", tunnel_state_str(t->state),
	    t->state == TUN_FORWARDING ? ", " : "",
	    t->state == TUN_FORWARDING ? relay_state_str(t->relay.state) : "",
	    t->peer_id ? " peer " : "", t->peer_id ? t->peer_id : "");
	tele_close(t);
	free(t->peer_id);
	if (t->authz_policy_owned)
		free((char *)t->authz_policy);
	free(t->pp);
	free(t->wp_authority);
	if (t->odw) {
		ondemand_cancel(t->odw);
		free(t->odw);
	}
	if (t->snap)
		wsnap_done(t->snap);
	stat_add(tstat(t, LM_DOWNSTREAM_CX_DESTROY), 1);
	stat_sub(tstat(t, LM_DOWNSTREAM_CX_ACTIVE), 1);
	stat_sub(&w->stats.w[WM_SESSIONS_IN_USE], 1);
	free(t);
}

/* A stage failed: the client gets a reset (it got nothing, or a truncated
 * stream), and so does an upstream already connected. t is gone after. */
static void
tunnel_fail(struct tunnel *t)
{
	if (t->stream_pending) {
		/* HBONE: the app could not be had; the client is told so (a
		 * reset of the stream would read as a broken connection). */
		t->stream_pending = false;
		stat_add(tstat(t, LM_HBONE_RQ_503), 1);
		if (h2s_respond(&t->relay.ds, 503, NULL, 0) == 0)
			conn_close(&t->relay.ds, CONN_GRACEFUL);
	}
	relay_abort(&t->relay);
}

/* The source workload for a locality-aware choice: the local workload at the
 * connection's source address (ztunnel's source workload), or NULL. Only the
 * STRICT and FAILOVER modes need it, so only they pay the getpeername(). */
static const struct mworkload *
tunnel_source(struct tunnel *t, const struct msvc_port *sp)
{
	struct sockaddr_storage src;
	socklen_t len = sizeof(src);

	if (sp->svc->lb_mode != MLB_STRICT && sp->svc->lb_mode != MLB_FAILOVER)
		return NULL;
	if (getpeername(t->relay.ds.fd, (struct sockaddr *)&src, &len) < 0)
		return NULL;
	return model_workload_at(t->snap->s->model, &src);
}

/* The endpoint for the tunnel's current attempt at its service port: sets
 * dst, ep and peer. false when there is none left. */
static bool
tunnel_pick(struct tunnel *t)
{
	char a[SOCK_ADDR_STRLEN];
	const struct mendpoint *ep = lb_choose(&t->snap->lb, t->snap->s->model, t->svc,
	    tunnel_source(t, t->svc), &t->pick);

	if (!ep)
		return false;
	t->ep = ep;
	t->peer = ep->wl;
	memset(&t->dst, 0, sizeof(t->dst));
	memcpy(&t->dst, &ep->addr, sizeof(ep->addr));
	clog_debug(t, "service %s port %u: endpoint %s (%s), attempt %u of %u", t->svc->svc->key,
	    t->svc->port, sock_addr_str(&t->dst, a, sizeof(a)), ep->wl->uid,
	    t->pick.attempt + 1u, (unsigned)t->pick.max);
	return true;
}

/* A connect failed (counted here; logged unless the caller said why already:
 * a TLS handshake's reason). Through a service, the next endpoint is tried;
 * returns whether t is still open (false: reset and gone). */
static bool
tunnel_fail_connect(struct tunnel *t, int err, bool timeout, bool logged)
{
	char a[SOCK_ADDR_STRLEN];

	stat_add(tstat(t, timeout ? LM_UPSTREAM_CX_CONNECT_TIMEOUT : LM_UPSTREAM_CX_CONNECT_FAIL), 1);
	if (!logged)
		clog_warn(t, "%s upstream %s: %s", listener_names[t->lst], sock_addr_str(&t->dst, a, sizeof(a)),
		    timeout ? "connect timeout" : strerror(-err));
	if (t->svc && t->connect_by - ev_now(t->w->loop) > 0.001) {
		/* Through a service, with time left: the next endpoint (lb.c
		 * says which, and bounds the attempts). The failed socket goes
		 * first; the client has seen nothing yet. */
		t->pick.attempt++;
		if (tunnel_pick(t)) {
			stat_add(tstat(t, LM_UPSTREAM_CX_CONNECT_RETRY), 1);
			conn_close(&t->relay.us, CONN_ABORT);
			return stage_connect(t);
		}
		/* Envoy's URX for TCP: the connect attempts allowed were all made. */
		if (t->pick.attempt > 1)
			t->rflags |= TRF(UPSTREAM_RETRY_LIMIT);
	}
	/* No endpoint left to try, or no time: the budget is spent either way. */
	t->rflags |= TRF(UPSTREAM_CONNECT_FAILURE);
	if (t->svc)
		stat_add(tstat(t, LM_UPSTREAM_CX_CONNECT_ATTEMPTS_EXCEEDED), 1);
	tunnel_fail(t);
	return false;
}

static void
stage_deadline(struct tunnel *t, uint32_t ms)
{
	ev_timer_stop(t->w->loop, &t->timer);
	ev_timer_set(&t->timer, ms / 1000.0, 0.);
	ev_timer_start(t->w->loop, &t->timer);
}

/* Forwarding: the relay takes both conns. Returns false when t is gone
 * (the relay ended at once, or failed to start). */
static bool
stage_forward(struct tunnel *t)
{
	const struct config *cfg = &t->snap->s->cfg;

	/* The connect time, every attempt together, from what is left of its budget. */
	hist_observe_s(&t->w->stats.lh[t->lst][LH_UPSTREAM_CX_CONNECT_MS],
	    cfg->connect_timeout_ms / 1000.0 - (t->connect_by - ev_now(t->w->loop)));
	t->state = TUN_FORWARDING;
	ev_timer_stop(t->w->loop, &t->timer);
	if (t->stream_pending) {
		t->stream_pending = false;
		if (h2s_respond(&t->relay.ds, 200, NULL, 0) < 0) {
			relay_abort(&t->relay);
			return false;
		}
		stat_add(tstat(t, LM_HBONE_RQ_200), 1);
	}
	clog_debug(t, "forwarding (%s -> %s)", t->relay.ds.ops->name, t->relay.us.ops->name);
	tele_open(t);
	return relay_start(&t->relay, cfg->idle_timeout_ms / 1000.0);
}

/* Where the upstream connection comes from. Outbound: anywhere. Inbound
 * REDIRECT: 127.0.0.6 / ::6, which the capture rules let through. Inbound
 * TPROXY: the client's own address, so that the app sees who called; for
 * HBONE, the HBONE peer's (ztunnel in TPROXY mode does the same: the
 * app's replies to it carry the TPROXY mark and come back to us). */
static int
upstream_source(struct tunnel *t, int fd, const struct config *cfg, struct sockaddr_storage *src,
    bool *transparent)
{
	*transparent = false;
	if (t->lst != LST_INBOUND && t->lst != LST_HBONE)
		return 0;
	if (cfg->mode == INTERCEPT_TPROXY && t->lst == LST_INBOUND) {
		socklen_t len = sizeof(*src);
		if (getpeername(fd, (struct sockaddr *)src, &len) < 0)
			return -errno;
		sock_addr_set_port(src, 0);
		*transparent = true;
		return 1;
	}
	/* HBONE under TPROXY, when the peer's family is the app's (else, as
	 * under REDIRECT, from the passthrough address: the reply must not be
	 * captured again). */
	if (cfg->mode == INTERCEPT_TPROXY && t->src.sa.sa_family == t->dst.ss_family) {
		memset(src, 0, sizeof(*src));
		memcpy(src, &t->src, t->src.sa.sa_family == AF_INET ? sizeof(t->src.in4) : sizeof(t->src.in6));
		sock_addr_set_port(src, 0);
		*transparent = true;
		return 1;
	}
	return sock_addr_parse(t->dst.ss_family == AF_INET6 ? passthrough_v6 : passthrough_v4, 0, src) == 0 ? 1 : -EINVAL;
}

/* The deadline of this connect attempt. proxy.connectTimeout bounds the
 * whole connect, every attempt together, so a client never waits longer for
 * a service whose endpoints do not answer than for one address (5 attempts of
 * a full timeout each would be 50 s by default): what is left is shared
 * evenly among the attempts still allowed, so a silent endpoint (a SYN
 * lost, a node gone) still leaves time for the next. */
static uint32_t
attempt_ms(struct tunnel *t, const struct config *cfg)
{
	ev_tstamp now = ev_now(t->w->loop), left;
	unsigned tries = 1;

	if (!t->svc || t->pick.attempt == 0)
		t->connect_by = now + cfg->connect_timeout_ms / 1000.0;
	if (t->svc && t->pick.max > t->pick.attempt)
		tries = t->pick.max - t->pick.attempt;
	left = t->connect_by - now;
	if (left < 0.001)
		left = 0.001;
	return (uint32_t)(left * 1000.0 / tries) + 1;
}

/* The upstream transport (stage_connect, per attempt: each endpoint is
 * asked): an Istio-mTLS peer (model_peer_mtls: its workload's tunnel
 * protocol is LEGACY_ISTIO_MTLS, or its EDS endpoint is tlsMode "istio")
 * gets a TLS client handshake after the TCP connect, anything else raw TCP
 * as before. Without a certificate a connection to such a peer is refused
 * and counted rather than sent in plaintext to a peer that may be STRICT.
 * Returns false when t was refused (and closed). */
static bool
upstream_transport(struct tunnel *t)
{
	const char *cluster;
	char a[SOCK_ADDR_STRLEN];
	enum mpeer_transport tp = t->lst == LST_OUTBOUND ?
	    model_peer_transport(t->snap->s->model, &t->dst, t->peer, &cluster) : MPEER_PLAIN;

	if (t->wp_authority)
		tp = MPEER_HBONE;	/* a waypoint is reached over HBONE, whatever its workload says */
	t->us_mtls = tp == MPEER_MTLS;
	t->us_hbone = tp == MPEER_HBONE;
	if (tp == MPEER_PLAIN || t->snap->s->certs)
		return true;
	stat_add(tstat(t, LM_UPSTREAM_CX_TLS_NO_LOCAL_CERT), 1);
	clog_warn(t, "outbound %s: an %s peer, and this proxy has no certificate yet: refused",
	    sock_addr_str(&t->dst, a, sizeof(a)), t->us_hbone ? "HBONE" : "Istio mTLS");
	tunnel_fail(t);
	return false;
}

/* The upstream's TCP connect completed and it is an Istio-mTLS peer: the
 * TLS client on the same socket (reference xds-hbone.md §4.1). SNI: the
 * cluster name, as Envoy sends it: a service port's default cluster
 * (outbound|port||host) when the connection came through a VIP, else the
 * EDS cluster that lists the address, else none. ALPN: "istio" only (never
 * istio-peer-exchange, xtls.h). SANs: the peer workload's identity and the
 * service's subject_alt_names (none known: any SPIFFE ID of our trust
 * domain). Sessions: the worker's cache, keyed by address and identity.
 * 0 or -errno (counted as a connect failure by the caller). */
static int
upstream_tls_start(struct tunnel *t)
{
	static const unsigned char alpn[] = { 5, 'i', 's', 't', 'i', 'o' };
	const struct mservice *svc = t->svc ? t->svc->svc : NULL;
	const struct certbundle *b = t->snap->s->certs;
	char sni[320], key[SOCK_ADDR_STRLEN + SPIFFE_ID_MAX + 2];
	const char *cluster = NULL, *few[8], **sans = few;
	size_t n = 0, max = 1 + (svc ? svc->nsans : 0);
	int rc;

	(void)model_peer_mtls(t->snap->s->model, &t->dst, t->peer, &cluster);
	if (svc && model_cluster_name(sni, sizeof(sni), svc, t->svc->port) >= (int)sizeof(sni))
		svc = NULL;	/* a hostname of 300 bytes cannot be a DNS name anyway */
	if (!svc)
		snprintf(sni, sizeof(sni), "%s", cluster ? cluster : "");
	/* xtls_start_client copies what it keeps (SNI, SANs, key). */
	if (max > sizeof(few) / sizeof(few[0]) && !(sans = calloc(max, sizeof(*sans))))
		return -ENOMEM;
	if (t->peer)
		sans[n++] = t->peer->identity;
	for (size_t i = 0; svc && i < svc->nsans; i++)
		sans[n++] = svc->sans[i];
	sock_addr_str(&t->dst, key, sizeof(key));
	snprintf(key + strlen(key), sizeof(key) - strlen(key), " %s", t->peer ? t->peer->identity : "");
	struct xtls_client_opts o = {
		.sni = *sni ? sni : NULL,
		.alpn = alpn, .alpn_len = sizeof(alpn),
		.sans = sans, .nsans = n,
		.sessions = t->w->tls_sessions,
		.session_key = key,
	};
	rc = xtls_start_client(&t->relay.us, b->client_ctx, &o);
	if (rc == 0)
		clog_debug(t, "outbound: Istio mTLS, sni %s, %zu SAN(s) expected%s%s", *sni ? sni : "(none)", n,
		    n ? ", first " : "", n ? sans[0] : "");
	if (sans != few)
		free(sans);
	return rc;
}

/* The upstream handshake failed (TLS: counted with its reason and logged
 * with the transport's detail); then as any connect failure. */
static bool
upstream_hs_fail(struct tunnel *t, int err)
{
	if (t->us_hbone)
		return hbone_hs_fail(t, err);
	static const enum listener_metric reason[] = {
		[XTLS_FAIL_PROTOCOL] = LM_UPSTREAM_CX_TLS_FAIL_PROTOCOL,
		[XTLS_FAIL_NO_CERT] = LM_UPSTREAM_CX_TLS_FAIL_NO_CERT,
		[XTLS_FAIL_UNTRUSTED] = LM_UPSTREAM_CX_TLS_FAIL_UNTRUSTED,
		[XTLS_FAIL_EXPIRED] = LM_UPSTREAM_CX_TLS_FAIL_EXPIRED,
		[XTLS_FAIL_IDENTITY] = LM_UPSTREAM_CX_TLS_FAIL_IDENTITY,
		[XTLS_FAIL_IO] = LM_UPSTREAM_CX_TLS_FAIL_IO,
	};
	char a[SOCK_ADDR_STRLEN], detail[256];
	enum xtls_fail f;

	if (t->relay.us.ops != &xtls_ops)
		return tunnel_fail_connect(t, err, false, false);
	f = xtls_failure(&t->relay.us, detail, sizeof(detail));
	if (f == XTLS_FAIL_NONE)
		f = XTLS_FAIL_IO;
	stat_add(tstat(t, LM_UPSTREAM_CX_TLS_HANDSHAKE_FAIL), 1);
	if ((size_t)f < sizeof(reason) / sizeof(reason[0]))
		stat_add(tstat(t, reason[f]), 1);
	clog_warn(t, "outbound %s: mTLS handshake failed (%s): %s", sock_addr_str(&t->dst, a, sizeof(a)),
	    xtls_fail_names[f], *detail ? detail : strerror(-err));
	return tunnel_fail_connect(t, err, false, true);
}

/* The app's TCP connect completed: the PROXY v2 header goes first, in one
 * send (a socket just connected has its whole send buffer free: a short
 * write means something is wrong, and a half header must not reach the
 * app). Returns false when t was refused (and closed). */
static bool
upstream_proxyv2(struct tunnel *t)
{
	ssize_t n = send(t->relay.us.fd, t->pp->hdr, t->pp->len, MSG_NOSIGNAL | MSG_DONTWAIT);

	if (n == (ssize_t)t->pp->len) {
		stat_add(tstat(t, LM_UPSTREAM_CX_PROXY_PROTOCOL), 1);
		return true;
	}
	stat_add(tstat(t, LM_UPSTREAM_CX_PROXY_PROTOCOL_FAIL), 1);
	clog_warn(t, "PROXY v2 header to the app: %s", n < 0 ? strerror(errno) : "short write");
	tunnel_fail(t);
	return false;
}

int
tunnel_proxy_protocol(struct tunnel *t, const struct sockaddr *client, const struct sockaddr *target)
{
	struct tunnel_pp *pp = malloc(sizeof(*pp));
	int n;

	if (!pp)
		return -ENOMEM;
	n = proxyv2_build(pp->hdr, sizeof(pp->hdr), client, target, t->peer_id);
	if (n < 0) {
		free(pp);
		stat_add(tstat(t, LM_UPSTREAM_CX_PROXY_PROTOCOL_FAIL), 1);
		return n;
	}
	pp->len = (uint16_t)n;
	free(t->pp);
	t->pp = pp;
	return 0;
}

/* The upstream's handshakes, from the connecting stage: the TCP connect,
 * then for an Istio-mTLS peer the TLS client's, both under the attempt's
 * deadline. Forwards when done. */
static void
upstream_progress(struct tunnel *t)
{
	struct conn *c = &t->relay.us;
	char a[SOCK_ADDR_STRLEN];
	int rc;

	for (;;) {
		rc = c->ops->handshake(c);
		if (rc == -EAGAIN) {
			conn_arm(c, CONN_HS);	/* TLS may now wait to read, not to write */
			return;
		}
		if (rc < 0) {
			upstream_hs_fail(t, rc);
			return;
		}
		if (!t->us_mtls || c->ops == &xtls_ops)
			break;
		if ((rc = upstream_tls_start(t)) < 0) {
			clog_warn(t, "outbound %s: cannot start TLS: %s", sock_addr_str(&t->dst, a, sizeof(a)),
			    strerror(-rc));
			tunnel_fail_connect(t, rc, false, true);
			return;
		}
	}
	if (c->ops == &xtls_ops) {
		const char *id = xtls_peer_id(c);

		free(t->peer_id);
		t->peer_id = *id ? strdup(id) : NULL;
		stat_add(tstat(t, LM_UPSTREAM_CX_TLS_HANDSHAKE), 1);
		if (xtls_resumed(c))
			stat_add(tstat(t, LM_UPSTREAM_CX_TLS_RESUMED), 1);
		clog_debug(t, "outbound %s: mTLS peer %s (%s, alpn %s%s)", sock_addr_str(&t->dst, a, sizeof(a)),
		    *id ? id : "(none)", xtls_version(c), *xtls_alpn(c) ? xtls_alpn(c) : "none",
		    xtls_resumed(c) ? ", resumed" : "");
	} else if (t->us_hbone) {
		const char *id = hbone_stream_peer_id(c);

		free(t->peer_id);
		t->peer_id = *id ? strdup(id) : NULL;
		stat_add(tstat(t, LM_UPSTREAM_CX_HBONE), 1);
		clog_debug(t, "outbound %s: HBONE peer %s", sock_addr_str(&t->dst, a, sizeof(a)), *id ? id : "(none)");
	}
	if (t->pp && !upstream_proxyv2(t))
		return;
	(void)stage_forward(t);
}

/* The HBONE stream of this attempt (reference xds-hbone.md §3.1-3.2): a
 * CONNECT to "<podIP>:<targetPort>" over the worker's pooled connection to
 * <podIP>:15008 (hbone_pool.c: keyed by our identity, the peer's and its
 * IP), with ztunnel's headers: forwarded for="<client ip:port>" (and
 * host=<service hostname> through a service), baggage (ours), traceparent
 * (a fresh W3C id). The stream's handshake is its response. */
static bool
stage_connect_hbone(struct tunnel *t)
{
	const struct config *cfg = &t->snap->s->cfg;
	const struct certbundle *b = t->snap->s->certs;
	const struct mservice *svc = t->svc ? t->svc->svc : NULL;
	char auth[SOCK_ADDR_STRLEN], from[SOCK_ADDR_STRLEN], fwd[SOCK_ADDR_STRLEN + 300], tp[64];
	struct sockaddr_storage src;
	socklen_t len = sizeof(src);
	struct h2s_hdr h[3];
	size_t n = 0;
	const char *bag;
	int rc;
	struct hbone_dst d = {
		.src_id = b->identity,
		.dst_id = t->peer ? t->peer->identity : "",
		.sans = svc ? svc->sans : NULL,
		.nsans = svc ? svc->nsans : 0,
		.addr = t->dst,
		.ctx = b->client_ctx,
	};

	if (t->wp_authority)	/* t->dst: the waypoint at its hbone_mtls_port */
		snprintf(auth, sizeof(auth), "%s", t->wp_authority);
	else {
		sock_addr_str(&t->dst, auth, sizeof(auth));
		sock_addr_set_port(&d.addr, HBONE_PORT);
	}
	if (getpeername(t->relay.ds.fd, (struct sockaddr *)&src, &len) == 0) {
		sock_addr_str(&src, from, sizeof(from));
		if (svc)
			snprintf(fwd, sizeof(fwd), "for=\"%s\";host=%s", from, svc->hostname);
		else
			snprintf(fwd, sizeof(fwd), "for=\"%s\"", from);
		h[n++] = (struct h2s_hdr){ "forwarded", fwd };
	}
	if ((bag = hbone_baggage(t->w, cfg)) && *bag)
		h[n++] = (struct h2s_hdr){ "baggage", bag };
	if (hbone_traceparent(tp, sizeof(tp)) == 0)
		h[n++] = (struct h2s_hdr){ "traceparent", tp };
	t->us_tried = true;
	uint32_t ms = attempt_ms(t, cfg);	/* first: a failure at once leaves time for the next */
	rc = hbone_pool_connect(t->w, &t->relay.us, &d, auth, h, n, tunnel_ready, t);
	if (rc < 0) {
		stat_add(tstat(t, LM_UPSTREAM_CX_HBONE_FAIL), 1);
		return tunnel_fail_connect(t, rc, false, false);
	}
	clog_debug(t, "outbound: HBONE CONNECT %s via %s, %s", auth, sock_addr_str(&d.addr, from, sizeof(from)),
	    *d.dst_id ? d.dst_id : "(any identity of the trust domain)");
	stage_deadline(t, ms);
	conn_arm(&t->relay.us, CONN_HS);
	return true;
}

/* The HBONE stream failed before forwarding: a non-2xx status (counted
 * with it in the log) or its connection's failure; then as any connect
 * failure (a service's next endpoint is tried). */
static bool
hbone_hs_fail(struct tunnel *t, int err)
{
	char a[SOCK_ADDR_STRLEN];
	int status = hbone_stream_status(&t->relay.us);

	if (status && (status < 200 || status > 299)) {
		stat_add(tstat(t, LM_UPSTREAM_CX_HBONE_REFUSED), 1);
		clog_warn(t, "outbound %s: HBONE CONNECT answered %d", sock_addr_str(&t->dst, a, sizeof(a)), status);
	} else {
		stat_add(tstat(t, LM_UPSTREAM_CX_HBONE_FAIL), 1);
		clog_warn(t, "outbound %s: HBONE connection failed: %s", sock_addr_str(&t->dst, a, sizeof(a)),
		    strerror(-err));
	}
	return tunnel_fail_connect(t, err, false, true);
}

/* Connecting: open the upstream socket; its transport's handshake (for raw
 * TCP, the connect itself; then TLS for an Istio-mTLS peer) completes in
 * tunnel_ready. Returns false when t was closed. */
static bool
stage_connect(struct tunnel *t)
{
	const struct config *cfg = &t->snap->s->cfg;
	struct sockaddr_storage src;
	bool transparent;
	char a[SOCK_ADDR_STRLEN];
	int rc;

	t->state = TUN_CONNECTING;
	tele_arm(t);
	/* L4 authorization (authz.h) for inbound on 15006: after the
	 * handshake (peer_id known), before the app connect, under the
	 * worker's newest policies (a change applies to every connection
	 * not authorized yet, even one that began before it). */
	if (t->lst == LST_INBOUND && !t->authz_done) {
		struct authz_conn c = { &t->src.sa, (const struct sockaddr *)&t->dst, t->peer_id };
		struct authz_result res;
		const struct snapshot *cur = t->w->snap->s;
		const struct mworkload *local = cur == t->snap->s ? t->local : model_workload_at(cur->model, &t->dst);

		enum authz_verdict v = authz_check(cur->authz, local, &c, &res, t->w->stats.authz);

		msock_set(&t->authz_dst, &t->dst, false);
		tunnel_note_authz(t, cur, &res);
		if (v == AUTHZ_DENY) {
			t->rflags |= TRF(RBAC_DENIED);
			stat_add(tstat(t, LM_DOWNSTREAM_CX_AUTHZ_DENIED), 1);
			if (res.no_workload)
				stat_add(tstat(t, LM_DOWNSTREAM_CX_AUTHZ_NO_WORKLOAD), 1);
			clog_debug(t, "authorization denied %s (policy %s)", t->peer_id ? t->peer_id : "(no id)",
			    authz_result_why(&res));
			tunnel_fail(t);
			return false;
		}
	}
	if (!upstream_transport(t))
		return false;
	if (t->us_hbone)
		return stage_connect_hbone(t);
	/* Plain TCP both ways with nothing to send first: the client's bytes
	 * are read now and sent right after connect(), which on a local
	 * destination (the app on loopback, a pod on this node) has usually
	 * completed by the time it returns. A good send is the connect
	 * completing: forwarding starts in this event, not two events later
	 * (writable, then readable), as HAProxy's speculative I/O does. */
	bool early = t->us_ops == &raw_ops && !t->us_mtls && !t->pp && t->relay.ds.fd >= 0 &&
	    !t->stream_pending;
	if (early) {
		ssize_t n = relay_prefetch(&t->relay);
		if (n < 0 && n != -EAGAIN && n != -EINTR) {
			if (n != -ENOMEM) {
				stat_add(tstat(t, LM_DOWNSTREAM_CX_RESET), 1);
				t->rflags |= TRF(DOWNSTREAM_TERMINATION);
			} else {
				stat_add(tstat(t, LM_DOWNSTREAM_CX_OVERFLOW), 1);
			}
			clog_debug(t, "%s: the client's first read: %s", listener_names[t->lst], strerror((int)-n));
			tunnel_fail(t);
			return false;
		}
	}
	t->us_tried = true;
	/* The attempt's deadline first: a connect that fails at once (in
	 * connect(), or at the early send) leaves time for the next endpoint. */
	uint32_t ms = attempt_ms(t, cfg);
	rc = upstream_source(t, t->relay.ds.fd, cfg, &src, &transparent);
	if (rc >= 0)
		rc = sock_connect(&t->dst, rc ? &src : NULL, transparent, transparent ? TPROXY_MARK : 0);
	if (rc < 0) {
		if (rc == -EMFILE || rc == -ENFILE || rc == -ENOBUFS || rc == -ENOMEM) {
			stat_add(tstat(t, LM_UPSTREAM_CX_OVERFLOW), 1);
			t->rflags |= TRF(UPSTREAM_OVERFLOW);
			clog_warn(t, "%s upstream %s: %s", listener_names[t->lst],
			    sock_addr_str(&t->dst, a, sizeof(a)), strerror(-rc));
			tunnel_fail(t);
			return false;
		}
		return tunnel_fail_connect(t, rc, false, false);
	}
	conn_init(&t->relay.us, t->w->loop, rc, t->us_ops, tunnel_ready, t, t->w->hup.fd);
	t->relay.us.connecting = true;
	clog_debug(t, "%s to %s", listener_names[t->lst], sock_addr_str(&t->dst, a, sizeof(a)));
	if (early && t->relay.d2u.inflight) {
		ssize_t n = relay_push(&t->relay);
		if (n > 0) {
			t->relay.us.connecting = false;
			return stage_forward(t);
		}
		if (n != -EAGAIN && n != -EINTR)
			return tunnel_fail_connect(t, (int)n, false, false);
	}
	stage_deadline(t, ms);
	conn_arm(&t->relay.us, CONN_HS);
	return true;
}

enum listener_metric
tunnel_ds_tls_metric(int f)
{
	static const enum listener_metric reason[] = {
		[XTLS_FAIL_PROTOCOL] = LM_DOWNSTREAM_CX_TLS_FAIL_PROTOCOL,
		[XTLS_FAIL_NO_CERT] = LM_DOWNSTREAM_CX_TLS_FAIL_NO_CERT,
		[XTLS_FAIL_UNTRUSTED] = LM_DOWNSTREAM_CX_TLS_FAIL_UNTRUSTED,
		[XTLS_FAIL_EXPIRED] = LM_DOWNSTREAM_CX_TLS_FAIL_EXPIRED,
		[XTLS_FAIL_IDENTITY] = LM_DOWNSTREAM_CX_TLS_FAIL_IDENTITY,
		[XTLS_FAIL_IO] = LM_DOWNSTREAM_CX_TLS_FAIL_IO,
	};

	return f > 0 && (size_t)f < sizeof(reason) / sizeof(reason[0]) && reason[f] ? reason[f] :
	    LM_DOWNSTREAM_CX_TLS_FAIL_IO;
}

/* The inbound mTLS handshake failed: counted with its reason (xtls_fail),
 * logged with the transport's detail; the client is reset. */
static void
downstream_hs_fail(struct tunnel *t, int err, bool timeout)
{
	char detail[256] = "";
	enum xtls_fail f = timeout ? XTLS_FAIL_IO : xtls_failure(&t->relay.ds, detail, sizeof(detail));

	if (f == XTLS_FAIL_NONE)
		f = XTLS_FAIL_IO;
	stat_add(tstat(t, LM_DOWNSTREAM_CX_TLS_HANDSHAKE_FAIL), 1);
	stat_add(tstat(t, tunnel_ds_tls_metric(f)), 1);
	/* Anyone who reaches 15006 can make these: the per-site rate limit
	 * bounds the lines, the counters count them all. */
	clog_warn(t, "inbound port %u: mTLS handshake failed (%s): %s", sock_addr_port(&t->dst), xtls_fail_names[f],
	    timeout ? "timed out" : *detail ? detail : strerror(-err));
	tunnel_fail(t);
}

/* The downstream handshake's progress (none for raw TCP; the TLS server
 * for inbound mTLS). Returns false when t was closed. */
static bool
handshake_progress(struct tunnel *t)
{
	struct conn *c = &t->relay.ds;
	int rc = c->ops->handshake(c);

	if (rc == -EAGAIN) {
		conn_arm(c, CONN_HS);	/* TLS may wait to write as well as to read */
		return true;
	}
	if (rc < 0) {
		if (c->ops == &xtls_ops) {
			downstream_hs_fail(t, rc, false);
			return false;
		}
		clog_debug(t, "downstream handshake: %s", strerror(-rc));
		tunnel_fail(t);
		return false;
	}
	if (c->ops == &xtls_ops) {
		const char *id = xtls_peer_id(c);

		free(t->peer_id);
		t->peer_id = *id ? strdup(id) : NULL;
		stat_add(tstat(t, LM_DOWNSTREAM_CX_MTLS), 1);
		clog_debug(t, "inbound: mTLS peer %s (%s, alpn %s%s)", *id ? id : "(none)", xtls_version(c),
		    *xtls_alpn(c) ? xtls_alpn(c) : "none", xtls_resumed(c) ? ", resumed" : "");
	}
	conn_arm(c, 0);
	return stage_connect(t);
}

/* Handshaking: the downstream transport's handshake, under one deadline
 * (proxy.connectTimeout) however many events it takes. */
static bool
stage_handshake(struct tunnel *t)
{
	t->state = TUN_HANDSHAKING;
	if (t->relay.ds.ops != &raw_ops)
		stage_deadline(t, t->snap->s->cfg.connect_timeout_ms);
	return handshake_progress(t);
}

/* --- sniffing (inbound) ---------------------------------------------------
 * What the client's first bytes are decides, with the port's
 * PeerAuthentication mode, what the connection gets (Istio's inbound filter
 * chains, reference xds-hbone.md §4.2). The bytes are only peeked at
 * (MSG_PEEK): whoever takes the connection next (the TLS server, or the
 * relay for plaintext and passthrough) reads them from the socket itself,
 * so no transport needs a way to be handed bytes already read. */

/* Put the socket's receive low-water mark back (raised to wait for a whole
 * ClientHello without waking at every segment). */
static void
sniff_lowat(struct tunnel *t, int bytes)
{
	if (bytes == 1 && !t->lowat)
		return;
	if (setsockopt(t->relay.ds.fd, SOL_SOCKET, SO_RCVLOWAT, &bytes, sizeof(bytes)) == 0)
		t->lowat = bytes > 1;
}

/* Refuse t (reset), counted in m. */
static void
sniff_refuse(struct tunnel *t, enum listener_metric m, const char *why)
{
	stat_add(tstat(t, m), 1);
	clog_warn(t, "inbound port %u (%s): %s: refused", sock_addr_port(&t->dst),
	    pa_mode_str((enum pa_mode)t->pa_mode), why);
	tunnel_fail(t);
}

/* The verdict, by mode. STRICT: TLS is terminated (a client without a
 * mesh certificate fails the handshake), anything else refused.
 * PERMISSIVE: TLS offering an Istio ALPN is terminated, other TLS passes as
 * bytes (app-level TLS from outside the mesh), plaintext passes. No
 * certificate yet: Envoy would have no such filter chain until SDS
 * delivers, so mTLS attempts are refused (and counted), plaintext passes.
 * Returns false when t was closed. */
static bool
sniff_decide(struct tunnel *t, enum sniff_verdict v, const struct sniff_hello *h)
{
	const struct certbundle *b = t->snap->s->certs;
	bool tls = v == SNIFF_TLS;
	int rc;

	sniff_lowat(t, 1);
	ev_timer_stop(t->w->loop, &t->timer);
	conn_arm(&t->relay.ds, 0);
	if (tls)
		clog_debug(t, "inbound: TLS, sni %s, istio alpn %s%s", *h->sni ? h->sni : "(none)",
		    h->istio ? "yes" : "no", h->partial ? " (hello larger than we look at)" : "");
	if (t->pa_mode == PA_STRICT && !tls) {
		sniff_refuse(t, LM_DOWNSTREAM_CX_PLAINTEXT_REFUSED, "plaintext");
		return false;
	}
	if (t->pa_mode == PA_PERMISSIVE && !(tls && h->istio)) {
		stat_add(tstat(t, tls ? LM_DOWNSTREAM_CX_TLS_PASSTHROUGH : LM_DOWNSTREAM_CX_PLAINTEXT), 1);
		return stage_handshake(t);
	}
	/* Terminate mTLS. */
	if (!b) {
		sniff_refuse(t, LM_DOWNSTREAM_CX_MTLS_NO_CERT, "mTLS, and this proxy has no certificate yet");
		return false;
	}
	if ((rc = xtls_start_server(&t->relay.ds, b->server_ctx)) < 0) {
		clog_warn(t, "inbound: cannot start TLS: %s", strerror(-rc));
		tunnel_fail(t);
		return false;
	}
	return stage_handshake(t);
}

/* Peek at what the client sent. final: no more is coming (its FIN, or the
 * detection timeout): decide with what is there (not TLS yet: plaintext).
 * Returns false when t was closed. */
static bool
sniff_look(struct tunnel *t, bool final)
{
	uint8_t buf[SNIFF_MAX];
	struct sniff_hello h;
	enum sniff_verdict v;
	ssize_t n = recv(t->relay.ds.fd, buf, sizeof(buf), MSG_PEEK);

	if (n < 0 && errno != EAGAIN && errno != EINTR) {
		clog_debug(t, "inbound: %s before its first bytes", strerror(errno));
		stat_add(tstat(t, LM_DOWNSTREAM_CX_RESET), 1);
		t->rflags |= TRF(DOWNSTREAM_TERMINATION);
		tunnel_fail(t);
		return false;
	}
	if (n < 0)
		n = 0;
	else if (n == 0)
		final = true;	/* end of stream and nothing sent */
	else if ((size_t)n == t->sniffed)
		final = true;	/* readable, yet no new byte: the FIN came */
	v = sniff_tls(buf, (size_t)n, &h);
	if (v == SNIFF_MORE && !final) {
		uint32_t ct = t->snap->s->cfg.connect_timeout_ms;

		/* A TLS record has begun: the rest of the hello comes within a
		 * round trip or two, as the handshake after it must (within
		 * proxy.connectTimeout). Without this, one byte of 0x16 would
		 * hold the tunnel and its socket for the detection deadline,
		 * proxy.idleTimeout (an hour) when protocolDetectionTimeout is 0. */
		if (n > 0 && !t->hello_timed && (!ev_is_active(&t->timer) ||
		    ev_timer_remaining(t->w->loop, &t->timer) * 1000.0 > ct)) {
			stage_deadline(t, ct);
			t->hello_timed = true;
		}
		t->sniffed = (uint16_t)n;
		/* Wake when the whole hello (or the next part of it) is here,
		 * not at every segment: poll honours SO_RCVLOWAT for TCP. */
		if (n > 0)
			sniff_lowat(t, (int)h.need);
		conn_arm(&t->relay.ds, CONN_RD);
		return true;
	}
	return sniff_decide(t, v == SNIFF_MORE ? SNIFF_PLAIN : v, &h);
}

/* Sniffing: inbound only (the outbound path has no syscall more for it). */
static bool
stage_sniff(struct tunnel *t)
{
	const struct config *cfg = &t->snap->s->cfg;
	uint32_t ms = cfg->protocol_detection_ms ? cfg->protocol_detection_ms : cfg->idle_timeout_ms;

	t->state = TUN_SNIFFING;
	t->hello_timed = false;
	t->pa_mode = (uint8_t)peerauth_mode(t->snap->s->peerauth, sock_addr_port(&t->dst));
	if (t->pa_mode == PA_DISABLE) {
		/* Only raw_buffer chains (Istio): nothing to tell apart. */
		stat_add(tstat(t, LM_DOWNSTREAM_CX_MTLS_DISABLED), 1);
		return stage_handshake(t);
	}
	if (t->pa_mode == PA_STRICT && !t->snap->s->certs) {
		sniff_refuse(t, LM_DOWNSTREAM_CX_MTLS_NO_CERT, "STRICT, and this proxy has no certificate yet");
		return false;
	}
	/* PERMISSIVE with no certificate source at all (a plain L4 sidecar,
	 * the built-in defaults): no mTLS can ever be terminated, so there is
	 * nothing to tell apart, and waiting for the client's first bytes
	 * would only stall server-first protocols (SMTP, MySQL) behind us. */
	if (t->pa_mode == PA_PERMISSIVE && !t->snap->s->certs && !t->snap->s->cert_source)
		return stage_handshake(t);
	/* STRICT: only a TLS client gets anywhere, and a TLS client speaks
	 * first; its hello is the handshake's first message, under the
	 * handshake's deadline. Without this a client that sends nothing
	 * would hold its tunnel and socket for proxy.idleTimeout. */
	if (t->pa_mode == PA_STRICT && (!ms || ms > cfg->connect_timeout_ms)) {
		ms = cfg->connect_timeout_ms;
		t->hello_timed = true;
	}
	if (ms)
		stage_deadline(t, ms);
	return sniff_look(t, false);
}

/* After classified: inbound connections are sniffed, outbound go on. */
static bool
stage_next(struct tunnel *t)
{
	return t->lst == LST_INBOUND ? stage_sniff(t) : stage_handshake(t);
}

/* The sniffing deadline: proxy.connectTimeout for a hello begun (or any
 * client in STRICT), and the connection is reset; else, with
 * mesh.protocolDetectionTimeout set, a client that has not shown TLS is
 * plaintext (a server-first protocol); without, it was proxy.idleTimeout,
 * and the connection is reset. */
static void
sniff_timeout(struct tunnel *t)
{
	stat_add(tstat(t, LM_DOWNSTREAM_CX_SNIFF_TIMEOUT), 1);
	if (t->hello_timed) {
		clog_debug(t, "inbound: no whole ClientHello within proxy.connectTimeout");
		tunnel_fail(t);
		return;
	}
	if (t->snap->s->cfg.protocol_detection_ms) {
		sniff_look(t, true);
		return;
	}
	clog_debug(t, "inbound: no first bytes within the idle timeout");
	tunnel_fail(t);
}

/* A conn of a stage before forwarding is ready for what it was armed for. */
static void
tunnel_ready(struct conn *c, int what)
{
	struct tunnel *t = c->owner;

	if (t->stream_pending && c == &t->relay.ds && (what & CONN_HUP)) {
		/* HBONE: the client reset its stream while we were connecting. */
		clog_debug(t, "hbone: the stream was reset while connecting");
		stat_add(tstat(t, LM_DOWNSTREAM_CX_RESET), 1);
		t->rflags |= TRF(DOWNSTREAM_TERMINATION);
		t->stream_pending = false;
		tunnel_fail(t);
		return;
	}
	switch (t->state) {
	case TUN_SNIFFING:
		sniff_look(t, false);
		return;
	case TUN_HANDSHAKING:
		handshake_progress(t);
		return;
	case TUN_CONNECTING:
		upstream_progress(t);
		return;
	case TUN_WAITING:
		/* Only the hang-up watch: the client reset while its lookup was
		 * pending (its waiter goes with the tunnel). */
		clog_debug(t, "outbound: the client went away while waiting for its lookup");
		stat_add(tstat(t, LM_DOWNSTREAM_CX_RESET), 1);
		t->rflags |= TRF(DOWNSTREAM_TERMINATION);
		tunnel_fail(t);
		return;
	default:
		clog_error(t, "readiness in state %s", tunnel_state_str(t->state));
		tunnel_fail(t);
	}
}

static void
tunnel_timer_cb(struct ev_loop *loop, ev_timer *tm, int revents)
{
	struct tunnel *t = tm->data;

	if (t->state == TUN_CONNECTING) {
		bool tls = t->relay.us.ops == &xtls_ops;

		if (tls) {
			char a[SOCK_ADDR_STRLEN];

			/* The TCP connect was done: the TLS handshake took the time. */
			stat_add(tstat(t, LM_UPSTREAM_CX_TLS_HANDSHAKE_FAIL), 1);
			stat_add(tstat(t, LM_UPSTREAM_CX_TLS_FAIL_IO), 1);
			clog_warn(t, "outbound %s: mTLS handshake failed (io): timed out",
			    sock_addr_str(&t->dst, a, sizeof(a)));
		}
		tunnel_fail_connect(t, -ETIMEDOUT, true, tls);
		return;
	}
	if (t->state == TUN_SNIFFING) {
		sniff_timeout(t);
		return;
	}
	if (t->state == TUN_WAITING) {
		wait_timeout(t);
		return;
	}
	if (t->state == TUN_HANDSHAKING && t->relay.ds.ops == &xtls_ops) {
		downstream_hs_fail(t, -ETIMEDOUT, true);
		return;
	}
	clog_debug(t, "%s: timed out", tunnel_state_str(t->state));
	tunnel_fail(t);
}

/* Accepted: a tunnel for socket fd, counted and listed; NULL (fd reset) on OOM. */
const char *
tunnel_rflags_str(uint32_t mask, char *buf, size_t len)
{
	static const char *const names[TRF__COUNT] = {
#define X(e, s) s,
		TUNNEL_RESPONSE_FLAGS(X)
#undef X
	};
	size_t at = 0;

	if (!len)
		return buf;
	buf[0] = 0;
	for (unsigned i = 0; i < TRF__COUNT; i++) {
		if (!(mask & (1u << i)))
			continue;
		int n = snprintf(buf + at, len - at, "%s%s", at ? "," : "", names[i]);
		if (n < 0 || (size_t)n >= len - at)
			break;
		at += (size_t)n;
	}
	if (!at)
		snprintf(buf, len, "-");
	return buf;
}

static void
tunnel_set_src(struct tunnel *t, const struct sockaddr_storage *src)
{
	msock_set(&t->src, src, true);
}

/* The original destination, once known (dst before routing changes it). */
static void
tunnel_set_odst(struct tunnel *t)
{
	msock_set(&t->odst, &t->dst, false);
}

static struct tunnel *
tunnel_new(struct worker *w, enum listener_kind kind, int fd, const struct sockaddr_storage *src)
{
	struct tunnel *t;
	int one = 1;

	stat_add(&w->stats.lst[kind][LM_DOWNSTREAM_CX_TOTAL], 1);
	t = calloc(1, sizeof(*t));
	if (!t) {
		stat_add(&w->stats.lst[kind][LM_DOWNSTREAM_CX_OVERFLOW], 1);
		stat_add(&w->stats.lst[kind][LM_DOWNSTREAM_CX_DESTROY], 1);
		if (fd >= 0)
			sock_close_rst(fd);
		return NULL;
	}
	t->w = w;
	t->worker_id = t->relay.worker_id = w->id;
	t->id = t->relay.id = ++w->next_id;
	t->lst = kind;
	t->state = TUN_ACCEPTED;
	t->started = ev_now(w->loop);
	tunnel_set_src(t, src);
	t->snap = wsnap_use(w->snap);
	t->us_ops = &raw_ops;
	relay_init(&t->relay, w->loop, &w->pool, w->stats.lst[kind], tunnel_done);
	conn_init(&t->relay.ds, w->loop, fd, &raw_ops, tunnel_ready, t, w->hup.fd);
	ev_init(&t->timer, tunnel_timer_cb);
	t->timer.data = t;
	t->next = w->tunnels;
	if (w->tunnels)
		w->tunnels->prev = t;
	w->tunnels = t;
	stat_add(tstat(t, LM_DOWNSTREAM_CX_ACTIVE), 1);
	stat_add(&w->stats.w[WM_SESSIONS_IN_USE], 1);
	if (fd >= 0)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return t;
}

/* --- waiting (outbound, on demand) --------------------------------------
 * The destination is not in the snapshot: the control thread subscribes to
 * "<network>/<ip>" (ondemand.c; one lookup for every connection, on every
 * worker, that waits for the same address) and the answer comes back
 * through this worker's mailbox, after the snapshot that holds it. The
 * client is not read meanwhile (its bytes wait in its socket; a reset
 * from it is seen by the hang-up watch), under xds.onDemandTimeout. */

static bool stage_route(struct tunnel *t);
static bool route_unknown(struct tunnel *t);
static int waypoint_route(struct tunnel *t, const struct mservice *s, const struct mworkload *wl);

/* Route again with the worker's current snapshot (the answer came with a
 * newer one than the connection started with), then go on. */
static void
wait_resume(struct tunnel *t)
{
	struct worker *w = t->w;

	ev_timer_stop(w->loop, &t->timer);
	free(t->odw);
	t->odw = NULL;
	if (t->snap != w->snap) {
		wsnap_done(t->snap);
		t->snap = wsnap_use(w->snap);
	}
	t->state = TUN_CLASSIFIED;
	if (stage_route(t))
		stage_next(t);
}

static void
wait_answer(struct od_wait *wt, bool found)
{
	struct tunnel *t = wt->owner;
	char a[SOCK_ADDR_STRLEN];

	clog_debug(t, "outbound %s: on-demand lookup %s", sock_addr_str(&t->dst, a, sizeof(a)),
	    found ? "found it" : "did not find it");
	wait_resume(t);
}

/* xds.onDemandTimeout passed: as unknown (with the newest snapshot, which
 * may know it after all). */
static void
wait_timeout(struct tunnel *t)
{
	char a[SOCK_ADDR_STRLEN];

	clog_debug(t, "outbound %s: no on-demand answer within xds.onDemandTimeout",
	    sock_addr_str(&t->dst, a, sizeof(a)));
	ondemand_cancel(t->odw);
	wait_resume(t);
}

/* Waiting: returns false when t was closed; true with t->state
 * TUN_WAITING when it waits, else (a negative answer cached, a full
 * queue: as unknown at once) true for the caller to go on. */
static bool
stage_wait(struct tunnel *t)
{
	char a[SOCK_ADDR_STRLEN];
	int rc = -ENOMEM;

	t->od_waited = true;
	if ((t->odw = calloc(1, sizeof(*t->odw)))) {
		t->odw->owner = t;
		t->odw->resume = wait_answer;
		rc = ondemand_wait(t->odw, t->w->id, &t->dst, ev_now(t->w->loop));
	}
	if (rc < 0) {
		free(t->odw);
		t->odw = NULL;
		if (rc != -ENOENT)
			clog_debug(t, "outbound %s: no on-demand lookup (%s): as unknown",
			    sock_addr_str(&t->dst, a, sizeof(a)), rc == -EAGAIN ? "queue full" : strerror(-rc));
		return route_unknown(t);
	}
	t->state = TUN_WAITING;
	clog_debug(t, "outbound %s: waiting for an on-demand lookup", sock_addr_str(&t->dst, a, sizeof(a)));
	stage_deadline(t, t->snap->s->cfg.ondemand_timeout_ms);
	/* The client is not read meanwhile: a reset from it comes through the
	 * hang-up watch (tunnel_ready, CONN_HUP). The registration stays for
	 * the relay, which registers quiet sides there anyway. */
	conn_watch_hup(&t->relay.ds);
	return true;
}

/* Routing, the second half of classified: where the mesh says the
 * connection goes (ztunnel's find_upstream, for a sidecar). Outbound: a
 * service VIP:port goes to an endpoint lb.c chooses (PASSTHROUGH: to the
 * original destination, as ztunnel); a known workload's address goes there
 * as it is; anything else passes through (ALLOW_ANY) or is refused
 * (REGISTRY_ONLY). Inbound: the local workload addressed, for the policy
 * layers. Returns false when t was refused (and closed). */
static bool
stage_route(struct tunnel *t)
{
	const struct model *m = t->snap->s->model;
	char a[SOCK_ADDR_STRLEN];

	if (t->lst == LST_INBOUND) {
		t->local = model_workload_at(m, &t->dst);
		if (t->local)
			clog_debug(t, "inbound: local workload %s port %u", t->local->uid, sock_addr_port(&t->dst));
		return true;
	}
	/* A VIP first, whatever the port: most destinations are none, and they
	 * then cost this one lookup before the workload's. */
	const struct mservice *vs = model_service_vip(m, &t->dst);
	if (vs) {
		if (ondemand_enabled())
			ondemand_touch(&t->dst, ev_now(t->w->loop));
		t->svc = model_service_at(m, &t->dst);
		if (t->svc)
			vs = t->svc->svc;	/* the owner of this VIP and port */
		if (vs->lb_mode == MLB_PASSTHROUGH) {
			clog_debug(t, "service %s port %u: passthrough", vs->key, sock_addr_port(&t->dst));
			t->svc = NULL;
			return true;
		}
		if (t->svc && t->snap->s->cfg.use_waypoints) {
			int rc = waypoint_route(t, vs, NULL);

			if (rc)
				return rc > 0;
		}
		if (t->svc && tunnel_pick(t))
			return true;
		/* No endpoint to choose, or a port the service does not have
		 * (ztunnel: no healthy upstream either). */
		t->rflags |= TRF(NO_HEALTHY_UPSTREAM);
		stat_add(tstat(t, LM_UPSTREAM_CX_NONE_HEALTHY), 1);
		clog_warn(t, "outbound %s: service %s %s: refused", sock_addr_str(&t->dst, a, sizeof(a)),
		    vs->key, t->svc ? "has no healthy endpoint" : "has no such port");
		tele_arm(t);	/* istio_tcp_*: opened and closed under UH, as Envoy */
		tunnel_fail(t);
		return false;
	}
	t->peer = model_workload_at(m, &t->dst);
	if (t->peer) {
		if (ondemand_enabled())
			ondemand_touch(&t->dst, ev_now(t->w->loop));
		clog_debug(t, "outbound %s: workload %s", sock_addr_str(&t->dst, a, sizeof(a)), t->peer->uid);
		if (t->snap->s->cfg.use_waypoints)
			return waypoint_route(t, NULL, t->peer) >= 0;
		return true;
	}
	/* Not known: on demand, ask the control plane first (the waiting
	 * stage); only its answer, or its timeout, sends the connection on. */
	if (ondemand_enabled() && !t->od_waited)
		return stage_wait(t);
	return route_unknown(t);
}

/* mesh.useWaypoints: a destination service (s) or workload (wl) that names
 * a waypoint is reached through it (reference xds-hbone.md §3.5): HBONE to
 * the waypoint pod (model_waypoint; the connection id rotates among a
 * waypoint service's pods), :authority the original destination, the
 * waypoint's identity verified (it is t->peer). No load balancing of s's
 * endpoints here: the waypoint does it. 1: routed; 0: no waypoint named;
 * -1: refused (a waypoint named but unknown: never bypassed) and closed. */
static int
waypoint_route(struct tunnel *t, const struct mservice *s, const struct mworkload *wl)
{
	struct mwaypoint wp;
	char a[SOCK_ADDR_STRLEN], b[SOCK_ADDR_STRLEN];
	int rc = model_waypoint(t->snap->s->model, s, wl, (unsigned)t->id, &wp);

	if (rc == 0)
		return 0;
	sock_addr_str(&t->dst, a, sizeof(a));
	if (rc < 0) {
		stat_add(tstat(t, LM_UPSTREAM_CX_WAYPOINT_UNKNOWN), 1);
		clog_warn(t, "outbound %s: %s %s names a waypoint the mesh does not know: refused", a,
		    s ? "service" : "workload", s ? s->key : wl->uid);
		tunnel_fail(t);
		return -1;
	}
	if (!(t->wp_authority = strdup(a))) {
		stat_add(tstat(t, LM_UPSTREAM_CX_OVERFLOW), 1);
		tunnel_fail(t);
		return -1;
	}
	t->dst = wp.addr;
	t->peer = wp.wl;
	t->svc = NULL;
	t->ep = NULL;
	stat_add(tstat(t, LM_UPSTREAM_CX_WAYPOINT), 1);
	clog_debug(t, "outbound %s: through waypoint %s (%s, %s)", a, sock_addr_str(&t->dst, b, sizeof(b)),
	    wp.wl->uid, wp.wl->identity);
	return 1;
}

/* Outbound to a destination the mesh does not know:
 * mesh.outboundTrafficPolicy. Returns false when t was refused (closed). */
static bool
route_unknown(struct tunnel *t)
{
	char a[SOCK_ADDR_STRLEN];

	if (t->snap->s->cfg.outbound_policy == OUTBOUND_REGISTRY_ONLY) {
		stat_add(tstat(t, LM_DOWNSTREAM_CX_NO_ROUTE), 1);
		t->rflags |= TRF(NO_ROUTE);
		clog_warn(t, "outbound %s: not in the mesh (REGISTRY_ONLY): refused",
		    sock_addr_str(&t->dst, a, sizeof(a)));
		tele_arm(t);	/* istio_tcp_*: under NR, destination BlackHoleCluster */
		tunnel_fail(t);
		return false;
	}
	return true;
}

/* Classified: where the connection was going, and whether we may take it
 * there. Returns false when t was refused (and closed). */
static bool
stage_classify(struct tunnel *t)
{
	const struct config *cfg = &t->snap->s->cfg;
	int rc;

	rc = sock_original_dst(t->relay.ds.fd, t->lst == LST_INBOUND && cfg->mode == INTERCEPT_TPROXY, &t->dst);
	if (rc < 0) {
		stat_add(tstat(t, LM_DOWNSTREAM_CX_NO_ORIGINAL_DST), 1);
		clog_warn(t, "%s: no original destination (%s): refused", listener_names[t->lst],
		    rc == -ENOENT ? "connection was not redirected to us" : strerror(-rc));
		tunnel_fail(t);
		return false;
	}
	/* Loop guard for TPROXY, whose original destination is never the listener
	 * itself: a connection to our own capture port would be carried to that
	 * port again, and again (Envoy black-holes 15006 the same way). */
	uint16_t port = sock_addr_port(&t->dst);
	if (t->lst == LST_INBOUND && (port == cfg->inbound_port || port == cfg->outbound_port)) {
		stat_add(tstat(t, LM_DOWNSTREAM_CX_NO_ORIGINAL_DST), 1);
		clog_warn(t, "inbound: destination port %u is the proxy's own capture port: refused", port);
		tunnel_fail(t);
		return false;
	}
	tunnel_set_odst(t);
	t->state = TUN_CLASSIFIED;
	return stage_route(t);
}

void
tunnel_accept(struct worker *w, enum listener_kind kind, int fd, const struct sockaddr_storage *src)
{
	struct tunnel *t = tunnel_new(w, kind, fd, src);

	if (t && stage_classify(t) && t->state != TUN_WAITING)
		stage_next(t);
}

struct tunnel *
tunnel_start(struct worker *w, enum listener_kind kind, int fd, const struct sockaddr_storage *dst)
{
	struct sockaddr_storage src;
	socklen_t len = sizeof(src);
	struct tunnel *t;

	if (getpeername(fd, (struct sockaddr *)&src, &len) < 0)
		src.ss_family = AF_UNSPEC;
	t = tunnel_new(w, kind, fd, &src);

	if (!t)
		return NULL;
	t->dst = *dst;
	tunnel_set_odst(t);
	t->state = TUN_CLASSIFIED;
	if (!stage_route(t))
		return NULL;
	if (t->state == TUN_WAITING)
		return t;
	return stage_next(t) ? t : NULL;
}

struct tunnel *
tunnel_start_stream(struct worker *w, struct conn *stream, const struct sockaddr_storage *dst,
    const struct sockaddr_storage *src, const char *peer_id, const struct sockaddr_storage *pp_client,
    const struct sockaddr_storage *pp_target, const struct sockaddr_storage *authz_dst,
    const struct authz_result *az)
{
	struct tunnel *t = tunnel_new(w, LST_HBONE, -1, src);

	if (!t) {
		stat_add(&w->stats.lst[LST_HBONE][LM_HBONE_RQ_503], 1);
		if (h2s_respond(stream, 503, NULL, 0) == 0)
			conn_close(stream, CONN_GRACEFUL);
		else
			conn_close(stream, CONN_ABORT);
		return NULL;
	}
	h2s_stream_move(&t->relay.ds, stream);
	t->relay.ds.ready = tunnel_ready;
	t->relay.ds.owner = t;
	t->stream_pending = true;
	t->dst = *dst;
	tunnel_set_odst(t);
	msock_set(&t->authz_dst, authz_dst, false);
	t->authz_done = true;
	t->peer_id = peer_id && *peer_id ? strdup(peer_id) : NULL;
	t->local = model_workload_at(t->snap->s->model, dst);
	if (az)		/* the HBONE server decided under w's snapshot, t's too */
		tunnel_note_authz(t, t->snap->s, az);
	t->state = TUN_CLASSIFIED;
	if (pp_client && pp_target &&
	    tunnel_proxy_protocol(t, (const struct sockaddr *)pp_client, (const struct sockaddr *)pp_target) < 0) {
		clog_warn(t, "hbone: cannot build the PROXY v2 header: refused");
		tunnel_fail(t);
		return NULL;
	}
	/* The stream is watched for a reset (tunnel_ready) while connecting. */
	conn_arm(&t->relay.ds, 0);
	return stage_connect(t) ? t : NULL;
}

void
tunnel_log_refused_stream(struct worker *w, const struct sockaddr_storage *src,
    const struct sockaddr_storage *dst, const char *peer_id, const struct authz_result *az, uint32_t rflags)
{
	/* What tunnel_done would log of a tunnel that never was. */
	struct tunnel t = { .w = w, .lst = LST_HBONE, .state = TUN_CLOSED, .snap = w->snap,
	    .started = ev_now(w->loop), .peer_id = (char *)peer_id, .rflags = rflags };

	if (!accesslog_on())
		return;
	if (dst)
		t.dst = *dst;
	else
		t.dst.ss_family = AF_UNSPEC;
	tunnel_set_src(&t, src);
	tunnel_set_odst(&t);
	if (az) {
		tunnel_note_authz(&t, w->snap->s, az);
		if (az->verdict == AUTHZ_DENY)
			t.rflags |= TRF(RBAC_DENIED);
	}
	tunnel_access_log(&t, ev_time());
}

void
tunnel_recheck_authz(struct worker *w)
{
	const struct snapshot *s = w->snap->s;
	struct tunnel *t;

	/* The walk's next tunnel is w->tunnel_walk, which tunnel_done moves on
	 * if it frees that one: aborting one tunnel must not leave us on a
	 * freed sibling. Today an abort frees only its own tunnel (an HBONE
	 * stream's RST_STREAM and a 401 are sent from the session's kick, on
	 * the next loop turn, so the session and its other streams live on;
	 * the app side is a plain socket), but the walk does not rely on it. */
	for (t = w->tunnels; t; t = w->tunnel_walk) {
		w->tunnel_walk = t->next;
		/* Every tunnel already judged, connecting or forwarding (one still
		 * connecting to the app was allowed by the old policies too); those
		 * not judged yet will be, under s, in stage_connect. */
		if ((t->lst != LST_INBOUND && t->lst != LST_HBONE) || !t->authz_done ||
		    (t->state != TUN_CONNECTING && t->state != TUN_FORWARDING))
			continue;
		/* What was judged, not dst: for HBONE the applicationTunnel
		 * port may have replaced the CONNECT's. */
		struct sockaddr_storage judged = { 0 };
		memcpy(&judged, &t->authz_dst, sizeof(t->authz_dst));
		struct authz_conn c = { &t->src.sa, (const struct sockaddr *)&judged, t->peer_id };
		struct authz_result res;
		const struct mworkload *local = model_workload_at(s->model, &judged);

		if (authz_check(s->authz, local, &c, &res, NULL) != AUTHZ_DENY)
			continue;
		tunnel_note_authz(t, s, &res);
		t->rflags |= TRF(RBAC_DENIED);
		stat_add(tstat(t, LM_DOWNSTREAM_CX_AUTHZ_CLOSED), 1);
		clog_debug(t, "authorization now denies %s (policy %s): reset", t->peer_id ? t->peer_id : "(no id)",
		    authz_result_why(&res));
		if (t->stream_pending) {
			/* HBONE, not answered yet: as a denial at the request (ztunnel
			 * answers 401 when policy denies). */
			t->stream_pending = false;
			stat_add(tstat(t, LM_HBONE_RQ_401), 1);
			if (h2s_respond(&t->relay.ds, 401, NULL, 0) == 0)
				conn_close(&t->relay.ds, CONN_GRACEFUL);
		}
		relay_abort(&t->relay);
	}
	w->tunnel_walk = NULL;
}

void
tunnel_close_all(struct worker *w)
{
	while (w->tunnels) {
		struct tunnel *t = w->tunnels;
		if (t->state == TUN_FORWARDING)
			stat_add(tstat(t, LM_DOWNSTREAM_CX_DRAINED), 1);
		t->rflags |= TRF(DRAINED);
		tunnel_fail(t);
	}
}
