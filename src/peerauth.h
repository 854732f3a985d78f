/* peerauth: which mTLS mode (PeerAuthentication) inbound connections to
 * this proxy's workload get, resolved once per snapshot from the model's
 * istio.security.v1beta1.PeerAuthentication resources, Istio's way: a
 * policy whose selector matches this workload's labels wins over its
 * namespace's policy (no selector), which wins over the mesh's (no
 * selector, in the root namespace); UNSET inherits from the level above;
 * port-level modes come only from the selector policy; default PERMISSIVE. */
#ifndef OR_PEERAUTH_H
#define OR_PEERAUTH_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

/* The values of istio.security.v1beta1.PeerAuthentication.MutualTLS.Mode. */
enum pa_mode { PA_UNSET = 0, PA_DISABLE = 1, PA_PERMISSIVE = 2, PA_STRICT = 3 };
const char *pa_mode_str(enum pa_mode m);	/* "STRICT", ... */

/* Istio's root namespace (MeshConfig.rootNamespace's default): a policy
 * there without a selector is the mesh's. */
#define PA_ROOT_NAMESPACE "istio-system"

/* Who this proxy's workload is, for the resolution: its namespace and
 * labels, as pilot-agent has them. */
struct pa_label {
	char *key, *value;
};
struct pa_self {
	char *ns;			/* "" when unknown (then only mesh-wide policies apply) */
	struct pa_label *labels;	/* sorted by key, keys unique */
	size_t nlabels;
};

/* Reads the environment and the downward-API file as pilot-agent does:
 * POD_NAMESPACE; labels from ISTIO_METAJSON_LABELS (a JSON object of
 * strings), then the file labels_path (NULL: $OUTRIGGER_POD_LABELS, else
 * /etc/istio/pod/labels; lines `key="value"`, the value Go-quoted; a
 * missing file is no error), whose labels win; pod-template-hash ignored.
 * A bad variable or file is skipped with warn set ("" when none). 0 or
 * -ENOMEM. */
int pa_self_load(struct pa_self *self, const char *labels_path, char *warn, size_t warnlen);
/* Adds or replaces one label (tests, and the loaders above). 0 or -ENOMEM. */
int pa_self_set_label(struct pa_self *self, const char *key, const char *value);
void pa_self_free(struct pa_self *self);

/* The process-wide self that snapshot_new() resolves with. Control thread
 * only; pa_self_install takes self over (the previous one is freed) and
 * NULL installs an empty one. */
void pa_self_install(struct pa_self *self);
const struct pa_self *pa_self_current(void);

/* One port's mode, from the workload policy's portLevelMtls. */
struct pa_port {
	uint16_t port;
	uint8_t mode;			/* enum pa_mode, never UNSET */
};

/* The resolution: what the data path reads, per connection, without
 * allocating. Immutable; owned by its snapshot. */
struct peerauth {
	enum pa_mode mode;		/* the workload's mode, never UNSET */
	struct pa_port *ports;		/* sorted by port */
	size_t nports;
	/* The policies that applied, for logs and /config_dump ("" none). */
	char mesh[160], ns[160], workload[160];
};

/* Resolves m's PeerAuthentications for self. NULL only on OOM. */
struct peerauth *peerauth_resolve(const struct model *m, const struct pa_self *self);
void peerauth_free(struct peerauth *pa);

/* The mode for a connection to the workload's port (the original
 * destination's port, the target port). */
enum pa_mode peerauth_mode(const struct peerauth *pa, uint16_t port);

/* pa as JSON for /config_dump: {"mode", "ports": {"8080": "STRICT"},
 * "policies": {"mesh", "namespace", "workload"}, "namespace", "labels"}
 * (the last two from self). NULL on OOM. */
struct cJSON;
struct cJSON *peerauth_to_json(const struct peerauth *pa, const struct pa_self *self);

/* The namespace a PeerAuthentication resource is in, from its model name
 * ("namespace/name"; a name without '/' is mesh-wide: PA_ROOT_NAMESPACE). */
void peerauth_res_ns(const struct mres *r, char *ns, size_t len);

/* Istio's validation of one policy (pkg/config/validation): portLevelMtls
 * needs a non-empty selector; ports 1-65535. 0, or -EINVAL with why set
 * ("portLevelMtls: ..."). */
struct Istio__Security__V1beta1__PeerAuthentication;
int peerauth_check(const struct Istio__Security__V1beta1__PeerAuthentication *pa, char *why, size_t len);

#endif
