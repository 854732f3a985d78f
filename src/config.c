/* config: the proxy's own settings: one schema table gives each key's type, default,
 * bounds and help; JSON files are checked against it with the JSON path in every error. */
#include "autoconfig.h"

#include "config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "identity.h"
#include "json.h"
#include "sock.h"

enum cf_type {
	CF_INT,		/* JSON number (or decimal string, as proto3 JSON allows) */
	CF_PORT,	/* CF_INT in 1..65535, stored as uint16_t */
	CF_DURATION,	/* proto3 JSON Duration string "1.5s", stored as uint32_t ms */
	CF_LOGLEVEL,	/* "error" .. "trace" */
	CF_MODE,	/* "REDIRECT" | "TPROXY" */
	CF_ADDR,	/* numeric IPv4/IPv6 address, stored as char[64] */
	CF_BOOL,	/* JSON true/false, stored as bool */
	CF_POLICY,	/* "ALLOW_ANY" | "REGISTRY_ONLY", stored as enum outbound_policy */
	CF_STR,		/* a string (a path, a name), no control characters, stored as char[max] */
	CF_HOSTPORT,	/* "host:port" (or "[v6]:port"), or "" for none, stored as char[max] */
	CF_TRUSTDOMAIN,	/* a SPIFFE trust domain, stored as char[max] */
	CF_DURATION_S,	/* a duration as CF_DURATION, stored as uint32_t whole seconds (rounded up) */
	CF_ALENC,	/* "TEXT" | "JSON" (MeshConfig.AccessLogEncoding), stored as enum accesslog_encoding */
};

static const char *const cf_type_names[] = {
	[CF_INT] = "integer", [CF_PORT] = "port", [CF_DURATION] = "duration",
	[CF_LOGLEVEL] = "log level", [CF_MODE] = "interception mode", [CF_ADDR] = "IP address",
	[CF_BOOL] = "boolean", [CF_POLICY] = "traffic policy", [CF_STR] = "string",
	[CF_HOSTPORT] = "host:port", [CF_TRUSTDOMAIN] = "trust domain", [CF_DURATION_S] = "duration",
	[CF_ALENC] = "encoding",
};

/* When a new value takes effect. */
enum cf_when {
	CF_LIVE,	/* a reload applies it to new connections */
	CF_RESTART,	/* read once at start (listeners, threads): a reload keeps the running value */
};

/* One key of the schema. min/max bound CF_INT and CF_DURATION (in ms,
 * CF_DURATION_S too); max is the buffer size of the string types. env names
 * the environment variable that sets it over the file (config_apply_env),
 * as pilot-agent reads it, or NULL. The
 * key may be a dotted path below its section ("outboundTrafficPolicy.mode"):
 * the file nests an object per component, the command line writes it whole. */
struct cf_field {
	const char *section;
	const char *key;
	enum cf_type type;
	enum cf_when when;
	size_t off;
	long long min, max;
	const char *def;	/* parsed by the same code as the file: one source of truth */
	const char *help;
	const char *env;
};

#define F(sec, key, type, when, member, min, max, def, help) \
	{ sec, key, type, when, offsetof(struct config, member), min, max, def, help, NULL }
/* A string key, optionally also set from the environment variable env. */
#define FS(sec, key, type, member, def, env, help) \
	{ sec, key, type, CF_RESTART, offsetof(struct config, member), 0, \
	  sizeof(((struct config *)0)->member), def, help, env }

