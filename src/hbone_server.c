/* hbone_server: the HBONE server on proxy.hbonePort (15008) of every worker:
 * accept -> TLS (the HBONE context: TLS 1.3, AES-GCM, ALPN h2, a client
 * certificate of our trust domain) -> an HTTP/2 server session (h2s.h) ->
 * per CONNECT stream, a tunnel to the app (tunnel_start_stream) that
 * answers 200 or 503; 400 and 401 are answered here. See HACKING.md, "HBONE
 * server". */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <errno.h>

#include "authz.h"
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "conn.h"
#include "h2s.h"
#include "hbone.h"
#include "identity.h"
#include "log.h"
#include "model.h"
#include "snapshot.h"
#include "sock.h"
#include "telemetry.h"
#include "tunnel.h"
#include "worker-t.h"
#include "xtls.h"

/* One connection accepted on 15008. */
struct hbconn {
	unsigned worker_id;		/* log tag "[w%u c%llu]" */
	unsigned long long id;
	struct worker *w;
	struct conn t;			/* the TLS transport, then the session's */
	struct h2s *s;			/* NULL while the handshake runs */
	ev_timer timer;			/* the handshake's deadline */
	struct sockaddr_storage local;	/* the address the client connected to */
	struct sockaddr_storage peer;	/* the client's address (accept) */
	char *peer_id;			/* the client certificate's SPIFFE ID */
	struct hbconn *prev, *next;	/* the worker's list */
};

static uint64_t *
hstat(struct worker *w, enum listener_metric m)
{
	return &w->stats.lst[LST_HBONE][m];
}

static void
hb_free(struct hbconn *h)
{
	if (h->prev)
		h->prev->next = h->next;
	else
		h->w->hbone_conns = h->next;
	if (h->next)
		h->next->prev = h->prev;
	ev_timer_stop(h->w->loop, &h->timer);
	stat_sub(hstat(h->w, LM_HBONE_CX_ACTIVE), 1);
	free(h->peer_id);
	free(h);
}

/* Whether ip (any port) is one of this pod's: the address the client
 * connected to (a pod's IP, which is what ztunnel and waypoints dial), or
 * one of INSTANCE_IP(S) (the pod's IPs, as the injector sets them). */
static bool
ip_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family == AF_INET && b->ss_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr == ((const struct sockaddr_in *)b)->sin_addr.s_addr;
	if (a->ss_family == AF_INET6 && b->ss_family == AF_INET6)
		return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr, &((const struct sockaddr_in6 *)b)->sin6_addr,
		    16) == 0;
	/* An IPv4 client on a dual-stack socket: ::ffff:a.b.c.d. */
	const struct sockaddr_storage *v6 = a->ss_family == AF_INET6 ? a : b, *v4 = a == v6 ? b : a;
	if (v6->ss_family != AF_INET6 || v4->ss_family != AF_INET)
		return false;
	const struct in6_addr *x = &((const struct sockaddr_in6 *)v6)->sin6_addr;
	return IN6_IS_ADDR_V4MAPPED(x) && memcmp(x->s6_addr + 12, &((const struct sockaddr_in *)v4)->sin_addr, 4) == 0;
}

static bool
instance_ip(const struct sockaddr_storage *ip)
{
	struct sockaddr_storage a[8];
	size_t n = sock_pod_ips(a, sizeof(a) / sizeof(a[0]));

	for (size_t i = 0; i < n; i++)
		if (ip_equal(&a[i], ip))
			return true;
	return false;
}

/* The L4 authorization hook (the authorization issue): whether the peer
 * (its SPIFFE ID) may reach dst on the local workload; res: the decision
 * (for the access log). A denial answers 401. */
static bool
authorized(struct hbconn *h, const struct mworkload *local, const struct sockaddr_storage *dst,
    struct authz_result *res)
{
	struct authz_conn c = { (const struct sockaddr *)&h->peer, (const struct sockaddr *)dst, h->peer_id };

	if (authz_check(h->w->snap->s->authz, local, &c, res, h->w->stats.authz) == AUTHZ_ALLOW)
		return true;
	if (res->no_workload)
		stat_add(hstat(h->w, LM_DOWNSTREAM_CX_AUTHZ_NO_WORKLOAD), 1);
	clog_debug(h, "hbone: authorization denied %s (policy %s)", h->peer_id ? h->peer_id : "(no id)",
	    authz_result_why(res));
	tele_denied(h->w, &h->peer, dst, h->peer_id, local);
	return false;
}

