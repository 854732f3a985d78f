/* model: the mesh as the proxy sees it: workloads, services, policies,
 * clusters and endpoints, built from decoded discovery resources (static
 * JSON now, xDS next) into indexes the data path reads without locks. */
#ifndef OR_MODEL_H
#define OR_MODEL_H

#include <netinet/in.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The resource types, in the order /config_dump lists them. The type URL is
 * "type.googleapis.com/" followed by the descriptor's full name. */
#define MODEL_TYPES(X) \
	X(ADDRESS, "istio.workload.Address") \
	X(AUTHORIZATION, "istio.security.Authorization") \
	X(PEER_AUTHENTICATION, "istio.security.v1beta1.PeerAuthentication") \
	X(CLUSTER, "envoy.config.cluster.v3.Cluster") \
	X(ENDPOINTS, "envoy.config.endpoint.v3.ClusterLoadAssignment") \
	X(ROUTE, "envoy.config.route.v3.RouteConfiguration") \
	X(LISTENER, "envoy.config.listener.v3.Listener")

enum mres_type {
#define X(e, name) MRES_##e,
	MODEL_TYPES(X)
#undef X
	MRES__COUNT
};

extern const char *const mres_type_names[MRES__COUNT];	/* full message names */

/* Registers the descriptors of every resource type (and what they embed)
 * with json_pb, for Any. Call once at start-up. 0 or -errno. */
int model_register_types(void);

/* One decoded resource: immutable and reference-counted, so that successive
 * snapshots share what did not change (xDS deltas replace one at a time). */
struct mres {
	unsigned long refs;		/* atomic */
	enum mres_type type;
	char *name;			/* xDS resource name (below) */
	uint32_t hash;			/* of name, for the model's tables (mres_new) */
	char *version;			/* "" for static resources */
	ProtobufCMessage *msg;		/* owned; freed with protobuf_c_message_free_unpacked */
};

/* Wraps a decoded message (ownership passes, also on failure). The name is
 * the one xDS uses: a Workload's uid, a Service's "namespace/hostname", an
 * Authorization's "namespace/name", a Cluster's or Listener's or
 * RouteConfiguration's name, a ClusterLoadAssignment's cluster_name; a
 * PeerAuthentication, which has no name of its own, takes fallback_name.
 * Returns NULL with why set ("workload.uid: required ...") when no name
 * can be had or the type is not a resource type; -ENOMEM is "out of memory".
 * A fallback_name also stands in for a missing name of the other types, so
 * that the builder can refuse the resource by path ("workload.uid:
 * required"). version NULL or "": the one shared "". */
struct mres *mres_new(ProtobufCMessage *msg, const char *version, const char *fallback_name,
    char *why, size_t whylen);
struct mres *mres_ref(struct mres *r);
void mres_unref(struct mres *r);

/* Where a resource came from, for errors: "resources[3]" in a file. */
struct model_input {
	struct mres *res;		/* NULL: the resource did not even decode
					 * (skipped; the caller reports it) */
	const char *path;
};

struct model_opts {
	const char *network;		/* this proxy's network ("" default) */
	/* A Workload naming a Service that is not there is refused (static
	 * files: a typo); off for xDS, where the Service may come later. */
	bool strict_refs;
	/* Tests: derive everything anew, as if prev shared no resource with
	 * the inputs (prev still gives refused resources their old version).
	 * The answers must not depend on it. */
	bool no_reuse;
};

/* One problem found while building: the resource it refused. */
struct model_problem {
	const char *path;		/* the model_input's path (not copied) */
	enum mres_type type;
	char name[128];			/* "" when it had none */
	char msg[384];			/* "resources[3].workload.addresses[0]: 5 bytes; want 4 or 16" */
	bool kept_previous;		/* prev had a resource of that type and name: it stays */
};

struct model_report {
	struct model_problem *problems;	/* malloc'ed; model_report_free */
	size_t nproblems;
};
void model_report_free(struct model_report *rep);

struct model;

/* Builds a model from n inputs. Every resource is validated; one that fails
 * is refused and reported (with its path, the field and why) and the others
 * apply, the rule an xDS NACK follows. When prev is given, a refused resource
 * whose type and name prev holds keeps prev's version (so a bad edit never
 * loses what was running), unless that version conflicts too. Duplicate
 * names: the first one wins, the others are refused (and prev's version does
 * not come back). Checks, in order: names; each resource by itself (unknown
 * enums, also inside Anys; address lengths; ports; names; services keys);
 * services' network/VIP:port, first come; workloads' service references
 * (strict_refs) and network/IP, first come (HACKING.md, "The mesh model").
 * Takes its own references to the resources it keeps. Returns NULL only on
 * OOM (also when the report cannot grow). An input that is prev's very
 * resource (the same mres) is not revalidated and what prev derived from it
 * is reused, so a build over prev costs about what changed plus a pass over
 * prev's arrays (HACKING.md, "Incremental builds"); the answers are the
 * same as without (opts->no_reuse). */
