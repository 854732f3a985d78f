/* metrics: the tables generated from the lists in metrics.h, histograms, and
 * the exposition formats (Prometheus text, and the sorted rows of /stats). */
#include "autoconfig.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

const char *const listener_names[LST__COUNT] = {
#define X(e, name) [LST_##e] = name,
	LISTENERS(X)
#undef X
};

const struct metric_desc listener_metric_desc[LM__COUNT] = {
#define X(e, n, kind, help) [LM_##e] = { #n, help, METRIC_##kind },
	LISTENER_METRICS(X)
#undef X
};

const struct metric_desc worker_metric_desc[WM__COUNT] = {
#define X(e, n, kind, help) [WM_##e] = { #n, help, METRIC_##kind },
	WORKER_METRICS(X)
#undef X
};

const struct metric_desc server_metric_desc[SM__COUNT] = {
#define X(e, n, kind, help) [SM_##e] = { #n, help, METRIC_##kind },
	SERVER_METRICS(X)
#undef X
};

const struct metric_desc listener_hist_desc[LH__COUNT] = {
#define X(e, n, kind, help) [LH_##e] = { #n, help, METRIC_##kind },
	LISTENER_HISTOGRAMS(X)
#undef X
};

const struct metric_desc process_metric_desc[PM__COUNT] = {
#define X(e, n, kind, help) [PM_##e] = { #n, help, METRIC_##kind },
	PROCESS_METRICS(X)
#undef X
};

const char *const metric_kind_names[3] = {
	[METRIC_COUNTER] = "counter", [METRIC_GAUGE] = "gauge", [METRIC_HISTOGRAM] = "histogram",
};

const double hist_bounds_ms[HIST_NBOUNDS] = { HIST_BOUNDS_MS };

uint64_t process_stats[PM__COUNT];

void
hist_observe(struct hist *h, uint64_t us)
{
	unsigned i = 0;

	while (i < HIST_NBOUNDS && (double)us > hist_bounds_ms[i] * 1000.0)
		i++;
	stat_add(&h->bucket[i], 1);
	stat_add(&h->sum_us, us);
}

void
hist_observe_s(struct hist *h, double seconds)
{
	hist_observe(h, seconds > 0 ? (uint64_t)(seconds * 1e6) : 0);
}

void
hist_accumulate(struct hist *acc, const struct hist *h)
{
	for (unsigned i = 0; i <= HIST_NBOUNDS; i++)
		acc->bucket[i] += stat_read(&h->bucket[i]);
	acc->sum_us += stat_read(&h->sum_us);
}

void
prom_family(struct strbuf *sb, const char *name, const char *help, enum metric_kind kind)
{
	sb_printf(sb, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, metric_kind_names[kind]);
}

void
prom_sample(struct strbuf *sb, const char *name, const char *labels, uint64_t v)
{
	if (labels)
		sb_printf(sb, "%s{%s} %" PRIu64 "\n", name, labels, v);
	else
		sb_printf(sb, "%s %" PRIu64 "\n", name, v);
}

void
prom_histogram(struct strbuf *sb, const char *name, const char *labels, const struct hist *h)
{
	const char *sep = labels ? "," : "";
	uint64_t cum = 0;

	if (!labels)
		labels = "";
	for (unsigned i = 0; i <= HIST_NBOUNDS; i++) {
		cum += h->bucket[i];
		if (i < HIST_NBOUNDS)
			sb_printf(sb, "%s_bucket{%s%sle=\"%.10g\"} %" PRIu64 "\n", name, labels, sep, hist_bounds_ms[i], cum);
		else
			sb_printf(sb, "%s_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n", name, labels, sep, cum);
	}
	sb_printf(sb, "%s_sum%s%s%s %" PRIu64 ".%03" PRIu64 "\n", name, *labels ? "{" : "", labels,
	    *labels ? "}" : "", h->sum_us / 1000, h->sum_us % 1000);
	sb_printf(sb, "%s_count%s%s%s %" PRIu64 "\n", name, *labels ? "{" : "", labels, *labels ? "}" : "", cum);
}