static const struct cf_field schema[] = {
	F("proxy", "concurrency", CF_INT, CF_RESTART, concurrency, 1, 256, "2",
	    "worker threads, each with its own listeners and event loop"),
	F("proxy", "logLevel", CF_LOGLEVEL, CF_LIVE, log_level, 0, 0, "info",
	    "error, warn, info, debug or trace"),
	F("proxy", "interceptionMode", CF_MODE, CF_RESTART, mode, 0, 0, "REDIRECT",
	    "how inbound traffic is captured: REDIRECT or TPROXY (as set for outrigger-init -m)"),
	F("proxy", "connectTimeout", CF_DURATION, CF_LIVE, connect_timeout_ms, 1, 3600000, "10s",
	    "upstream TCP connect timeout, every attempt to a service's endpoints together"),
	F("proxy", "idleTimeout", CF_DURATION, CF_LIVE, idle_timeout_ms, 0, 2592000000LL, "3600s",
	    "close a connection after this long with no bytes in either direction; 0s = never"),
	F("proxy", "terminationDrainDuration", CF_DURATION, CF_LIVE, drain_ms, 0, 3600000, "5s",
	    "after SIGTERM, how long open connections may finish"),
	F("authorization", "closeDeniedConnections", CF_BOOL, CF_LIVE, authz_close_denied, 0, 0, "true",
	    "when the policies change, reset the open inbound and HBONE connections they now deny (as ztunnel does)"),
	F("proxy", "exitOnZeroActiveConnections", CF_BOOL, CF_LIVE, exit_on_zero, 0, 0, "false",
	    "end the drain as soon as no connection is left (Istio's EXIT_ON_ZERO_ACTIVE_CONNECTIONS)"),
	F("proxy", "proxyListenPort", CF_PORT, CF_RESTART, outbound_port, 1, 65535, "15001",
	    "outbound capture port (outrigger-init -p)"),
	F("proxy", "proxyInboundListenPort", CF_PORT, CF_RESTART, inbound_port, 1, 65535, "15006",
	    "inbound capture port (outrigger-init -z)"),
	F("proxy", "proxyAdminPort", CF_PORT, CF_RESTART, admin_port, 1, 65535, "15000",
	    "admin API port"),
	F("proxy", "adminAddress", CF_ADDR, CF_RESTART, admin_address, 0, 0, "127.0.0.1",
	    "admin API address; keep it on loopback"),
	F("proxy", "healthPort", CF_PORT, CF_RESTART, health_port, 1, 65535, "15021",
	    "readiness port serving /healthz/ready on all addresses"),
	F("proxy", "prometheusPort", CF_INT, CF_RESTART, prometheus_port, 0, 65535, "15090",
	    "Envoy's Prometheus port: GET /stats/prometheus (the admin's body) on 0.0.0.0; 0 = off"),
	F("telemetry", "maxLabelSets", CF_INT, CF_RESTART, tele_max_label_sets, 0, 10000000, "1000",
	    "Istio TCP metrics: label sets each worker keeps; connections past it are counted in "
	    "outrigger_istio_metrics_overflow_total only"),
	F("telemetry", "tcpReportingInterval", CF_DURATION, CF_RESTART, tele_report_ms, 0, 86400000, "5s",
	    "Istio TCP metrics: how often open connections' bytes are added to istio_tcp_*_bytes_total (Istio's "
	    "tcpReportingDuration); 0s = only at close"),
	F("proxy", "statusPort", CF_INT, CF_RESTART, status_port, 0, 65535, "15020",
	    "pilot-agent's status port on all addresses: /healthz/ready and /stats/prometheus (also /metrics) with "
	    "the app's metrics merged when ISTIO_PROMETHEUS_ANNOTATIONS asks; 0 = off"),
	F("proxy", "statusScrapeTimeout", CF_DURATION, CF_LIVE, status_scrape_timeout_ms, 1, 600000, "10s",
	    "how long the status port waits for the app's metrics (a scraper's shorter "
	    "X-Prometheus-Scrape-Timeout-Seconds wins); then it serves the proxy's own, and counts the failure"),
	{ "proxy", "metricsLocalhostAccessOnly", CF_BOOL, CF_LIVE, offsetof(struct config, metrics_localhost_only), 0,
	  0, "false", "the status port's /stats/prometheus answers only clients on the loopback (others: 403), as "
	  "pilot-agent with METRICS_LOCALHOST_ACCESS_ONLY", "METRICS_LOCALHOST_ACCESS_ONLY" },
	F("proxy", "hbonePort", CF_PORT, CF_RESTART, hbone_port, 1, 65535, "15008",
	    "HBONE server port: mTLS HTTP/2 CONNECT from ztunnel, waypoints and other sidecars (outrigger-init "
	    "leaves 15008 uncaptured)"),
	F("proxy", "hboneMaxConcurrentStreams", CF_INT, CF_LIVE, hbone_max_streams, 1, 100000, "200",
	    "the HBONE server's SETTINGS_MAX_CONCURRENT_STREAMS: CONNECT streams one client connection may "
	    "have open at once (ztunnel's 200); new connections get a changed value"),
	F("proxy", "hbonePoolIdleTimeout", CF_DURATION, CF_LIVE, hbone_pool_idle_ms, 1, 2592000000LL, "300s",
	    "how long a pooled HBONE client connection with no stream is kept (ztunnel's "
	    "pool_unused_release_timeout)"),
	F("mesh", "outboundTrafficPolicy.mode", CF_POLICY, CF_LIVE, outbound_policy, 0, 0, "ALLOW_ANY",
	    "outbound to an address the mesh does not know: ALLOW_ANY passes it through, REGISTRY_ONLY resets it"),
	F("mesh", "protocolDetectionTimeout", CF_DURATION, CF_LIVE, protocol_detection_ms, 0, 3600000, "0s",
	    "inbound: how long to wait for a client's first bytes to tell TLS from plaintext; then plaintext "
	    "(server-first protocols). 0s: no limit but proxy.idleTimeout (Istio's default)"),
	/* MeshConfig's names (accesslog.h); the /logging endpoint switches
	 * them at run time until the setting itself changes. */
	{ "mesh", "accessLogFile", CF_STR, CF_LIVE, offsetof(struct config, access_log_file), 0,
	  sizeof(((struct config *)0)->access_log_file), "", "one line per connection to this file (appended; "
	  "reopened on SIGHUP for log rotation), \"/dev/stdout\" or \"/dev/stderr\"; \"\": off (Istio's default)", NULL },
	F("mesh", "accessLogEncoding", CF_ALENC, CF_LIVE, access_log_encoding, 0, 0, "TEXT",
	    "the access log's format: TEXT (Istio's default text shape) or JSON (Istio's default JSON keys)"),
	{ "mesh", "useWaypoints", CF_BOOL, CF_LIVE, offsetof(struct config, use_waypoints), 0, 0, "false",
	  "reach a destination whose WDS Service or Workload names a waypoint through that waypoint over "
	  "HBONE (Istio sidecars do not: straight to the pod)", "OUTRIGGER_USE_WAYPOINTS" },
	/* "identity": where the certificate comes from (certsrc.h), read once
	 * at start. The environment variables are pilot-agent's (and
	 * OUTRIGGER_CERT_DIR), so an injected pod's env works unchanged. */
	FS("identity", "certDir", CF_STR, cert_dir, "", "OUTRIGGER_CERT_DIR",
	    "directory with cert-chain.pem, key.pem, root-cert.pem (Istio's file-mounted layout), "
	    "reloaded when they change; \"\": /etc/certs when its three files exist (--cert-dir overrides)"),
	FS("identity", "sdsSocket", CF_STR, sds_socket, "", NULL,
	    "Envoy SDS over this Unix socket (pilot-agent's or the SPIRE agent's), when no certificate files"),
	FS("identity", "caAddress", CF_HOSTPORT, ca_addr, "", "CA_ADDR",
	    "the Istio CA (istiod.istio-system.svc:15012), when neither files nor SDS"),
	FS("identity", "caRootCert", CF_STR, ca_root, "./var/run/secrets/istio/root-cert.pem", "CA_ROOT_CA",
	    "the root certificate that the CA's TLS certificate must chain to"),
	FS("identity", "tokenFile", CF_STR, token_file, "./var/run/secrets/tokens/istio-token", NULL,
	    "the bearer token sent to the CA (pilot-agent's third-party JWT path)"),
	FS("identity", "clusterId", CF_STR, cluster_id, "", "ISTIO_META_CLUSTER_ID CLUSTER_ID",
	    "the clusterid header sent to the CA"),
	FS("identity", "trustDomain", CF_TRUSTDOMAIN, trust_domain, "cluster.local", "TRUST_DOMAIN",
	    "the SPIFFE trust domain of this proxy's identity"),
	{ "identity", "certTTL", CF_DURATION_S, CF_RESTART, offsetof(struct config, cert_ttl_s), 1000,
	  315360000000LL, "86400s", "the certificate lifetime asked of the CA (SECRET_TTL, as \"24h\" there)",
	  "SECRET_TTL" },
	/* The xDS client (xds.h): where istiod is and how to talk to it, read
	 * once at start. The environment variables are ztunnel's (XDS_ADDRESS,
	 * XDS_ROOT_CA, XDS_ON_DEMAND) and ours; PROXY_CONFIG's discoveryAddress
	 * (pilot-agent's) is applied under XDS_ADDRESS (config_apply_env). */
	FS("proxy", "discoveryAddress", CF_HOSTPORT, xds_address, "", "XDS_ADDRESS",
	    "the xDS server (istiod): \"https://host:port\" or \"host:port\" is TLS, \"http://host:port\" "
	    "plaintext HTTP/2; \"\": no xDS (static resources only)"),
	FS("xds", "rootCert", CF_STR, xds_root, "", "XDS_ROOT_CA",
	    "the root certificate file istiod's TLS certificate must chain to; \"\": identity.caRootCert, "
	    "else the mesh roots of this proxy's certificate"),
	{ "xds", "sotw", CF_BOOL, CF_RESTART, offsetof(struct config, xds_sotw), 0, 0, "false",
	  "use StreamAggregatedResources (state of the world) instead of DeltaAggregatedResources",
	  "XDS_SOTW" },
	{ "xds", "onDemand", CF_BOOL, CF_RESTART, offsetof(struct config, xds_on_demand), 0, 0, "false",
	  "subscribe to workload addresses by name as connections need them instead of the whole mesh "
	  "(delta only)", "XDS_ON_DEMAND" },
	FS("xds", "stateFile", CF_STR, xds_state_file, "", "OUTRIGGER_XDS_STATE_FILE",
	    "where the last acknowledged resources are kept (written atomically); a restart with istiod "
	    "unreachable serves from it. \"\": not kept"),
	{ "xds", "readyTimeout", CF_DURATION, CF_RESTART, offsetof(struct config, xds_ready_timeout_ms), 0,
	  3600000, "0s", "/healthz/ready waits for the first ACK of each subscribed type at most this long; "
	  "0s: without limit", NULL },
	{ "xds", "maxMessage", CF_INT, CF_RESTART, offsetof(struct config, xds_max_message), 65536,
	  1073741824, "67108864", "the largest xDS response accepted, in bytes (larger: the stream fails "
	  "with RESOURCE_EXHAUSTED and reconnects)", NULL },
	{ "xds", "missingTimeout", CF_DURATION, CF_RESTART, offsetof(struct config, xds_missing_timeout_ms), 1000,
	  3600000, "15s", "a ClusterLoadAssignment or RouteConfiguration that a Cluster or Listener names and the "
	  "xDS server has not sent within this long is logged and counted (the xDS protocol's 15 s)", NULL },
	{ "xds", "onDemandTimeout", CF_DURATION, CF_RESTART, offsetof(struct config, ondemand_timeout_ms), 1,
	  60000, "5s", "on demand: how long a connection to an unknown destination waits for its lookup "
	  "(then mesh.outboundTrafficPolicy decides)", NULL },
	{ "xds", "onDemandCacheSize", CF_INT, CF_RESTART, offsetof(struct config, ondemand_cache_size), 1,
	  1000000, "1000", "on demand: the most addresses kept subscribed; the least recently used is "
	  "unsubscribed first", NULL },
	{ "xds", "onDemandIdle", CF_DURATION, CF_RESTART, offsetof(struct config, ondemand_idle_ms), 1000,
	  86400000, "300s", "on demand: an address no connection used for this long is unsubscribed", NULL },
};

