/* admin: the control thread's small HTTP/1.1 servers: the admin API, the
 * readiness port and the status port (pilot-agent's 15020: readiness and the
 * merged metrics), one request per connection (Connection: close). */
#include "autoconfig.h"

#include <cjson/cJSON.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "accesslog.h"
#include "admin.h"
#include "appscrape.h"
#include "authz.h"
#include "certsrc.h"
#include "config.h"
#include "identity.h"
#include "json_pb.h"
#include "log.h"
#include "peerauth.h"
#include "metrics.h"
#include "model.h"
#include "server.h"
#include "telemetry.h"
#include "xds.h"
#include "sock.h"
#include "worker.h"

#define ADMIN_HEAD_MAX 8192
/* Connections per port: the readiness port is reachable from the whole
 * cluster, so it has its own budget and can never starve the admin API. */
#define ADMIN_MAX_CONNS 32
/* Time for a whole request and response; probes are quick, so 15021 is short. */
#define ADMIN_TIMEOUT 5.0
#define HEALTH_TIMEOUT 2.0
/* Out of descriptors: stop accepting for this long instead of spinning. */
#define ADMIN_ACCEPT_PAUSE 0.1

/* PORT_PROM: Envoy's Prometheus port (15090), GET /stats/prometheus only.
 * PORT_STATUS: pilot-agent's status port (15020): /healthz/ready as on
 * 15021, and /stats/prometheus (or /metrics) with the app's metrics merged. */
enum admin_port { PORT_ADMIN, PORT_HEALTH, PORT_PROM, PORT_STATUS, PORT__COUNT };

struct admin_listener {
	int fd;
	enum admin_port port;
	ev_io io;
	ev_timer pause;
};

struct admin_conn {
	int fd;
	enum admin_port port;
	ev_io io;
	ev_timer timer;
	char in[ADMIN_HEAD_MAX];
	size_t inlen;
	struct strbuf out;
	size_t outoff;
	bool closing;		/* answered; draining the client until its FIN */
	bool scraping;		/* 15020: waiting for app_job */
	bool head;		/* the waiting request was HEAD */
	struct admin_conn *prev, *next;
};

static struct ev_loop *admin_loop;
/* admin, and the health, Prometheus and status ports on 0.0.0.0 and ::. */
static struct admin_listener listeners[7];
static unsigned nlisteners;
static struct admin_conn *conns;	/* newest first */
static unsigned nconns[PORT__COUNT];	/* per enum admin_port */
static ev_tstamp last_accept_warning;
/* The app's scrape targets (ISTIO_PROMETHEUS_ANNOTATIONS), and the scrape in
 * flight: 15020 requests that come while one runs wait for it and share its
 * result, so the app is asked once at a time and memory stays bounded. */
static struct appscrape_cfg app_cfg;
static struct appscrape *app_job;
static void conn_write(struct admin_conn *c);

/* End of the head: the first empty line. RFC 9112 §2.2 lets a recipient take
 * a bare LF as a line terminator (and ignore a CR before it), so an empty
 * line is "\n\n" or "\n\r\n" after the last header. Returns the offset just
 * past it, or 0 when the head is not complete yet. */
static size_t
head_end(const char *buf, size_t len)
{
	for (const char *p = buf, *end = buf + len; (p = memchr(p, '\n', (size_t)(end - p))); p++) {
		if (p + 1 < end && p[1] == '\n')
			return (size_t)(p + 2 - buf);
		if (p + 2 < end && p[1] == '\r' && p[2] == '\n')
			return (size_t)(p + 3 - buf);
	}
	return 0;
}

int
admin_parse_request(const char *buf, size_t len, struct admin_req *req)
{
	const char *sp1, *sp2, *eol, *q;
	size_t hlen = head_end(buf, len);

	if (!hlen)
		return len >= ADMIN_HEAD_MAX ? -EINVAL : -EAGAIN;
	eol = memchr(buf, '\n', hlen);
	if (eol > buf && eol[-1] == '\r')
		eol--;
	sp1 = memchr(buf, ' ', (size_t)(eol - buf));
	if (!sp1 || sp1 == buf)
		return -EINVAL;
	sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
	if (!sp2 || sp2 == sp1 + 1 || sp1[1] != '/')
		return -EINVAL;
	if ((size_t)(eol - sp2 - 1) != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0 ||
	    (sp2[8] != '0' && sp2[8] != '1'))
		return -EINVAL;
	for (const char *p = buf; p < sp1; p++)
		if (*p < 'A' || *p > 'Z')
			return -EINVAL;
	for (const char *p = sp1 + 1; p < sp2; p++)
		if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
			return -EINVAL;
	req->method = buf;
	req->method_len = (size_t)(sp1 - buf);
	req->path = sp1 + 1;
	q = memchr(req->path, '?', (size_t)(sp2 - req->path));
	req->path_len = (size_t)((q ? q : sp2) - req->path);
	req->query = q ? q + 1 : NULL;
	req->query_len = q ? (size_t)(sp2 - q - 1) : 0;
	return 0;
}

const char *
admin_req_header(const char *buf, size_t len, const char *name, size_t *vlen)
{
	size_t hlen = head_end(buf, len), nlen = strlen(name);
	const char *p = memchr(buf, '\n', hlen), *end = buf + hlen;

	/* Each line after the request line: "name:" OWS value OWS (RFC 9112 §5). */
	while (p && ++p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p)), *v, *ve;

		if (!eol)
			break;
		ve = eol > p && eol[-1] == '\r' ? eol - 1 : eol;
		if ((size_t)(ve - p) > nlen && p[nlen] == ':' && strncasecmp(p, name, nlen) == 0) {
			for (v = p + nlen + 1; v < ve && (*v == ' ' || *v == '\t'); v++)
				;
			while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
				ve--;
			*vlen = (size_t)(ve - v);
			return v;
		}
		p = eol;
	}
	return NULL;
}