struct model *model_build(const struct model_input *in, size_t n, const struct model *prev,
    const struct model_opts *opts, struct model_report *rep);
/* Models are reference-counted: a snapshot that changes only certificates
 * shares its predecessor's. model_free() drops one reference (NULL: no-op). */
struct model *model_ref(struct model *m);
void model_free(struct model *m);

/* An empty model (no resource): what the built-in defaults have. */
struct model *model_empty(void);

/* ---- What the data path asks (all O(1) hash lookups; no allocation). ---- */

enum mtunnel { MTUN_NONE, MTUN_HBONE, MTUN_ISTIO_MTLS };	/* istio.workload.TunnelProtocol */

struct mlocality {
	const char *region, *zone, *subzone;	/* never NULL ("" when unset) */
};

/* A workload as the data path needs it. */
struct mworkload {
	const struct mres *res;		/* its Address resource */
	const char *uid, *name, *ns;
	const char *identity;		/* "spiffe://<trust domain>/ns/<ns>/sa/<sa>" */
	const char *node, *cluster_id, *network;
	enum mtunnel tunnel;
	bool healthy;
	bool proxy_protocol;		/* applicationTunnel.protocol = PROXY */
	uint16_t app_tunnel_port;	/* applicationTunnel.port (0: the target port) */
	struct mlocality locality;
	uint32_t capacity;		/* 1 when unset */
};

/* One endpoint of a service port: a workload and the port to connect to. */
/* An IPv4 or IPv6 socket address in 28 bytes: the model holds one per
 * endpoint, and a sockaddr_storage (128) was half of its indexes' memory. */
union msockaddr {
	struct sockaddr sa;
	struct sockaddr_in in4;
	struct sockaddr_in6 in6;
};

struct mendpoint {
	const struct mworkload *wl;
	uint16_t port;			/* the target port, the workload's override applied */
	union msockaddr addr;		/* the workload's address of the VIP's family, at port */
};

/* istio.workload.LoadBalancing, resolved. */
enum mlb_mode { MLB_ROUND_ROBIN, MLB_STRICT, MLB_FAILOVER, MLB_PASSTHROUGH };

struct mservice;

/* One port of a service with its endpoints (only those the health policy
 * admits and that serve the port), in workload uid order. A service with
 * IPv4 and IPv6 VIPs has one msvc_port per port and family, so that an
 * endpoint's address is of the family of the VIP it was reached by when the
 * workload has one (else, as ztunnel's find_or_first, its first address the
 * service's ipFamilies allow); a headless service (no VIP) has one per
 * port, of family AF_UNSPEC (its endpoints take each workload's first
 * address). */
struct msvc_port {
	const struct mservice *svc;
	uint32_t id;			/* dense 0..model_nports()-1: per-worker LB state index */
	uint16_t port, target_port;	/* target_port: the Service's (0: unset) */
	sa_family_t family;		/* of the VIPs that lead here */
	struct mendpoint *eps;
	size_t neps;
};

struct mservice {
	const struct mres *res;
	const char *name, *ns, *hostname;
	const char *key;		/* "namespace/hostname" */
	const char *const *sans;	/* subject_alt_names */
	size_t nsans;
	enum mlb_mode lb_mode;
	/* istio.workload.LoadBalancing.Scope values, in order; only for
	 * MLB_STRICT and MLB_FAILOVER (ztunnel ignores routing_preference
	 * when the mode is UNSPECIFIED: every endpoint alike). */
	const int *lb_scopes;
	size_t nlb_scopes;
	struct msvc_port *ports;
	size_t nports;
};

/* The workload at address a (port ignored) on this proxy's network, or NULL. */
const struct mworkload *model_workload_at(const struct model *m, const struct sockaddr_storage *a);

/* The service port at VIP a (address and port), or NULL. */
const struct msvc_port *model_service_at(const struct model *m, const struct sockaddr_storage *a);

/* The service owning VIP a whatever the port (a's port ignored), or NULL:
 * a VIP called at a port its service lacks is the service's, not an address
 * outside the mesh (ztunnel refuses it unless the service is PASSTHROUGH). */
const struct mservice *model_service_vip(const struct model *m, const struct sockaddr_storage *a);