/* The top-level key whose value is the static resources (src/resources.c
 * decodes them; here only their shape is checked). */
#define RESOURCES_KEY "resources"

#define NFIELDS (sizeof(schema) / sizeof(schema[0]))

static void seterr(char *err, size_t errlen, const struct cf_field *f, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void
seterr(char *err, size_t errlen, const struct cf_field *f, const char *fmt, ...)
{
	va_list ap;
	int n = 0;

	if (!errlen)
		return;
	if (f)
		n = snprintf(err, errlen, "%s.%s: ", f->section, f->key);
	if (n < 0 || (size_t)n >= errlen)
		n = 0;
	va_start(ap, fmt);
	vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
	va_end(ap);
}

/* proto3 JSON Duration: optional '-', digits, optional '.' and 1-9 digits, 's'. */
static int
parse_duration_ms(const char *s, long long *ms)
{
	const char *p = s;
	long long sec = 0, frac_ns = 0;
	int fd = 0;

	if (*p == '-')
		return -ERANGE;
	if (*p < '0' || *p > '9')
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (sec > 315576000000LL)
			return -ERANGE;
		sec = sec * 10 + (*p - '0');
	}
	if (*p == '.') {
		p++;
		for (; *p >= '0' && *p <= '9'; p++, fd++) {
			if (fd >= 9)
				return -EINVAL;
			frac_ns = frac_ns * 10 + (*p - '0');
		}
		if (fd == 0)
			return -EINVAL;
		for (int i = fd; i < 9; i++)
			frac_ns *= 10;
	}
	if (p[0] != 's' || p[1] != '\0')
		return -EINVAL;
	*ms = sec * 1000 + (frac_ns + 999999) / 1000000;
	return 0;
}

