/* xds_node: the Node we present on the first request of an xDS stream, made
 * from the environment the way pilot-agent makes its Envoy's (and ztunnel
 * its own): the id istiod parses as type~ip~id~domain, the service cluster,
 * and the metadata keys of istiod's NodeMetadata. Pure: the environment and
 * the configuration in, a message out; the SDS client uses the same id. */
#include "autoconfig.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "json_pb.h"
#include "xds.h"

extern char **environ;

#define META_PREFIX "ISTIO_META_"
#define METAJSON_PREFIX "ISTIO_METAJSON_"

static const char *
env_or(const char *name, const char *def)
{
	const char *v = getenv(name);

	return v && *v ? v : def;
}

/* pilot-agent's serviceClusterOrDefault: the app label, else the workload
 * name, each with ".<namespace>"; else "istio-proxy" (".<namespace>"). */
static void
service_cluster(char *out, size_t len, const char *app)
{
	const char *ns = env_or("POD_NAMESPACE", ""), *wl = env_or("ISTIO_META_WORKLOAD_NAME", "");
	const char *name = app && *app ? app : *wl ? wl : "istio-proxy";

	if (*ns)
		snprintf(out, len, "%s.%s", name, ns);
	else
		snprintf(out, len, "%s", name);
}

/* The "app" (or canonical-name) label of ISTIO_METAJSON_LABELS, borrowed
 * from labels; NULL without one. */
static const char *
app_label(const cJSON *labels)
{
	static const char *const keys[] = { "service.istio.io/canonical-name", "app.kubernetes.io/name", "app" };

	for (size_t i = 0; labels && i < sizeof(keys) / sizeof(keys[0]); i++) {
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(labels, keys[i]);
		if (cJSON_IsString(v) && *v->valuestring)
			return v->valuestring;
	}
	return NULL;
}

static cJSON *
labels_from_env(void)
{
	const char *v = getenv(METAJSON_PREFIX "LABELS");
	char err[128];
	cJSON *j;

	if (!v || !*v || !(j = json_parse_strict(v, strlen(v), err, sizeof(err))))
		return NULL;
	if (!cJSON_IsObject(j)) {
		cJSON_Delete(j);
		return NULL;
	}
	return j;
}

void
xds_node_names(char *id, size_t idlen, char *cluster, size_t clusterlen)
{
	const char *ip = env_or("INSTANCE_IP", ""), *pod = env_or("POD_NAME", ""), *ns = env_or("POD_NAMESPACE", "");
	cJSON *labels = labels_from_env();

	/* pilot-agent: "<type>~<ip>~<pod>.<namespace>~<namespace>.svc.<domain>" */
	snprintf(id, idlen, "sidecar~%s~%s.%s~%s.svc.cluster.local", ip, pod, ns, ns);
	service_cluster(cluster, clusterlen, app_label(labels));
	cJSON_Delete(labels);
}

/* Adds k = v unless an ISTIO_META_ variable already set k (the operator's
 * word wins over what we derive). */
static int
put_str(cJSON *meta, const char *k, const char *v)
{
	if (!v || !*v || cJSON_GetObjectItemCaseSensitive(meta, k))
		return 0;
	return cJSON_AddStringToObject(meta, k, v) ? 0 : -ENOMEM;
}

/* Every ISTIO_META_<K> as <K> (a string) and ISTIO_METAJSON_<K> as <K>
 * (its JSON; one that does not parse is left out, as pilot-agent refuses
 * it). */
