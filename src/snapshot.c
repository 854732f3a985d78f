/* snapshot: the whole configuration as one immutable, reference-counted object. */
#include "autoconfig.h"

#include <stdlib.h>

#include "authz.h"
#include "identity.h"
#include "peerauth.h"
#include "snapshot.h"

/* The destructor: frees everything the builder made. Only snapshot_unref()
 * calls it, so no thread can free a snapshot another still reads. */
static void
snapshot_destroy(struct snapshot *s)
{
	authz_free(s->authz);
	model_free(s->model);
	peerauth_free(s->peerauth);
	certbundle_unref(s->certs);
	free(s);
}

struct snapshot *
snapshot_new(const struct config *cfg, struct model *model, uint64_t generation)
{
	struct snapshot *s;

	if (!model && !(model = model_empty()))
		return NULL;
	if (!(s = calloc(1, sizeof(*s)))) {
		model_free(model);
		return NULL;
	}
	s->model = model;
	if (!(s->peerauth = peerauth_resolve(model, pa_self_current())) || !(s->authz = authz_build(model))) {
		peerauth_free(s->peerauth);
		model_free(model);
		free(s);
		return NULL;
	}
	s->refs = 1;
	s->generation = generation;
	s->cfg = *cfg;
	return s;
}

struct snapshot *
snapshot_ref(struct snapshot *s)
{
	__atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
	return s;
}

void
snapshot_unref(struct snapshot *s)
{
	if (s && __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) == 0)
		snapshot_destroy(s);
}

struct wsnap *
wsnap_new(struct snapshot *s)
{
	struct wsnap *ws = calloc(1, sizeof(*ws));

	if (!ws) {
		snapshot_unref(s);
		return NULL;
	}
	ws->s = s;
	return ws;
}

static void
wsnap_free(struct wsnap *ws)
{
	lb_state_free(&ws->lb);
	snapshot_unref(ws->s);
	free(ws);
}

void
wsnap_done(struct wsnap *ws)
{
	if (--ws->users == 0 && ws->retired)
		wsnap_free(ws);
}

void
wsnap_retire(struct wsnap *ws)
{
	ws->retired = 1;
	if (ws->users == 0)
		wsnap_free(ws);
}
