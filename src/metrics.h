/* metrics: every counter, gauge and histogram is defined once here; the lists
 * yield the enums, the names, the kinds, the help text and the exposition
 * formats. Each worker owns its counters (no atomics or locks on the hot path);
 * a scrape sums them. */
#ifndef OR_METRICS_H
#define OR_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "strbuf.h"

/* The capture listeners. */
#define LISTENERS(X) \
	X(OUTBOUND, "outbound") \
	X(INBOUND, "inbound") \
	X(HBONE, "hbone")

enum listener_kind {
#define X(e, name) LST_##e,
	LISTENERS(X)
#undef X
	LST__COUNT
};

/* Per listener, per worker. Names follow Envoy's listener/tcp_proxy stats
 * where one exists, so dashboards read them the same way. */
#define LISTENER_METRICS(X) \
	X(DOWNSTREAM_CX_TOTAL, downstream_cx_total, COUNTER, "Connections accepted") \
	X(DOWNSTREAM_CX_ACTIVE, downstream_cx_active, GAUGE, "Connections open now") \
	X(DOWNSTREAM_CX_DESTROY, downstream_cx_destroy, COUNTER, "Connections closed") \
	X(DOWNSTREAM_CX_RX_BYTES_TOTAL, downstream_cx_rx_bytes_total, COUNTER, "Bytes received from downstream and sent upstream") \
	X(DOWNSTREAM_CX_TX_BYTES_TOTAL, downstream_cx_tx_bytes_total, COUNTER, "Bytes sent to downstream") \
	X(UPSTREAM_CX_CONNECT_FAIL, upstream_cx_connect_fail, COUNTER, "Upstream connects refused or unreachable") \
	X(UPSTREAM_CX_CONNECT_TIMEOUT, upstream_cx_connect_timeout, COUNTER, "Upstream connects that timed out") \
	X(UPSTREAM_CX_RESET, upstream_cx_reset, COUNTER, "Upstream connections reset mid-stream") \
	X(DOWNSTREAM_CX_RESET, downstream_cx_reset, COUNTER, "Downstream connections reset mid-stream") \
	X(DOWNSTREAM_CX_IDLE_TIMEOUT, downstream_cx_idle_timeout, COUNTER, "Connections closed by the idle timeout") \
	X(DOWNSTREAM_CX_NO_ORIGINAL_DST, downstream_cx_no_original_dst, COUNTER, "Connections refused: no original destination (not redirected)") \
	X(DOWNSTREAM_CX_OVERFLOW, downstream_cx_overflow, COUNTER, "Connections refused (accepted and reset at once) for lack of descriptors or memory, one per connection") \
	X(UPSTREAM_CX_OVERFLOW, upstream_cx_overflow, COUNTER, "Accepted connections reset because no descriptor or memory was left for the upstream socket") \
	X(DOWNSTREAM_CX_DRAINED, downstream_cx_drained, COUNTER, "Connections still open when the drain period ended") \
	X(DOWNSTREAM_CX_NO_ROUTE, downstream_cx_no_route, COUNTER, "Outbound connections refused under REGISTRY_ONLY: the destination is no service or workload of the mesh (Envoy's BlackHoleCluster)") \
	X(UPSTREAM_CX_NONE_HEALTHY, upstream_cx_none_healthy, COUNTER, "Connections to a service VIP refused: the port has no healthy endpoint, or the service has no such port") \
	X(UPSTREAM_CX_CONNECT_RETRY, upstream_cx_connect_retry, COUNTER, "Failed upstream connects retried on the service's next endpoint") \
	X(UPSTREAM_CX_CONNECT_ATTEMPTS_EXCEEDED, upstream_cx_connect_attempts_exceeded, COUNTER, "Connections to a service reset after their last connect attempt failed") \
	/* Outbound Istio mTLS (tunnel.c stage_connect): the upstream handshakes. */ \
	X(UPSTREAM_CX_TLS_HANDSHAKE, upstream_cx_tls_handshake, COUNTER, "Upstream Istio mTLS handshakes completed (the peer's SPIFFE ID verified)") \
	X(UPSTREAM_CX_TLS_RESUMED, upstream_cx_tls_resumed, COUNTER, "Upstream Istio mTLS handshakes that resumed a session (no certificate exchange)") \
	X(UPSTREAM_CX_TLS_HANDSHAKE_FAIL, upstream_cx_tls_handshake_fail, COUNTER, "Upstream Istio mTLS handshakes that failed (also counted as a connect failure; the reason below)") \
	X(UPSTREAM_CX_TLS_FAIL_PROTOCOL, upstream_cx_tls_fail_protocol, COUNTER, "Upstream mTLS failures: not TLS, a bad record, or no shared version, cipher or group") \
	X(UPSTREAM_CX_TLS_FAIL_NO_CERT, upstream_cx_tls_fail_no_cert, COUNTER, "Upstream mTLS failures: the peer sent no certificate") \
	X(UPSTREAM_CX_TLS_FAIL_UNTRUSTED, upstream_cx_tls_fail_untrusted, COUNTER, "Upstream mTLS failures: the peer's chain does not lead to the mesh roots") \
	X(UPSTREAM_CX_TLS_FAIL_EXPIRED, upstream_cx_tls_fail_expired, COUNTER, "Upstream mTLS failures: the peer's certificate is expired or not yet valid") \
	X(UPSTREAM_CX_TLS_FAIL_IDENTITY, upstream_cx_tls_fail_identity, COUNTER, "Upstream mTLS failures: the peer's SPIFFE ID is missing, of another trust domain, or not the one expected") \
	X(UPSTREAM_CX_TLS_FAIL_IO, upstream_cx_tls_fail_io, COUNTER, "Upstream mTLS failures: the connection failed, closed or timed out during the handshake") \
	X(UPSTREAM_CX_TLS_NO_LOCAL_CERT, upstream_cx_tls_no_local_cert, COUNTER, "Connections to an Istio-mTLS peer refused because this proxy has no certificate yet (never sent in plaintext)") \
	X(UPSTREAM_CX_PROXY_PROTOCOL, upstream_cx_proxy_protocol, COUNTER, "App connections that began with a PROXY protocol v2 header (applicationTunnel PROXY, HBONE inbound)") \
	X(UPSTREAM_CX_PROXY_PROTOCOL_FAIL, upstream_cx_proxy_protocol_fail, COUNTER, "App connections reset because their PROXY protocol v2 header could not be built or sent whole") \
	/* Outbound HBONE (tunnel.c stage_connect_hbone, hbone_pool.c). */ \
	X(UPSTREAM_CX_HBONE, upstream_cx_hbone, COUNTER, "Upstream HBONE CONNECT streams established (200 from the peer's 15008, its SPIFFE ID verified)") \
	X(UPSTREAM_CX_HBONE_REFUSED, upstream_cx_hbone_refused, COUNTER, "Upstream HBONE CONNECTs answered with another status than 2xx (also counted as a connect failure)") \
	X(UPSTREAM_CX_HBONE_FAIL, upstream_cx_hbone_fail, COUNTER, "Upstream HBONE streams whose pooled connection failed (TCP, TLS, identity, h2) or whose stream was reset before its response (also counted as a connect failure)") \
	X(UPSTREAM_CX_WAYPOINT, upstream_cx_waypoint, COUNTER, "Outbound connections sent over HBONE to the destination's waypoint (mesh.useWaypoints)") \
	X(UPSTREAM_CX_WAYPOINT_UNKNOWN, upstream_cx_waypoint_unknown, COUNTER, "Outbound connections refused: the destination names a waypoint the mesh model does not know (never bypassed)") \
	/* Inbound: the sniffing stage and PeerAuthentication (tunnel.c stage_sniff). */ \
	X(DOWNSTREAM_CX_MTLS, downstream_cx_mtls, COUNTER, "Inbound mTLS handshakes completed (the peer's SPIFFE ID verified); the app gets the plaintext") \
	X(DOWNSTREAM_CX_PLAINTEXT, downstream_cx_plaintext, COUNTER, "Inbound plaintext connections passed to the app (PERMISSIVE)") \
	X(DOWNSTREAM_CX_TLS_PASSTHROUGH, downstream_cx_tls_passthrough, COUNTER, "Inbound TLS without an Istio ALPN passed to the app as bytes (PERMISSIVE: app-level TLS from a client outside the mesh)") \
	X(DOWNSTREAM_CX_MTLS_DISABLED, downstream_cx_mtls_disabled, COUNTER, "Inbound connections passed as bytes, unlooked at, because the port's mode is DISABLE") \
	X(DOWNSTREAM_CX_PLAINTEXT_REFUSED, downstream_cx_plaintext_refused, COUNTER, "Inbound plaintext connections reset: the port's mode is STRICT") \
	X(DOWNSTREAM_CX_MTLS_NO_CERT, downstream_cx_mtls_no_cert, COUNTER, "Inbound connections reset because this proxy has no certificate yet: an mTLS attempt (PERMISSIVE) or any connection (STRICT)") \
	X(DOWNSTREAM_CX_SNIFF_TIMEOUT, downstream_cx_sniff_timeout, COUNTER, "Inbound connections whose first bytes did not tell TLS from plaintext within mesh.protocolDetectionTimeout (then plaintext; STRICT: reset), or within proxy.idleTimeout when it is 0s (reset)") \
	X(DOWNSTREAM_CX_TLS_HANDSHAKE_FAIL, downstream_cx_tls_handshake_fail, COUNTER, "Inbound mTLS handshakes that failed (the reason below); the client is reset") \
	X(DOWNSTREAM_CX_TLS_FAIL_PROTOCOL, downstream_cx_tls_fail_protocol, COUNTER, "Inbound mTLS failures: a bad record, or no shared version, cipher or group") \
	X(DOWNSTREAM_CX_TLS_FAIL_NO_CERT, downstream_cx_tls_fail_no_cert, COUNTER, "Inbound mTLS failures: the client sent no certificate") \
	X(DOWNSTREAM_CX_TLS_FAIL_UNTRUSTED, downstream_cx_tls_fail_untrusted, COUNTER, "Inbound mTLS failures: the client's chain does not lead to the mesh roots") \
	X(DOWNSTREAM_CX_TLS_FAIL_EXPIRED, downstream_cx_tls_fail_expired, COUNTER, "Inbound mTLS failures: the client's certificate is expired or not yet valid") \
	X(DOWNSTREAM_CX_TLS_FAIL_IDENTITY, downstream_cx_tls_fail_identity, COUNTER, "Inbound mTLS failures: the client's SPIFFE ID is missing or of another trust domain") \
	X(DOWNSTREAM_CX_TLS_FAIL_IO, downstream_cx_tls_fail_io, COUNTER, "Inbound mTLS failures: the connection failed, closed or timed out during the handshake") \
	/* HBONE (hbone_server.c): the 15008 connections, and each CONNECT stream's answer; each stream answered 200 or 503 is also a connection of this listener above. */ \
	X(HBONE_CX_TOTAL, hbone_cx_total, COUNTER, "HBONE connections accepted (TLS, then HTTP/2); the TLS failures are in downstream_cx_tls_*") \
	X(HBONE_CX_ACTIVE, hbone_cx_active, GAUGE, "HBONE connections (HTTP/2 sessions or handshakes) open now") \
	X(HBONE_CX_PROTOCOL_ERROR, hbone_cx_protocol_error, COUNTER, "HBONE connections ended by an HTTP/2 protocol error, a flood or a keep-alive timeout (only that connection)") \
	X(HBONE_RQ_TOTAL, hbone_rq_total, COUNTER, "HBONE requests (streams) received") \
	X(HBONE_RQ_200, hbone_rq_200, COUNTER, "HBONE CONNECTs answered 200: the app connection is up") \
	X(HBONE_RQ_400, hbone_rq_400, COUNTER, "HBONE requests refused 400: not a CONNECT, :scheme or :path present, a bad authority, or not this pod's address") \
	X(HBONE_RQ_401, hbone_rq_401, COUNTER, "HBONE CONNECTs refused 401: authorization denied") \
	X(DOWNSTREAM_CX_AUTHZ_DENIED, downstream_cx_authz_denied, COUNTER, "Inbound connections reset: authorization denied") \
	X(DOWNSTREAM_CX_AUTHZ_NO_WORKLOAD, downstream_cx_authz_no_workload, COUNTER, "Inbound connections and HBONE streams denied because no WDS Workload is known at the destination while NAMESPACE or WORKLOAD_SELECTOR policies exist (also in downstream_cx_authz_denied / hbone_rq_401)") \
	X(DOWNSTREAM_CX_AUTHZ_CLOSED, downstream_cx_authz_closed, COUNTER, "Open connections reset because a policy change now denies them (authorization.closeDeniedConnections)") \
	X(HBONE_RQ_503, hbone_rq_503, COUNTER, "HBONE CONNECTs answered 503: the app refused, timed out or could not be reached")