/* A waypoint resolved (reference xds-hbone.md §3.5): the pod to open HBONE
 * to and the identity to verify there. */
struct mwaypoint {
	struct sockaddr_storage addr;	/* the waypoint pod's IP at its hbone_mtls_port (15008 when unset) */
	const struct mworkload *wl;	/* that pod's workload: its identity is the SAN to expect */
	const struct mservice *svc;	/* the waypoint's service, when named by hostname or VIP (else NULL) */
};

/* The waypoint a connection goes through when mesh.useWaypoints is on: the
 * destination service's Service.waypoint (s given), else the destination
 * workload's Workload.waypoint (wl given). A GatewayAddress names a
 * hostname (a waypoint Service, "namespace/hostname") or an address (a
 * waypoint Service's VIP or a waypoint workload's IP); a service stands
 * for one of its endpoints, the pick-th (modulo; the caller rotates it).
 * 1 and *out filled; 0: no waypoint named; -ENOENT: one is named but
 * unknown or without a workload (the connection must then fail, as in
 * ztunnel: never bypass the waypoint). Reads the resources' messages: only
 * for the waypoint path (no lookup when none is named). */
int model_waypoint(const struct model *m, const struct mservice *s, const struct mworkload *wl, unsigned pick,
    struct mwaypoint *out);

/* A service by its "namespace/hostname" key, or NULL. */
const struct mservice *model_service(const struct model *m, const char *key);

/* The Cluster and ClusterLoadAssignment resources of a cluster name, or NULL. */
const struct mres *model_cluster(const struct model *m, const char *name);
const struct mres *model_endpoints(const struct model *m, const char *cluster_name);

/* Any resource by type and name (the mres name above), or NULL. */
const struct mres *model_find(const struct model *m, enum mres_type t, const char *name);

/* ---- Istio mTLS peers (model_eds.c) ---- */

/* An EDS endpoint address (ip:port), as the model indexes them. */
struct meds_hit {
	const char *cluster;	/* its ClusterLoadAssignment's cluster_name: Envoy's SNI to it */
	bool istio;		/* metadata envoy.transport_socket_match.tlsMode == "istio" (the
				 * endpoint's, else its locality's) */
	bool hbone;		/* envoy.transport_socket_match.tunnel == "http", likewise */
};

/* The EDS endpoint at a (address and port), or false. An address listed by
 * several clusters (a service and its subsets) answers once: Istio mTLS if
 * any says so, then the default subset's cluster ("outbound|p||host"),
 * then the first by name. */
bool model_eds_at(const struct model *m, const struct sockaddr_storage *a, struct meds_hit *hit);

/* Whether the upstream connection to dst must speak Istio mTLS (reference
 * xds-hbone.md §4.1, §3.6): peer (the workload at dst, or NULL) has tunnel
 * protocol LEGACY_ISTIO_MTLS, or dst is an EDS endpoint marked tlsMode
 * "istio". *cluster: dst's EDS cluster, or NULL. One lookup. */
bool model_peer_mtls(const struct model *m, const struct sockaddr_storage *dst, const struct mworkload *peer,
    const char **cluster);

/* The upstream transport to dst, in one lookup (model_peer_mtls's): HBONE
 * when peer's tunnel protocol is HBONE or dst's EDS endpoint says tunnel
 * "http" (Envoy's transport socket matches list hbone first); Istio mTLS as
 * model_peer_mtls; else plaintext. */
enum mpeer_transport { MPEER_PLAIN, MPEER_MTLS, MPEER_HBONE };
enum mpeer_transport model_peer_transport(const struct model *m, const struct sockaddr_storage *dst,
    const struct mworkload *peer, const char **cluster);

/* Istio's name for a service port's default cluster, the SNI an Envoy
 * sidecar sends: "outbound|<port>||<hostname>" (BuildSubsetKey). The
 * length it needs, as snprintf; out is cut (NUL-terminated) when short. */
int model_cluster_name(char *out, size_t len, const struct mservice *s, uint16_t port);

/* How many service ports the model has (sizes per-worker LB state). */
uint32_t model_nports(const struct model *m);

/* ---- For /config_dump and /stats. ---- */

/* Every resource of type t, in name order. */
size_t model_count(const struct model *m, enum mres_type t);
const struct mres *model_resource(const struct model *m, enum mres_type t, size_t i);

struct model_sizes {
	size_t workloads, workload_addresses, services, service_vips, endpoints, clusters;
	size_t eds_endpoints;		/* distinct EDS endpoint addresses indexed */
	size_t bytes;			/* memory the model's own indexes take */
};
void model_sizes(const struct model *m, struct model_sizes *sz);

#endif