/* Every value, summed and per worker, for the text and JSON formats. */
static void
collect_rows(struct stat_rows *rs)
{
	unsigned nw;
	struct worker *w = workers_get(&nw);

	for (int k = 0; k < LST__COUNT; k++) {
		for (int m = 0; m < LM__COUNT; m++) {
			uint64_t sum = 0;
			for (unsigned j = 0; j < nw; j++) {
				uint64_t v = stat_read(&w[j].stats.lst[k][m]);
				sum += v;
				stat_rows_add(rs, v, "worker_%u.listener.%s.%s", j, listener_names[k],
				    listener_metric_desc[m].name);
			}
			stat_rows_add(rs, sum, "listener.%s.%s", listener_names[k], listener_metric_desc[m].name);
		}
		/* Histograms: count and sum (ms) here; the buckets are in the Prometheus format. */
		for (int m = 0; m < LH__COUNT; m++) {
			struct hist h = { 0 };
			for (unsigned j = 0; j < nw; j++)
				hist_accumulate(&h, &w[j].stats.lh[k][m]);
			uint64_t count = 0;
			for (unsigned b = 0; b <= HIST_NBOUNDS; b++)
				count += h.bucket[b];
			stat_rows_add(rs, count, "listener.%s.%s.count", listener_names[k], listener_hist_desc[m].name);
			stat_rows_add(rs, h.sum_us / 1000, "listener.%s.%s.sum", listener_names[k],
			    listener_hist_desc[m].name);
		}
	}
	for (int m = 0; m < WM__COUNT; m++) {
		uint64_t sum = 0;
		for (unsigned j = 0; j < nw; j++) {
			uint64_t v = stat_read(&w[j].stats.w[m]);
			sum += v;
			stat_rows_add(rs, v, "worker_%u.%s", j, worker_metric_desc[m].name);
		}
		stat_rows_add(rs, sum, "server.%s", worker_metric_desc[m].name);
	}
	for (int m = 0; m < PM__COUNT; m++)
		stat_rows_add(rs, stat_read(&process_stats[m]), "server.%s", process_metric_desc[m].name);
	for (int m = 0; m < SM__COUNT; m++)
		stat_rows_add(rs, server.stats[m], "server.%s", server_metric_desc[m].name);
	/* Per authorization policy that has a slot (authz.h). */
	for (unsigned slot = 1, n = authz_nslots(); slot < n; slot++) {
		char pn[1024];
		uint64_t v[2] = { 0, 0 };

		if (!authz_slot_name(slot, pn, sizeof(pn)) || !*pn)
			continue;
		for (unsigned j = 0; j < nw; j++)
			for (int k = 0; k < 2; k++)
				v[k] += stat_read(&w[j].stats.authz[slot * 2 + k]);
		stat_rows_add(rs, v[AUTHZ_ALLOW], "authz.%s.authz_policy_allow", pn);
		stat_rows_add(rs, v[AUTHZ_DENY], "authz.%s.authz_policy_deny", pn);
	}
	/* The policies past the registry's bound share its overflow slot:
	 * shown once the registry is full (or it counted anything). */
	{
		uint64_t v[2] = { 0, 0 };

		for (unsigned j = 0; j < nw; j++)
			for (int k = 0; k < 2; k++)
				v[k] += stat_read(&w[j].stats.authz[AUTHZ_SLOT_OVERFLOW * 2 + k]);
		if (authz_full() || v[0] || v[1]) {
			stat_rows_add(rs, v[AUTHZ_ALLOW], "authz.overflow.authz_policy_allow");
			stat_rows_add(rs, v[AUTHZ_DENY], "authz.overflow.authz_policy_deny");
		}
	}
	stat_rows_add(rs, server.concurrency, "server.concurrency");
	stat_rows_add(rs, server.live && !server.draining, "server.live");
	stat_rows_add(rs, (uint64_t)(time(NULL) - server.started), "server.uptime");
}

/* Prometheus: each family declared with its own kind; names are built in a
 * growable buffer (label values such as Istio's cluster names can be long). */
