/* accesslog: one line per connection, in Istio's default TEXT shape (the
 * fields Envoy prints "-" for TCP kept as "-") or as JSON with Istio's
 * default JSON keys. Lines go through log.c's bounded queue and its writer
 * thread (log_raw), so a worker never blocks; a full queue drops the line
 * and counts it (access_log_dropped). */
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
	const char *direction;		/* "inbound" / "outbound" (listener) */
	const char *downstream_remote;	/* "ip:port" */
	const char *downstream_local;	/* the original destination */
	const char *upstream_host;	/* the endpoint connected */
	const char *upstream_cluster;	/* the service, "outbound|port||host" */
	uint64_t bytes_received, bytes_sent;
	const char *response_flags;	/* tunnel_rflags_str */
	const char *termination;	/* connection_termination_details */
	const char *source_principal, *destination_principal;
	/* Authorization (branch authz): printed "-" until it sets them. */
	const char *authz_policy, *authz_decision;
};

/* Runtime switches (the /logging endpoint and config): relaxed atomics. */
extern bool accesslog_enabled;
extern enum accesslog_encoding accesslog_encoding;

/* Format rec into buf (cap bytes) as one line ending in '\n'; returns its
 * length (the line is cut, still '\n'-terminated, if cap is too small). */
size_t accesslog_format(const struct accesslog_rec *rec, enum accesslog_encoding enc, char *buf, size_t cap);
/* Format and queue rec when the access log is on. */
void accesslog_emit(const struct accesslog_rec *rec);
/* "text"/"json" (any case) -> encoding: 0 or -EINVAL. */
int accesslog_encoding_parse(const char *s, enum accesslog_encoding *out);

#endif
