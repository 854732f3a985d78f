/* log: levelled log lines on stderr; lines about a connection carry its worker and id.
 *
 * Writers (workers, the control thread) format a line on their own stack and
 * copy it into a bounded queue under a mutex held only for the memcpy; one log
 * thread swaps the queue for an empty buffer and writes it out. A consumer
 * that does not read (a pipe nobody drains) therefore blocks only the log
 * thread: once the queue is full, lines are dropped and counted, and a
 * "N log lines dropped" line follows the next batch that gets through.
 *
 * The access log (accesslog.c) is a second lane of the same queue: its own
 * buffer pair and descriptor (a file, /dev/stdout), the same mutex, bound
 * and thread, so a slow access log file never blocks a worker either. Its
 * descriptor is replaced only by the log thread, between batches
 * (log_access_fd), so no write ever goes to a descriptor already closed.
 * One thread for both: a destination that stops taking bytes (a pipe
 * nobody reads) holds up the other lane's writes too, and both lanes then
 * fill and drop, each counted; workers still never wait. */
#include "autoconfig.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"

#define LINE_MAX_BYTES 1024
#define STOP_WAIT_S 2

enum log_level log_threshold = LL_INFO;

static __thread const char *thread_tag = "main";

static const char *const level_names[] = {
	[LL_ERROR] = "error", [LL_WARN] = "warn", [LL_INFO] = "info",
	[LL_DEBUG] = "debug", [LL_TRACE] = "trace",
};

/* The queue. `buf` is what writers append to; the log thread owns `spare`
 * while it writes and swaps the two under the lock. */
static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	char *buf, *spare;
	size_t len, cap;
	uint64_t dropped_unreported;
	/* The access log lane: abuf/aspare as buf/spare; afd its descriptor
	 * (-1: none), afd_owned: ours to close; afd_next: the one to take at
	 * the next batch (AFD_NONE: no change pending). */
	char *abuf, *aspare;
	size_t alen;
	int afd, afd_next;
	bool afd_owned, afd_next_owned;
	bool running, stop;
	bool abandoned;		/* log_stop() gave up on a stuck thread */
	int fd;
	pthread_t thread;
} q = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .fd = 2, .afd = -1, .afd_next = -2 };

#define AFD_NONE (-2)

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

uint64_t
log_lines_dropped(void)
{
	return __atomic_load_n(&process_stats[PM_LOG_LINES_DROPPED], __ATOMIC_RELAXED);
}

uint64_t
log_lines_suppressed(void)
{
	return __atomic_load_n(&process_stats[PM_LOG_LINES_SUPPRESSED], __ATOMIC_RELAXED);
}

bool
log_site_admit(struct log_site *s, int64_t now, unsigned long long *report)
{
	*report = 0;
	if (now != s->second) {
		s->second = now;
		s->lines = 0;
	}
	if (s->lines >= LOG_SITE_BURST) {
		s->suppressed++;
		__atomic_fetch_add(&process_stats[PM_LOG_LINES_SUPPRESSED], 1, __ATOMIC_RELAXED);
		return false;
	}
	s->lines++;
	*report = s->suppressed;
	s->suppressed = 0;
	return true;
}

/* Write all of p[0, n) to fd; the log thread may block here, nobody else. */
static size_t
write_all(int fd, const char *p, size_t n)
{
	size_t done = 0;

	while (done < n) {
		ssize_t w = write(fd, p + done, n - done);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {	/* someone made our stderr non-blocking */
				struct pollfd pfd = { .fd = fd, .events = POLLOUT };
				(void)poll(&pfd, 1, 100);
				continue;
			}
			break;		/* EPIPE, EBADF, ENOSPC...: nothing more we can do */
		}
		done += (size_t)w;
	}
	return done;
}

/* The access log lane's writes (the log thread, or the caller before it
 * runs): what a failed write (a full disk) loses is counted line by line
 * in access_log_dropped, and a line cut in the middle is ended before the
 * next batch so that it does not join the next line (JSON lines stay one
 * object each). a_midline: the last write on a_fd stopped inside a line. */
static bool a_midline;
static int a_fd = -1;

static void
write_access(int fd, const char *p, size_t n)
{
	size_t done = 0;
	uint64_t lost = 0;

	if (fd != a_fd) {	/* another destination (a rotation): a fresh start */
		a_fd = fd;
		a_midline = false;
	}
	if (a_midline && write_all(fd, "\n", 1) != 1)
		done = 0;
	else {
		a_midline = false;
		done = write_all(fd, p, n);
	}
	if (done == n)
		return;
	if (done > 0 && p[done - 1] != '\n')
		a_midline = true;
	for (size_t i = done; i < n; i++)
		lost += p[i] == '\n';
	__atomic_fetch_add(&process_stats[PM_ACCESS_LOG_DROPPED], lost, __ATOMIC_RELAXED);
}

