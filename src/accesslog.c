/* accesslog: one line per connection, TEXT or JSON (see accesslog.h, README
 * "Access log" for the fields). */
#include "autoconfig.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "accesslog.h"
#include "log.h"
#include "metrics.h"

bool accesslog_enabled;
enum accesslog_encoding accesslog_encoding = AL_TEXT;

#define AL_LINE_MAX 2048

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

static const char *
dash(const char *s)
{
	return s && *s ? s : "-";
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

/* A JSON string (or null for "-"): peers choose SPIFFE IDs' text, so
 * quotes, backslashes and controls are escaped. */
static void
put_json_str(struct out *o, const char *key, const char *v, bool first)
{
	put(o, "%s\"%s\":", first ? "" : ",", key);
	if (!v || !*v) {
		put(o, "null");
		return;
	}
	put(o, "\"");
	for (const unsigned char *c = (const unsigned char *)v; *c; c++) {
		if (*c == '"' || *c == '\\')
			put(o, "\\%c", *c);
		else if (*c < 0x20 || *c == 0x7f)
			put(o, "\\u%04x", *c);
		else
			put(o, "%c", *c);
	}
	put(o, "\"");
}

/* TEXT fields come from peers too: no space, quote or control may split one. */
static void
put_text(struct out *o, const char *v)
{
	v = dash(v);
	for (const unsigned char *c = (const unsigned char *)v; *c; c++)
		put(o, "%c", (*c <= 0x20 || *c == 0x7f || *c == '"') ? '?' : *c);
}

size_t
accesslog_format(const struct accesslog_rec *r, enum accesslog_encoding enc, char *buf, size_t cap)
{
	struct out o = { .p = buf, .cap = cap };
	char ts[40];
	time_t sec = (time_t)r->start;
	long ms = (long)((r->start - (double)sec) * 1000.0);
	struct tm tm;

	if (cap < 2)
		return 0;
	if (ms < 0 || ms > 999)
		ms = 0;
	gmtime_r(&sec, &tm);
	snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
	    tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
	buf[0] = 0;
	if (enc == AL_JSON) {
		put_json_str(&o, "start_time", ts, true);
		put(&o, ",\"duration\":%llu", (unsigned long long)r->duration_ms);
		put_json_str(&o, "direction", r->direction, false);
		put_json_str(&o, "protocol", NULL, false);
		put_json_str(&o, "response_code", NULL, false);
		put_json_str(&o, "response_flags", dash(r->response_flags), false);
		put_json_str(&o, "connection_termination_details", r->termination, false);
		put(&o, ",\"bytes_received\":%llu,\"bytes_sent\":%llu", (unsigned long long)r->bytes_received,
		    (unsigned long long)r->bytes_sent);
		put_json_str(&o, "upstream_host", r->upstream_host, false);
		put_json_str(&o, "upstream_cluster", r->upstream_cluster, false);
		put_json_str(&o, "downstream_local_address", r->downstream_local, false);
		put_json_str(&o, "downstream_remote_address", r->downstream_remote, false);
		put_json_str(&o, "source_principal", r->source_principal, false);
		put_json_str(&o, "destination_principal", r->destination_principal, false);
		put_json_str(&o, "authorization_policy", r->authz_policy, false);
		put_json_str(&o, "authorization_decision", r->authz_decision, false);
		put(&o, "}");
		/* the opening brace last: put() appends, so shift once */
		if (o.len + 2 < cap) {
			memmove(buf + 1, buf, o.len + 1);
			buf[0] = '{';
			o.len++;
		}
	} else {
		/* Istio's default TEXT shape; the HTTP fields are "-" for TCP. */
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
		put(&o, " ");
		put_text(&o, r->downstream_remote);
		put(&o, " - - ");
		/* ours, after Istio's fields */
		put_text(&o, r->direction);
		put(&o, " ");
		put_text(&o, r->source_principal);
		put(&o, " ");
		put_text(&o, r->destination_principal);
		put(&o, " ");
		put_text(&o, r->authz_policy);
		put(&o, " ");
		put_text(&o, r->authz_decision);
	}
	if (o.len >= cap - 1)
		o.len = cap - 2;
	buf[o.len++] = '\n';
	buf[o.len] = 0;
	return o.len;
}

void
accesslog_emit(const struct accesslog_rec *rec)
{
	char line[AL_LINE_MAX];

	if (!__atomic_load_n(&accesslog_enabled, __ATOMIC_RELAXED))
		return;
	size_t n = accesslog_format(rec, (enum accesslog_encoding)__atomic_load_n(&accesslog_encoding,
	    __ATOMIC_RELAXED), line, sizeof(line));
	if (log_raw(line, n) != 0)
		__atomic_fetch_add(&process_stats[PM_ACCESS_LOG_DROPPED], 1, __ATOMIC_RELAXED);
}