enum listener_metric {
#define X(e, name, kind, help) LM_##e,
	LISTENER_METRICS(X)
#undef X
	LM__COUNT
};

/* Per worker: object pools. */
#define WORKER_METRICS(X) \
	X(PIPES_IN_USE, pipes_in_use, GAUGE, "Kernel pipes holding bytes in flight (splice)") \
	X(PIPES_CACHED, pipes_cached, GAUGE, "Empty pipes kept for reuse") \
	X(CHUNKS_IN_USE, chunks_in_use, GAUGE, "Buffer chunks holding bytes in flight") \
	X(CHUNKS_CACHED, chunks_cached, GAUGE, "Empty buffer chunks kept for reuse") \
	X(SESSIONS_IN_USE, sessions_in_use, GAUGE, "Proxied connection objects allocated") \
	X(HBONE_CLIENT_CX_ACTIVE, hbone_client_cx_active, GAUGE, "Pooled HBONE client connections (to peers' 15008) open or being established") \
	X(HBONE_CLIENT_CX_TOTAL, hbone_client_cx_total, COUNTER, "HBONE client connections dialled (each shared by up to 100 streams)") \
	X(HBONE_CLIENT_CX_FAIL, hbone_client_cx_fail, COUNTER, "HBONE client connections that failed before their HTTP/2 session was up (TCP, TLS, identity, ALPN, timeout)") \
	X(HBONE_CLIENT_CX_IDLE_RELEASED, hbone_client_cx_idle_released, COUNTER, "HBONE client connections closed after proxy.hbonePoolIdleTimeout without a stream") \
	X(FD_BUDGET, fd_budget, GAUGE, "Descriptors this worker may hold for connections and pipes (share of the open-files limit)") \
	X(ISTIO_METRICS_OVERFLOW_TOTAL, istio_metrics_overflow_total, COUNTER, "Connections whose Istio label set did not fit in the worker's table (telemetry.maxLabelSets): left out of the istio_tcp_* families")

