/* telemetry: Istio's standard TCP metrics, from the tunnel's facts to the
 * worker's label table, and their scrape. */
#include "autoconfig.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "istio/workload/workload.pb-c.h"
#include "ltab.h"
#include "model.h"
#include "snapshot.h"
#include "sock.h"
#include "identity.h"
#include "telemetry.h"
#include "tunnel.h"
#include "worker.h"

const char *const tele_label_names[TL__COUNT] = {
#define X(e, s) s,
	TELE_LABELS(X)
#undef X
};

/* Istio's names and help (ztunnel registers them under the istio_ prefix;
 * the _total suffix is the counter's, as prometheus_client writes it). */
static const char *const fam_names[LTAB_NVALS] = {
	[TV_OPENED] = "istio_tcp_connections_opened_total",
	[TV_CLOSED] = "istio_tcp_connections_closed_total",
	[TV_RECEIVED] = "istio_tcp_received_bytes_total",
	[TV_SENT] = "istio_tcp_sent_bytes_total",
};
static const char *const fam_help[LTAB_NVALS] = {
	[TV_OPENED] = "The total number of TCP connections opened",
	[TV_CLOSED] = "The total number of TCP connections closed",
	[TV_RECEIVED] = "The size of total bytes received during request in case of a TCP connection",
	[TV_SENT] = "The size of total bytes sent during response in case of a TCP connection",
};

static const char unknown[] = "unknown";

/* This pod's first address (INSTANCE_IPS, else INSTANCE_IP, as the
 * injector sets them): the outbound source when the app's own address is
 * no workload's (it bound 127.0.0.1, say). Written once by the first
 * tele_worker_init, before the worker threads start; read-only after. */
static struct sockaddr_storage self_addr;
static bool self_loaded;

static void
self_load(void)
{
	if (self_loaded)
		return;
	self_loaded = true;
	if (sock_pod_ips(&self_addr, 1) == 0)
		memset(&self_addr, 0, sizeof(self_addr));
}

static const char *
or_unknown(const char *s)
{
	return s && *s ? s : unknown;
}

static const Istio__Workload__Workload *
wl_msg(const struct mworkload *w)
{
	const Istio__Workload__Address *a;

	if (!w || !w->res || !w->res->msg)
		return NULL;
	a = (const Istio__Workload__Address *)w->res->msg;
	return a->type_case == ISTIO__WORKLOAD__ADDRESS__TYPE_WORKLOAD ? a->workload : NULL;
}

/* One side's workload labels, at base (TL_SRC_WORKLOAD or TL_DST_WORKLOAD's
 * group). As ztunnel: app and version are the canonical service and
 * revision (which istiod derives from the app/version labels). */
struct side_idx {
	enum tele_label workload, canon_svc, canon_rev, ns, principal, app, version, cluster;
};
static const struct side_idx src_idx = { TL_SRC_WORKLOAD, TL_SRC_CANONICAL_SERVICE, TL_SRC_CANONICAL_REVISION,
	TL_SRC_NAMESPACE, TL_SRC_PRINCIPAL, TL_SRC_APP, TL_SRC_VERSION, TL_SRC_CLUSTER };
static const struct side_idx dst_idx = { TL_DST_WORKLOAD, TL_DST_CANONICAL_SERVICE, TL_DST_CANONICAL_REVISION,
	TL_DST_NAMESPACE, TL_DST_PRINCIPAL, TL_DST_APP, TL_DST_VERSION, TL_DST_CLUSTER };

static void
side_labels(const struct side_idx *x, const struct mworkload *w, const char *principal, const char **lab)
{
	const Istio__Workload__Workload *m = wl_msg(w);

	lab[x->workload] = or_unknown(m ? m->workload_name : NULL);
	lab[x->canon_svc] = lab[x->app] = or_unknown(m ? m->canonical_name : NULL);
	lab[x->canon_rev] = lab[x->version] = or_unknown(m ? m->canonical_revision : NULL);
	lab[x->ns] = or_unknown(m ? m->namespace_ : w ? w->ns : NULL);
	lab[x->cluster] = or_unknown(m ? m->cluster_id : w ? w->cluster_id : NULL);
	lab[x->principal] = or_unknown(principal);
}

