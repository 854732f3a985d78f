/* xds_store: the resources an xDS server gave, per type, and the one path
 * from a response to a model: decode, validate, apply, build. Pure (no I/O,
 * no globals, no log): the xDS client, the state file, the unit tests and
 * fuzz_xds call it. A response is applied whole or its bad resources are
 * refused by name while the good ones apply (ztunnel's rule), never half a
 * resource; a refused resource is not recorded (a reconnect asks for it
 * again) and the last good version of it stays. */
#ifndef OR_XDS_STORE_H
#define OR_XDS_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"

/* One resource of a response. */
struct xds_item {
	char *name;		/* Resource.name (delta), else the resource's own (mres_new) */
	char *version;		/* Resource.version (delta), version_info (SotW) */
	char **aliases;		/* Resource.aliases ("<network>/<ip>"), delta only */
	size_t naliases;
	struct mres *res;	/* decoded; NULL when it did not decode (why says why) */
	uint64_t digest;	/* of the Any's value bytes: an unchanged resource re-sent
				 * (same version, bytes, aliases) costs no rebuild */
	char why[256];
};

/* One DeltaDiscoveryResponse or DiscoveryResponse, decoded. */
struct xds_update {
	bool delta;
	enum mres_type type;	/* from type_url */
	char *type_url, *nonce;
	char *version;		/* system_version_info / version_info */
	/* SotW of a type whose responses hold the whole state (Address,
	 * Authorization, Cluster, Listener): a resource held and not listed is
	 * removed. */
	bool full_state;
	struct xds_item *items;
	size_t nitems;
	char **removed;		/* delta removed_resources (and removed_resource_names) */
	size_t nremoved;
};

/* Decode msg. -EINVAL when the message itself does not decode, or its
 * type_url is one we do not subscribe to (err says which; u->nonce is set
 * whenever the outer message decoded, for the NACK); a resource that does
 * not decode, is of another type than the response's, or is named twice is
 * an item with res NULL and why (refused by xds_store_apply, not fatal).
 * -ENOMEM. u is always safe to free. */
int xds_decode_delta(const uint8_t *msg, size_t len, struct xds_update *u, char *err, size_t errlen);
int xds_decode_sotw(const uint8_t *msg, size_t len, struct xds_update *u, char *err, size_t errlen);
void xds_update_free(struct xds_update *u);

struct xds_store;

/* opts: how models are built (network; strict_refs false). */
struct xds_store *xds_store_new(const struct model_opts *opts);
void xds_store_free(struct xds_store *s);

/* The configuration file's resources, first in every model built (a name
 * in both: the file's wins, the xDS one is refused). References taken. */
int xds_store_set_static(struct xds_store *s, struct mres *const *res, size_t n);

struct xds_result {
	char *error;		/* NULL: ACK; else the NACK's error_detail: "name: reason; ..." */
	/* Accepted but worth a log line, NULL none: a RouteConfiguration
	 * naming a cluster no Cluster has ("8080: cluster \"x\" is not known
	 * (requests to it fail with 503)"), which Envoy accepts too. */
	char *notes;
	size_t applied, removed, refused, unchanged;
	struct model *model;	/* the new model (the caller owns it); NULL: nothing changed */
	/* Names and aliases of the resources applied, and the names removed
	 * (on demand matches its lookups against them). */
	char **found, **gone;
	size_t nfound, ngone;
};

/* Applies u over s and builds the model over prev (the running one): every
 * resource validated as model_build does, also against the others (a
 * Cluster naming a ClusterLoadAssignment not there yet is fine: it comes
 * after; a duplicate name, an unknown enum, a bad address is refused). On
 * success r->error says whether to ACK or NACK. 0 or -ENOMEM (s unchanged). */
int xds_store_apply(struct xds_store *s, const struct xds_update *u, const struct model *prev,
    struct xds_result *r);
void xds_result_free(struct xds_result *r);

/* The type's SotW version_info last applied ("" none). */
const char *xds_store_version(const struct xds_store *s, enum mres_type t);

/* Each resource of type t, in name order, with its version and aliases
 * (delta initial_resource_versions, the state file, /config_dump). */
typedef void xds_each_fn(void *ud, const struct mres *r, const char *const *aliases, size_t naliases);
void xds_store_each(const struct xds_store *s, enum mres_type t, xds_each_fn *fn, void *ud);
size_t xds_store_count(const struct xds_store *s, enum mres_type t);

/* The names of type t (ENDPOINTS or ROUTE) that the store's Clusters (EDS:
 * eds_cluster_config.service_name, else the cluster's name) or Listeners
 * (HttpConnectionManager rds.route_config_name) reference: what to
 * subscribe to. Sorted, unique; *names malloc'd (xds_names_free). */
int xds_store_refs(const struct xds_store *s, enum mres_type t, char ***names, size_t *n);
void xds_names_free(char **names, size_t n);

/* A model of what s holds now (after the state file is loaded, or the
 * static resources changed), over prev. NULL on OOM. */
struct model *xds_store_build(struct xds_store *s, const struct model *prev, struct model_report *rep);

/* Puts one resource in, as a state file entry (version, aliases); used by
 * xds_state_load. A reference to r is taken. 0 or -ENOMEM. */
int xds_store_put(struct xds_store *s, struct mres *r, const char *const *aliases, size_t naliases);
/* Sets the type's SotW version_info (xds_state_load). */
int xds_store_set_version(struct xds_store *s, enum mres_type t, const char *version);

#endif