/* A strict decimal integer: optional '-', digits, nothing else (no spaces,
 * no '+', no trailing characters), so "4xyz" is refused, never read as 4. */
static int
parse_int(const char *s, long long *out)
{
	const char *p = s;
	long long n = 0;
	bool neg = *p == '-';

	if (neg)
		p++;
	if (*p < '0' || *p > '9')
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (n > (LLONG_MAX - 9) / 10)
			return -ERANGE;
		n = n * 10 + (*p - '0');
	}
	if (*p)
		return -EINVAL;
	*out = neg ? -n : n;
	return 0;
}

/* "host:port", "[v6]:port": a non-empty host without spaces or '/', a port 1..65535. */
static int
check_hostport(const char *s)
{
	const char *colon, *close;
	long long port;

	/* The Istio CA client takes http:// (tests only: plaintext) and https://. */
	if (!strncmp(s, "http://", 7))
		s += 7;
	else if (!strncmp(s, "https://", 8))
		s += 8;
	colon = strrchr(s, ':');
	close = strchr(s, ']');

	if (!colon || colon == s || parse_int(colon + 1, &port) < 0 || port < 1 || port > 65535)
		return -EINVAL;
	if (s[0] == '[' && (!close || close + 1 != colon || close == s + 1))
		return -EINVAL;
	if (s[0] != '[' && memchr(s, ':', (size_t)(colon - s)))
		return -EINVAL;	/* a bare IPv6 address: its port would be ambiguous */
	for (const char *p = s; p < colon; p++)
		if (*p == ' ' || *p == '/' || *p == '@')
			return -EINVAL;
	return 0;
}

/* A SPIFFE trust domain: what spiffe_parse() takes (identity.h). */
static int
check_trust_domain(const char *s)
{
	char probe[SPIFFE_ID_MAX];

	return spiffe_format(probe, sizeof(probe), s, "ns", "sa");
}

static void
quote_json(const cJSON *v, char *buf, size_t len)
{
	char *txt = cJSON_PrintUnformatted(v);

	snprintf(buf, len, "%.60s%s", txt ? txt : "?", txt && strlen(txt) > 60 ? "..." : "");
	free(txt);
}

static void
quote_str(const char *s, char *buf, size_t len)
{
	snprintf(buf, len, "\"%.60s%s\"", s, strlen(s) > 60 ? "..." : "");
}

/* Store one value, given in its string form, into cfg: the one parser of every
 * type, used for the built-in defaults, the JSON file and the command line.
 * s is NULL when the JSON value has the wrong type; got is the value as the
 * user wrote it, for the error. */
static int
set_field(const struct cf_field *f, const char *s, const char *got, struct config *cfg,
    char *err, size_t errlen)
{
	char *dst = (char *)cfg + f->off;
	long long n;

	switch (f->type) {
	case CF_INT:
	case CF_PORT: {
		long long lo = f->type == CF_PORT ? 1 : f->min, hi = f->type == CF_PORT ? 65535 : f->max;
		if (!s || parse_int(s, &n) < 0 || n < lo || n > hi) {
			seterr(err, errlen, f, "expected an integer from %lld to %lld, got %s", lo, hi, got);
			return -EINVAL;
		}
		if (f->type == CF_PORT)
			*(uint16_t *)dst = (uint16_t)n;
		else
			*(int *)dst = (int)n;
		return 0;
	}
	case CF_DURATION:
	case CF_DURATION_S: {
		int rc = s ? parse_duration_ms(s, &n) : -EINVAL;
		if (rc == -EINVAL) {
			seterr(err, errlen, f, "expected a duration such as \"5s\" or \"0.250s\", got %s", got);
			return -EINVAL;
		}
		if (rc < 0 || n < f->min || n > f->max) {
			seterr(err, errlen, f, "duration %s is out of range (%lld.%03llds to %lld.%03llds)", got,
			    f->min / 1000, f->min % 1000, f->max / 1000, f->max % 1000);
			return -EINVAL;
		}
		*(uint32_t *)dst = (uint32_t)(f->type == CF_DURATION_S ? (n + 999) / 1000 : n);
		return 0;
	}
	case CF_STR:
	case CF_HOSTPORT:
	case CF_TRUSTDOMAIN: {
		size_t l = s ? strlen(s) : 0;
		if (!s) {
			seterr(err, errlen, f, "expected a string, got %s", got);
			return -EINVAL;
		}
		if (l >= (size_t)f->max) {
			seterr(err, errlen, f, "longer than %lld characters", f->max - 1);
			return -EINVAL;
		}
		for (const char *p = s; *p; p++) {
			if ((unsigned char)*p < 0x20 || *p == 0x7f) {
				seterr(err, errlen, f, "control character in %s", got);
				return -EINVAL;
			}
		}
		if (f->type == CF_HOSTPORT && l && check_hostport(s) < 0) {
			seterr(err, errlen, f, "expected \"host:port\" (port 1-65535), got %s", got);
			return -EINVAL;
		}
		if (f->type == CF_TRUSTDOMAIN && check_trust_domain(s) < 0) {
			seterr(err, errlen, f, "expected a trust domain (lower-case letters, digits, '.', '-', '_'), "
			    "got %s", got);
			return -EINVAL;
		}
		memcpy(dst, s, l + 1);
		return 0;
	}
	case CF_LOGLEVEL: {
		enum log_level l;
		if (!s || log_level_parse(s, &l) < 0) {
			seterr(err, errlen, f, "expected one of \"error\", \"warn\", \"info\", \"debug\", \"trace\", got %s", got);
			return -EINVAL;
		}
		*(enum log_level *)dst = l;
		return 0;
	}
	case CF_MODE:
		if (s && strcmp(s, "REDIRECT") == 0)
			*(enum intercept_mode *)dst = INTERCEPT_REDIRECT;
		else if (s && strcmp(s, "TPROXY") == 0)
			*(enum intercept_mode *)dst = INTERCEPT_TPROXY;
		else {
			seterr(err, errlen, f, "expected \"REDIRECT\" or \"TPROXY\", got %s", got);
			return -EINVAL;
		}
		return 0;
	case CF_ALENC:
		if (!s || accesslog_encoding_parse(s, (enum accesslog_encoding *)dst) < 0) {
			seterr(err, errlen, f, "expected \"TEXT\" or \"JSON\", got %s", got);
			return -EINVAL;
		}
		return 0;
	case CF_POLICY:
		if (s && strcmp(s, "ALLOW_ANY") == 0)
			*(enum outbound_policy *)dst = OUTBOUND_ALLOW_ANY;
		else if (s && strcmp(s, "REGISTRY_ONLY") == 0)
			*(enum outbound_policy *)dst = OUTBOUND_REGISTRY_ONLY;
		else {
			seterr(err, errlen, f, "expected \"ALLOW_ANY\" or \"REGISTRY_ONLY\", got %s", got);
			return -EINVAL;
		}
		return 0;
	case CF_BOOL:
		if (s && strcmp(s, "true") == 0) {
			*(bool *)dst = true;
		} else if (s && strcmp(s, "false") == 0) {
			*(bool *)dst = false;
		} else {
			seterr(err, errlen, f, "expected true or false, got %s", got);
			return -EINVAL;
		}
		return 0;
	case CF_ADDR: {
		struct sockaddr_storage ss;
		if (!s || strlen(s) >= 64 || sock_addr_parse(s, 0, &ss) < 0) {
			seterr(err, errlen, f, "expected a numeric IPv4 or IPv6 address, got %s", got);
			return -EINVAL;
		}
		memcpy(dst, s, strlen(s) + 1);
		return 0;
	}
	}
	seterr(err, errlen, f, "internal: unknown field type");
	return -EINVAL;
}