enum worker_metric {
#define X(e, name, kind, help) WM_##e,
	WORKER_METRICS(X)
#undef X
	WM__COUNT
};

/* Process-wide, written by the control thread only (the admin server runs on
 * the same thread). Shown as server.<name> and outrigger_server_<name>. */
#define SERVER_METRICS(X) \
	X(CONFIG_GENERATION, config_generation, GAUGE, "Generation of the configuration in use (1 at start, +1 per applied reload)") \
	X(CONFIG_RELOAD_SUCCESS, config_reload_success, COUNTER, "Configuration reloads applied (SIGHUP)") \
	X(CONFIG_RELOAD_FAILURE, config_reload_failure, COUNTER, "Configuration reloads refused (unreadable or invalid file); the running configuration stays") \
	X(CONFIG_RESTART_PENDING, config_restart_pending, GAUGE, "1 when the last applied reload changed keys that only a restart applies (ports, concurrency, interception mode, admin address)") \
	X(MODEL_BUILDS, model_builds, COUNTER, "Snapshots built from the configuration and the mesh resources and published (start-up, every applied reload)") \
	X(RESOURCES_REFUSED, resources_refused, COUNTER, "Mesh resources refused (did not decode or validate), counted at every build that refused them; the others applied") \
	X(RESOURCES_ADDRESS, resources_address, GAUGE, "istio.workload.Address resources (workloads and services) in the snapshot in use") \
	X(RESOURCES_AUTHORIZATION, resources_authorization, GAUGE, "istio.security.Authorization resources in the snapshot in use") \
	X(RESOURCES_PEER_AUTHENTICATION, resources_peer_authentication, GAUGE, "istio.security.v1beta1.PeerAuthentication resources in the snapshot in use") \
	X(RESOURCES_CLUSTER, resources_cluster, GAUGE, "envoy.config.cluster.v3.Cluster resources in the snapshot in use") \
	X(RESOURCES_ENDPOINTS, resources_endpoints, GAUGE, "envoy.config.endpoint.v3.ClusterLoadAssignment resources in the snapshot in use") \
	X(RESOURCES_ROUTE, resources_route, GAUGE, "envoy.config.route.v3.RouteConfiguration resources in the snapshot in use") \
	X(RESOURCES_LISTENER, resources_listener, GAUGE, "envoy.config.listener.v3.Listener resources in the snapshot in use") \
	X(CERT_UPDATES, cert_updates, COUNTER, "Certificates accepted from the certificate source and published (first one and every rotation)") \
	X(CERT_REFUSED, cert_refused, COUNTER, "Certificates refused (bad PEM, key mismatch, expired, not yet valid, no SPIFFE ID, untrusted); the running one serves on") \
	X(CERT_EXPIRY_TIMESTAMP, cert_expiry_timestamp, GAUGE, "notAfter of the certificate in use, seconds since the epoch (0: none)") \
	X(SDS_UPDATES, sds_updates, COUNTER, "SDS responses accepted and ACKed (a changed certificate is also counted in cert_updates)") \
	X(SDS_REJECTED, sds_rejected, COUNTER, "SDS responses NACKed (malformed secret, bad PEM, expired, key mismatch, untrusted); the running certificate serves on") \
	X(SDS_CONNECT_FAIL, sds_connect_fail, COUNTER, "SDS streams that ended before any response (the agent's socket missing, refused, or the stream failed); retried with backoff") \
	X(SDS_CONNECTED, sds_connected, GAUGE, "1 while an SDS stream is up and has answered") \
	X(CA_REQUESTS, ca_requests, COUNTER, "CreateCertificate calls made to the Istio CA (first certificate, rotations, retries)") \
	X(CA_FAILURES, ca_failures, COUNTER, "Istio CA calls that gave no usable certificate (unreachable, refused, deadline, garbage, refused chain); retried with backoff") \
	/* The xDS client (xds.c) and on-demand discovery (ondemand.c). */ \
	X(XDS_CONNECTED, xds_connected, GAUGE, "1 while the ADS stream to the xDS server is up and has answered") \
	X(XDS_CONNECTS, xds_connects, COUNTER, "ADS streams opened (the first and every reconnect)") \
	X(XDS_RECONNECTS, xds_reconnects, COUNTER, "ADS streams that ended and were retried with backoff (server gone, GOAWAY, refused, stream error)") \
	X(XDS_PUSHES, xds_pushes, COUNTER, "xDS responses received (each one ACKed or NACKed)") \
	X(XDS_ACKS, xds_acks, COUNTER, "xDS responses acknowledged (every resource applied)") \
	X(XDS_NACKS, xds_nacks, COUNTER, "xDS responses NACKed (a resource refused, named in error_detail; the good ones applied, the last good state of the others stays)") \
	X(XDS_RX_BYTES, xds_rx_bytes, COUNTER, "Bytes of xDS response messages received") \
	X(XDS_RESOURCES_MISSING, xds_resources_missing, COUNTER, "ClusterLoadAssignments and RouteConfigurations that a Cluster or Listener names and the xDS server did not send within xds.missingTimeout (each once, logged)") \
	X(XDS_BAD_RESPONSES, xds_bad_responses, COUNTER, "xDS responses that did not decode at all (no nonce to NACK by): the stream was ended and reconnected") \
	X(XDS_RESOURCES_REFUSED, xds_resources_refused, COUNTER, "xDS resources refused (did not decode, wrong type, failed validation)") \
	X(XDS_STATE_LOADED, xds_state_loaded, GAUGE, "1 while the resources in use came from the state file (xds.stateFile) and no xDS server has answered since start") \
	X(XDS_STATE_WRITES, xds_state_writes, COUNTER, "Acknowledged xDS states written to xds.stateFile") \
	X(XDS_STATE_WRITE_FAILURES, xds_state_write_failures, COUNTER, "Writes of xds.stateFile that failed (the previous file stays whole)") \
	X(XDS_APPLY_US, xds_apply_us, GAUGE, "Microseconds from the last xDS response arriving to its snapshot being published to the workers") \
	X(ONDEMAND_LOOKUPS, ondemand_lookups, COUNTER, "On-demand lookups sent (one per destination, however many connections wait for it)") \
	X(ONDEMAND_WAITS, ondemand_waits, COUNTER, "Connections that waited for an on-demand lookup") \
	X(ONDEMAND_TIMEOUTS, ondemand_timeouts, COUNTER, "On-demand lookups that did not answer within xds.onDemandTimeout (the connections then follow mesh.outboundTrafficPolicy)") \
	X(ONDEMAND_NOT_FOUND, ondemand_not_found, COUNTER, "On-demand lookups the xDS server answered with no such address") \
	X(ONDEMAND_CACHED, ondemand_cached, GAUGE, "Addresses subscribed on demand now") \
	X(ONDEMAND_EVICTIONS, ondemand_evictions, COUNTER, "Addresses unsubscribed on demand (idle past xds.onDemandIdle or over xds.onDemandCacheSize)") \
	/* The status port's merged metrics (admin.c, appscrape.c). */ \
	X(STATUS_SCRAPES, status_scrapes, COUNTER, "GET /stats/prometheus (or /metrics) requests answered on the status port (proxy.statusPort; istio_agent_scrapes_total there)") \
	X(APP_SCRAPE_FAILURES, app_scrape_failures, COUNTER, "App metrics scrapes (per ISTIO_PROMETHEUS_ANNOTATIONS target) that failed: refused, not 200, malformed, over 10 MiB or past the timeout; the proxy's own metrics were served (istio_agent_scrape_failures_total{type=\"application\"} there)") \
	X(ONDEMAND_QUEUE_FULL, ondemand_queue_full, COUNTER, "Connections to an unknown destination that did not wait for a lookup because the queue to the control thread, or the cache, was full of lookups in flight (they followed mesh.outboundTrafficPolicy at once)")

