/* pool: per-worker pools of what holds bytes in flight: kernel pipes (for
 * splice) and fixed-size buffer chunks. A connection takes one only while it
 * has bytes to move, so an idle connection holds neither. */
#ifndef OR_POOL_H
#define OR_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A pipe used as the kernel-side buffer of one direction. */
struct pipe {
	int rfd, wfd;
	struct pipe *next;	/* free list */
};

/* Bytes one chunk holds. */
#define CHUNK_SIZE 16384

struct chunk {
	size_t off, len;	/* unsent bytes are data[off, off+len) */
	struct chunk *next;	/* free list */
	char data[CHUNK_SIZE];
};

/* Cached objects pool_trim() always keeps. */
#define POOL_TRIM_FLOOR 4

/* One worker's pools. Not thread-safe: only the owning worker uses it.
 * `stats` points at the worker's counters (WM_* indices).
 *
 * The pool also keeps the worker's descriptor budget: a worker holds two
 * descriptors per session (downstream and upstream socket) and two per pipe,
 * in use or cached, and may hold at most fd_budget of them (0: no limit), so
 * that the workers together never take the descriptors the admin and health
 * ports need. */
struct pool {
	struct pipe *free_pipes;
	struct chunk *free_chunks;
	unsigned npipes_free, nchunks_free;
	unsigned max_free;	/* cache cap; beyond it released objects are freed */
	unsigned pipes_low, chunks_low;	/* fewest cached since the last pool_trim() */
	unsigned fd_budget;
	uint64_t *stats;
};

void pool_init(struct pool *p, unsigned max_free, uint64_t *stats);
/* Free everything cached (objects in use must have been returned). */
void pool_destroy(struct pool *p);

/* Called periodically (each worker: every second). Objects that stayed in the
 * cache since the last call were not needed: free half of them (rounded up),
 * keeping at least POOL_TRIM_FLOOR of each kind. */
void pool_trim(struct pool *p);
/* Descriptors the worker holds by the pool's count (sessions and pipes). */
unsigned pool_fds_used(const struct pool *p);
/* Whether n more descriptors fit the budget. When they do not, cached pipes
 * are closed first to make room. */
bool pool_fd_room(struct pool *p, unsigned n);

/* A pipe, or NULL with errno set (EMFILE, also when a new pipe would exceed
 * the descriptor budget; ENOMEM...). */
struct pipe *pool_pipe_get(struct pool *p);
/* Return an empty pipe. A pipe that may still hold bytes must be passed with
 * dirty set: it is closed rather than cached. */
void pool_pipe_put(struct pool *p, struct pipe *pp, int dirty);

struct chunk *pool_chunk_get(struct pool *p);
void pool_chunk_put(struct pool *p, struct chunk *c);

#endif