/* A JSON value to its string form for set_field(): the JSON types each field
 * accepts (proto3 JSON: integers as numbers or decimal strings, booleans as
 * true/false, everything else as strings); any other type gives NULL. */
static int
set_field_json(const struct cf_field *f, const cJSON *v, struct config *cfg, char *err, size_t errlen)
{
	char got[80], num[32];
	const char *s = NULL;

	quote_json(v, got, sizeof(got));
	switch (f->type) {
	case CF_INT:
	case CF_PORT:
		if (cJSON_IsNumber(v)) {
			double d = v->valuedouble;
			if (d == floor(d) && d > -1e15 && d < 1e15) {
				snprintf(num, sizeof(num), "%lld", (long long)d);
				s = num;
			}
		} else if (cJSON_IsString(v)) {
			s = v->valuestring;
		}
		break;
	case CF_BOOL:
		s = cJSON_IsTrue(v) ? "true" : cJSON_IsFalse(v) ? "false" : NULL;
		break;
	default:
		s = cJSON_IsString(v) ? v->valuestring : NULL;
		break;
	}
	return set_field(f, s, got, cfg, err, errlen);
}

void
config_defaults(struct config *cfg)
{
	char err[256];

	memset(cfg, 0, sizeof(*cfg));
	for (size_t i = 0; i < NFIELDS; i++) {
		if (set_field(&schema[i], schema[i].def, schema[i].def, cfg, err, sizeof(err)) < 0) {
			/* A bad default is a programming error caught by the unit tests. */
			fprintf(stderr, "outrigger: bad built-in default: %s\n", err);
			abort();
		}
	}
}

/* The field whose full path ("section.key") is path, or NULL. */
static const struct cf_field *
field_at(const char *path)
{
	for (size_t i = 0; i < NFIELDS; i++) {
		size_t sl = strlen(schema[i].section);
		if (strncmp(path, schema[i].section, sl) == 0 && path[sl] == '.' &&
		    strcmp(path + sl + 1, schema[i].key) == 0)
			return &schema[i];
	}
	return NULL;
}

/* True when some field lies below path (an object of the schema: "proxy",
 * "mesh", "mesh.outboundTrafficPolicy"). */
static bool
path_is_object(const char *path)
{
	size_t pl = strlen(path);
	char full[128];

	for (size_t i = 0; i < NFIELDS; i++) {
		snprintf(full, sizeof(full), "%s.%s", schema[i].section, schema[i].key);
		if (strncmp(full, path, pl) == 0 && full[pl] == '.')
			return true;
	}
	return false;
}

/* Checks across keys: the five ports (and prometheusPort, statusPort unless 0) must differ (two listeners on one port
 * would share connections at random through SO_REUSEPORT). */
static int
config_check(const struct config *c, char *err, size_t errlen)
{
	static const struct { const char *key; size_t off; } ports[] = {
		{ "proxyListenPort", offsetof(struct config, outbound_port) },
		{ "proxyInboundListenPort", offsetof(struct config, inbound_port) },
		{ "proxyAdminPort", offsetof(struct config, admin_port) },
		{ "healthPort", offsetof(struct config, health_port) },
		{ "hbonePort", offsetof(struct config, hbone_port) },
	};

	for (size_t i = 0; i < sizeof(ports) / sizeof(ports[0]); i++) {
		uint16_t pi = *(const uint16_t *)((const char *)c + ports[i].off);
		if (c->status_port && c->status_port == pi) {
			seterr(err, errlen, NULL, "proxy.statusPort: port %d is also proxy.%s", c->status_port,
			    ports[i].key);
			return -EINVAL;
		}
		for (size_t j = 0; j < i; j++) {
			uint16_t a = *(const uint16_t *)((const char *)c + ports[i].off);
			uint16_t b = *(const uint16_t *)((const char *)c + ports[j].off);
			if (a == b) {
				seterr(err, errlen, NULL, "proxy.%s: port %u is also proxy.%s", ports[i].key, a,
				    ports[j].key);
				return -EINVAL;
			}
		}
		/* 15090 (0: off) listens on 0.0.0.0 too: a shared port would fail at start. */
		if (c->prometheus_port && c->prometheus_port == *(const uint16_t *)((const char *)c + ports[i].off)) {
			seterr(err, errlen, NULL, "proxy.prometheusPort: port %d is also proxy.%s", c->prometheus_port,
			    ports[i].key);
			return -EINVAL;
		}
	}
	if (c->status_port && c->status_port == c->prometheus_port) {
		seterr(err, errlen, NULL, "proxy.statusPort: port %d is also proxy.prometheusPort", c->status_port);
		return -EINVAL;
	}
	return 0;
}