enum server_metric {
#define X(e, name, kind, help) SM_##e,
	SERVER_METRICS(X)
#undef X
	SM__COUNT
};


/* Per listener, per worker: histograms. Bucket bounds are HIST_BOUNDS_MS;
 * names follow Envoy's (upstream_cx_connect_ms is a cluster histogram there). */
#define LISTENER_HISTOGRAMS(X) \
	X(UPSTREAM_CX_CONNECT_MS, upstream_cx_connect_ms, HISTOGRAM, "Upstream connect time in milliseconds")

enum listener_hist {
#define X(e, name, kind, help) LH_##e,
	LISTENER_HISTOGRAMS(X)
#undef X
	LH__COUNT
};

/* Process-wide (any thread writes, so these use atomic adds). */
#define PROCESS_METRICS(X) \
	X(LOG_LINES_DROPPED, log_lines_dropped, COUNTER, "Log lines dropped because stderr did not keep up") \
	X(LOG_LINES_SUPPRESSED, log_lines_suppressed, COUNTER, "Repeated log lines suppressed by the per-call-site rate limit") \
	X(ACCESS_LOG_DROPPED, access_log_dropped, COUNTER, "Access log lines dropped because the log queue was full") \
	X(TLS_OWN_RECORDS, tls_own_records, COUNTER, "Mesh TLS connections moved to the proxy's own record layer after their TLS 1.3 handshake (OpenSSL's state for them freed)") \
	X(TLS_OPENSSL_RECORDS, tls_openssl_records, COUNTER, "Mesh TLS connections kept on OpenSSL's record layer for good: TLS 1.2, a max_fragment_length, a KeyUpdate before the hand-over, OUTRIGGER_TLS_RECORDS=openssl")