static void
refuse(struct hbconn *h, struct conn *stream, int status, enum listener_metric m, const char *why,
    const char *auth)
{
	stat_add(hstat(h->w, m), 1);
	clog_debug(h, "hbone: %d for \"%.100s\": %s", status, auth, why);
	if (h2s_respond(stream, status, NULL, 0) == 0)
		conn_close(stream, CONN_GRACEFUL);
	else
		conn_close(stream, CONN_ABORT);
}

static void
on_request(struct h2s *s, void *ud, struct conn *stream, const struct h2s_req *req)
{
	struct hbconn *h = ud;
	struct worker *w = h->w;
	struct sockaddr_storage dst;

	stat_add(hstat(w, LM_HBONE_RQ_TOTAL), 1);
	if (strcmp(req->method, "CONNECT") != 0 || req->has_scheme_or_path) {
		refuse(h, stream, 400, LM_HBONE_RQ_400, "not a CONNECT", req->authority);
		tunnel_log_refused_stream(w, &h->peer, NULL, h->peer_id, NULL, TRF(DOWNSTREAM_PROTOCOL_ERROR));
		return;
	}
	if (hbone_authority_parse(req->authority, strlen(req->authority), &dst) < 0) {
		refuse(h, stream, 400, LM_HBONE_RQ_400, "not ip:port", req->authority);
		tunnel_log_refused_stream(w, &h->peer, NULL, h->peer_id, NULL, TRF(DOWNSTREAM_PROTOCOL_ERROR));
		return;
	}
	if (!ip_equal(&dst, &h->local) && !instance_ip(&dst)) {
		refuse(h, stream, 400, LM_HBONE_RQ_400, "not this pod's address", req->authority);
		tunnel_log_refused_stream(w, &h->peer, &dst, h->peer_id, NULL, TRF(NO_ROUTE));
		return;
	}
	/* The app: the workload's application tunnel port when it has one
	 * (PROXY protocol there comes with it), else the port asked for. */
	const struct mworkload *local = model_workload_at(w->snap->s->model, &dst);
	/* PROXY v2 (hbext): src the HBONE peer's address (ztunnel connects
	 * from the source pod's IP), dst the CONNECT's target, before the
	 * application tunnel's port replaces it. */
	struct sockaddr_storage pp_target = dst;
	bool pp = local && local->proxy_protocol;
	if (local && local->app_tunnel_port)
		sock_addr_set_port(&dst, local->app_tunnel_port);
	struct authz_result az;
	if (!authorized(h, local, &pp_target, &az)) {
		refuse(h, stream, 401, LM_HBONE_RQ_401, "not authorized", req->authority);
		tunnel_log_refused_stream(w, &h->peer, &pp_target, h->peer_id, &az, 0);
		return;
	}
	tunnel_start_stream(w, stream, &dst, &h->peer, h->peer_id, pp ? &h->peer : NULL, pp ? &pp_target : NULL,
	    &pp_target, &az);
}

static void
on_closed(struct h2s *s, void *ud)
{
	struct hbconn *h = ud;
	int err = h2s_end_error(s);

	if (err == -EPROTO || err == -ETIMEDOUT) {
		stat_add(hstat(h->w, LM_HBONE_CX_PROTOCOL_ERROR), 1);
		clog_warn(h, "hbone: connection from %s ended: %s", h->peer_id ? h->peer_id : "(no id)",
		    err == -EPROTO ? "HTTP/2 protocol error or flood" : "keep-alive timeout");
	} else {
		clog_debug(h, "hbone: connection closed%s%s", err ? ": " : "", err ? strerror(-err) : "");
	}
	hb_free(h);
}

static const struct h2s_handler handler = { .request = on_request, .closed = on_closed };

static void
hs_fail(struct hbconn *h, int err, bool timeout)
{
	char detail[256] = "";
	enum xtls_fail f = timeout ? XTLS_FAIL_IO : xtls_failure(&h->t, detail, sizeof(detail));

	if (f == XTLS_FAIL_NONE)
		f = XTLS_FAIL_IO;
	stat_add(hstat(h->w, LM_DOWNSTREAM_CX_TLS_HANDSHAKE_FAIL), 1);
	stat_add(hstat(h->w, tunnel_ds_tls_metric(f)), 1);
	clog_warn(h, "hbone: TLS handshake failed (%s): %s", xtls_fail_names[f],
	    timeout ? "timed out" : *detail ? detail : strerror(-err));
	conn_close(&h->t, CONN_ABORT);
	hb_free(h);
}