/* True when an earlier member of the same object has the key of item. The
 * earlier members are all known keys (unknown ones are refused first), so this
 * is at most NFIELDS comparisons whatever the input. */
static bool
key_seen_before(const cJSON *first, const cJSON *item)
{
	for (const cJSON *p = first; p && p != item; p = p->next)
		if (strcmp(p->string, item->string) == 0)
			return true;
	return false;
}

/* "resources": a list. What each element holds is src/resources.c's
 * concern: a bad element (even one that is no object) is refused on its own,
 * the rule an xDS NACK follows; a file whose "resources" is no list is
 * refused whole. */
static int
check_resources(const cJSON *list, char *err, size_t errlen)
{
	if (!cJSON_IsArray(list)) {
		seterr(err, errlen, NULL, RESOURCES_KEY ": expected a list of resources");
		return -EINVAL;
	}
	return 0;
}

/* Loads the members of obj, the object at prefix ("" for the top level) into
 * next. Every key must be a field or an object of the schema (or, at the top,
 * "resources"); the recursion is bounded by the schema's depth, since an
 * unknown key is refused before its value is looked at. */
static int
load_object(const cJSON *obj, const char *prefix, struct config *next, char *err, size_t errlen)
{
	const cJSON *item;
	char path[256];

	cJSON_ArrayForEach(item, obj) {
		bool top_res = !*prefix && strcmp(item->string, RESOURCES_KEY) == 0;
		const struct cf_field *f;

		snprintf(path, sizeof(path), "%s%s%s", prefix, *prefix ? "." : "", item->string);
		f = field_at(path);
		if (!f && !top_res && !path_is_object(path)) {
			seterr(err, errlen, NULL, "%s: unknown key", path);
			return -EINVAL;
		}
		/* RFC 8259 leaves duplicate names undefined; cJSON would keep both
		 * and we would apply the last one without a word. */
		if (key_seen_before(obj->child, item)) {
			seterr(err, errlen, NULL, "%s: duplicate key", path);
			return -EINVAL;
		}
		if (f) {
			if (set_field_json(f, item, next, err, errlen) < 0)
				return -EINVAL;
		} else if (top_res) {
			if (check_resources(item, err, errlen) < 0)
				return -EINVAL;
		} else if (!cJSON_IsObject(item)) {
			seterr(err, errlen, NULL, "%s: expected an object", path);
			return -EINVAL;
		} else if (load_object(item, path, next, err, errlen) < 0) {
			return -EINVAL;
		}
	}
	return 0;
}

int
config_load_tree(const cJSON *root, struct config *cfg, const cJSON **resources, char *err,
    size_t errlen)
{
	struct config next;

	if (!cJSON_IsObject(root)) {
		seterr(err, errlen, NULL, "$: expected a JSON object at the top level");
		return -EINVAL;
	}
	next = *cfg;
	if (load_object(root, "", &next, err, errlen) < 0 || config_check(&next, err, errlen) < 0)
		return -EINVAL;
	*cfg = next;
	if (resources)
		*resources = cJSON_GetObjectItemCaseSensitive(root, RESOURCES_KEY);
	return 0;
}

int
config_load_json(const char *text, size_t len, struct config *cfg, char *err, size_t errlen)
{
	cJSON *root;
	int rc;

	/* NUL bytes, \u0000, invalid JSON and trailing data are refused there. */
	if (!(root = json_parse_strict(text, len, err, errlen)))
		return -EINVAL;
	rc = config_load_tree(root, cfg, NULL, err, errlen);
	cJSON_Delete(root);
	return rc;
}

int
config_set(struct config *cfg, const char *path, const char *value, char *err, size_t errlen)
{
	const struct cf_field *f;
	struct config next = *cfg;
	char got[80];

	if (!(f = field_at(path))) {
		seterr(err, errlen, NULL, "%s: unknown key", path);
		return -EINVAL;
	}
	quote_str(value, got, sizeof(got));
	if (set_field(f, value, got, &next, err, errlen) < 0 || config_check(&next, err, errlen) < 0)
		return -EINVAL;
	*cfg = next;
	return 0;
}

/* A Go duration as pilot-agent's SECRET_TTL takes it ("24h", "1h30m",
 * "90s", "1.5h", "500ms") into ms, rounded up. */
static int
parse_go_duration_ms(const char *s, long long *ms)
{
	static const struct { const char *unit; double ms; } units[] = {
		{ "ns", 1e-6 }, { "us", 1e-3 }, { "ms", 1 }, { "s", 1e3 }, { "m", 6e4 }, { "h", 3.6e6 },
	};
	double total = 0;
	const char *p = s;

	if (!*p)
		return -EINVAL;
	while (*p) {
		char *end;
		double v;
		size_t best = 0, bl = 0;

		if (*p < '0' || *p > '9')
			return -EINVAL;
		v = strtod(p, &end);
		p = end;
		for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
			size_t ul = strlen(units[i].unit);
			if (strncmp(p, units[i].unit, ul) == 0 && ul > bl) {
				best = i;
				bl = ul;
			}
		}
		if (!bl)
			return -EINVAL;
		total += v * units[best].ms;
		p += bl;
		if (total > 315576000000e3)
			return -ERANGE;
	}
	*ms = (long long)ceil(total);
	return 0;
}