enum process_metric {
#define X(e, name, kind, help) PM_##e,
	PROCESS_METRICS(X)
#undef X
	PM__COUNT
};

enum metric_kind { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

/* Upper bounds of the histogram buckets, in ms (Envoy's default bounds); a
 * last, implicit bucket is +Inf. */
#define HIST_BOUNDS_MS 0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, \
	60000, 300000, 600000, 1800000, 3600000
#define HIST_NBOUNDS 19
extern const double hist_bounds_ms[HIST_NBOUNDS];

/* One histogram of one worker: per-bucket counts (not cumulative; the last is
 * +Inf) and the sum of the observations in microseconds. */
struct hist {
	uint64_t bucket[HIST_NBOUNDS + 1];
	uint64_t sum_us;
};

struct metric_desc {
	const char *name;
	const char *help;
	enum metric_kind kind;
};

extern const char *const listener_names[LST__COUNT];
extern const struct metric_desc listener_metric_desc[LM__COUNT];
extern const struct metric_desc worker_metric_desc[WM__COUNT];
extern const struct metric_desc server_metric_desc[SM__COUNT];
extern const struct metric_desc listener_hist_desc[LH__COUNT];
extern const struct metric_desc process_metric_desc[PM__COUNT];
extern const char *const metric_kind_names[3];	/* "counter", "gauge", "histogram" */

/* Process-wide counters (atomic adds). */
extern uint64_t process_stats[PM__COUNT];

/* 2 * AUTHZ_SLOTS (authz.h checks it). */
#define WORKER_AUTHZ_COUNTERS 2048

/* Counters of one worker. Only that worker writes; the admin thread reads. */
struct worker_stats {
	uint64_t lst[LST__COUNT][LM__COUNT];
	uint64_t w[WM__COUNT];
	struct hist lh[LST__COUNT][LH__COUNT];
	/* Per authorization policy (authz.h's slots): [slot * 2 + verdict]. */
	uint64_t authz[WORKER_AUTHZ_COUNTERS];
};

/* The writer is the only thread that modifies *p, so a relaxed load + store
 * is exact and compiles to a plain add; readers see whole values. */
static inline void
stat_add(uint64_t *p, uint64_t n)
{
	__atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

static inline void
stat_sub(uint64_t *p, uint64_t n)
{
	__atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) - n, __ATOMIC_RELAXED);
}

