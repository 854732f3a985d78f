/* ilog: outrigger-init's log lines on stderr.
 *
 * outrigger-init is a one-shot tool with its own tiny logger so that it does
 * not depend on the proxy's src/log.c (threads, connection tags).  stdout is
 * reserved for --dry-run output (restore text / nft script), so every log
 * line goes to stderr. */
#ifndef OR_INIT_ILOG_H
#define OR_INIT_ILOG_H

enum ilog_level {
	ILOG_NONE,
	ILOG_ERROR,
	ILOG_WARN,
	ILOG_INFO,
	ILOG_DEBUG,
};

/* Threshold: lines above it are dropped.  Default ILOG_INFO. */
extern enum ilog_level ilog_threshold;

/* Map a pilot-agent scope level ("debug", "info", "warn", "error", "none")
 * to our level; returns 0, or -EINVAL for an unknown name. */
int ilog_level_parse(const char *name, enum ilog_level *out);

/* Print "outrigger-init: <level>: <message>\n" on stderr. */
void ilog(enum ilog_level l, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define ilog_error(...) ilog(ILOG_ERROR, __VA_ARGS__)
#define ilog_warn(...)  ilog(ILOG_WARN, __VA_ARGS__)
#define ilog_info(...)  ilog(ILOG_INFO, __VA_ARGS__)
#define ilog_debug(...) ilog(ILOG_DEBUG, __VA_ARGS__)

#endif
