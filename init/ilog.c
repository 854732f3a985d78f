/* ilog: outrigger-init's log lines on stderr (see ilog.h). */
#include "autoconfig.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ilog.h"

enum ilog_level ilog_threshold = ILOG_INFO;

int ilog_level_parse(const char *name, enum ilog_level *out)
{
	static const struct {
		const char *name;
		enum ilog_level level;
	} names[] = {
		/* istio's scope levels (pkg/log): none, error, warn, info, debug. */
		{ "none", ILOG_NONE },   { "fatal", ILOG_ERROR },
		{ "error", ILOG_ERROR }, { "warn", ILOG_WARN },
		{ "warning", ILOG_WARN }, { "info", ILOG_INFO },
		{ "debug", ILOG_DEBUG },
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcmp(name, names[i].name) == 0) {
			*out = names[i].level;
			return 0;
		}
	}
	return -EINVAL;
}

void ilog(enum ilog_level l, const char *fmt, ...)
{
	static const char *const tag[] = { "", "error", "warn", "info", "debug" };
	va_list ap;

	if (l > ilog_threshold || l == ILOG_NONE)
		return;
	fprintf(stderr, "outrigger-init: %s: ", tag[l]);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}
