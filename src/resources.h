/* resources: the static resources of the -c file (its "resources" list, each
 * an Any in proto3 JSON) decoded and built into a mesh model, with every
 * refusal named by its JSON path. The xDS client will feed model_build() the
 * same way, from protobuf. */
#ifndef OR_RESOURCES_H
#define OR_RESOURCES_H

#include <stddef.h>

#include "model.h"

struct cJSON;

/* What one load found: one line per refused resource, in input order. */
struct res_report {
	char **lines;		/* "resources[3].workload.addresses[0]: ..." (malloc'ed) */
	size_t nlines, cap;
	size_t nresources;	/* elements in the list */
	size_t refused;		/* resources refused (== nlines unless out of memory) */
	size_t kept;		/* of those, how many kept their previous version */
};
void res_report_free(struct res_report *rep);

/* Decodes every element of list (the file's "resources" array, as checked by
 * config_load_tree(); NULL: no resources) and builds a model over prev (the
 * running model, or NULL), so that a refused resource prev holds keeps its
 * previous version. An element that does not decode (wrong type, unknown
 * @type, bad base64...) is refused with the decoder's message; the builder
 * refuses what does not validate; the rest apply. The network is
 * ISTIO_META_NETWORK's ("" when unset); references between resources are
 * checked (strict_refs: a file is written whole). Returns the model (the
 * caller owns it), or NULL on OOM; rep is filled either way (free it). */
struct model *resources_build(const struct cJSON *list, const struct model *prev,
    struct res_report *rep);
/* resources_build(), also handing over the decoded resources (a reference
 * each, in file order; those refused before the build are left out) in
 * *res (malloc'd; resources_free_list) and *nres: the xDS client builds
 * every model over them. */
struct model *resources_build_keep(const struct cJSON *list, const struct model *prev,
    struct res_report *rep, struct mres ***res, size_t *nres);
void resources_free_list(struct mres **res, size_t n);

#endif