static void
render_prometheus(struct strbuf *sb)
{
	struct strbuf name = { 0 }, label = { 0 };
	unsigned nw;
	struct worker *w = workers_get(&nw);

	for (int m = 0; m < LM__COUNT; m++) {
		const struct metric_desc *d = &listener_metric_desc[m];
		sb_free(&name);
		sb_printf(&name, "outrigger_listener_%s", d->name);
		prom_family(sb, name.p, d->help, d->kind);
		for (int k = 0; k < LST__COUNT; k++) {
			uint64_t sum = 0;
			for (unsigned j = 0; j < nw; j++)
				sum += stat_read(&w[j].stats.lst[k][m]);
			sb_free(&label);
			sb_printf(&label, "listener=\"");
			prom_label_value(&label, listener_names[k]);
			sb_printf(&label, "\"");
			prom_sample(sb, name.p, label.p, sum);
		}
	}
	for (int m = 0; m < LH__COUNT; m++) {
		const struct metric_desc *d = &listener_hist_desc[m];
		sb_free(&name);
		sb_printf(&name, "outrigger_listener_%s", d->name);
		prom_family(sb, name.p, d->help, d->kind);
		for (int k = 0; k < LST__COUNT; k++) {
			struct hist h = { 0 };
			for (unsigned j = 0; j < nw; j++)
				hist_accumulate(&h, &w[j].stats.lh[k][m]);
			sb_free(&label);
			sb_printf(&label, "listener=\"");
			prom_label_value(&label, listener_names[k]);
			sb_printf(&label, "\"");
			prom_histogram(sb, name.p, label.p, &h);
		}
	}
	for (int m = 0; m < WM__COUNT; m++) {
		const struct metric_desc *d = &worker_metric_desc[m];
		uint64_t sum = 0;
		for (unsigned j = 0; j < nw; j++)
			sum += stat_read(&w[j].stats.w[m]);
		sb_free(&name);
		sb_printf(&name, "outrigger_%s", d->name);
		prom_family(sb, name.p, d->help, d->kind);
		prom_sample(sb, name.p, NULL, sum);
	}
	for (int m = 0; m < PM__COUNT; m++) {
		const struct metric_desc *d = &process_metric_desc[m];
		sb_free(&name);
		sb_printf(&name, "outrigger_%s", d->name);
		prom_family(sb, name.p, d->help, d->kind);
		prom_sample(sb, name.p, NULL, stat_read(&process_stats[m]));
	}
	for (int m = 0; m < SM__COUNT; m++) {
		const struct metric_desc *d = &server_metric_desc[m];
		sb_free(&name);
		sb_printf(&name, "outrigger_server_%s", d->name);
		prom_family(sb, name.p, d->help, d->kind);
		prom_sample(sb, name.p, NULL, server.stats[m]);
	}
	/* Per authorization policy (authz.h's slots). */
	for (int k = 0; k < 2; k++) {
		const char *fam = k == AUTHZ_ALLOW ? "outrigger_authz_policy_allow" : "outrigger_authz_policy_deny";

		prom_family(sb, fam, k == AUTHZ_ALLOW ? "Connections an authorization policy allowed (dry-run and "
		    "AUDIT policies: matched), by policy" : "Connections an authorization policy denied (dry-run "
		    "policies: would have denied), by policy", METRIC_COUNTER);
		for (unsigned slot = 1, n = authz_nslots(); slot < n; slot++) {
			char pn[1024];
			uint64_t v = 0;

			if (!authz_slot_name(slot, pn, sizeof(pn)) || !*pn)
				continue;
			for (unsigned j = 0; j < nw; j++)
				v += stat_read(&w[j].stats.authz[slot * 2 + k]);
			sb_free(&label);
			sb_printf(&label, "policy=\"");
			prom_label_value(&label, pn);
			sb_printf(&label, "\"");
			prom_sample(sb, fam, label.p, v);
		}
		/* The overflow slot, as in /stats: policy="overflow" (no policy's
		 * name, "ns/name", can be that). */
		uint64_t ov = 0;
		for (unsigned j = 0; j < nw; j++)
			ov += stat_read(&w[j].stats.authz[AUTHZ_SLOT_OVERFLOW * 2 + k]);
		if (authz_full() || ov)
			prom_sample(sb, fam, "policy=\"overflow\"", ov);
	}
	if (name.oom || label.oom)
		sb->oom = true;
	sb_free(&name);
	sb_free(&label);
}

void
admin_render_prometheus(struct strbuf *sb)
{
	render_prometheus(sb);
	tele_render(sb);
}

void
admin_render_stats(struct strbuf *sb, const char *format)
{
	struct stat_rows rs = { 0 };

	if (strcmp(format, "prometheus") == 0) {
		admin_render_prometheus(sb);
		return;
	}
	collect_rows(&rs);
	stat_rows_render(&rs, sb, format);
	stat_rows_free(&rs);
}

/* One resource as /config_dump lists it. */
static cJSON *
resource_to_json(const struct mres *r, unsigned *marks)
{
	cJSON *o = cJSON_CreateObject(), *res;
	unsigned n = 0;

	if (!o || !cJSON_AddStringToObject(o, "name", r->name) ||
	    !cJSON_AddStringToObject(o, "version", r->version ? r->version : ""))
		goto oom;
	if (!(res = jpb_encode_any(r->msg, NULL, &n)))
		goto oom;
	cJSON_AddItemToObject(o, "resource", res);
	*marks += n;
	return o;
oom:
	cJSON_Delete(o);
	return NULL;
}

int
admin_model_to_json(const struct model *m, cJSON *root)
{
	cJSON *types = cJSON_AddObjectToObject(root, "resources"), *idx;
	struct model_sizes sz;
	unsigned marks = 0;

	if (!types)
		return -ENOMEM;
	for (int t = 0; t < MRES__COUNT; t++) {
		cJSON *list = cJSON_AddArrayToObject(types, mres_type_names[t]);
		size_t n = model_count(m, (enum mres_type)t);
		if (!list)
			return -ENOMEM;
		for (size_t i = 0; i < n; i++) {
			cJSON *o = resource_to_json(model_resource(m, (enum mres_type)t, i), &marks);
			if (!o || !cJSON_AddItemToArray(list, o)) {
				cJSON_Delete(o);
				return -ENOMEM;
			}
		}
	}
	model_sizes(m, &sz);
	if (!(idx = cJSON_AddObjectToObject(root, "indexes")) ||
	    !cJSON_AddNumberToObject(idx, "workloads", (double)sz.workloads) ||
	    !cJSON_AddNumberToObject(idx, "workloadAddresses", (double)sz.workload_addresses) ||
	    !cJSON_AddNumberToObject(idx, "services", (double)sz.services) ||
	    !cJSON_AddNumberToObject(idx, "serviceVips", (double)sz.service_vips) ||
	    !cJSON_AddNumberToObject(idx, "endpoints", (double)sz.endpoints) ||
	    !cJSON_AddNumberToObject(idx, "clusters", (double)sz.clusters) ||
	    !cJSON_AddNumberToObject(idx, "bytes", (double)sz.bytes) ||
	    /* Parts of resources with no JSON form ("@error" in them). */
	    !cJSON_AddNumberToObject(root, "encodingErrors", marks))
		return -ENOMEM;
	return 0;
}

