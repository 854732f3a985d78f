/* log: levelled log lines on stderr; lines about a connection carry its worker and id. */
#include "autoconfig.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "log.h"

enum log_level log_threshold = LL_INFO;

static __thread const char *thread_tag = "main";

static const char *const level_names[] = {
	[LL_ERROR] = "error", [LL_WARN] = "warn", [LL_INFO] = "info",
	[LL_DEBUG] = "debug", [LL_TRACE] = "trace",
};

const char *
log_level_str(enum log_level l)
{
	if ((unsigned)l >= sizeof(level_names) / sizeof(level_names[0]))
		return "?";
	return level_names[l];
}

int
log_level_parse(const char *s, enum log_level *out)
{
	for (unsigned i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcasecmp(s, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	if (strcasecmp(s, "warning") == 0) {
		*out = LL_WARN;
		return 0;
	}
	return -EINVAL;
}

void
log_set_thread_tag(const char *tag)
{
	thread_tag = tag;
}

void
log_msg(enum log_level l, const char *func, const char *fmt, ...)
{
	char line[1024];
	struct timespec ts;
	struct tm tm;
	int n;
	va_list ap;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s %s: ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	    ts.tv_nsec / 1000000, log_level_str(l), thread_tag, func);
	if (n < 0 || (size_t)n >= sizeof(line))
		n = 0;
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	/* One fputs per line: stdio locks the stream, so lines from threads never interleave. */
	size_t len = strlen(line);
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2;
	line[len] = '\n';
	line[len + 1] = '\0';
	fputs(line, stderr);
}
