/* log: levelled log lines on stderr; lines about a connection carry its worker
 * and id. No thread ever blocks on stderr: lines go into a bounded in-memory
 * queue that one log thread writes out; when it is full, lines are dropped and
 * counted. Repeated errors, warnings and infos are rate-limited per call site. */
#ifndef OR_LOG_H
#define OR_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

/* Start the log thread writing to fd through a queue of queue_bytes. Until it
 * runs (and in unit tests that never start it) lines are written at once.
 * Returns 0 or -errno. Registers log_stop() with atexit(). */
int log_start(int fd, size_t queue_bytes);
/* Write out what is queued and stop the log thread, waiting at most 2 s (a
 * consumer that never reads must not keep the process from exiting).
 * Idempotent. */
void log_stop(void);
/* Default queue size: 256 lines of 1 KiB, far more than a burst of start-up
 * lines, small enough to cost nothing. */
#define LOG_QUEUE_BYTES (256 * 1024)

/* Rate limit of one call site in one thread: at most LOG_SITE_BURST lines per
 * second; the rest are counted and reported as one "suppressed N similar
 * messages" line when the site next logs in a later second. */
#define LOG_SITE_BURST 5
struct log_site {
	int64_t second;		/* the second `lines` counts in */
	unsigned lines;
	unsigned long long suppressed;	/* since the last line printed */
};
/* Whether a line from site at time now (seconds) may be printed. When it may
 * and lines were suppressed before it, *report gets their number (and the
 * count restarts); otherwise *report is 0. */
bool log_site_admit(struct log_site *s, int64_t now, unsigned long long *report);

/* Queue one preformatted access log line (ending in '\n') as is, in the
 * access log lane of the log queue (accesslog.h), written by the log thread
 * to the descriptor log_access_fd gave: 0, or -ENOBUFS when that lane is
 * full (the line is dropped; the caller counts it). Any thread. */
int log_raw(const char *line, size_t len);
/* The access log's descriptor from the next batch on (-1: none); owned: the
 * log thread closes it when it is replaced. The log thread takes it at its
 * next batch (lines still queued then go to the new one), so no write races
 * the close of the old one. Control thread. */
void log_access_fd(int fd, bool owned);

/* Totals since start (process-wide; also in /stats). */
uint64_t log_lines_dropped(void);
uint64_t log_lines_suppressed(void);

/* site may be NULL (no rate limit). */
void log_msg(struct log_site *site, enum log_level l, const char *func, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Debug and trace are asked for explicitly, so they are not rate-limited
 * (the queue still bounds them); error, warn and info are, per call site and
 * thread (one site's state per thread, so no locking). */
#define LOG_AT(l, ...) do { \
	if ((int)(l) <= (int)__atomic_load_n(&log_threshold, __ATOMIC_RELAXED)) { \
		static __thread struct log_site log_site_; \
		log_msg((l) <= LL_INFO ? &log_site_ : NULL, (l), __func__, __VA_ARGS__); \
	} \
} while (0)
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
