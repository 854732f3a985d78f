/* metrics: every counter and gauge is defined once here; the lists yield the
 * enums, the names, the help text and the exposition formats. Each worker owns
 * its counters (no atomics or locks on the hot path); a scrape sums them. */
#ifndef OR_METRICS_H
#define OR_METRICS_H

#include <stdint.h>

/* The capture listeners. */
#define LISTENERS(X) \
	X(OUTBOUND, "outbound") \
	X(INBOUND, "inbound")

enum listener_kind {
#define X(e, name) LST_##e,
	LISTENERS(X)
#undef X
	LST__COUNT
};

/* Per listener, per worker. Names follow Envoy's listener/tcp_proxy stats
 * where one exists, so dashboards read them the same way. */
#define LISTENER_METRICS(X) \
	X(DOWNSTREAM_CX_TOTAL, downstream_cx_total, COUNTER, "Connections accepted") \
	X(DOWNSTREAM_CX_ACTIVE, downstream_cx_active, GAUGE, "Connections open now") \
	X(DOWNSTREAM_CX_DESTROY, downstream_cx_destroy, COUNTER, "Connections closed") \
	X(DOWNSTREAM_CX_RX_BYTES_TOTAL, downstream_cx_rx_bytes_total, COUNTER, "Bytes received from downstream and sent upstream") \
	X(DOWNSTREAM_CX_TX_BYTES_TOTAL, downstream_cx_tx_bytes_total, COUNTER, "Bytes sent to downstream") \
	X(UPSTREAM_CX_CONNECT_FAIL, upstream_cx_connect_fail, COUNTER, "Upstream connects refused or unreachable") \
	X(UPSTREAM_CX_CONNECT_TIMEOUT, upstream_cx_connect_timeout, COUNTER, "Upstream connects that timed out") \
	X(UPSTREAM_CX_RESET, upstream_cx_reset, COUNTER, "Upstream connections reset mid-stream") \
	X(DOWNSTREAM_CX_RESET, downstream_cx_reset, COUNTER, "Downstream connections reset mid-stream") \
	X(DOWNSTREAM_CX_IDLE_TIMEOUT, downstream_cx_idle_timeout, COUNTER, "Connections closed by the idle timeout") \
	X(DOWNSTREAM_CX_NO_ORIGINAL_DST, downstream_cx_no_original_dst, COUNTER, "Connections refused: no original destination (not redirected)") \
	X(DOWNSTREAM_CX_OVERFLOW, downstream_cx_overflow, COUNTER, "Accepts or connection set-ups that failed for lack of descriptors or memory") \
	X(DOWNSTREAM_CX_DRAINED, downstream_cx_drained, COUNTER, "Connections still open when the drain period ended")

enum listener_metric {
#define X(e, name, kind, help) LM_##e,
	LISTENER_METRICS(X)
#undef X
	LM__COUNT
};

/* Per worker: object pools. */
#define WORKER_METRICS(X) \
	X(PIPES_IN_USE, pipes_in_use, GAUGE, "Kernel pipes holding bytes in flight (splice)") \
	X(PIPES_CACHED, pipes_cached, GAUGE, "Empty pipes kept for reuse") \
	X(CHUNKS_IN_USE, chunks_in_use, GAUGE, "Buffer chunks holding bytes in flight") \
	X(CHUNKS_CACHED, chunks_cached, GAUGE, "Empty buffer chunks kept for reuse") \
	X(SESSIONS_IN_USE, sessions_in_use, GAUGE, "Proxied connection objects allocated")

enum worker_metric {
#define X(e, name, kind, help) WM_##e,
	WORKER_METRICS(X)
#undef X
	WM__COUNT
};

/* Process-wide, written by the control thread only (the admin server runs on
 * the same thread). Shown as server.<name> and outrigger_server_<name>. */
#define SERVER_METRICS(X) \
	X(CONFIG_GENERATION, config_generation, GAUGE, "Generation of the configuration in use (1 at start, +1 per applied reload)") \
	X(CONFIG_RELOAD_SUCCESS, config_reload_success, COUNTER, "Configuration reloads applied (SIGHUP)") \
	X(CONFIG_RELOAD_FAILURE, config_reload_failure, COUNTER, "Configuration reloads refused (unreadable or invalid file); the running configuration stays") \
	X(CONFIG_RESTART_PENDING, config_restart_pending, GAUGE, "1 when the last applied reload changed keys that only a restart applies (ports, concurrency, interception mode, admin address)")

enum server_metric {
#define X(e, name, kind, help) SM_##e,
	SERVER_METRICS(X)
#undef X
	SM__COUNT
};

enum metric_kind { METRIC_COUNTER, METRIC_GAUGE };

struct metric_desc {
	const char *name;
	const char *help;
	enum metric_kind kind;
};

extern const char *const listener_names[LST__COUNT];
extern const struct metric_desc listener_metric_desc[LM__COUNT];
extern const struct metric_desc worker_metric_desc[WM__COUNT];
extern const struct metric_desc server_metric_desc[SM__COUNT];

/* Counters of one worker. Only that worker writes; the admin thread reads. */
struct worker_stats {
	uint64_t lst[LST__COUNT][LM__COUNT];
	uint64_t w[WM__COUNT];
};

/* The writer is the only thread that modifies *p, so a relaxed load + store
 * is exact and compiles to a plain add; readers see whole values. */
static inline void
stat_add(uint64_t *p, uint64_t n)
{
	__atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

static inline void
stat_sub(uint64_t *p, uint64_t n)
{
	__atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) - n, __ATOMIC_RELAXED);
}

static inline uint64_t
stat_read(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

#endif
