/* config: the proxy's own settings: one schema table gives each key's type, default,
 * bounds and help; JSON files are checked against it with the JSON path in every error. */
#ifndef OR_CONFIG_H
#define OR_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "accesslog.h"
#include "log.h"

struct cJSON;

/* How inbound connections reach the proxy (Istio's interceptionMode). */
enum intercept_mode {
	INTERCEPT_REDIRECT,	/* nat REDIRECT: SO_ORIGINAL_DST, app sees 127.0.0.6 */
	INTERCEPT_TPROXY,	/* mangle TPROXY: local address is the destination, source kept */
};

/* What an outbound connection to an address the mesh does not know gets
 * (MeshConfig.outboundTrafficPolicy.mode). */
enum outbound_policy {
	OUTBOUND_ALLOW_ANY,	/* passed through to its original destination (Istio's default) */
	OUTBOUND_REGISTRY_ONLY,	/* refused: reset and counted */
};

/* The settings; every field has a row in the schema table in config.c, which
 * also says whether a reload applies it ("live": timeouts, log level, drain) or
 * it is read once at start ("restart": concurrency, interception mode, ports,
 * admin address; the listeners and threads are made from them). */
struct config {
	int concurrency;		/* worker threads */
	enum log_level log_level;
	enum intercept_mode mode;
	uint32_t connect_timeout_ms;	/* upstream TCP connect */
	uint32_t idle_timeout_ms;	/* no bytes either way; 0 = never */
	uint32_t drain_ms;		/* SIGTERM: time given to open connections */
	bool exit_on_zero;		/* drain ends early once no connection is left */
	bool authz_close_denied;	/* a policy change resets open connections it now denies */
	uint16_t outbound_port;		/* 15001: outbound capture */
	uint16_t inbound_port;		/* 15006: inbound capture */
	uint16_t admin_port;		/* 15000: admin, on admin_address only */
	uint16_t health_port;		/* 15021: /healthz/ready on all addresses */
	int status_port;		/* 15020: readiness and merged metrics, all addresses; 0 = off */
	uint32_t status_scrape_timeout_ms;	/* the app's metrics scrape deadline */
	bool metrics_localhost_only;	/* 15020's metrics to loopback clients only */
	uint16_t hbone_port;		/* 15008: HBONE server (hbone.h) */
	int hbone_max_streams;		/* its SETTINGS_MAX_CONCURRENT_STREAMS (200, as ztunnel) */
	uint32_t hbone_pool_idle_ms;	/* an HBONE client connection without streams is closed after */
	char admin_address[64];
	enum outbound_policy outbound_policy;	/* "mesh": MeshConfig */
	bool use_waypoints;		/* "mesh": reach waypoint-fronted destinations through them */
	uint32_t protocol_detection_ms;	/* inbound sniffing deadline; 0: idle_timeout_ms */
	char access_log_file[256];	/* "mesh": accessLogFile; "" = off */
	enum accesslog_encoding access_log_encoding;	/* "mesh": accessLogEncoding */

	/* "identity": where this proxy's certificate comes from (certsrc.h),
	 * each also from the environment pilot-agent reads ("" = unset). */
	char cert_dir[256];		/* --cert-dir, OUTRIGGER_CERT_DIR; else /etc/certs if its files exist */
	char sds_socket[256];		/* Envoy SDS over a Unix socket (pilot-agent's, SPIRE's) */
	char ca_addr[256];		/* CA_ADDR: the Istio CA, "istiod.istio-system.svc:15012" */
	char ca_root[256];		/* the CA's root certificate file (CA_ROOT_CA) */
	char token_file[256];		/* bearer token for the CA (pilot-agent's JWT path) */
	char cluster_id[64];		/* clusterid header (CLUSTER_ID) */
	char trust_domain[256];		/* TRUST_DOMAIN; "cluster.local" */
	uint32_t cert_ttl_s;		/* SECRET_TTL: the validity asked of the CA; 24 h */

