/* telemetry: Istio's standard TCP metrics (istio_tcp_connections_opened_total,
 * _closed_total, istio_tcp_received_bytes_total, istio_tcp_sent_bytes_total)
 * with Istio's label set, counted per worker in a bounded label table
 * (ltab.h) and merged on scrape. The labels come from the mesh model: the
 * WDS Workload at each side's address, the service port a connection was
 * routed through, and the SPIFFE IDs of the handshakes. */
#ifndef OR_TELEMETRY_H
#define OR_TELEMETRY_H

#include <stdbool.h>
#include <stdint.h>

#include "strbuf.h"

struct config;
struct mservice;
struct mworkload;
struct sockaddr_storage;
struct tunnel;
struct worker;

/* Istio's label names, in the order ztunnel (src/proxy/metrics.rs,
 * CommonTrafficLabels) encodes them. */
#define TELE_LABELS(X) \
	X(REPORTER, "reporter") \
	X(SRC_WORKLOAD, "source_workload") \
	X(SRC_CANONICAL_SERVICE, "source_canonical_service") \
	X(SRC_CANONICAL_REVISION, "source_canonical_revision") \
	X(SRC_NAMESPACE, "source_workload_namespace") \
	X(SRC_PRINCIPAL, "source_principal") \
	X(SRC_APP, "source_app") \
	X(SRC_VERSION, "source_version") \
	X(SRC_CLUSTER, "source_cluster") \
	X(DST_SERVICE, "destination_service") \
	X(DST_SERVICE_NAMESPACE, "destination_service_namespace") \
	X(DST_SERVICE_NAME, "destination_service_name") \
	X(DST_WORKLOAD, "destination_workload") \
	X(DST_CANONICAL_SERVICE, "destination_canonical_service") \
	X(DST_CANONICAL_REVISION, "destination_canonical_revision") \
	X(DST_NAMESPACE, "destination_workload_namespace") \
	X(DST_PRINCIPAL, "destination_principal") \
	X(DST_APP, "destination_app") \
	X(DST_VERSION, "destination_version") \
	X(DST_CLUSTER, "destination_cluster") \
	X(REQUEST_PROTOCOL, "request_protocol") \
	X(RESPONSE_FLAGS, "response_flags") \
	X(SECURITY_POLICY, "connection_security_policy")

enum tele_label {
#define X(e, s) TL_##e,
	TELE_LABELS(X)
#undef X
	TL__COUNT
};
extern const char *const tele_label_names[TL__COUNT];

/* The four families, in the table's value order. */
enum tele_value { TV_OPENED, TV_CLOSED, TV_RECEIVED, TV_SENT };

/* The facts of one connection that its label set is made of. NULL
 * pointers are facts not known ("unknown", as Istio labels them). */
struct tele_conn {
	bool inbound;			/* reporter "destination" (15006, 15008), else "source" (15001) */
	const struct mworkload *src, *dst;	/* the WDS Workloads of both sides */
	const char *src_principal, *dst_principal;	/* SPIFFE IDs */
	const struct mservice *svc;	/* the destination service */
	const char *cluster;		/* no svc: the Envoy cluster that stands for it
					 * (PassthroughCluster, BlackHoleCluster), or NULL */
	uint32_t rflags;		/* TRF(...) bits */
	bool mtls;			/* the peer side's connection is Istio mTLS or HBONE */
};

/* The label values of c into lab (pointers into c's workloads and
 * services, into flags (TUNNEL_RFLAGS_MAX bytes) or static strings).
 * Pure, for the unit tests. */
void tele_labels(const struct tele_conn *c, const char *lab[TL__COUNT], char *flags);

/* Worker start and end: w->tele (the label table, telemetry.maxLabelSets
 * sets) and the periodic byte report (telemetry.tcpReportingInterval). A
 * worker without a table (unit tests) counts nothing. 0 or -ENOMEM. */
int tele_worker_init(struct worker *w, const struct config *cfg);
void tele_worker_fini(struct worker *w);

/* The tunnel hooks (tunnel.c). tele_arm: the connection reached the
 * connecting stage, so it is reported even if it never forwards (denied,
 * connect failed: opened and closed with its response flags, as ztunnel
 * records them). tele_open: forwarding starts (opened, one label lookup,
 * the entry kept on the tunnel for its bytes). tele_close: the tunnel
 * ends (the bytes not reported yet, closed). */
void tele_arm(struct tunnel *t);
void tele_open(struct tunnel *t);
void tele_close(struct tunnel *t);

/* An HBONE CONNECT that authorization refused (401; no tunnel was made):
 * opened and closed under response_flags RBAC, reporter destination, as
 * ztunnel records a denied connection. src: the HBONE peer; dst: the
 * :authority; local: the workload addressed. Worker thread. */
void tele_denied(struct worker *w, const struct sockaddr_storage *src, const struct sockaddr_storage *dst,
    const char *peer_id, const struct mworkload *local);

/* The istio_tcp_* families of every worker's table, merged, in Prometheus
 * text. Admin thread. */
void tele_render(struct strbuf *sb);

#endif
