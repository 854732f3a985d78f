/* log: levelled log lines on stderr; lines about a connection carry its worker and id. */
#ifndef OR_LOG_H
#define OR_LOG_H

#include <stdarg.h>

enum log_level {
	LL_ERROR,
	LL_WARN,
	LL_INFO,
	LL_DEBUG,
	LL_TRACE,
};

/* Current threshold; lines above it are not formatted at all. Written by the
 * control thread (at start and on reload, server_publish()), read by every
 * thread: relaxed atomics, a level is one word. */
extern enum log_level log_threshold;

/* Name of a level ("error" ... "trace"). */
const char *log_level_str(enum log_level l);
/* Parse "error".."trace" (also "warning"); 0 or -EINVAL. */
int log_level_parse(const char *s, enum log_level *out);
/* Tag this thread's lines ("main", "w0", ...); the string must outlive the thread. */
void log_set_thread_tag(const char *tag);

void log_msg(enum log_level l, const char *func, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define LOG_AT(l, ...) \
	do { if ((int)(l) <= (int)__atomic_load_n(&log_threshold, __ATOMIC_RELAXED)) log_msg((l), __func__, __VA_ARGS__); } while (0)
#define log_error(...) LOG_AT(LL_ERROR, __VA_ARGS__)
#define log_warn(...)  LOG_AT(LL_WARN, __VA_ARGS__)
#define log_info(...)  LOG_AT(LL_INFO, __VA_ARGS__)
#define log_debug(...) LOG_AT(LL_DEBUG, __VA_ARGS__)
#define log_trace(...) LOG_AT(LL_TRACE, __VA_ARGS__)

/* Lines about one connection: anything with `unsigned worker_id` and
 * `unsigned long long id` members (a session) prints "[w1 c1234]". */
#define CLOG_AT(l, c, fmt, ...) \
	LOG_AT(l, "[w%u c%llu] " fmt, (c)->worker_id, (unsigned long long)(c)->id, ##__VA_ARGS__)
#define clog_error(c, ...) CLOG_AT(LL_ERROR, c, __VA_ARGS__)
#define clog_warn(c, ...)  CLOG_AT(LL_WARN, c, __VA_ARGS__)
#define clog_info(c, ...)  CLOG_AT(LL_INFO, c, __VA_ARGS__)
#define clog_debug(c, ...) CLOG_AT(LL_DEBUG, c, __VA_ARGS__)

#endif
