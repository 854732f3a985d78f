/* xds: the ADS client, on the control thread's loop: one gRPC stream
 * (grpc.h) to the xDS server in proxy.discoveryAddress, Delta
 * (DeltaAggregatedResources) by default or state of the world
 * (StreamAggregatedResources, xds.sotw); the subscriptions istiod serves
 * ztunnel and sidecars/waypoints (wildcard Address, Authorization, Cluster,
 * Listener; ClusterLoadAssignment and RouteConfiguration by the names the
 * Clusters and Listeners reference); every response ACKed or NACKed by
 * nonce; reconnect with jittered backoff (10 ms doubling to 15 s);
 * initial_resource_versions on reconnect. Every response goes through the
 * store (xds_store.h) and, when it changed anything, server_set_model(); the
 * last acknowledged state is written to xds.stateFile (xds_state.h). */
#ifndef OR_XDS_H
#define OR_XDS_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "model.h"

#define XDS_DELTA_PATH "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
#define XDS_SOTW_PATH "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
#define XDS_TYPE_PREFIX "type.googleapis.com/"

struct cJSON;

/* Starts the client when cfg names an xDS server (else 0, nothing runs).
 * With xds.stateFile, the state it holds is loaded and published first (a
 * restart with istiod away serves at once, and says so). static_res: the
 * configuration file's resources (references are taken), part of every
 * model built from xDS. 0, or -errno with err (a bad address, an
 * unreadable root certificate). */
int xds_start(struct ev_loop *loop, const struct config *cfg, struct mres *const *static_res,
    size_t nstatic, char *err, size_t errlen);
void xds_stop(void);

/* Whether an xDS server is configured (and the client runs). */
bool xds_active(void);

/* Readiness (/healthz/ready): true when xDS is not active, or every
 * subscribed wildcard type has been ACKed once since start, or the state
 * file was loaded, or xds.readyTimeout passed. */
bool xds_ready(void);
/* What readiness waits for, for the 503 body ("waiting for the first xDS
 * response of istio.workload.Address"), or NULL when ready. */
const char *xds_waiting_for(void);

/* /config_dump's "xds" object: the server, the stream state (connected,
 * since, reconnects, last error) and per type the subscription (wildcard or
 * names), the last ACK/NACK with nonce, version and error. Caller owns it;
 * NULL on OOM or when xDS is not active. */
struct cJSON *xds_dump(void);

/* On demand (xds.onDemand, delta only): add names to, or drop them from,
 * the subscription of type t (resource_names_subscribe / _unsubscribe).
 * The subscription is state: it is sent at once when the stream is up and
 * again on every reconnect. Control thread only. 0 or -ENOMEM; -ENOTSUP
 * under state of the world. */
int xds_subscribe(enum mres_type t, const char *const *names, size_t n);
int xds_unsubscribe(enum mres_type t, const char *const *names, size_t n);

/* SIGHUP: the file's static resources changed (references are taken); the
 * model is rebuilt from them and the xDS state. 0 or -ENOMEM. */
int xds_set_static(struct mres *const *static_res, size_t nstatic);

/* ---- the Node (xds_node.c), pure ---- */

#include "envoy/config/core/v3/base.pb-c.h"

/* The Node of the first request of a stream, as pilot-agent builds its
 * Envoy's from the environment: id "sidecar~<INSTANCE_IP>~<POD_NAME>.
 * <POD_NAMESPACE>~<POD_NAMESPACE>.svc.cluster.local", cluster
 * "<app or workload name>.<ns>", metadata (a Struct of strings, JSON for
 * ISTIO_METAJSON_*) with NAMESPACE, NAME, SERVICE_ACCOUNT, INSTANCE_IPS,
 * LABELS, ISTIO_VERSION, CLUSTER_ID, INTERCEPTION_MODE, ENABLE_HBONE,
 * MESH_ID, WORKLOAD_NAME, ... and every ISTIO_META_<K> as <K>. *out is
 * malloc'd (xds_node_free). 0 or -ENOMEM. */
int xds_node_new(const struct config *cfg, Envoy__Config__Core__V3__Node **out);
void xds_node_free(Envoy__Config__Core__V3__Node *n);
/* The Node's id and cluster alone (the SDS client's Node). */
void xds_node_names(char *id, size_t idlen, char *cluster, size_t clusterlen);
/* This proxy's addresses as pilot-agent lists them: INSTANCE_IP first (when
 * it is an address), then the private addresses of the interfaces that are
 * up (not loopback, not link-local), else "127.0.0.1" ("127.0.0.1,::1" in
 * all). first: the node id's; all: INSTANCE_IPS, comma-separated. */
void xds_node_ips(char *first, size_t firstlen, char *all, size_t alllen);

#endif
