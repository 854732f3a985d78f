/* accesslog: one line per connection, TEXT or JSON (see accesslog.h, README
 * "Access log" for the fields). */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "accesslog.h"
#include "log.h"
#include "metrics.h"
#include "strbuf.h"

bool accesslog_enabled;
enum accesslog_encoding accesslog_encoding = AL_TEXT;

/* Every string field is cut at AL_FIELD_MAX output bytes (its escapes
 * included), so the longest line (16 such fields and the numbers) fits
 * AL_LINE_MAX and a JSON line is always a whole object. */
#define AL_FIELD_MAX 512
#define AL_LINE_MAX 12288

int
accesslog_encoding_parse(const char *s, enum accesslog_encoding *out)
{
	if (strcasecmp(s, "text") == 0)
		*out = AL_TEXT;
	else if (strcasecmp(s, "json") == 0)
		*out = AL_JSON;
	else
		return -EINVAL;
	return 0;
}

const char *
accesslog_encoding_str(enum accesslog_encoding e)
{
	return e == AL_JSON ? "JSON" : "TEXT";
}

struct out {
	char *p;
	size_t len, cap;
};

static void
put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
put(struct out *o, const char *fmt, ...)
{
	va_list ap;

	if (o->len + 1 >= o->cap)
		return;
	va_start(ap, fmt);
	int n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	o->len += (size_t)n;
	if (o->len >= o->cap)
		o->len = o->cap - 1;
}

static void
putc_(struct out *o, char c)
{
	if (o->len + 1 < o->cap) {
		o->p[o->len++] = c;
		o->p[o->len] = 0;
	}
}

/* A JSON string (null for none): peers choose SPIFFE IDs' text and policy
 * names come from the control plane, so quotes, backslashes and controls
 * are escaped, well-formed UTF-8 is kept as it is, and a byte that is not
 * UTF-8 becomes \ufffd: the line stays valid JSON whatever the bytes. */
static void
put_json_str(struct out *o, const char *key, const char *v)
{
	size_t start;

	put(o, "%s\"%s\":", o->len > 1 ? "," : "", key);
	if (!v || !*v) {
		put(o, "null");
		return;
	}
	putc_(o, '"');
	start = o->len;
	for (const unsigned char *c = (const unsigned char *)v; *c && o->len - start < AL_FIELD_MAX; c++) {
		size_t k;

		if (*c == '"' || *c == '\\')
			put(o, "\\%c", *c);
		else if (*c < 0x20 || *c == 0x7f)
			put(o, "\\u%04x", *c);
		else if (*c < 0x80)
			putc_(o, (char)*c);
		else if ((k = utf8_seq(c)) > 0 && o->len - start + k <= AL_FIELD_MAX) {
			for (size_t i = 0; i < k; i++)
				putc_(o, (char)c[i]);
			c += k - 1;
		} else if (k > 0)
			break;		/* the cut falls inside a character: end before it */
		else
			put(o, "\\ufffd");
	}
	putc_(o, '"');
}

static void
put_json_num(struct out *o, const char *key, uint64_t v)
{
	put(o, "%s\"%s\":%llu", o->len > 1 ? "," : "", key, (unsigned long long)v);
}

/* TEXT fields come from peers too: no space, quote or control (nor a byte
 * that is not ASCII) may split one or forge a line: each becomes '?'. */
static void
put_text(struct out *o, const char *v)
{
	size_t n = 0;

	if (!v || !*v)
		v = "-";
	for (const unsigned char *c = (const unsigned char *)v; *c && n < AL_FIELD_MAX; c++, n++)
		putc_(o, (*c <= 0x20 || *c >= 0x7f || *c == '"') ? '?' : (char)*c);
}