void
tele_labels(const struct tele_conn *c, const char *lab[TL__COUNT], char *flags)
{
	lab[TL_REPORTER] = c->inbound ? "destination" : "source";
	side_labels(&src_idx, c->src, c->src_principal, lab);
	side_labels(&dst_idx, c->dst, c->dst_principal, lab);
	/* No service: an Istio sidecar names the cluster the connection went
	 * to, PassthroughCluster or BlackHoleCluster, which the dashboards of
	 * external traffic select on. */
	lab[TL_DST_SERVICE] = or_unknown(c->svc ? c->svc->hostname : c->cluster);
	lab[TL_DST_SERVICE_NAMESPACE] = or_unknown(c->svc ? c->svc->ns : NULL);
	lab[TL_DST_SERVICE_NAME] = or_unknown(c->svc ? c->svc->name : c->cluster);
	lab[TL_REQUEST_PROTOCOL] = "tcp";
	lab[TL_RESPONSE_FLAGS] = tunnel_rflags_str(c->rflags, flags, TUNNEL_RFLAGS_MAX);
	/* Istio: mutual_tls when the report's side saw Istio mTLS; a sidecar
	 * destination without it is "none"; the source side of a plaintext
	 * connection cannot tell (Istio's docs, ztunnel's default): "unknown". */
	lab[TL_SECURITY_POLICY] = c->mtls ? "mutual_tls" : c->inbound ? "none" : unknown;
}

/* Inbound: the service of the local workload that targets port (its
 * Workload's services map, target_port 0 meaning the service port itself),
 * as Envoy's inbound cluster names it; the first in the map when several
 * do. NULL when none. */
static const struct mservice *
inbound_service(const struct model *m, const struct mworkload *local, uint16_t port)
{
	const Istio__Workload__Workload *w = wl_msg(local);

	for (size_t i = 0; w && i < w->n_services; i++) {
		const Istio__Workload__Workload__ServicesEntry *e = w->services[i];

		for (size_t j = 0; e && e->value && j < e->value->n_ports; j++) {
			const Istio__Workload__Port *p = e->value->ports[j];
			uint32_t target = p->target_port ? p->target_port : p->service_port;

			if (target == port)
				return model_service(m, e->key);
		}
	}
	return NULL;
}

/* The tunnel's facts. Inbound: the source is the workload at the client's
 * address (the HBONE peer's for 15008), its principal the verified peer ID;
 * the destination is the local workload addressed. Outbound: the source is
 * the workload at the app's address (this pod), its principal our own
 * certificate's when the upstream is mTLS; the destination is the workload
 * connected to and the service routed through. */
static void
inbound_facts(const struct snapshot *s, const struct sockaddr_storage *dst, const char *peer_id,
    const struct mworkload *local, struct tele_conn *c)
{
	const struct certbundle *b = s->certs;

	c->inbound = true;
	c->dst = local;
	c->svc = inbound_service(s->model, local, sock_addr_port(dst));
	c->src_principal = peer_id;
	c->dst_principal = local ? local->identity : b ? b->identity : NULL;
	c->mtls = peer_id != NULL;
}

static void
tunnel_facts(const struct tunnel *t, struct tele_conn *c)
{
	const struct model *m = t->snap->s->model;
	const struct certbundle *b = t->snap->s->certs;
	struct sockaddr_storage src;
	const struct mworkload *sw = NULL;

	memset(&src, 0, sizeof(src));
	if (t->src.sa.sa_family == AF_INET || t->src.sa.sa_family == AF_INET6) {
		memcpy(&src, &t->src, sizeof(t->src));
		sw = model_workload_at(m, &src);
	}
	*c = (struct tele_conn){ .src = sw, .rflags = t->rflags };
	if (t->lst == LST_INBOUND || t->lst == LST_HBONE) {
		inbound_facts(t->snap->s, &t->dst, t->peer_id, t->local, c);
	} else {
		if (!c->src && self_addr.ss_family != AF_UNSPEC)
			c->src = model_workload_at(m, &self_addr);
		c->dst = t->peer;
		c->svc = t->svc ? t->svc->svc : NULL;
		if (!c->svc)
			c->cluster = t->rflags & TRF(NO_ROUTE) ? "BlackHoleCluster" : "PassthroughCluster";
		c->mtls = t->us_mtls || t->us_hbone;
		c->src_principal = c->mtls && b ? b->identity : NULL;
		c->dst_principal = t->peer_id ? t->peer_id : t->peer ? t->peer->identity : NULL;
	}
}

static struct ltab_ent *
lookup(struct tunnel *t)
{
	struct tele_conn c;
	const char *lab[TL__COUNT];
	char flags[TUNNEL_RFLAGS_MAX];
	struct ltab_ent *e;

	tunnel_facts(t, &c);
	tele_labels(&c, lab, flags);
	e = ltab_get(t->w->tele, lab);
	if (!e->lab && !t->tele_overflow) {
		/* Counted once per connection, however many lookups it makes. */
		t->tele_overflow = true;
		stat_add(&t->w->stats.w[WM_ISTIO_METRICS_OVERFLOW_TOTAL], 1);
	}
	return e;
}