static void
render_config_dump(struct strbuf *sb)
{
	cJSON *root = cJSON_CreateObject();
	cJSON *cfg = server.snap ? config_to_json(&server.snap->cfg) : NULL;
	char *txt;

	if (!root || !cfg) {
		cJSON_Delete(root);
		cJSON_Delete(cfg);
		sb->oom = true;
		return;
	}
	/* "generation" and "config" first and unchanged: outside checks read them. */
	cJSON_AddNumberToObject(root, "generation", (double)server.snap->generation);
	cJSON_AddItemToObject(root, "config", cfg);
	cJSON_AddStringToObject(root, "certificateSource", certsrc_name());
	/* The inbound mTLS modes this snapshot resolved (peerauth.h). */
	cJSON_AddItemToObject(root, "inboundMtls", peerauth_to_json(server.snap->peerauth, pa_self_current()));
	/* The authorization policies in force and the workloads each binds (authz.h). */
	cJSON_AddItemToObject(root, "authorization", authz_to_json(server.snap->authz));
	if (xds_active()) {
		cJSON *x = xds_dump();
		if (!x) {
			cJSON_Delete(root);
			sb->oom = true;
			return;
		}
		cJSON_AddItemToObject(root, "xds", x);
	}
	if (server.snap->model && admin_model_to_json(server.snap->model, root) < 0) {
		cJSON_Delete(root);
		sb->oom = true;
		return;
	}
	txt = cJSON_Print(root);
	if (txt) {
		sb_printf(sb, "%s\n", txt);
		free(txt);
	} else {
		sb->oom = true;
	}
	cJSON_Delete(root);
}

/* One certificate as Envoy's /certs shows it (admin.v3.CertificateDetails,
 * its proto field names): path, serial_number, subject_alt_names,
 * days_until_expiration (a uint64: a string in proto3 JSON), valid_from,
 * expiration_time. */
static cJSON *
cert_details(X509 *x, const char *path, time_t now)
{
	cJSON *o = cJSON_CreateObject(), *sans;
	GENERAL_NAMES *names;
	BIGNUM *bn;
	char *hex, buf[64];
	struct tm tm;
	time_t nb = 0, na = 0;

	if (!o)
		return NULL;
	cJSON_AddStringToObject(o, "path", path);
	bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	hex = bn ? BN_bn2hex(bn) : NULL;
	for (char *p = hex; p && *p; p++)
		if (*p >= 'A' && *p <= 'F')
			*p = (char)(*p - 'A' + 'a');
	cJSON_AddStringToObject(o, "serial_number", hex ? hex : "");
	OPENSSL_free(hex);
	BN_free(bn);
	sans = cJSON_AddArrayToObject(o, "subject_alt_names");
	names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	for (int i = 0; sans && names && i < sk_GENERAL_NAME_num(names); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
		const char *kind = g->type == GEN_URI ? "uri" : g->type == GEN_DNS ? "dns" : NULL;
		if (!kind)
			continue;
		const ASN1_STRING *v = g->type == GEN_URI ? g->d.uniformResourceIdentifier : g->d.dNSName;
		cJSON *e = cJSON_CreateObject();
		char *str = strndup((const char *)ASN1_STRING_get0_data(v), (size_t)ASN1_STRING_length(v));
		if (e && str)
			cJSON_AddStringToObject(e, kind, str);
		free(str);
		cJSON_AddItemToArray(sans, e);
	}
	GENERAL_NAMES_free(names);
	ERR_clear_error();
	if (ASN1_TIME_to_tm(X509_get0_notBefore(x), &tm))
		nb = timegm(&tm);
	if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm))
		na = timegm(&tm);
	snprintf(buf, sizeof(buf), "%lld", na > now ? (long long)((na - now) / 86400) : 0LL);
	cJSON_AddStringToObject(o, "days_until_expiration", buf);
	gmtime_r(&nb, &tm);
	strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
	cJSON_AddStringToObject(o, "valid_from", buf);
	gmtime_r(&na, &tm);
	strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
	cJSON_AddStringToObject(o, "expiration_time", buf);
	return o;
}

/* /certs: the bundle new connections serve with, in Envoy's shape
 * ({"certificates": [{"ca_cert": [...], "cert_chain": [...]}]}), plus what
 * Envoy has no field for: the source, our SPIFFE ID and the generation. */
static void
render_certs(struct strbuf *sb)
{
	const struct certbundle *b = server.snap ? server.snap->certs : NULL;
	cJSON *root = cJSON_CreateObject(), *list;
	const char *src = certsrc_name();
	char chain_path[400], roots_path[400];
	time_t now = time(NULL);
	char *txt;

	if (!root) {
		sb->oom = true;
		return;
	}
	cJSON_AddStringToObject(root, "source", src);
	list = cJSON_AddArrayToObject(root, "certificates");
	if (b && list) {
		cJSON *one = cJSON_CreateObject(), *ca, *chain;
		/* Envoy's "path": the file for the files source, else the source. */
		if (strncmp(b->source, "files ", 6) == 0) {
			snprintf(chain_path, sizeof(chain_path), "%s/%s", b->source + 6, CERTSRC_CHAIN_FILE);
			snprintf(roots_path, sizeof(roots_path), "%s/%s", b->source + 6, CERTSRC_ROOTS_FILE);
		} else {
			snprintf(chain_path, sizeof(chain_path), "%s", b->source);
			snprintf(roots_path, sizeof(roots_path), "%s", b->source);
		}
		cJSON_AddItemToArray(list, one);
		cJSON_AddStringToObject(one, "identity", b->identity);
		cJSON_AddStringToObject(one, "source", b->source);
		ca = cJSON_AddArrayToObject(one, "ca_cert");
		for (int i = 0; ca && i < sk_X509_num(b->roots); i++)
			cJSON_AddItemToArray(ca, cert_details(sk_X509_value(b->roots, i), roots_path, now));
		chain = cJSON_AddArrayToObject(one, "cert_chain");
		if (chain)
			cJSON_AddItemToArray(chain, cert_details(b->leaf, chain_path, now));
		for (int i = 0; chain && i < sk_X509_num(b->chain); i++)
			cJSON_AddItemToArray(chain, cert_details(sk_X509_value(b->chain, i), chain_path, now));
	}
	if (server.snap)
		cJSON_AddNumberToObject(root, "generation", (double)server.snap->generation);
	txt = cJSON_Print(root);
	if (txt) {
		sb_printf(sb, "%s\n", txt);
		free(txt);
	} else {
		sb->oom = true;
	}
	cJSON_Delete(root);
}