static int
meta_from_env(cJSON *meta)
{
	char key[256], err[128];

	for (char **e = environ; e && *e; e++) {
		const char *kv = *e, *eq = strchr(kv, '=');
		bool json = strncmp(kv, METAJSON_PREFIX, strlen(METAJSON_PREFIX)) == 0;
		size_t plen = json ? strlen(METAJSON_PREFIX) : strlen(META_PREFIX);
		size_t klen;
		cJSON *v;

		if (!eq || (!json && strncmp(kv, META_PREFIX, strlen(META_PREFIX)) != 0))
			continue;
		klen = (size_t)(eq - kv) - plen;
		if (klen == 0 || klen >= sizeof(key))
			continue;
		memcpy(key, kv + plen, klen);
		key[klen] = '\0';
		cJSON_DeleteItemFromObjectCaseSensitive(meta, key);	/* the last one wins */
		if (json) {
			if (!(v = json_parse_strict(eq + 1, strlen(eq + 1), err, sizeof(err))))
				continue;
		} else if (!(v = cJSON_CreateString(eq + 1))) {
			return -ENOMEM;
		}
		if (!cJSON_AddItemToObject(meta, key, v)) {
			cJSON_Delete(v);
			return -ENOMEM;
		}
	}
	return 0;
}

int
xds_node_new(const struct config *cfg, Envoy__Config__Core__V3__Node **out)
{
	char id[512], cluster[256];
	cJSON *node = cJSON_CreateObject(), *meta;
	ProtobufCMessage *m = NULL;
	struct jpb_err jerr;
	int rc = -ENOMEM;

	*out = NULL;
	if (!node || !(meta = cJSON_AddObjectToObject(node, "metadata")))
		goto out;
	xds_node_names(id, sizeof(id), cluster, sizeof(cluster));
	if (!cJSON_AddStringToObject(node, "id", id) || !cJSON_AddStringToObject(node, "cluster", cluster) ||
	    !cJSON_AddStringToObject(node, "userAgentName", "outrigger") ||
	    !cJSON_AddStringToObject(node, "userAgentVersion", PACKAGE_VERSION))
		goto out;
	if ((rc = meta_from_env(meta)) < 0)
		goto out;
	rc = -ENOMEM;
	/* What pilot-agent derives (pkg/istio-agent, pkg/bootstrap) and istiod
	 * reads (pkg/model NodeMetadata). ENABLE_HBONE: "true" unless
	 * ISTIO_META_ENABLE_HBONE says otherwise, because every Outrigger
	 * sidecar terminates HBONE on proxy.hbonePort (hbone_server.c, always
	 * listening) and sends it (hbone_pool.c): istiod may then treat us as
	 * an HBONE-capable sidecar (reference xds-hbone.md §3.6). */
	if (!cJSON_GetObjectItemCaseSensitive(meta, "ENABLE_HBONE") &&
	    !cJSON_AddStringToObject(meta, "ENABLE_HBONE", "true"))
		goto out;
	if (put_str(meta, "NAME", getenv("POD_NAME")) < 0 ||
	    put_str(meta, "NAMESPACE", getenv("POD_NAMESPACE")) < 0 ||
	    put_str(meta, "SERVICE_ACCOUNT", getenv("SERVICE_ACCOUNT")) < 0 ||
	    put_str(meta, "INSTANCE_IPS", getenv("INSTANCE_IP")) < 0 ||
	    put_str(meta, "NODE_NAME", getenv("NODE_NAME")) < 0 ||
	    put_str(meta, "ISTIO_VERSION", getenv("ISTIO_VERSION")) < 0 ||
	    put_str(meta, "CLUSTER_ID", cfg->cluster_id[0] ? cfg->cluster_id : "Kubernetes") < 0 ||
	    put_str(meta, "INTERCEPTION_MODE", cfg->mode == INTERCEPT_TPROXY ? "TPROXY" : "REDIRECT") < 0 ||
	    put_str(meta, "MESH_ID", cfg->trust_domain) < 0)
		goto out;
	if ((rc = jpb_decode(node, &envoy__config__core__v3__node__descriptor, "node", NULL, NULL, &m,
	    &jerr)) < 0)
		goto out;
	*out = (Envoy__Config__Core__V3__Node *)m;
	rc = 0;
out:
	cJSON_Delete(node);
	return rc == -EINVAL ? -ENOMEM : rc;	/* what we built always decodes */
}

void
xds_node_free(Envoy__Config__Core__V3__Node *n)
{
	if (n)
		protobuf_c_message_free_unpacked(&n->base, NULL);
}
