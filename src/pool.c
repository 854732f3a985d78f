/* pool: per-worker pools of kernel pipes and buffer chunks, trimmed when idle,
 * and the worker's descriptor budget. */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "metrics.h"
#include "pool.h"

static unsigned drop_cached_pipes(struct pool *p, unsigned n);
static unsigned drop_cached_chunks(struct pool *p, unsigned n);

void
pool_init(struct pool *p, unsigned max_free, uint64_t *stats)
{
	*p = (struct pool){ .max_free = max_free, .stats = stats };
}

static void
pipe_free(struct pipe *pp)
{
	close(pp->rfd);
	close(pp->wfd);
	free(pp);
}

void
pool_destroy(struct pool *p)
{
	drop_cached_pipes(p, p->npipes_free);
	drop_cached_chunks(p, p->nchunks_free);
}

/* Close up to n cached pipes; returns how many. */
static unsigned
drop_cached_pipes(struct pool *p, unsigned n)
{
	unsigned done = 0;

	while (done < n && p->free_pipes) {
		struct pipe *pp = p->free_pipes;
		p->free_pipes = pp->next;
		p->npipes_free--;
		stat_sub(&p->stats[WM_PIPES_CACHED], 1);
		pipe_free(pp);
		done++;
	}
	if (p->pipes_low > p->npipes_free)
		p->pipes_low = p->npipes_free;
	return done;
}

static unsigned
drop_cached_chunks(struct pool *p, unsigned n)
{
	unsigned done = 0;

	while (done < n && p->free_chunks) {
		struct chunk *c = p->free_chunks;
		p->free_chunks = c->next;
		p->nchunks_free--;
		stat_sub(&p->stats[WM_CHUNKS_CACHED], 1);
		free(c);
		done++;
	}
	if (p->chunks_low > p->nchunks_free)
		p->chunks_low = p->nchunks_free;
	return done;
}

/* How many of `idle` objects (unused since the last trim) to free out of
 * `cached`: half, rounded up, never below the floor. */
static unsigned
trim_count(unsigned idle, unsigned cached)
{
	unsigned n = (idle + 1) / 2;
	unsigned above = cached > POOL_TRIM_FLOOR ? cached - POOL_TRIM_FLOOR : 0;

	return n < above ? n : above;
}

void
pool_trim(struct pool *p)
{
	drop_cached_pipes(p, trim_count(p->pipes_low, p->npipes_free));
	drop_cached_chunks(p, trim_count(p->chunks_low, p->nchunks_free));
	p->pipes_low = p->npipes_free;
	p->chunks_low = p->nchunks_free;
}

unsigned
pool_fds_used(const struct pool *p)
{
	uint64_t n = stat_read(&p->stats[WM_SESSIONS_IN_USE]) + stat_read(&p->stats[WM_PIPES_IN_USE]) +
	    stat_read(&p->stats[WM_PIPES_CACHED]);

	return (unsigned)(2 * n);
}

bool
pool_fd_room(struct pool *p, unsigned n)
{
	if (!p->fd_budget)
		return true;
	while (pool_fds_used(p) + n > p->fd_budget)
		if (!drop_cached_pipes(p, 1))
			return false;
	return true;
}

struct pipe *
pool_pipe_get(struct pool *p)
{
	struct pipe *pp = p->free_pipes;
	int fds[2];

	if (pp) {
		p->free_pipes = pp->next;
		p->npipes_free--;
		if (p->pipes_low > p->npipes_free)
			p->pipes_low = p->npipes_free;
		stat_sub(&p->stats[WM_PIPES_CACHED], 1);
	} else {
		if (!pool_fd_room(p, 2)) {
			errno = EMFILE;
			return NULL;
		}
		if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
			return NULL;
		pp = malloc(sizeof(*pp));
		if (!pp) {
			close(fds[0]);
			close(fds[1]);
			errno = ENOMEM;
			return NULL;
		}
		pp->rfd = fds[0];
		pp->wfd = fds[1];
	}
	pp->next = NULL;
	stat_add(&p->stats[WM_PIPES_IN_USE], 1);
	return pp;
}

void
pool_pipe_put(struct pool *p, struct pipe *pp, int dirty)
{
	stat_sub(&p->stats[WM_PIPES_IN_USE], 1);
	if (dirty || p->npipes_free >= p->max_free) {
		pipe_free(pp);
		return;
	}
	pp->next = p->free_pipes;
	p->free_pipes = pp;
	p->npipes_free++;
	stat_add(&p->stats[WM_PIPES_CACHED], 1);
}

struct chunk *
pool_chunk_get(struct pool *p)
{
	struct chunk *c = p->free_chunks;

	if (c) {
		p->free_chunks = c->next;
		p->nchunks_free--;
		if (p->chunks_low > p->nchunks_free)
			p->chunks_low = p->nchunks_free;
		stat_sub(&p->stats[WM_CHUNKS_CACHED], 1);
	} else if (!(c = malloc(sizeof(*c)))) {
		return NULL;
	}
	c->off = c->len = 0;
	c->next = NULL;
	stat_add(&p->stats[WM_CHUNKS_IN_USE], 1);
	return c;
}

void
pool_chunk_put(struct pool *p, struct chunk *c)
{
	stat_sub(&p->stats[WM_CHUNKS_IN_USE], 1);
	if (p->nchunks_free >= p->max_free) {
		free(c);
		return;
	}
	c->next = p->free_chunks;
	p->free_chunks = c;
	p->nchunks_free++;
	stat_add(&p->stats[WM_CHUNKS_CACHED], 1);
}
