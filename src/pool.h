/* pool: per-worker pools of what holds bytes in flight: kernel pipes (for
 * splice) and fixed-size buffer chunks. A connection takes one only while it
 * has bytes to move, so an idle connection holds neither. */
#ifndef OR_POOL_H
#define OR_POOL_H

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

/* One worker's pools. Not thread-safe: only the owning worker uses it.
 * `stats` points at the worker's counters (WM_* indices). */
struct pool {
	struct pipe *free_pipes;
	struct chunk *free_chunks;
	unsigned npipes_free, nchunks_free;
	unsigned max_free;	/* cache cap; beyond it released objects are freed */
	uint64_t *stats;
};

void pool_init(struct pool *p, unsigned max_free, uint64_t *stats);
/* Free everything cached (objects in use must have been returned). */
void pool_destroy(struct pool *p);

/* A pipe, or NULL with errno set (EMFILE, ENOMEM...). */
struct pipe *pool_pipe_get(struct pool *p);
/* Return an empty pipe. A pipe that may still hold bytes must be passed with
 * dirty set: it is closed rather than cached. */
void pool_pipe_put(struct pool *p, struct pipe *pp, int dirty);

struct chunk *pool_chunk_get(struct pool *p);
void pool_chunk_put(struct pool *p, struct chunk *c);

#endif