	/* "proxy.discoveryAddress" and "xds": the xDS client (xds.h). */
	char xds_address[256];		/* XDS_ADDRESS; "" = no xDS */
	char xds_root[256];		/* XDS_ROOT_CA; "" = identity.caRootCert, then the mesh roots */
	bool xds_sotw;			/* XDS_SOTW: StreamAggregatedResources */
	bool xds_on_demand;		/* XDS_ON_DEMAND: Addresses by name, as needed */
	char xds_state_file[256];	/* last acknowledged state; "" = none */
	uint32_t xds_ready_timeout_ms;	/* readiness waits at most this for the first ACKs; 0 = no limit */
	int xds_max_message;		/* bytes; 64 MiB */
	uint32_t xds_missing_timeout_ms;	/* a named EDS/RDS resource not sent by then is reported */
	uint32_t ondemand_timeout_ms;	/* a connection waits this long for its lookup */
	int ondemand_cache_size;	/* addresses kept subscribed */
	uint32_t ondemand_idle_ms;	/* unsubscribed after this long unused */

	/* "telemetry": Istio's TCP metrics (telemetry.h). */
	int tele_max_label_sets;	/* label sets per worker; past it, the overflow counter */
	uint32_t tele_report_ms;	/* long-lived connections' bytes reported this often; 0 = at close */
	int prometheus_port;		/* 15090: GET /stats/prometheus on 0.0.0.0; 0 = off */
};

/* The embedded default: a sidecar on Istio's ports. */
void config_defaults(struct config *cfg);

/* Check and load JSON text over the defaults. On success *cfg is replaced and
 * 0 is returned; on error *cfg is untouched, err holds "<json.path>: <reason>"
 * and -EINVAL is returned (never half-applied). Refused besides bad values:
 * unknown and duplicate keys, anything but whitespace after the top-level
 * object, and NUL bytes (raw or \u0000), which would silently cut a key.
 * The top-level keys are "proxy" (ProxyConfig), "mesh" (MeshConfig) and
 * "resources"; of the last only the shape is checked here (a list of
 * objects): the resources are decoded by src/resources.c. */
int config_load_json(const char *text, size_t len, struct config *cfg, char *err, size_t errlen);

/* config_load_json() on a tree already parsed by json_parse_strict() (the
 * file is parsed once: the resources come from the same tree). *resources
 * (when not NULL) is set to root's "resources" list, borrowed from root, or
 * NULL when the file has none. */
int config_load_tree(const struct cJSON *root, struct config *cfg, const struct cJSON **resources,
    char *err, size_t errlen);

/* Read and parse a configuration file (regular files only, at most 16 MiB)
 * with json_parse_strict(). 0 with the tree in *root (cJSON_Delete it), or
 * -errno (-EINVAL: not valid JSON) with err naming the problem ("cannot
 * open F: ...", "$: not valid JSON ..."). */
int config_read_file(const char *path, struct cJSON **root, char *err, size_t errlen);

/* Set one key from its string form, e.g. ("proxy.concurrency", "4"): the same
 * parser and bounds as the file (numbers are whole decimal strings, nothing
 * before or after), then the cross-key checks. 0, or -EINVAL with err as
 * config_load_json() and *cfg untouched. The command line's entry. */
int config_set(struct config *cfg, const char *path, const char *value, char *err, size_t errlen);

/* The environment variables of the identity keys (pilot-agent's names:
 * CA_ADDR, CA_ROOT_CA, ISTIO_META_CLUSTER_ID or CLUSTER_ID, TRUST_DOMAIN,
 * SECRET_TTL as a Go duration such as "24h"; and OUTRIGGER_CERT_DIR) over
 * cfg. Applied after the file and before the command line, so an injected
 * pod's environment wins over a shared file. 0, or -EINVAL with err
 * ("environment variable CA_ADDR: identity.caAddress: ...") and *cfg
 * untouched. */
int config_apply_env(struct config *cfg, char *err, size_t errlen);

/* For a reload: put back into next the running value of every "restart" key
 * that differs, and list their paths in changed ("proxy.concurrency, ...",
 * truncated to len). Returns how many there were. */
int config_keep_fixed(struct config *next, const struct config *running, char *changed, size_t len);

/* config_load_json() on a file; err also names unreadable files. */
int config_load_file(const char *path, struct config *cfg, char *err, size_t errlen);

/* The settings as JSON in the file schema (for --dump-config and /config_dump).
 * The caller owns the returned object (cJSON_Delete); NULL on OOM. */
struct cJSON *config_to_json(const struct config *cfg);

/* Print the schema (key, type, default, help) for --help-config. */
void config_print_schema(void);

#endif