/* Queue one line, or drop it when the queue is full. */
static void
emit(const char *line, size_t len)
{
	pthread_mutex_lock(&q.mu);
	if (!q.running) {
		pthread_mutex_unlock(&q.mu);
		write_all(q.fd, line, len);
		return;
	}
	if (q.len + len <= q.cap) {
		bool was_empty = q.len == 0;
		memcpy(q.buf + q.len, line, len);
		q.len += len;
		if (was_empty)
			pthread_cond_signal(&q.cv);
	} else {
		q.dropped_unreported++;
		__atomic_fetch_add(&process_stats[PM_LOG_LINES_DROPPED], 1, __ATOMIC_RELAXED);
	}
	pthread_mutex_unlock(&q.mu);
}

int
log_raw(const char *line, size_t len)
{
	int rc = 0;

	pthread_mutex_lock(&q.mu);
	if (!q.running) {
		/* No thread (tests, start-up): written here, as log lines are. */
		int fd = q.afd_next != AFD_NONE ? q.afd_next : q.afd;
		pthread_mutex_unlock(&q.mu);
		if (fd >= 0)
			write_access(fd, line, len);
		return 0;
	}
	if (q.alen + len <= q.cap) {
		bool was_empty = q.alen == 0 && q.len == 0;
		memcpy(q.abuf + q.alen, line, len);
		q.alen += len;
		if (was_empty)
			pthread_cond_signal(&q.cv);
	} else {
		rc = -ENOBUFS;
	}
	pthread_mutex_unlock(&q.mu);
	return rc;
}

/* Take a pending access log descriptor (under q.mu): the old one is
 * returned for the caller to close outside the lock (-1: nothing to close). */
static int
afd_take(void)
{
	int old = -1;

	if (q.afd_next == AFD_NONE)
		return -1;
	if (q.afd >= 0 && q.afd_owned && q.afd != q.afd_next)
		old = q.afd;
	q.afd = q.afd_next;
	q.afd_owned = q.afd_next_owned;
	q.afd_next = AFD_NONE;
	return old;
}

void
log_access_fd(int fd, bool owned)
{
	int old = -1, dropped = -1;

	pthread_mutex_lock(&q.mu);
	/* A replacement not yet taken is itself replaced: close it. */
	if (q.afd_next >= 0 && q.afd_next_owned && q.afd_next != fd && q.afd_next != q.afd)
		dropped = q.afd_next;
	q.afd_next = fd;
	q.afd_next_owned = owned;
	if (!q.running)
		old = afd_take();
	else
		pthread_cond_signal(&q.cv);
	pthread_mutex_unlock(&q.mu);
	if (old >= 0)
		close(old);
	if (dropped >= 0)
		close(dropped);
}

static size_t
format_line(char *line, size_t cap, enum log_level l, const char *func, const char *fmt, va_list ap)
{
	struct timespec ts;
	struct tm tm;
	int n;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(line, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s %s: ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	    ts.tv_nsec / 1000000, log_level_str(l), thread_tag, func);
	if (n < 0 || (size_t)n >= cap)
		n = 0;
	vsnprintf(line + n, cap - (size_t)n, fmt, ap);
	size_t len = strlen(line);
	if (len > cap - 2)
		len = cap - 2;
	/* Messages carry text peers chose (an SNI, a grpc-message, a file
	 * name): a control character would start a forged line or reach a
	 * terminal as an escape. No message of ours has one. */
	for (size_t i = (size_t)n; i < len; i++)
		if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
			line[i] = '?';
	line[len] = '\n';
	line[len + 1] = '\0';
	return len + 1;
}