static bool
path_is(const struct admin_req *r, const char *p)
{
	return r->path_len == strlen(p) && memcmp(r->path, p, r->path_len) == 0;
}

static bool
query_has(const struct admin_req *r, const char *kv)
{
	size_t n = strlen(kv);

	for (const char *p = r->query, *end = r->query + r->query_len; p && p < end;) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		size_t len = (size_t)((amp ? amp : end) - p);
		if (len == n && memcmp(p, kv, n) == 0)
			return true;
		p = amp ? amp + 1 : end;
	}
	return false;
}

static void
respond(struct admin_conn *c, int status, const char *ctype, struct strbuf *body, bool head)
{
	static const struct { int code; const char *text; } reasons[] = {
		{ 200, "OK" }, { 400, "Bad Request" }, { 403, "Forbidden" }, { 404, "Not Found" },
		{ 405, "Method Not Allowed" }, { 500, "Internal Server Error" }, { 503, "Service Unavailable" },
	};
	const char *reason = "";

	if (body->oom) {
		status = 500;
		sb_free(body);
		sb_printf(body, "out of memory\n");
		ctype = "text/plain";
	}
	for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
		if (reasons[i].code == status)
			reason = reasons[i].text;
	sb_printf(&c->out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
	    "Cache-Control: no-cache\r\nConnection: close\r\n\r\n", status, reason, ctype, body->len);
	if (!head && body->len)
		sb_append(&c->out, body->p, body->len);
	sb_free(body);
}

int
admin_logging(const char *query, size_t query_len, bool post, struct strbuf *body)
{
	/* Checked whole first, applied after: a bad request changes nothing. */
	enum log_level level = LL_INFO;
	enum accesslog_encoding enc = AL_TEXT;
	bool set_level = false, set_al = false, al_on = false, set_enc = false;
	int rc;

	if (query && query_len && !post) {
		sb_printf(body, "/logging changes state: use POST\n");
		return 405;
	}
	for (const char *p = query, *end = query ? query + query_len : NULL; p && p < end;) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *kv_end = amp ? amp : end;
		const char *eq = memchr(p, '=', (size_t)(kv_end - p));
		char key[32], val[32];
		size_t kl = eq ? (size_t)(eq - p) : 0, vl = eq ? (size_t)(kv_end - eq - 1) : 0;

		if (kv_end == p) {	/* "a&&b", a trailing '&' */
			p = kv_end + 1;
			continue;
		}
		if (!eq || kl >= sizeof(key) || vl >= sizeof(val)) {
			sb_printf(body, "bad parameter \"%.*s\": expected level=, access_log= or access_log_encoding=\n",
			    (int)((size_t)(kv_end - p) > 64 ? 64 : (size_t)(kv_end - p)), p);
			return 400;
		}
		memcpy(key, p, kl);
		key[kl] = 0;
		memcpy(val, eq + 1, vl);
		val[vl] = 0;
		for (char *v = val; *v; v++)	/* echoed below: nothing that is not printable */
			if ((unsigned char)*v < 0x20 || (unsigned char)*v >= 0x7f)
				*v = '?';
		if (strcmp(key, "level") == 0) {
			if (log_level_parse(val, &level) < 0) {
				sb_printf(body, "unknown level \"%s\": error, warn, info, debug or trace\n", val);
				return 400;
			}
			set_level = true;
		} else if (strcmp(key, "access_log") == 0) {
			if (strcmp(val, "on") != 0 && strcmp(val, "off") != 0) {
				sb_printf(body, "access_log=%s: expected on or off\n", val);
				return 400;
			}
			set_al = true;
			al_on = strcmp(val, "on") == 0;
		} else if (strcmp(key, "access_log_encoding") == 0) {
			if (accesslog_encoding_parse(val, &enc) < 0) {
				sb_printf(body, "access_log_encoding=%s: expected json or text\n", val);
				return 400;
			}
			set_enc = true;
		} else {
			sb_printf(body, "unknown parameter \"%s\": level, access_log or access_log_encoding\n", key);
			return 400;
		}
		p = kv_end + 1;
	}
	if (set_level) {
		__atomic_store_n(&log_threshold, level, __ATOMIC_RELAXED);
		log_info("/logging: log level %s", log_level_str(level));
	}
	if (set_enc)
		accesslog_set_encoding(enc);
	if (set_al) {
		if ((rc = accesslog_set_enabled(al_on)) < 0) {
			sb_printf(body, "access log: cannot open /dev/stdout: %s\n", strerror(-rc));
			return 500;
		}
		log_info("/logging: access log %s", al_on ? "on" : "off");
	}
	sb_printf(body, "active loggers:\n  outrigger: %s\n",
	    log_level_str((enum log_level)__atomic_load_n(&log_threshold, __ATOMIC_RELAXED)));
	sb_printf(body, "access log: %s\n  destination: %s\n  encoding: %s\n", accesslog_on() ? "on" : "off",
	    *accesslog_destination() ? accesslog_destination() : "(none)",
	    accesslog_encoding_str((enum accesslog_encoding)__atomic_load_n(&accesslog_encoding, __ATOMIC_RELAXED)));
	return 200;
}

/* 15020's Prometheus body before the app's: pilot-agent's own families
 * (istio_agent_*: the scrapes and the app's failures, which dashboards and
 * alerts know by these names) and then ours, as pilot-agent puts its own
 * metrics before Envoy's. */