/* PROXY_CONFIG: pilot-agent's ProxyConfig as JSON. The keys we have in
 * "proxy" (discoveryAddress, concurrency, terminationDrainDuration, ...)
 * apply; the others are pilot-agent's or Envoy's business and are ignored.
 * Applied before the other variables, so XDS_ADDRESS wins over its
 * discoveryAddress. */
static int
apply_proxy_config(const char *text, struct config *next, char *err, size_t errlen)
{
	char why[320], path[160];
	const cJSON *item;
	cJSON *root;
	int rc = 0;

	if (!(root = json_parse_strict(text, strlen(text), why, sizeof(why)))) {
		seterr(err, errlen, NULL, "environment variable PROXY_CONFIG: %s", why);
		return -EINVAL;
	}
	if (!cJSON_IsObject(root)) {
		seterr(err, errlen, NULL, "environment variable PROXY_CONFIG: expected a JSON object (ProxyConfig)");
		rc = -EINVAL;
		goto out;
	}
	cJSON_ArrayForEach(item, root) {
		const struct cf_field *f;

		snprintf(path, sizeof(path), "proxy.%s", item->string);
		if (!(f = field_at(path)))
			continue;
		if (set_field_json(f, item, next, why, sizeof(why)) < 0) {
			seterr(err, errlen, NULL, "environment variable PROXY_CONFIG: %s", why);
			rc = -EINVAL;
			goto out;
		}
	}
out:
	cJSON_Delete(root);
	return rc;
}

int
config_apply_env(struct config *cfg, char *err, size_t errlen)
{
	struct config next = *cfg;
	char names[128], why[320], conv[48];
	const char *pc = getenv("PROXY_CONFIG");

	if (pc && *pc && apply_proxy_config(pc, &next, err, errlen) < 0)
		return -EINVAL;

	for (size_t i = 0; i < NFIELDS; i++) {
		const struct cf_field *f = &schema[i];
		const char *v = NULL, *name = NULL;
		char *save = NULL;

		if (!f->env)
			continue;
		/* The first of the listed variables that is set and not empty. */
		snprintf(names, sizeof(names), "%s", f->env);
		for (char *n = strtok_r(names, " ", &save); n && !v; n = strtok_r(NULL, " ", &save)) {
			const char *e = getenv(n);
			if (e && *e) {
				v = e;
				name = n;
			}
		}
		if (!v)
			continue;
		/* Go's duration syntax there ("24h"); ours ("86400s") works too. */
		if (f->type == CF_DURATION_S || f->type == CF_DURATION) {
			long long ms;
			if (parse_duration_ms(v, &ms) < 0 && parse_go_duration_ms(v, &ms) == 0) {
				snprintf(conv, sizeof(conv), "%lld.%03llds", ms / 1000, ms % 1000);
				v = conv;
			}
		}
		char got[80];
		quote_str(v, got, sizeof(got));
		if (set_field(f, v, got, &next, why, sizeof(why)) < 0) {
			seterr(err, errlen, NULL, "environment variable %s: %s", name, why);
			return -EINVAL;
		}
	}
	if (config_check(&next, err, errlen) < 0)
		return -EINVAL;
	*cfg = next;
	return 0;
}

static size_t
field_size(const struct cf_field *f)
{
	switch (f->type) {
	case CF_INT: return sizeof(int);
	case CF_PORT: return sizeof(uint16_t);
	case CF_DURATION: return sizeof(uint32_t);
	case CF_LOGLEVEL: return sizeof(enum log_level);
	case CF_MODE: return sizeof(enum intercept_mode);
	case CF_ADDR: return sizeof(((struct config *)0)->admin_address);
	case CF_BOOL: return sizeof(bool);
	case CF_POLICY: return sizeof(enum outbound_policy);
	case CF_ALENC: return sizeof(enum accesslog_encoding);
	case CF_DURATION_S: return sizeof(uint32_t);
	case CF_STR:
	case CF_HOSTPORT:
	case CF_TRUSTDOMAIN: return (size_t)f->max;
	}
	return 0;
}

static bool
is_string(const struct cf_field *f)
{
	return f->type == CF_ADDR || f->type == CF_STR || f->type == CF_HOSTPORT || f->type == CF_TRUSTDOMAIN;
}

int
config_keep_fixed(struct config *next, const struct config *running, char *changed, size_t len)
{
	size_t used = 0;
	int n = 0;

	if (len)
		changed[0] = '\0';
	for (size_t i = 0; i < NFIELDS; i++) {
		const struct cf_field *f = &schema[i];
		char *dst = (char *)next + f->off;
		const char *src = (const char *)running + f->off;
		bool same = is_string(f) ? strcmp(dst, src) == 0 : memcmp(dst, src, field_size(f)) == 0;

		if (f->when != CF_RESTART || same)
			continue;
		memcpy(dst, src, field_size(f));
		if (used < len) {
			int w = snprintf(changed + used, len - used, "%s%s.%s", n ? ", " : "", f->section, f->key);
			used += w > 0 ? (size_t)w : 0;
		}
		n++;
	}
	return n;
}

