/* worker-t.h: the types of a worker thread: its loop, listeners, pools,
 * counters, current snapshot and mailbox. */
#ifndef OR_WORKER_T_H
#define OR_WORKER_T_H

#include <ev.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "conn.h"
#include "metrics.h"
#include "pool.h"
#include "snapshot.h"

struct worker;
struct tunnel;
struct hbconn;
struct xtls_sessions;
struct hbone_pool;
struct ltab;

/* One listening socket of one worker (each worker has its own SO_REUSEPORT
 * socket per listener and address family). */
struct listener {
	enum listener_kind kind;
	int fd;			/* -1 when not open */
	int family;
	ev_io io;
	ev_timer pause;		/* accept paused after EMFILE, resumed by this */
	struct readyq_ent rq;	/* accepts wait their turn among the sockets */
	struct worker *w;
};

#define LISTENER_FAMILIES 2	/* IPv4 and IPv6 */

/* A new snapshot from the control thread (a reference handed over), or a
 * function to run on the worker (worker_post: fn set, snap NULL), in the
 * order they were queued. Drain and stop are flags instead, so that they
 * cannot be lost to a failed malloc. */
struct wmsg {
	struct snapshot *snap;
	void (*fn)(struct worker *w, void *arg);	/* w NULL: dropped unrun (free arg) */
	void *arg;
	struct wmsg *next;
};

struct worker {
	unsigned id;
	char tag[16];			/* "w0": log prefix */
	pthread_t thread;
	struct ev_loop *loop;
	struct listener lst[LST__COUNT][LISTENER_FAMILIES];
	struct wsnap *snap;		/* current configuration */
	struct pool pool;
	struct hupwatch hup;		/* resets on sockets the relays are not reading */
	struct readyq readyq;		/* socket events in the kernel's order */
	/* Upstream TLS sessions for resumption between sidecars (xtls.h),
	 * this worker's own, so no lock; NULL when it could not be made
	 * (every handshake is then a full one). */
	struct xtls_sessions *tls_sessions;
	struct hbone_pool *hbone;	/* HBONE client connections (hbone.h), made on first use */
	ev_timer trim;			/* every second: shrink idle pool caches */
	/* Istio's TCP metrics (telemetry.h): this worker's label table (NULL:
	 * not counted, e.g. the unit tests' hand-made workers) and the timer
	 * that reports long-lived connections' bytes. */
	struct ltab *tele;
	ev_timer tele_report;
	int reserve_fd;			/* spare descriptor, given up to refuse a connection at EMFILE */
	struct tunnel *tunnels;		/* all open tunnels, for stop */
	/* The next tunnel of a walk that may close tunnels (tunnel_recheck_authz):
	 * tunnel_done moves it on when it frees that one. NULL outside a walk. */
	struct tunnel *tunnel_walk;
	struct hbconn *hbone_conns;	/* all HBONE connections (hbone_server.c), for drain and stop */
	unsigned long long next_id;	/* connection ids, per worker */
	bool draining;

	/* Mailbox: the only state shared with the control thread besides stats. */
	pthread_mutex_t mbox_lock;
	struct wmsg *mbox_head, *mbox_tail;
	int req_drain, req_stop;	/* atomic: set by the control thread */
	ev_async wake;

	struct worker_stats stats;
};

#endif