static void
render_status_metrics(struct strbuf *sb)
{
	prom_family(sb, "istio_agent_scrapes_total", "The total number of scrapes.", METRIC_COUNTER);
	prom_sample(sb, "istio_agent_scrapes_total", NULL, server.stats[SM_STATUS_SCRAPES]);
	prom_family(sb, "istio_agent_scrape_failures_total", "The total number of failed scrapes.", METRIC_COUNTER);
	prom_sample(sb, "istio_agent_scrape_failures_total", "type=\"application\"",
	    server.stats[SM_APP_SCRAPE_FAILURES]);
	admin_render_prometheus(sb);
}

/* pilot-agent answers 15020 in the text format (FmtText) unless the app
 * answered OpenMetrics; we always ask the app for the text format. */
#define STATUS_PROM_CTYPE "text/plain; version=0.0.4; charset=utf-8"

static void
status_respond(struct admin_conn *c, const struct strbuf *app)
{
	struct strbuf body = { 0 };

	render_status_metrics(&body);
	if (app && app->len)
		sb_append(&body, app->p, app->len);
	if (app && app->oom)
		body.oom = true;
	respond(c, 200, STATUS_PROM_CTYPE, &body, c->head);
}

/* The app scrape ended: every waiting 15020 request gets our metrics and
 * the bodies of the targets that answered; each failed target is counted
 * once per scrape (pilot-agent's AppScrapeErrors) and logged. */
static void
app_scrape_done(struct appscrape *s, void *arg)
{
	struct strbuf app = { 0 };

	(void)arg;
	app_job = NULL;
	for (unsigned i = 0; i < appscrape_ntargets(s); i++) {
		const struct strbuf *b = appscrape_body(s, i);

		if (b && app.len + b->len + 1 <= APPSCRAPE_MERGED_MAX) {
			appscrape_append_body(&app, b->p, b->len);
			continue;
		}
		server.stats[SM_APP_SCRAPE_FAILURES]++;
		log_warn("app metrics 127.0.0.1:%u%s: %s; serving the proxy's own", app_cfg.t[i].port,
		    app_cfg.t[i].path, b ? "the targets' bodies together exceed 16 MiB" : appscrape_error(s, i));
	}
	for (struct admin_conn *c = conns, *next; c; c = next) {
		next = c->next;
		if (!c->scraping)
			continue;
		c->scraping = false;
		status_respond(c, &app);
		ev_io_stop(admin_loop, &c->io);
		ev_io_set(&c->io, c->fd, EV_WRITE);
		ev_io_start(admin_loop, &c->io);
		conn_write(c);	/* may free c */
	}
	sb_free(&app);
}

