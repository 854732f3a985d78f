/* pool: per-worker pools of kernel pipes and buffer chunks. */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "metrics.h"
#include "pool.h"

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
	while (p->free_pipes) {
		struct pipe *pp = p->free_pipes;
		p->free_pipes = pp->next;
		pipe_free(pp);
	}
	while (p->free_chunks) {
		struct chunk *c = p->free_chunks;
		p->free_chunks = c->next;
		free(c);
	}
	p->npipes_free = p->nchunks_free = 0;
	if (p->stats) {
		p->stats[WM_PIPES_CACHED] = 0;
		p->stats[WM_CHUNKS_CACHED] = 0;
	}
}

struct pipe *
pool_pipe_get(struct pool *p)
{
	struct pipe *pp = p->free_pipes;
	int fds[2];

	if (pp) {
		p->free_pipes = pp->next;
		p->npipes_free--;
		stat_sub(&p->stats[WM_PIPES_CACHED], 1);
	} else {
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
