/* snapshot: the whole configuration as one immutable, reference-counted object.
 * A new one is built and checked off to the side, then published; a connection
 * keeps the snapshot it started with until it ends. */
#ifndef OR_SNAPSHOT_H
#define OR_SNAPSHOT_H

#include <stdint.h>

#include "config.h"
#include "lb.h"
#include "model.h"

/* Immutable once built: workers read it without locks. Its "restart" keys
 * (config.h) are those of the first snapshot in every generation (the control
 * path keeps them, config_keep_fixed()), so the listeners, bound from
 * generation 1, and a connection reading its own snapshot always agree. */
struct snapshot {
	unsigned long refs;	/* atomic: shared by the control thread and workers */
	uint64_t generation;	/* 1, 2, ... in publication order */
	struct config cfg;
	struct model *model;	/* the mesh (never NULL; model_empty() without resources); a reference */
	/* This proxy's certificate and its TLS contexts (identity.h); NULL
	 * while no source has delivered one (mTLS then refused, plaintext as
	 * before). A reference, set by the builder's caller before publishing. */
	struct certbundle *certs;
	/* The inbound mTLS modes of this proxy's workload, resolved by the
	 * builder from model's PeerAuthentications and pa_self_current()
	 * (peerauth.h); never NULL. */
	struct peerauth *peerauth;
	/* The compiled Authorization policies (authz.h); never NULL. */
	struct authz *authz;
	/* A certificate source is configured (server.cert_source): certs will
	 * come (or came) from it. Without one, inbound PERMISSIVE does not sniff. */
	bool cert_source;
};

/* The builder: the one place that turns a loaded configuration and a mesh
 * model (built by model_build() from static or xDS resources; certificates
 * next) into a snapshot. The snapshot takes model over (NULL: an empty
 * model is made), also when it fails. One reference is held by the caller;
 * NULL on OOM. Whatever the snapshot comes to own is released by its
 * destructor when the last reference goes (snapshot_unref()). */
struct snapshot *snapshot_new(const struct config *cfg, struct model *model, uint64_t generation);
struct snapshot *snapshot_ref(struct snapshot *s);
/* Drop a reference; the last one runs the destructor. NULL is a no-op. */
void snapshot_unref(struct snapshot *s);

/* A worker's view of one snapshot: the worker holds one real reference and
 * counts its own connections on it without atomics. */
struct wsnap {
	struct snapshot *s;
	unsigned users;		/* connections of this worker using s */
	int retired;		/* no longer the worker's current snapshot */
	struct lb_state lb;	/* round-robin counters for s's model (lb.h) */
};

/* Wrap a reference the caller hands over; NULL on OOM (the reference is dropped). */
struct wsnap *wsnap_new(struct snapshot *s);
/* A connection starts using ws. */
static inline struct wsnap *
wsnap_use(struct wsnap *ws)
{
	ws->users++;
	return ws;
}
/* A connection ends; frees ws when it is retired and unused. */
void wsnap_done(struct wsnap *ws);
/* The worker moves to a newer snapshot; frees ws once its last connection ends. */
void wsnap_retire(struct wsnap *ws);

#endif