/* The client is on the loopback (127/8, ::1, or 127/8 mapped in IPv6). */
static bool
peer_is_loopback(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
		return false;
	if (ss.ss_family == AF_INET)
		return (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127;
	if (ss.ss_family == AF_INET6) {
		const struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
		return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
	}
	return false;
}

/* GET /stats/prometheus on 15020. With scrape targets the answer waits for
 * the app (the connection's watcher stopped), within statusScrapeTimeout or
 * the scraper's X-Prometheus-Scrape-Timeout-Seconds if shorter. */
static void
status_stats(struct admin_conn *c, bool head)
{
	double timeout = server.snap ? server.snap->cfg.status_scrape_timeout_ms / 1000.0 : 10.0;
	char ua[256] = "", th[32] = "";
	const char *v;
	size_t n;

	c->head = head;
	if (server.snap && server.snap->cfg.metrics_localhost_only && !peer_is_loopback(c->fd)) {
		struct strbuf body = { 0 };
		/* pilot-agent's METRICS_LOCALHOST_ACCESS_ONLY answer. */
		sb_printf(&body, "Only requests from localhost are allowed\n");
		respond(c, 403, "text/plain", &body, head);
		return;
	}
	server.stats[SM_STATUS_SCRAPES]++;
	if (!app_cfg.ntargets) {
		status_respond(c, NULL);
		return;
	}
	if (!app_job) {
		if ((v = admin_req_header(c->in, c->inlen, "X-Prometheus-Scrape-Timeout-Seconds", &n)) &&
		    n < sizeof(th) && strspn(v, "0123456789.") >= n) {
			double t;
			memcpy(th, v, n);
			th[n] = '\0';
			t = strtod(th, NULL);
			if (t > 0 && t < timeout)
				timeout = t;
		} else {
			th[0] = '\0';
		}
		if ((v = admin_req_header(c->in, c->inlen, "User-Agent", &n)) && n < sizeof(ua)) {
			for (size_t i = 0; i < n; i++)
				ua[i] = (unsigned char)v[i] < ' ' || v[i] == 0x7f ? ' ' : v[i];
			ua[n] = '\0';
		}
		if (!(app_job = appscrape_start(admin_loop, &app_cfg, timeout, ua, th, app_scrape_done, NULL))) {
			server.stats[SM_APP_SCRAPE_FAILURES]++;
			status_respond(c, NULL);
			return;
		}
	}
	c->scraping = true;
	ev_io_stop(admin_loop, &c->io);
	ev_timer_stop(admin_loop, &c->timer);
	ev_timer_set(&c->timer, timeout + ADMIN_TIMEOUT, 0.);
	ev_timer_start(admin_loop, &c->timer);
}

static void
handle(struct admin_conn *c, const struct admin_req *r)
{
	struct strbuf body = { 0 };
	bool head = r->method_len == 4 && memcmp(r->method, "HEAD", 4) == 0;
	bool get = r->method_len == 3 && memcmp(r->method, "GET", 3) == 0;
	bool post = r->method_len == 4 && memcmp(r->method, "POST", 4) == 0;
	/* A certificate source that has delivered nothing yet: not ready. */
	bool no_cert = certsrc_active() && !(server.snap && server.snap->certs);
	/* xDS: the first response of each wildcard type (or the state file). */
	const char *xds_wait = xds_waiting_for();
	bool ready = server.live && !server.draining && !no_cert && !xds_wait;

	/* Only on the admin port (loopback): 15021, 15090 and 15020 listen on
	 * every address, and /logging changes state (found merging the status
	 * port: 15090 took POST /logging from anywhere). */
	if (post && c->port == PORT_ADMIN && path_is(r, "/logging")) {
		int status = admin_logging(r->query, r->query_len, true, &body);
		respond(c, status, "text/plain", &body, false);
		return;
	}
	if (!get && !head) {
		sb_printf(&body, "only GET and HEAD%s\n", path_is(r, "/logging") ? " (and POST for /logging)" : "");
		respond(c, 405, "text/plain", &body, false);
		return;
	}
	if (c->port == PORT_PROM) {
		/* Envoy's 15090 serves its stats at this path (Istio's scrape
		 * annotations and pilot-agent's merge read it). */
		if (path_is(r, "/stats/prometheus")) {
			admin_render_prometheus(&body);
			respond(c, 200, "text/plain; version=0.0.4", &body, head);
		} else {
			sb_printf(&body, "not found\n");
			respond(c, 404, "text/plain", &body, head);
		}
		return;
	}
	if (c->port == PORT_HEALTH || c->port == PORT_STATUS) {
		if (path_is(r, "/healthz/ready")) {
			/* pilot-agent serves its readiness on 15020 at this path too. */
			sb_printf(&body, "%s", ready ? "" : server.draining ? "draining\n" :
			    no_cert && server.live ? "waiting for the workload certificate\n" :
			    xds_wait && server.live ? xds_wait : "not ready\n");
			if (!ready && xds_wait && server.live && !server.draining && !no_cert)
				sb_printf(&body, "\n");
			respond(c, ready ? 200 : 503, "text/plain", &body, head);
		} else if (c->port == PORT_STATUS && (path_is(r, "/stats/prometheus") || path_is(r, "/metrics"))) {
			/* pilot-agent's handleStats, on both of its paths. */
			status_stats(c, head);
		} else {
			sb_printf(&body, "not found\n");
			respond(c, 404, "text/plain", &body, head);
		}
		return;
	}
	if (path_is(r, "/ready") || path_is(r, "/healthz/ready")) {
		/* Envoy's /ready answers the server state: LIVE, DRAINING, PRE_INITIALIZING. */
		sb_printf(&body, "%s\n", ready ? "LIVE" : server.draining ? "DRAINING" : "PRE_INITIALIZING");
		respond(c, ready ? 200 : 503, "text/plain", &body, head);
	} else if (path_is(r, "/stats")) {
		bool json = query_has(r, "format=json"), prom = query_has(r, "format=prometheus");
		admin_render_stats(&body, json ? "json" : prom ? "prometheus" : "text");
		respond(c, 200, json ? "application/json" : "text/plain; charset=utf-8", &body, head);
	} else if (path_is(r, "/stats/prometheus")) {
		admin_render_stats(&body, "prometheus");
		respond(c, 200, "text/plain; version=0.0.4", &body, head);
	} else if (path_is(r, "/config_dump")) {
		render_config_dump(&body);
		respond(c, 200, "application/json", &body, head);
	} else if (path_is(r, "/certs")) {
		render_certs(&body);
		respond(c, 200, "application/json", &body, head);
	} else if (path_is(r, "/logging")) {
		int status = admin_logging(r->query, r->query_len, false, &body);
		respond(c, status, "text/plain", &body, head);
	} else if (path_is(r, "/")) {
		sb_printf(&body, "outrigger admin\n  /ready\n  /stats[?format=json|prometheus]\n"
		    "  /stats/prometheus\n  /config_dump\n  /certs\n"
		    "  /logging (POST ?level=, ?access_log=on|off, ?access_log_encoding=json|text)\n");
		respond(c, 200, "text/plain", &body, head);
	} else {
		sb_printf(&body, "not found\n");
		respond(c, 404, "text/plain", &body, head);
	}
}

static void
conn_free(struct admin_conn *c)
{
	ev_io_stop(admin_loop, &c->io);
	ev_timer_stop(admin_loop, &c->timer);
	close(c->fd);
	sb_free(&c->out);
	if (c->prev)
		c->prev->next = c->next;
	else
		conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	nconns[c->port]--;
	free(c);
}

static void
conn_write(struct admin_conn *c)
{
	while (c->outoff < c->out.len) {
		ssize_t n = send(c->fd, c->out.p + c->outoff, c->out.len - c->outoff, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			conn_free(c);
			return;
		}
		c->outoff += (size_t)n;
	}
	/* Answered. Closing with unread input (a pipelined request, a body we
	 * did not read) would reset and could drop the answer: send our FIN and
	 * drain the client until its FIN or the connection's timer. */
	shutdown(c->fd, SHUT_WR);
	c->closing = true;
	ev_io_stop(admin_loop, &c->io);
	ev_io_set(&c->io, c->fd, EV_READ);
	ev_io_start(admin_loop, &c->io);
}

static void
conn_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct admin_conn *c = io->data;
	struct admin_req r;
	ssize_t n;
	int rc;

	if (c->closing) {
		char sink[1024];
		n = recv(c->fd, sink, sizeof(sink), 0);
		if (n <= 0 && !(n < 0 && (errno == EAGAIN || errno == EINTR)))
			conn_free(c);
		return;
	}
	if (c->out.len) {
		conn_write(c);
		return;
	}
	n = recv(c->fd, c->in + c->inlen, sizeof(c->in) - c->inlen, 0);
	if (n <= 0) {
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		conn_free(c);
		return;
	}
	/* Parse once the head is whole: look for its end only in what is new
	 * (and the 3 bytes before it), not from byte 0 on every read. */
	size_t from = c->inlen > 3 ? c->inlen - 3 : 0;
	c->inlen += (size_t)n;
	if (!memmem(c->in + from, c->inlen - from, "\n\n", 2) &&
	    !memmem(c->in + from, c->inlen - from, "\n\r\n", 3) && c->inlen < sizeof(c->in))
		return;
	rc = admin_parse_request(c->in, c->inlen, &r);
	if (rc == -EAGAIN)
		return;
	if (rc < 0) {
		struct strbuf body = { 0 };
		sb_printf(&body, "bad request\n");
		respond(c, 400, "text/plain", &body, false);
	} else {
		handle(c, &r);
		/* 15020 waiting for the app: answered by app_scrape_done. */
		if (c->scraping)
			return;
	}
	ev_io_stop(loop, &c->io);
	ev_io_set(&c->io, c->fd, EV_WRITE);
	ev_io_start(loop, &c->io);
	conn_write(c);
}