static inline uint64_t
stat_read(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

/* Record one observation of us microseconds (owner thread only). */
void hist_observe(struct hist *h, uint64_t us);
/* The same for a duration in seconds (negative counts as 0). */
void hist_observe_s(struct hist *h, double seconds);
/* acc += h, read with stat_read (for a scrape summing the workers). */
void hist_accumulate(struct hist *acc, const struct hist *h);

/* Prometheus text exposition (version 0.0.4). `labels` is the inside of the
 * braces (`listener="inbound"`), or NULL. Names are never truncated. */
void prom_family(struct strbuf *sb, const char *name, const char *help, enum metric_kind kind);
void prom_sample(struct strbuf *sb, const char *name, const char *labels, uint64_t v);
/* name_bucket{labels,le="..."} (cumulative), name_sum (ms), name_count. */
void prom_histogram(struct strbuf *sb, const char *name, const char *labels, const struct hist *h);
/* Append v escaped as a label value (backslash, double quote, newline). */
void prom_label_value(struct strbuf *sb, const char *v);

/* A set of named values for the text and JSON formats: names live in one
 * growable buffer, so any length fits. */
struct stat_rows {
	struct strbuf names;
	struct stat_row { size_t off; uint64_t value; } *r;
	size_t n, cap;
	bool oom;
};
void stat_rows_add(struct stat_rows *rs, uint64_t value, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Sort by name and render as "name: value" lines ("text") or {"stats":[...]} ("json"). */
void stat_rows_render(struct stat_rows *rs, struct strbuf *sb, const char *format);
void stat_rows_free(struct stat_rows *rs);

#endif
