/* accesslog: one line per connection, in Istio's default TEXT shape (the
 * fields Envoy prints "-" for on TCP kept as "-", ours appended) or as JSON
 * with Istio's default JSON keys (and ours). Lines go through the access log
 * lane of log.c's bounded queue and its writer thread (log_raw), so a worker
 * never blocks; a full queue drops the line and counts it
 * (access_log_dropped). Settings: mesh.accessLogFile, mesh.accessLogEncoding
 * (MeshConfig's names); at run time the admin /logging endpoint. */
#ifndef OR_ACCESSLOG_H
#define OR_ACCESSLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum accesslog_encoding { AL_TEXT, AL_JSON };

/* One connection's facts, as strings ready to print (NULL or "" = "-"). */
struct accesslog_rec {
	double start;			/* wall clock, seconds */
	uint64_t duration_ms;
	const char *direction;		/* "inbound" / "outbound" */
	const char *listener;		/* "inbound" (15006), "outbound" (15001), "hbone" (15008) */
	const char *downstream_remote;	/* "ip:port": the client (HBONE: the HBONE peer) */
	const char *downstream_local;	/* the original destination */
	const char *upstream_host;	/* the endpoint connected (or attempted) */
	const char *upstream_cluster;	/* "outbound|port||host", "inbound|port||", "PassthroughCluster" */
	uint64_t bytes_received, bytes_sent;
	const char *response_flags;	/* tunnel_rflags_str */
	const char *termination;	/* connection_termination_details */
	const char *source_principal, *destination_principal;
	const char *authz_policy;	/* the deciding policy, "ns/name" */
	const char *authz_decision;	/* "allow", "deny"; NULL: not checked */
};

/* Runtime switches (config, the /logging endpoint), read by the workers
 * with relaxed loads: a change applies to the next line. */
extern bool accesslog_enabled;
extern enum accesslog_encoding accesslog_encoding;

static inline bool
accesslog_on(void)
{
	return __atomic_load_n(&accesslog_enabled, __ATOMIC_RELAXED);
}

/* Format rec into buf (cap bytes) as one line ending in '\n'; returns its
 * length (the line is cut, still '\n'-terminated, if cap is too small: for
 * JSON still a whole object, the longest strings shortened). */
size_t accesslog_format(const struct accesslog_rec *rec, enum accesslog_encoding enc, char *buf, size_t cap);
/* Format and queue rec when the access log is on. Any worker. */
void accesslog_emit(const struct accesslog_rec *rec);
/* "text"/"json" (any case) -> encoding: 0 or -EINVAL. */
int accesslog_encoding_parse(const char *s, enum accesslog_encoding *out);
const char *accesslog_encoding_str(enum accesslog_encoding e);	/* "TEXT", "JSON" */

/* Control thread. The configured destination and encoding (mesh.*) at
 * every publication: a changed path is opened (and the log is on when it
 * is not ""), a changed encoding is set; reopen (SIGHUP, log rotation): a
 * file path is opened again even when unchanged. A runtime switch
 * (/logging) stays until the setting itself changes. 0, or -errno when the
 * file cannot be opened (the previous destination stays; logged). */
int accesslog_configure(const char *path, enum accesslog_encoding enc, bool reopen);
/* /logging: on/off. Turning it on with no destination configured writes to
 * /dev/stdout (Istio's usual one). 0 or -errno. */
int accesslog_set_enabled(bool on);
void accesslog_set_encoding(enum accesslog_encoding e);
/* Where lines go now ("" = nowhere), for /logging. */
const char *accesslog_destination(void);

#endif