static void
say(enum log_level l, const char *func, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
say(enum log_level l, const char *func, const char *fmt, ...)
{
	char line[LINE_MAX_BYTES];
	va_list ap;

	va_start(ap, fmt);
	size_t len = format_line(line, sizeof(line), l, func, fmt, ap);
	va_end(ap);
	emit(line, len);
}

void
log_msg(struct log_site *site, enum log_level l, const char *func, const char *fmt, ...)
{
	char line[LINE_MAX_BYTES];
	unsigned long long report = 0;
	va_list ap;

	if (site) {
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
		if (!log_site_admit(site, (int64_t)now.tv_sec, &report))
			return;
	}
	if (report)
		say(l, func, "suppressed %llu similar messages", report);
	va_start(ap, fmt);
	size_t len = format_line(line, sizeof(line), l, func, fmt, ap);
	va_end(ap);
	emit(line, len);
}

static void *
log_thread(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&q.mu);
	for (;;) {
		while (q.len == 0 && q.alen == 0 && q.dropped_unreported == 0 && q.afd_next == AFD_NONE && !q.stop)
			pthread_cond_wait(&q.cv, &q.mu);
		if (q.len == 0 && q.alen == 0 && q.dropped_unreported == 0 && q.afd_next == AFD_NONE)
			break;	/* stop, and everything written */
		char *mine = q.buf, *amine = q.abuf;
		size_t n = q.len, an = q.alen;
		uint64_t dropped = q.dropped_unreported;
		/* A new access log descriptor applies from this batch on (a
		 * rotated file: the lines after the SIGHUP go to the new one). */
		int aold = afd_take(), afd = q.afd;
		q.buf = q.spare;
		q.spare = mine;
		q.abuf = q.aspare;
		q.aspare = amine;
		q.len = 0;
		q.alen = 0;
		q.dropped_unreported = 0;
		pthread_mutex_unlock(&q.mu);

		if (aold >= 0)
			close(aold);
		write_all(q.fd, mine, n);
		if (an && afd >= 0)
			write_access(afd, amine, an);
		if (dropped) {
			char line[LINE_MAX_BYTES];
			struct timespec ts;
			struct tm tm;
			clock_gettime(CLOCK_REALTIME, &ts);
			gmtime_r(&ts.tv_sec, &tm);
			int len = snprintf(line, sizeof(line),
			    "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ warn  log: %llu log lines dropped "
			    "(stderr was not keeping up)\n", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
			    tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, (unsigned long long)dropped);
			if (len > 0)
				write_all(q.fd, line, (size_t)len);
		}
		pthread_mutex_lock(&q.mu);
	}
	pthread_mutex_unlock(&q.mu);
	return NULL;
}

static bool atexit_done;

int
log_start(int fd, size_t queue_bytes)
{
	sigset_t all, old;
	int rc;

	pthread_mutex_lock(&q.mu);
	if (q.running) {
		pthread_mutex_unlock(&q.mu);
		return -EALREADY;
	}
	free(q.buf);
	free(q.spare);
	free(q.abuf);
	free(q.aspare);
	q.buf = malloc(queue_bytes);
	q.spare = malloc(queue_bytes);
	q.abuf = malloc(queue_bytes);
	q.aspare = malloc(queue_bytes);
	if (!q.buf || !q.spare || !q.abuf || !q.aspare) {
		free(q.buf);
		free(q.spare);
		free(q.abuf);
		free(q.aspare);
		q.buf = q.spare = q.abuf = q.aspare = NULL;
		pthread_mutex_unlock(&q.mu);
		return -ENOMEM;
	}
	q.cap = queue_bytes;
	q.len = 0;
	q.alen = 0;
	q.dropped_unreported = 0;
	q.fd = fd;
	q.stop = false;
	/* The log thread takes no process signals: they belong to the control thread. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	rc = -pthread_create(&q.thread, NULL, log_thread, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc == 0)
		q.running = true;
	pthread_mutex_unlock(&q.mu);
	if (rc == 0 && !atexit_done) {
		atexit_done = true;
		atexit(log_stop);
	}
	return rc;
}

void
log_stop(void)
{
	struct timespec deadline;

	pthread_mutex_lock(&q.mu);
	if (!q.running || q.abandoned) {
		pthread_mutex_unlock(&q.mu);
		return;
	}
	q.stop = true;
	pthread_cond_signal(&q.cv);
	pthread_mutex_unlock(&q.mu);
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += STOP_WAIT_S;
	if (pthread_timedjoin_np(q.thread, NULL, &deadline) != 0) {
		/* Stuck in write(): leave it (and the queue, which it may still read);
		 * later lines are queued or dropped, never written from here. */
		pthread_mutex_lock(&q.mu);
		q.abandoned = true;
		pthread_mutex_unlock(&q.mu);
		return;
	}
	pthread_mutex_lock(&q.mu);
	/* Lines queued between the thread's last look and now. */
	write_all(q.fd, q.buf, q.len);
	int aold = afd_take();
	if (aold >= 0)
		close(aold);
	if (q.afd >= 0)
		write_access(q.afd, q.abuf, q.alen);
	q.running = false;
	q.fd = 2;
	free(q.buf);
	free(q.spare);
	free(q.abuf);
	free(q.aspare);
	q.buf = q.spare = q.abuf = q.aspare = NULL;
	q.cap = q.len = q.alen = 0;
	pthread_mutex_unlock(&q.mu);
}