size_t
accesslog_format(const struct accesslog_rec *r, enum accesslog_encoding enc, char *buf, size_t cap)
{
	struct out o = { .p = buf, .cap = cap };
	char ts[80];	/* as wide as gcc bounds each %d */
	/* Rounded to the millisecond first: .123 is 0.12299.. as a double. */
	long long all_ms = r->start > 0 ? llround(r->start * 1000.0) : 0;
	time_t sec = (time_t)(all_ms / 1000);
	long ms = (long)(all_ms % 1000);
	struct tm tm;

	if (cap < 2)
		return 0;
	gmtime_r(&sec, &tm);
	snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
	    tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
	buf[0] = 0;
	if (enc == AL_JSON) {
		/* Istio's default JSON keys (EnvoyJSONLogFormatIstio), the HTTP
		 * ones null as Envoy prints them for TCP; then ours. */
		putc_(&o, '{');
		put_json_str(&o, "start_time", ts);
		put_json_str(&o, "method", NULL);
		put_json_str(&o, "path", NULL);
		put_json_str(&o, "protocol", NULL);
		put_json_num(&o, "response_code", 0);
		put_json_str(&o, "response_flags", r->response_flags && *r->response_flags ? r->response_flags : "-");
		put_json_str(&o, "response_code_details", NULL);
		put_json_str(&o, "connection_termination_details", r->termination);
		put_json_str(&o, "upstream_transport_failure_reason", NULL);
		put_json_num(&o, "bytes_received", r->bytes_received);
		put_json_num(&o, "bytes_sent", r->bytes_sent);
		put_json_num(&o, "duration", r->duration_ms);
		put_json_str(&o, "upstream_service_time", NULL);
		put_json_str(&o, "x_forwarded_for", NULL);
		put_json_str(&o, "user_agent", NULL);
		put_json_str(&o, "request_id", NULL);
		put_json_str(&o, "authority", NULL);
		put_json_str(&o, "upstream_host", r->upstream_host);
		put_json_str(&o, "upstream_cluster", r->upstream_cluster);
		put_json_str(&o, "upstream_local_address", NULL);
		put_json_str(&o, "downstream_local_address", r->downstream_local);
		put_json_str(&o, "downstream_remote_address", r->downstream_remote);
		put_json_str(&o, "requested_server_name", NULL);
		put_json_str(&o, "route_name", NULL);
		put_json_str(&o, "direction", r->direction);
		put_json_str(&o, "listener", r->listener);
		put_json_str(&o, "source_principal", r->source_principal);
		put_json_str(&o, "destination_principal", r->destination_principal);
		put_json_str(&o, "authorization_policy", r->authz_policy);
		put_json_str(&o, "authorization_decision", r->authz_decision);
		putc_(&o, '}');
	} else {
		/* Istio's default TEXT shape (EnvoyTextLogFormat); what Envoy
		 * prints for a TCP connection where HTTP fields would be. */
		put(&o, "[%s] \"- - -\" 0 ", ts);
		put_text(&o, r->response_flags);
		put(&o, " - ");
		put_text(&o, r->termination);
		put(&o, " \"-\" %llu %llu %llu - \"-\" \"-\" \"-\" \"-\" \"", (unsigned long long)r->bytes_received,
		    (unsigned long long)r->bytes_sent, (unsigned long long)r->duration_ms);
		put_text(&o, r->upstream_host);
		put(&o, "\" ");
		put_text(&o, r->upstream_cluster);
		put(&o, " - ");
		put_text(&o, r->downstream_local);
		putc_(&o, ' ');
		put_text(&o, r->downstream_remote);
		put(&o, " - - ");
		/* ours, after Istio's fields */
		put_text(&o, r->direction);
		putc_(&o, ' ');
		put_text(&o, r->listener);
		putc_(&o, ' ');
		put_text(&o, r->source_principal);
		putc_(&o, ' ');
		put_text(&o, r->destination_principal);
		putc_(&o, ' ');
		put_text(&o, r->authz_policy);
		putc_(&o, ' ');
		put_text(&o, r->authz_decision);
	}
	if (o.len > cap - 2)
		o.len = cap - 2;
	buf[o.len++] = '\n';
	buf[o.len] = 0;
	return o.len;
}

