/* config: the proxy's own settings: one schema table gives each key's type, default,
 * bounds and help; JSON files are checked against it with the JSON path in every error. */
#include "autoconfig.h"

#include "config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sock.h"

enum cf_type {
	CF_INT,		/* JSON number (or decimal string, as proto3 JSON allows) */
	CF_PORT,	/* CF_INT in 1..65535, stored as uint16_t */
	CF_DURATION,	/* proto3 JSON Duration string "1.5s", stored as uint32_t ms */
	CF_LOGLEVEL,	/* "error" .. "trace" */
	CF_MODE,	/* "REDIRECT" | "TPROXY" */
	CF_ADDR,	/* numeric IPv4/IPv6 address, stored as char[64] */
	CF_BOOL,	/* JSON true/false, stored as bool */
};

static const char *const cf_type_names[] = {
	[CF_INT] = "integer", [CF_PORT] = "port", [CF_DURATION] = "duration",
	[CF_LOGLEVEL] = "log level", [CF_MODE] = "interception mode", [CF_ADDR] = "IP address",
	[CF_BOOL] = "boolean",
};

/* One key of the schema. min/max bound CF_INT and CF_DURATION (in ms). */
struct cf_field {
	const char *section;
	const char *key;
	enum cf_type type;
	size_t off;
	long long min, max;
	const char *def;	/* parsed by the same code as the file: one source of truth */
	const char *help;
};

#define F(sec, key, type, member, min, max, def, help) \
	{ sec, key, type, offsetof(struct config, member), min, max, def, help }

static const struct cf_field schema[] = {
	F("proxy", "concurrency", CF_INT, concurrency, 1, 256, "2",
	    "worker threads, each with its own listeners and event loop"),
	F("proxy", "logLevel", CF_LOGLEVEL, log_level, 0, 0, "info",
	    "error, warn, info, debug or trace"),
	F("proxy", "interceptionMode", CF_MODE, mode, 0, 0, "REDIRECT",
	    "how inbound traffic is captured: REDIRECT or TPROXY (as set for outrigger-init -m)"),
	F("proxy", "connectTimeout", CF_DURATION, connect_timeout_ms, 1, 3600000, "10s",
	    "upstream TCP connect timeout"),
	F("proxy", "idleTimeout", CF_DURATION, idle_timeout_ms, 0, 2592000000LL, "3600s",
	    "close a connection after this long with no bytes in either direction; 0s = never"),
	F("proxy", "terminationDrainDuration", CF_DURATION, drain_ms, 0, 3600000, "5s",
	    "after SIGTERM, how long open connections may finish"),
	F("proxy", "exitOnZeroActiveConnections", CF_BOOL, exit_on_zero, 0, 0, "false",
	    "end the drain as soon as no connection is left (Istio's EXIT_ON_ZERO_ACTIVE_CONNECTIONS)"),
	F("proxy", "proxyListenPort", CF_PORT, outbound_port, 1, 65535, "15001",
	    "outbound capture port (outrigger-init -p)"),
	F("proxy", "proxyInboundListenPort", CF_PORT, inbound_port, 1, 65535, "15006",
	    "inbound capture port (outrigger-init -z)"),
	F("proxy", "proxyAdminPort", CF_PORT, admin_port, 1, 65535, "15000",
	    "admin API port"),
	F("proxy", "adminAddress", CF_ADDR, admin_address, 0, 0, "127.0.0.1",
	    "admin API address; keep it on loopback"),
	F("proxy", "healthPort", CF_PORT, health_port, 1, 65535, "15021",
	    "readiness port serving /healthz/ready on all addresses"),
};

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

static void
quote_value(const cJSON *v, char *buf, size_t len)
{
	char *txt = cJSON_PrintUnformatted(v);

	snprintf(buf, len, "%.60s%s", txt ? txt : "?", txt && strlen(txt) > 60 ? "..." : "");
	free(txt);
}

