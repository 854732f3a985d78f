/* worker: N threads, each with its own event loop, SO_REUSEPORT listeners,
 * pools and counters; the control thread talks to them through mailboxes. */
#ifndef OR_WORKER_H
#define OR_WORKER_H

#include "worker-t.h"

/* Create n workers with their listening sockets bound (so bind errors are
 * reported before any thread starts) and start their threads, each holding a
 * reference to snap. Returns 0, or -errno with err describing what failed. */
int workers_start(unsigned n, struct snapshot *snap, char *err, size_t errlen);

/* Hand a new snapshot to every worker (takes one reference per worker). Each
 * adopts it for new connections on its own thread; open connections keep the
 * snapshot they started with. */
void workers_publish(struct snapshot *snap);

/* The mailbox of one worker, for workers_start() and for tests that drive a
 * hand-built worker's loop themselves. init needs w->loop; fini frees queued
 * snapshots. worker_publish() queues snap (a reference handed over) and wakes
 * w's loop, from any thread; on OOM w keeps its configuration (logged). */
void worker_mbox_init(struct worker *w);
void worker_mbox_fini(struct worker *w);
void worker_publish(struct worker *w, struct snapshot *snap);
/* Run fn(w, arg) on w's thread, after every snapshot queued before it (so
 * fn sees them adopted: on-demand answers follow the snapshot that has
 * them). If w stops first, fn(NULL, arg) runs at its end instead (free arg).
 * From any thread. 0 or -ENOMEM (fn will not run). */
int worker_post(struct worker *w, void (*fn)(struct worker *w, void *arg), void *arg);
/* Every worker stops accepting. */
void workers_drain(void);
/* Stop every worker, join and free them. */
void workers_stop(void);

/* The workers (for the admin's counters); *n gets their number. */
struct worker *workers_get(unsigned *n);
/* Connections open across all workers (for the drain). */
uint64_t workers_active_connections(void);

#endif