static void
hs_ready(struct conn *c, int what)
{
	struct hbconn *h = c->owner;
	int rc = c->ops->handshake(c);

	if (rc == -EAGAIN) {
		conn_arm(c, CONN_HS);
		return;
	}
	if (rc < 0) {
		hs_fail(h, rc, false);
		return;
	}
	ev_timer_stop(h->w->loop, &h->timer);
	const char *id = xtls_peer_id(c);
	h->peer_id = *id ? strdup(id) : NULL;
	stat_add(hstat(h->w, LM_DOWNSTREAM_CX_MTLS), 1);
	clog_debug(h, "hbone: mTLS peer %s (%s, alpn %s)", *id ? id : "(none)", xtls_version(c),
	    *xtls_alpn(c) ? xtls_alpn(c) : "none");
	conn_arm(c, 0);
	struct h2s_settings st = h2s_server_defaults;
	st.max_concurrent_streams = (uint32_t)h->w->snap->s->cfg.hbone_max_streams;
	h->s = h2s_server_new(h->w, &h->t, &st, &handler, h);
	if (!h->s) {
		stat_add(hstat(h->w, LM_DOWNSTREAM_CX_OVERFLOW), 1);
		hb_free(h);	/* t was closed */
	}
}

static void
hs_timeout(struct ev_loop *loop, ev_timer *tm, int revents)
{
	hs_fail(tm->data, -ETIMEDOUT, true);
}

void
hbone_accept(struct worker *w, int fd, const struct sockaddr_storage *peer)
{
	const struct certbundle *b = w->snap->s->certs;
	struct hbconn *h = NULL;
	socklen_t len = sizeof(h->local);
	int one = 1, rc;

	stat_add(hstat(w, LM_HBONE_CX_TOTAL), 1);
	if (!b || !b->hbone_server_ctx) {
		stat_add(hstat(w, LM_DOWNSTREAM_CX_MTLS_NO_CERT), 1);
		log_warn("hbone: no certificate yet: connection refused");
		sock_close_rst(fd);
		return;
	}
	if (!(h = calloc(1, sizeof(*h)))) {
		stat_add(hstat(w, LM_DOWNSTREAM_CX_OVERFLOW), 1);
		sock_close_rst(fd);
		return;
	}
	h->w = w;
	h->worker_id = w->id;
	h->id = ++w->next_id;
	h->peer = *peer;
	(void)getsockname(fd, (struct sockaddr *)&h->local, &len);
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	conn_init(&h->t, w->loop, fd, &raw_ops, hs_ready, h, w->hup.fd);
	ev_init(&h->timer, hs_timeout);
	h->timer.data = h;
	h->next = w->hbone_conns;
	if (w->hbone_conns)
		w->hbone_conns->prev = h;
	w->hbone_conns = h;
	stat_add(hstat(w, LM_HBONE_CX_ACTIVE), 1);
	if ((rc = xtls_start_server(&h->t, b->hbone_server_ctx)) < 0) {
		stat_add(hstat(w, LM_DOWNSTREAM_CX_OVERFLOW), 1);
		conn_close(&h->t, CONN_ABORT);
		hb_free(h);
		return;
	}
	ev_timer_set(&h->timer, w->snap->s->cfg.connect_timeout_ms / 1000.0, 0.);
	ev_timer_start(w->loop, &h->timer);
	conn_arm(&h->t, CONN_HS);
}

void
hbone_drain(struct worker *w)
{
	for (struct hbconn *h = w->hbone_conns; h; h = h->next)
		if (h->s)
			h2s_close(h->s, CONN_GRACEFUL);
}

void
hbone_close_all(struct worker *w)
{
	struct hbconn *h = w->hbone_conns, *next;

	for (; h; h = next) {
		next = h->next;
		if (h->s) {
			h2s_close(h->s, CONN_ABORT);	/* on_closed frees h */
		} else {
			conn_close(&h->t, CONN_ABORT);
			hb_free(h);
		}
	}
}