/* Store one value into cfg; string form (defaults) or JSON form (files). */
static int
set_field(const struct cf_field *f, const cJSON *v, const char *str, struct config *cfg,
    char *err, size_t errlen)
{
	char *dst = (char *)cfg + f->off;
	char got[80];
	long long n;

	if (v)
		quote_value(v, got, sizeof(got));
	else
		snprintf(got, sizeof(got), "\"%s\"", str);

	switch (f->type) {
	case CF_INT:
	case CF_PORT: {
		long long lo = f->type == CF_PORT ? 1 : f->min, hi = f->type == CF_PORT ? 65535 : f->max;
		if (v && cJSON_IsNumber(v)) {
			double d = v->valuedouble;
			if (d != floor(d) || d < (double)LLONG_MIN / 2 || d > (double)LLONG_MAX / 2)
				goto badint;
			n = (long long)d;
		} else {
			const char *s = v ? (cJSON_IsString(v) ? v->valuestring : NULL) : str;
			char *end;
			if (!s || !*s)
				goto badint;
			errno = 0;
			n = strtoll(s, &end, 10);
			if (*end || errno)
				goto badint;
		}
		if (n < lo || n > hi) {
			seterr(err, errlen, f, "expected an integer from %lld to %lld, got %s", lo, hi, got);
			return -EINVAL;
		}
		if (f->type == CF_PORT)
			*(uint16_t *)dst = (uint16_t)n;
		else
			*(int *)dst = (int)n;
		return 0;
badint:
		seterr(err, errlen, f, "expected an integer from %lld to %lld, got %s", lo, hi, got);
		return -EINVAL;
	}
	case CF_DURATION: {
		const char *s = v ? (cJSON_IsString(v) ? v->valuestring : NULL) : str;
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
		*(uint32_t *)dst = (uint32_t)n;
		return 0;
	}
	case CF_LOGLEVEL: {
		const char *s = v ? (cJSON_IsString(v) ? v->valuestring : NULL) : str;
		enum log_level l;
		if (!s || log_level_parse(s, &l) < 0) {
			seterr(err, errlen, f, "expected one of \"error\", \"warn\", \"info\", \"debug\", \"trace\", got %s", got);
			return -EINVAL;
		}
		*(enum log_level *)dst = l;
		return 0;
	}
	case CF_MODE: {
		const char *s = v ? (cJSON_IsString(v) ? v->valuestring : NULL) : str;
		if (s && strcmp(s, "REDIRECT") == 0)
			*(enum intercept_mode *)dst = INTERCEPT_REDIRECT;
		else if (s && strcmp(s, "TPROXY") == 0)
			*(enum intercept_mode *)dst = INTERCEPT_TPROXY;
		else {
			seterr(err, errlen, f, "expected \"REDIRECT\" or \"TPROXY\", got %s", got);
			return -EINVAL;
		}
		return 0;
	}
	case CF_BOOL:
		if (v ? cJSON_IsTrue(v) : strcmp(str, "true") == 0) {
			*(bool *)dst = true;
		} else if (v ? cJSON_IsFalse(v) : strcmp(str, "false") == 0) {
			*(bool *)dst = false;
		} else {
			seterr(err, errlen, f, "expected true or false, got %s", got);
			return -EINVAL;
		}
		return 0;
	case CF_ADDR: {
		const char *s = v ? (cJSON_IsString(v) ? v->valuestring : NULL) : str;
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

void
config_defaults(struct config *cfg)
{
	char err[256];

	memset(cfg, 0, sizeof(*cfg));
	for (size_t i = 0; i < NFIELDS; i++) {
		if (set_field(&schema[i], NULL, schema[i].def, cfg, err, sizeof(err)) < 0) {
			/* A bad default is a programming error caught by the unit tests. */
			fprintf(stderr, "outrigger: bad built-in default: %s\n", err);
			abort();
		}
	}
}

static bool
section_known(const char *name)
{
	for (size_t i = 0; i < NFIELDS; i++)
		if (strcmp(schema[i].section, name) == 0)
			return true;
	return false;
}

static const struct cf_field *
field_find(const char *section, const char *key)
{
	for (size_t i = 0; i < NFIELDS; i++)
		if (strcmp(schema[i].section, section) == 0 && strcmp(schema[i].key, key) == 0)
			return &schema[i];
	return NULL;
}

/* Checks across keys: the four ports must differ (two listeners on one port
 * would share connections at random through SO_REUSEPORT). */
static int
config_check(const struct config *c, char *err, size_t errlen)
{
	static const struct { const char *key; size_t off; } ports[] = {
		{ "proxyListenPort", offsetof(struct config, outbound_port) },
		{ "proxyInboundListenPort", offsetof(struct config, inbound_port) },
		{ "proxyAdminPort", offsetof(struct config, admin_port) },
		{ "healthPort", offsetof(struct config, health_port) },
	};

	for (size_t i = 0; i < sizeof(ports) / sizeof(ports[0]); i++) {
		for (size_t j = 0; j < i; j++) {
			uint16_t a = *(const uint16_t *)((const char *)c + ports[i].off);
			uint16_t b = *(const uint16_t *)((const char *)c + ports[j].off);
			if (a == b) {
				seterr(err, errlen, NULL, "proxy.%s: port %u is also proxy.%s", ports[i].key, a,
				    ports[j].key);
				return -EINVAL;
			}
		}
	}
	return 0;
}

int
config_load_json(const char *text, size_t len, struct config *cfg, char *err, size_t errlen)
{
	struct config next;
	cJSON *root, *sec, *item;
	int rc = -EINVAL;

	root = cJSON_ParseWithLength(text, len);
	if (!root) {
		const char *at = cJSON_GetErrorPtr();
		size_t off = at && at >= text && at <= text + len ? (size_t)(at - text) : len;
		unsigned line = 1;
		for (size_t i = 0; i < off; i++)
			line += text[i] == '\n';
		seterr(err, errlen, NULL, "$: not valid JSON (near line %u, byte %zu)", line, off);
		return -EINVAL;
	}
	if (!cJSON_IsObject(root)) {
		seterr(err, errlen, NULL, "$: expected a JSON object at the top level");
		goto out;
	}
	next = *cfg;
	cJSON_ArrayForEach(sec, root) {
		if (!section_known(sec->string)) {
			seterr(err, errlen, NULL, "%s: unknown key", sec->string);
			goto out;
		}
		if (!cJSON_IsObject(sec)) {
			seterr(err, errlen, NULL, "%s: expected an object", sec->string);
			goto out;
		}
		cJSON_ArrayForEach(item, sec) {
			const struct cf_field *f = field_find(sec->string, item->string);
			if (!f) {
				seterr(err, errlen, NULL, "%s.%s: unknown key", sec->string, item->string);
				goto out;
			}
			if (set_field(f, item, NULL, &next, err, errlen) < 0)
				goto out;
		}
	}
	if (config_check(&next, err, errlen) < 0)
		goto out;
	*cfg = next;
	rc = 0;
out:
	cJSON_Delete(root);
	return rc;
}

int
config_load_file(const char *path, struct config *cfg, char *err, size_t errlen)
{
	FILE *fp = fopen(path, "rb");
	char *buf = NULL;
	size_t len = 0, cap = 0;
	int rc;

	if (!fp) {
		seterr(err, errlen, NULL, "cannot open %s: %s", path, strerror(errno));
		return -errno;
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
	rc = config_load_json(buf ? buf : "", len, cfg, err, errlen);
	free(buf);
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
		cJSON *sec = cJSON_GetObjectItemCaseSensitive(root, f->section);
		if (!sec && !(sec = cJSON_AddObjectToObject(root, f->section)))
			goto oom;
		cJSON *v = field_to_json(f, cfg);
		if (!v)
			goto oom;
		cJSON_AddItemToObject(sec, f->key, v);
	}
	return root;
oom:
	cJSON_Delete(root);
	return NULL;
}

void
config_print_schema(void)
{
	for (size_t i = 0; i < NFIELDS; i++) {
		const struct cf_field *f = &schema[i];
		printf("  %s.%-26s %-18s default %-10s %s\n", f->section, f->key,
		    cf_type_names[f->type], f->def, f->help);
	}
}