static void
conn_timeout_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	conn_free(t->data);
}

/* Port full: make room by closing the oldest connection on it that is not
 * being answered: one already answered (draining), or one that has not sent a
 * whole request (a slow or idle client). */
static bool
evict_idle(enum admin_port port)
{
	struct admin_conn *oldest = NULL;

	for (struct admin_conn *c = conns; c; c = c->next)
		if (c->port == port && (c->closing || (c->out.len == 0 && !c->scraping)))
			oldest = c;
	if (!oldest)
		return false;
	conn_free(oldest);
	return true;
}

static void
admin_accept_resume_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct admin_listener *l = t->data;

	ev_io_start(loop, &l->io);
}

static void
admin_accept_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct admin_listener *l = io->data;

	for (int i = 0; i < 16; i++) {
		int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				/* The connection stays queued; a level-triggered watcher
				 * would spin on it, so pause (one warning a second). */
				if (ev_now(loop) - last_accept_warning >= 1.0) {
					log_warn("admin accept: %s; pausing", strerror(errno));
					last_accept_warning = ev_now(loop);
				}
				ev_io_stop(loop, &l->io);
				ev_timer_set(&l->pause, ADMIN_ACCEPT_PAUSE, 0.);
				ev_timer_start(loop, &l->pause);
			}
			return;
		}
		if (nconns[l->port] >= ADMIN_MAX_CONNS && !evict_idle(l->port)) {
			close(fd);
			continue;
		}
		struct admin_conn *c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		c->port = l->port;
		ev_io_init(&c->io, conn_io_cb, fd, EV_READ);
		c->io.data = c;
		ev_timer_init(&c->timer, conn_timeout_cb, l->port == PORT_HEALTH ? HEALTH_TIMEOUT : ADMIN_TIMEOUT, 0.);
		c->timer.data = c;
		ev_io_start(loop, &c->io);
		ev_timer_start(loop, &c->timer);
		c->next = conns;
		if (conns)
			conns->prev = c;
		conns = c;
		nconns[c->port]++;
	}
}

static int
admin_listen(const char *addr, unsigned port, enum admin_port kind, bool optional, char *err, size_t errlen)
{
	struct sockaddr_storage sa;
	int fd;

	if (sock_addr_parse(addr, (uint16_t)port, &sa) < 0) {
		snprintf(err, errlen, "admin address %s: not a numeric IP address", addr);
		return -EINVAL;
	}
	if (nlisteners == sizeof(listeners) / sizeof(listeners[0])) {
		snprintf(err, errlen, "admin: more listeners than slots");
		return -ENOSPC;
	}
	fd = sock_listen(&sa, 64, false, false);
	if (fd < 0) {
		if (optional)
			return 0;
		snprintf(err, errlen, "%s listener on %s port %u: %s", kind == PORT_ADMIN ? "admin" :
		    kind == PORT_PROM ? "prometheus" : kind == PORT_HEALTH ? "health" : "status",
		    addr, port, strerror(-fd));
		return fd;
	}
	struct admin_listener *l = &listeners[nlisteners++];
	l->fd = fd;
	l->port = kind;
	ev_io_init(&l->io, admin_accept_cb, fd, EV_READ);
	l->io.data = l;
	ev_init(&l->pause, admin_accept_resume_cb);
	l->pause.data = l;
	ev_io_start(admin_loop, &l->io);
	return 0;
}

int
admin_start(struct ev_loop *loop, const char *admin_addr, unsigned admin_port, unsigned health_port,
    unsigned prom_port, unsigned status_port, const struct appscrape_cfg *app, char *err, size_t errlen)
{
	int rc;

	admin_loop = loop;
	if (app)
		app_cfg = *app;
	else
		memset(&app_cfg, 0, sizeof(app_cfg));
	/* 15020 on every address, as pilot-agent listens on ":15020". */
	if ((rc = admin_listen(admin_addr, admin_port, PORT_ADMIN, false, err, errlen)) < 0 ||
	    (rc = admin_listen("0.0.0.0", health_port, PORT_HEALTH, false, err, errlen)) < 0 ||
	    (rc = admin_listen("::", health_port, PORT_HEALTH, true, err, errlen)) < 0 ||
	    (prom_port && (rc = admin_listen("0.0.0.0", prom_port, PORT_PROM, false, err, errlen)) < 0) ||
	    (prom_port && (rc = admin_listen("::", prom_port, PORT_PROM, true, err, errlen)) < 0) ||
	    (status_port && (rc = admin_listen("0.0.0.0", status_port, PORT_STATUS, false, err, errlen)) < 0) ||
	    (status_port && (rc = admin_listen("::", status_port, PORT_STATUS, true, err, errlen)) < 0)) {
		admin_stop();
		return rc;
	}
	return 0;
}

void
admin_stop(void)
{
	appscrape_cancel(app_job);
	app_job = NULL;
	while (conns)
		conn_free(conns);
	for (unsigned i = 0; i < nlisteners; i++) {
		ev_io_stop(admin_loop, &listeners[i].io);
		ev_timer_stop(admin_loop, &listeners[i].pause);
		close(listeners[i].fd);
	}
	nlisteners = 0;
}