void
accesslog_emit(const struct accesslog_rec *rec)
{
	char line[AL_LINE_MAX];

	if (!accesslog_on())
		return;
	size_t n = accesslog_format(rec, (enum accesslog_encoding)__atomic_load_n(&accesslog_encoding,
	    __ATOMIC_RELAXED), line, sizeof(line));
	if (log_raw(line, n) != 0)
		__atomic_fetch_add(&process_stats[PM_ACCESS_LOG_DROPPED], 1, __ATOMIC_RELAXED);
}

/* --- the destination (control thread) ------------------------------------ */

static char cur_path[256];		/* where lines go now ("": nowhere) */
static char cfg_path[256];		/* the setting last applied */
static enum accesslog_encoding cfg_enc = AL_TEXT;
static bool configured;
static bool cfg_failed;		/* cfg_path did not open: a SIGHUP tries again */

/* Open path for the log thread: /dev/stdout and /dev/stderr are our own
 * descriptors (not reopened: a rotation does not apply), anything else a
 * file opened for appending. */
static int
open_dest(const char *path)
{
	int fd;

	if (!*path) {
		log_access_fd(-1, false);
	} else if (strcmp(path, "/dev/stdout") == 0) {
		log_access_fd(STDOUT_FILENO, false);
	} else if (strcmp(path, "/dev/stderr") == 0) {
		log_access_fd(STDERR_FILENO, false);
	} else {
		/* O_NONBLOCK: a FIFO with no reader must not hang the control
		 * thread here; the log thread's writes wait (write_all polls). */
		fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0644);
		if (fd < 0) {
			int err = errno;
			log_error("access log %s: %s (lines keep going to %s)", path, strerror(err),
			    *cur_path ? cur_path : "nowhere");
			return -err;
		}
		log_access_fd(fd, true);
	}
	snprintf(cur_path, sizeof(cur_path), "%s", path);
	return 0;
}

int
accesslog_configure(const char *path, enum accesslog_encoding enc, bool reopen)
{
	int rc = 0;

	if (!configured || strcmp(path, cfg_path) != 0) {
		snprintf(cfg_path, sizeof(cfg_path), "%s", path);
		cfg_failed = (rc = open_dest(path)) < 0;
		if (rc == 0) {
			__atomic_store_n(&accesslog_enabled, *path != 0, __ATOMIC_RELAXED);
			if (configured || *path)
				log_info("access log: %s", *path ? path : "off");
		}
	} else if (reopen && cfg_failed) {
		/* The setting's destination failed to open (a directory not
		 * there yet, say): each SIGHUP tries it again. */
		if ((rc = open_dest(cfg_path)) == 0) {
			cfg_failed = false;
			__atomic_store_n(&accesslog_enabled, *cfg_path != 0, __ATOMIC_RELAXED);
			log_info("access log: %s", *cfg_path ? cfg_path : "off");
		}
	} else if (reopen && *cur_path && strncmp(cur_path, "/dev/std", 8) != 0) {
		char same[sizeof(cur_path)];	/* open_dest writes cur_path */

		memcpy(same, cur_path, sizeof(same));
		rc = open_dest(same);	/* rotation: the same name, a new file */
	}
	if (!configured || enc != cfg_enc) {
		cfg_enc = enc;
		__atomic_store_n(&accesslog_encoding, enc, __ATOMIC_RELAXED);
	}
	configured = true;
	return rc;
}

int
accesslog_set_enabled(bool on)
{
	int rc;

	if (on && !*cur_path && (rc = open_dest("/dev/stdout")) < 0)
		return rc;
	__atomic_store_n(&accesslog_enabled, on, __ATOMIC_RELAXED);
	return 0;
}

void
accesslog_set_encoding(enum accesslog_encoding e)
{
	__atomic_store_n(&accesslog_encoding, e, __ATOMIC_RELAXED);
}

const char *
accesslog_destination(void)
{
	return cur_path;
}
