/* admin: the control thread's small HTTP/1.1 servers: the admin API
 * (127.0.0.1:15000: /ready, /stats, /stats/prometheus, /config_dump,
 * /logging), the readiness port (15021: /healthz/ready), Envoy's Prometheus
 * port (15090) and pilot-agent's status port (15020: /healthz/ready,
 * /stats/prometheus with the app's metrics merged), one request per
 * connection. */
#ifndef OR_ADMIN_H
#define OR_ADMIN_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>

#include "strbuf.h"

/* A parsed request line; the pointers point into the caller's buffer. */
struct admin_req {
	const char *method;
	size_t method_len;
	const char *path;	/* without the query */
	size_t path_len;
	const char *query;	/* after '?', or NULL */
	size_t query_len;
};

/* Parse an HTTP/1.x request head in buf[0, len). Returns 0 when the head is
 * complete (an empty line seen; lines may end in CRLF or a bare LF) and the
 * request line is valid, -EAGAIN when more bytes are needed, -EINVAL for a
 * malformed request. */
int admin_parse_request(const char *buf, size_t len, struct admin_req *req);

/* The value of header name (case-insensitive; the first one) in the complete
 * request head in buf[0, len), without the whitespace around it, and its
 * length in *vlen; NULL when absent. Points into buf. */
const char *admin_req_header(const char *buf, size_t len, const char *name, size_t *vlen);

/* Render the counters: format "text" (name: value, sorted), "json" or
 * "prometheus" (admin_render_prometheus). */
void admin_render_stats(struct strbuf *sb, const char *format);
/* The Prometheus exposition every port serves at /stats/prometheus (the
 * admin's, 15090's; 15020 merges it with the app's): the outrigger_*
 * counters, then Istio's istio_tcp_* families (telemetry.h). Control
 * thread; sb->oom on allocation failure. */
void admin_render_prometheus(struct strbuf *sb);

struct cJSON;
struct model;

/* The mesh model as /config_dump shows it, added to root: "resources", an
 * object with one list per resource type (model.h's full names, in
 * MODEL_TYPES order, empty lists included) of {"name", "version",
 * "resource"} in name order, the resource in proto3 JSON with its "@type"
 * (json_pb's encoder: a part with no JSON form is an "@error" marker);
 * "indexes", the model's sizes; "encodingErrors", how many markers. 0 or
 * -ENOMEM (root then holds part of it; the caller deletes root). */
int admin_model_to_json(const struct model *m, struct cJSON *root);

/* /logging (Envoy's form): POST sets, from the query, "level=<level>" (the
 * log level, log.h), "access_log=on|off" and "access_log_encoding=
 * json|text" (accesslog.h; the workers see them at their next line), then
 * shows the state as GET does. A GET (or HEAD) with a query is refused with
 * 405, as Envoy refuses state changes but by POST; an unknown parameter or
 * value is 400 and changes nothing. Returns the status; body: the text. */
int admin_logging(const char *query, size_t query_len, bool post, struct strbuf *body);

struct appscrape_cfg;

/* Open the admin and readiness listeners on loop, the Prometheus port
 * (prom_port on 0.0.0.0, GET /stats/prometheus; 0: none), and the status
 * port (status_port on all addresses; 0: none), whose /stats/prometheus
 * merges the app's metrics from app's targets (copied; NULL or none: ours
 * only). Returns 0 or -errno with err set. */
int admin_start(struct ev_loop *loop, const char *admin_addr, unsigned admin_port,
    unsigned health_port, unsigned prom_port, unsigned status_port, const struct appscrape_cfg *app,
    char *err, size_t errlen);
/* Close the listeners and any open admin connections. */
void admin_stop(void);

#endif