/* The file's bytes (regular files only, at most 16 MiB) in *out, *outlen. */
static int
read_file(const char *path, char **out, size_t *outlen, char *err, size_t errlen)
{
	char *buf = NULL;
	size_t len = 0, cap = 0;
	struct stat st;
	FILE *fp;
	int rc, fd;

	/* Not blocking, and only a regular file: a FIFO with no writer would
	 * block open(2) (and read(2)) for ever, and a reload runs on the
	 * control thread, which also serves the admin and health ports. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		rc = -errno;
		seterr(err, errlen, NULL, "cannot open %s: %s", path, strerror(-rc));
		return rc;
	}
	if (fstat(fd, &st) < 0)
		rc = -errno;
	else if (!S_ISREG(st.st_mode))
		rc = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
	else
		rc = 0;
	if (rc < 0) {
		seterr(err, errlen, NULL, "cannot read %s: %s", path,
		    rc == -EINVAL ? "not a regular file" : strerror(-rc));
		close(fd);
		return rc;
	}
	if (!(fp = fdopen(fd, "rb"))) {
		rc = -errno;
		close(fd);
		seterr(err, errlen, NULL, "cannot open %s: %s", path, strerror(-rc));
		return rc;
	}
	for (;;) {
		if (len + 4096 > cap) {
			if (cap >= (16u << 20)) {
				seterr(err, errlen, NULL, "%s: larger than 16 MiB", path);
				free(buf);
				fclose(fp);
				return -EFBIG;
			}
			cap = cap ? cap * 2 : 8192;
			char *nb = realloc(buf, cap);
			if (!nb) {
				seterr(err, errlen, NULL, "%s: out of memory", path);
				free(buf);
				fclose(fp);
				return -ENOMEM;
			}
			buf = nb;
		}
		size_t n = fread(buf + len, 1, cap - len, fp);
		len += n;
		if (n == 0)
			break;
	}
	if (ferror(fp)) {
		seterr(err, errlen, NULL, "cannot read %s: %s", path, strerror(errno));
		free(buf);
		fclose(fp);
		return -EIO;
	}
	fclose(fp);
	*out = buf;
	*outlen = len;
	return 0;
}

int
config_read_file(const char *path, cJSON **root, char *err, size_t errlen)
{
	char *buf = NULL;
	size_t len = 0;
	int rc;

	*root = NULL;
	if ((rc = read_file(path, &buf, &len, err, errlen)) < 0)
		return rc;
	*root = json_parse_strict(buf ? buf : "", len, err, errlen);
	free(buf);
	return *root ? 0 : -EINVAL;
}

int
config_load_file(const char *path, struct config *cfg, char *err, size_t errlen)
{
	cJSON *root;
	int rc;

	if ((rc = config_read_file(path, &root, err, errlen)) < 0)
		return rc;
	rc = config_load_tree(root, cfg, NULL, err, errlen);
	cJSON_Delete(root);
	return rc;
}

static cJSON *
field_to_json(const struct cf_field *f, const struct config *cfg)
{
	const char *src = (const char *)cfg + f->off;
	char buf[64];

	switch (f->type) {
	case CF_INT: return cJSON_CreateNumber(*(const int *)src);
	case CF_PORT: return cJSON_CreateNumber(*(const uint16_t *)src);
	case CF_DURATION_S:
		snprintf(buf, sizeof(buf), "%" PRIu32 "s", *(const uint32_t *)src);
		return cJSON_CreateString(buf);
	case CF_STR:
	case CF_HOSTPORT:
	case CF_TRUSTDOMAIN:
		return cJSON_CreateString(src);
	case CF_DURATION: {
		uint32_t ms = *(const uint32_t *)src;
		if (ms % 1000)
			snprintf(buf, sizeof(buf), "%" PRIu32 ".%03" PRIu32 "s", ms / 1000, ms % 1000);
		else
			snprintf(buf, sizeof(buf), "%" PRIu32 "s", ms / 1000);
		return cJSON_CreateString(buf);
	}
	case CF_LOGLEVEL: return cJSON_CreateString(log_level_str(*(const enum log_level *)src));
	case CF_MODE:
		return cJSON_CreateString(*(const enum intercept_mode *)src == INTERCEPT_TPROXY ? "TPROXY" : "REDIRECT");
	case CF_ADDR: return cJSON_CreateString(src);
	case CF_BOOL: return cJSON_CreateBool(*(const bool *)src);
	case CF_POLICY:
		return cJSON_CreateString(*(const enum outbound_policy *)src == OUTBOUND_REGISTRY_ONLY ?
		    "REGISTRY_ONLY" : "ALLOW_ANY");
	case CF_ALENC:
		return cJSON_CreateString(accesslog_encoding_str(*(const enum accesslog_encoding *)src));
	}
	return NULL;
}

cJSON *
config_to_json(const struct config *cfg)
{
	cJSON *root = cJSON_CreateObject();

	if (!root)
		return NULL;
	for (size_t i = 0; i < NFIELDS; i++) {
		const struct cf_field *f = &schema[i];
		char path[128], *comp, *dot;
		cJSON *obj = root;

		/* One object per component of "section.a.b", the last a value. */
		snprintf(path, sizeof(path), "%s.%s", f->section, f->key);
		for (comp = path; (dot = strchr(comp, '.')); comp = dot + 1) {
			*dot = '\0';
			cJSON *sub = cJSON_GetObjectItemCaseSensitive(obj, comp);
			if (!sub && !(sub = cJSON_AddObjectToObject(obj, comp)))
				goto oom;
			obj = sub;
		}
		cJSON *v = field_to_json(f, cfg);
		if (!v)
			goto oom;
		cJSON_AddItemToObject(obj, comp, v);
	}
	return root;
oom:
	cJSON_Delete(root);
	return NULL;
}

void
config_print_schema(void)
{
	char path[128];

	for (size_t i = 0; i < NFIELDS; i++) {
		const struct cf_field *f = &schema[i];
		snprintf(path, sizeof(path), "%s.%s", f->section, f->key);
		printf("  %-34s %-18s %-8s default %-10s %s", path, cf_type_names[f->type],
		    f->when == CF_LIVE ? "live" : "restart", *f->def ? f->def : "\"\"", f->help);
		if (f->env) {
			printf(" (environment: ");
			for (const char *e = f->env; *e; e++)
				printf(*e == ' ' ? ", else " : "%c", *e);
			printf(")");
		}
		printf("\n");
	}
	printf("  %-34s %-18s %-8s default %-10s %s\n", RESOURCES_KEY, "list of resources", "live", "[]",
	    "static mesh resources, each {\"@type\": \"type.googleapis.com/<type>\", <fields>} "
	    "(outrigger.json(5))");
}