void
tele_denied(struct worker *w, const struct sockaddr_storage *src, const struct sockaddr_storage *dst,
    const char *peer_id, const struct mworkload *local)
{
	const struct snapshot *s = w->snap->s;
	struct tele_conn c = { .src = model_workload_at(s->model, src), .rflags = TRF(RBAC_DENIED) };
	const char *lab[TL__COUNT];
	char flags[TUNNEL_RFLAGS_MAX];
	struct ltab_ent *e;

	if (!w->tele)
		return;
	inbound_facts(s, dst, peer_id, local, &c);
	tele_labels(&c, lab, flags);
	e = ltab_get(w->tele, lab);
	if (!e->lab)
		stat_add(&w->stats.w[WM_ISTIO_METRICS_OVERFLOW_TOTAL], 1);
	stat_add(&e->val[TV_OPENED], 1);
	stat_add(&e->val[TV_CLOSED], 1);
}

void
tele_arm(struct tunnel *t)
{
	if (t->w->tele)
		t->tele_armed = true;
}

void
tele_open(struct tunnel *t)
{
	if (!t->w->tele || t->tele)
		return;
	t->tele_armed = true;
	t->tele = lookup(t);
	t->tele_rflags = t->rflags;
	stat_add(&t->tele->val[TV_OPENED], 1);
}

/* The bytes moved since the last report: from downstream = received,
 * to downstream = sent (ztunnel's copy_bidirectional). */
static void
report_bytes(struct tunnel *t)
{
	uint64_t rx = t->relay.rx_bytes, tx = t->relay.tx_bytes;

	if (rx != t->tele_rx)
		stat_add(&t->tele->val[TV_RECEIVED], rx - t->tele_rx);
	if (tx != t->tele_tx)
		stat_add(&t->tele->val[TV_SENT], tx - t->tele_tx);
	t->tele_rx = rx;
	t->tele_tx = tx;
}

void
tele_close(struct tunnel *t)
{
	struct ltab_ent *e;

	if (!t->w->tele || !t->tele_armed)
		return;
	if (!t->tele) {
		/* Never forwarded (denied, no upstream): opened and closed
		 * under the flags it ended with. */
		e = lookup(t);
		stat_add(&e->val[TV_OPENED], 1);
		stat_add(&e->val[TV_CLOSED], 1);
		return;
	}
	report_bytes(t);
	/* ztunnel counts the close under the flags the connection ended
	 * with; its bytes stay with the set it opened under. */
	e = t->rflags == t->tele_rflags ? t->tele : lookup(t);
	stat_add(&e->val[TV_CLOSED], 1);
	t->tele = NULL;
}

/* telemetry.tcpReportingInterval: the bytes of long-lived connections. */
static void
report_cb(struct ev_loop *loop, ev_timer *tm, int revents)
{
	struct worker *w = tm->data;

	(void)loop;
	(void)revents;
	for (struct tunnel *t = w->tunnels; t; t = t->next)
		if (t->tele)
			report_bytes(t);
}

int
tele_worker_init(struct worker *w, const struct config *cfg)
{
	self_load();
	w->tele = calloc(1, sizeof(*w->tele));
	if (!w->tele || ltab_init(w->tele, TL__COUNT, (size_t)cfg->tele_max_label_sets) < 0) {
		free(w->tele);
		w->tele = NULL;
		return -ENOMEM;
	}
	ev_init(&w->tele_report, report_cb);
	w->tele_report.data = w;
	if (cfg->tele_report_ms) {
		ev_tstamp s = cfg->tele_report_ms / 1000.0;

		ev_timer_set(&w->tele_report, s, s);
		ev_timer_start(w->loop, &w->tele_report);
	}
	return 0;
}

void
tele_worker_fini(struct worker *w)
{
	if (!w->tele)
		return;
	ev_timer_stop(w->loop, &w->tele_report);
	ltab_free(w->tele);
	free(w->tele);
	w->tele = NULL;
}

void
tele_render(struct strbuf *sb)
{
	unsigned nw, n = 0;
	struct worker *w = workers_get(&nw);
	struct ltab **tabs = calloc(nw ? nw : 1, sizeof(*tabs));
	uint64_t overflows;

	if (!tabs) {
		sb->oom = true;
		return;
	}
	for (unsigned i = 0; i < nw; i++)
		if (w[i].tele)
			tabs[n++] = w[i].tele;
	ltab_render(sb, (struct ltab *const *)tabs, n, tele_label_names, fam_names, fam_help, &overflows);
	free(tabs);
}