void
prom_label_value(struct strbuf *sb, const char *v)
{
	const unsigned char *p = (const unsigned char *)v;

	while (*p) {
		/* A run that needs nothing: ASCII but the escaped three, and
		 * well-formed UTF-8 (Prometheus refuses a scrape that is not). */
		const unsigned char *q = p;
		size_t k;
		while (*q && *q != '\\' && *q != '"' && *q != '\n' && (k = utf8_seq(q)) > 0)
			q += k;
		sb_append(sb, (const char *)p, (size_t)(q - p));
		if (!*q)
			break;
		if (*q == '\\' || *q == '"' || *q == '\n')
			sb_append(sb, *q == '\n' ? "\\n" : *q == '"' ? "\\\"" : "\\\\", 2);
		else
			sb_append(sb, "\xef\xbf\xbd", 3);	/* U+FFFD for a byte that is not UTF-8 */
		p = q + 1;
	}
}

void
stat_rows_add(struct stat_rows *rs, uint64_t value, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (rs->oom)
		return;
	if (rs->n == rs->cap) {
		size_t cap = rs->cap ? rs->cap * 2 : 64;
		struct stat_row *r = realloc(rs->r, cap * sizeof(*r));
		if (!r) {
			rs->oom = true;
			return;
		}
		rs->r = r;
		rs->cap = cap;
	}
	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0) {
		rs->oom = true;
		return;
	}
	char *name = malloc((size_t)n + 1);
	if (!name) {
		rs->oom = true;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(name, (size_t)n + 1, fmt, ap);
	va_end(ap);
	/* Offsets, not pointers: the buffer moves as it grows. NUL-separated. */
	size_t off = rs->names.len;
	sb_append(&rs->names, name, (size_t)n + 1);
	free(name);
	if (rs->names.oom) {
		rs->oom = true;
		return;
	}
	rs->r[rs->n++] = (struct stat_row){ .off = off, .value = value };
}

static const char *sort_base;

static int
row_cmp(const void *a, const void *b)
{
	return strcmp(sort_base + ((const struct stat_row *)a)->off, sort_base + ((const struct stat_row *)b)->off);
}

static void
json_string(struct strbuf *sb, const char *s)
{
	sb_append(sb, "\"", 1);
	for (const char *p = s; *p; p++) {
		if (*p == '"' || *p == '\\')
			sb_printf(sb, "\\%c", *p);
		else if ((unsigned char)*p < 0x20)
			sb_printf(sb, "\\u%04x", (unsigned char)*p);
		else
			sb_append(sb, p, 1);
	}
	sb_append(sb, "\"", 1);
}

void
stat_rows_render(struct stat_rows *rs, struct strbuf *sb, const char *format)
{
	if (rs->oom) {
		sb->oom = true;
		return;
	}
	/* Called on the control thread only, so the static comparison base is safe. */
	sort_base = rs->names.p;
	if (rs->n)
		qsort(rs->r, rs->n, sizeof(*rs->r), row_cmp);
	bool json = strcmp(format, "json") == 0;
	if (json)
		sb_printf(sb, "{\"stats\":[");
	for (size_t i = 0; i < rs->n; i++) {
		const char *name = rs->names.p + rs->r[i].off;
		if (json) {
			sb_printf(sb, "%s{\"name\":", i ? "," : "");
			json_string(sb, name);
			sb_printf(sb, ",\"value\":%" PRIu64 "}", rs->r[i].value);
		} else {
			sb_printf(sb, "%s: %" PRIu64 "\n", name, rs->r[i].value);
		}
	}
	if (json)
		sb_printf(sb, "]}\n");
}

void
stat_rows_free(struct stat_rows *rs)
{
	sb_free(&rs->names);
	free(rs->r);
	*rs = (struct stat_rows){ 0 };
}
