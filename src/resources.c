/* resources: the static resources of the -c file decoded (json_pb) and built
 * into a mesh model (model_build), every refusal named by its JSON path. */
#include "autoconfig.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "istio/security/v1beta1/peer_authentication.pb-c.h"
#include "json_pb.h"
#include "peerauth.h"
#include "resources.h"

#define PATH_LEN 32		/* "resources[18446744073709551615]" */
#define LINE_LEN 640

void
res_report_free(struct res_report *rep)
{
	for (size_t i = 0; i < rep->nlines; i++)
		free(rep->lines[i]);
	free(rep->lines);
	*rep = (struct res_report){ 0 };
}

/* A line of the report, before it is put in input order. */
struct pending {
	size_t idx;		/* the input it is about */
	size_t seq;		/* order of finding, for a stable sort */
	char *text;
};

struct pendings {
	struct pending *p;
	size_t n, cap;
};

static void
report_line(struct res_report *rep, struct pendings *ps, size_t idx, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void
report_line(struct res_report *rep, struct pendings *ps, size_t idx, const char *fmt, ...)
{
	va_list ap;
	char *l;

	rep->refused++;
	if (ps->n == ps->cap) {
		size_t cap = ps->cap ? ps->cap * 2 : 16;
		struct pending *np = realloc(ps->p, cap * sizeof(*np));
		if (!np)
			return;	/* counted, not shown: the caller still sees refused */
		ps->p = np;
		ps->cap = cap;
	}
	if (!(l = malloc(LINE_LEN)))
		return;
	va_start(ap, fmt);
	vsnprintf(l, LINE_LEN, fmt, ap);
	va_end(ap);
	ps->p[ps->n] = (struct pending){ .idx = idx, .seq = ps->n, .text = l };
	ps->n++;
}

static int
pending_cmp(const void *a, const void *b)
{
	const struct pending *x = a, *y = b;

	if (x->idx != y->idx)
		return x->idx < y->idx ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* The lines found, in input order, become rep->lines (ps is emptied). */
static void
report_finish(struct res_report *rep, struct pendings *ps)
{
	if (ps->n)
		qsort(ps->p, ps->n, sizeof(*ps->p), pending_cmp);
	if (ps->n && !(rep->lines = malloc(ps->n * sizeof(*rep->lines)))) {
		for (size_t i = 0; i < ps->n; i++)
			free(ps->p[i].text);
		ps->n = 0;
	}
	for (size_t i = 0; i < ps->n; i++)
		rep->lines[i] = ps->p[i].text;
	rep->nlines = rep->cap = ps->n;
	free(ps->p);
	*ps = (struct pendings){ 0 };
}

/* mres_new's reason is relative to the resource ("workload.uid: required"):
 * joined to the path with '.' when it starts with a field path, else ": ". */
static const char *
join_sep(const char *why)
{
	const char *colon = strstr(why, ": ");
	const char *space = strchr(why, ' ');

	return colon && (!space || space > colon) ? "." : ": ";
}

static const char *
jstr(const cJSON *o, const char *key, const char *alt)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	if (!v && alt)
		v = cJSON_GetObjectItemCaseSensitive(o, alt);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool
is_pa(const cJSON *e)
{
	const char *type = jstr(e, "@type", NULL), *slash;

	if (!type)
		return false;
	slash = strrchr(type, '/');
	return strcmp(slash ? slash + 1 : type, mres_type_names[MRES_PEER_AUTHENTICATION]) == 0;
}

/* Kubernetes object names: a namespace is an RFC 1123 label, a name an
 * RFC 1123 subdomain (lower case letters, digits, '-', and '.' in a name). */
static bool
k8s_name_ok(const char *s, bool dots, size_t max)
{
	size_t n = strlen(s);

	if (n == 0 || n > max || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9')) ||
	    !((s[n - 1] >= 'a' && s[n - 1] <= 'z') || (s[n - 1] >= '0' && s[n - 1] <= '9')))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-' ||
		    (dots && s[i] == '.')))
			return false;
	return true;
}

/* A static PeerAuthentication has no name or namespace in its message: the
 * file gives them as "name" and "namespace" next to "@type" (keys its
 * message does not have). Its model name is then "namespace/name" (no
 * namespace: the root namespace, mesh-wide; no name: its place); with
 * neither, its place ("resources[3]"), mesh-wide. 1 when e has either key
 * (then *stripped is e without them, to decode), 0 when not, -EINVAL with
 * why set. */
static int
pa_meta(const cJSON *e, const char *path, char *name, size_t len, cJSON **stripped, char *why,
    size_t whylen)
{
	const cJSON *jn = cJSON_GetObjectItemCaseSensitive(e, "name");
	const cJSON *jns = cJSON_GetObjectItemCaseSensitive(e, "namespace");

	*stripped = NULL;
	snprintf(name, len, "%s", path);
	if (!jn && !jns)
		return 0;
	if ((jn && !cJSON_IsString(jn)) || (jns && !cJSON_IsString(jns))) {
		snprintf(why, whylen, "%s.%s: a string is wanted", path, jn && !cJSON_IsString(jn) ? "name" : "namespace");
		return -EINVAL;
	}
	if (jns && !k8s_name_ok(jns->valuestring, false, 63)) {
		snprintf(why, whylen, "%s.namespace: not a Kubernetes namespace name (RFC 1123 label)", path);
		return -EINVAL;
	}
	if (jn && !k8s_name_ok(jn->valuestring, true, 253)) {
		snprintf(why, whylen, "%s.name: not a Kubernetes object name (RFC 1123 subdomain)", path);
		return -EINVAL;
	}
	snprintf(name, len, "%s/%s", jns ? jns->valuestring : PA_ROOT_NAMESPACE, jn ? jn->valuestring : path);
	if (!(*stripped = cJSON_Duplicate(e, 1)))
		return -ENOMEM;
	cJSON_DeleteItemFromObjectCaseSensitive(*stripped, "name");
	cJSON_DeleteItemFromObjectCaseSensitive(*stripped, "namespace");
	return 1;
}

/* For an element that did not decode: the resource of prev it stands for,
 * found by the type and name its JSON gives (as mres_new would name it), or
 * NULL. A bad edit that the decoder refuses (a typo in a key, bytes that are
 * not base64) then keeps the running version, as a validation failure does
 * in model_build. */
static const struct mres *
prev_for_raw(const cJSON *e, const struct model *prev, const char *path)
{
	const char *type = jstr(e, "@type", NULL), *slash, *name = NULL;
	char buf[512];
	int t;

	if (!prev || !type)
		return NULL;
	slash = strrchr(type, '/');
	type = slash ? slash + 1 : type;
	for (t = 0; t < MRES__COUNT && strcmp(type, mres_type_names[t]) != 0; t++)
		;
	switch (t) {
	case MRES_ADDRESS: {
		const cJSON *w = cJSON_GetObjectItemCaseSensitive(e, "workload");
		const cJSON *sv = cJSON_GetObjectItemCaseSensitive(e, "service");
		const char *ns, *host;
		if (cJSON_IsObject(w))
			name = jstr(w, "uid", NULL);
		else if (cJSON_IsObject(sv) && (ns = jstr(sv, "namespace", NULL)) &&
		    (host = jstr(sv, "hostname", NULL)) &&
		    (size_t)snprintf(buf, sizeof(buf), "%s/%s", ns, host) < sizeof(buf))
			name = buf;
		break;
	}
	case MRES_AUTHORIZATION: {
		const char *ns = jstr(e, "namespace", NULL), *n = jstr(e, "name", NULL);
		if (n && (size_t)snprintf(buf, sizeof(buf), "%s/%s", ns ? ns : "", n) < sizeof(buf))
			name = buf;
		break;
	}
	case MRES_PEER_AUTHENTICATION: {
		cJSON *stripped;
		char why[8];
		if (pa_meta(e, path, buf, sizeof(buf), &stripped, why, sizeof(why)) < 0)
			return NULL;
		cJSON_Delete(stripped);
		name = buf;
		break;
	}
	case MRES_ENDPOINTS:
		name = jstr(e, "clusterName", "cluster_name");
		break;
	case MRES_CLUSTER:
	case MRES_ROUTE:
	case MRES_LISTENER:
		name = jstr(e, "name", NULL);
		break;
	default:
		return NULL;
	}
	return name && *name ? model_find(prev, (enum mres_type)t, name) : NULL;
}

struct model *
resources_build(const cJSON *list, const struct model *prev, struct res_report *rep)
{
	return resources_build_keep(list, prev, rep, NULL, NULL);
}

struct model *
resources_build_keep(const cJSON *list, const struct model *prev, struct res_report *rep,
    struct mres ***res, size_t *nres)
{
	struct model_opts opts = { .network = getenv("ISTIO_META_NETWORK"), .strict_refs = true };
	struct model_report mrep = { 0 };
	struct pendings ps = { 0 };
	struct model_input *in = NULL;
	char (*paths)[PATH_LEN] = NULL;
	bool *undecoded = NULL;
	struct model *m = NULL;
	const cJSON *e;
	size_t n = 0, i;

	*rep = (struct res_report){ 0 };
	if (!opts.network)
		opts.network = "";
	if (res) {
		*res = NULL;
		*nres = 0;
	}
	n = list ? (size_t)cJSON_GetArraySize(list) : 0;
	if (n == 0)
		return model_empty();
	in = calloc(n, sizeof(*in));
	paths = calloc(n, sizeof(*paths));
	undecoded = calloc(n, sizeof(*undecoded));
	if (!in || !paths || !undecoded)
		goto out;
	rep->nresources = n;

	i = 0;
	cJSON_ArrayForEach(e, list) {
		ProtobufCMessage *msg = NULL;
		struct jpb_err jerr;
		char why[384], paname[PATH_LEN + 320];
		cJSON *stripped = NULL;
		bool pa = is_pa(e);
		int rc = 0;

		snprintf(paths[i], PATH_LEN, "resources[%zu]", i);
		in[i].path = paths[i];
		jerr.msg[0] = '\0';
		if (pa)
			rc = pa_meta(e, paths[i], paname, sizeof(paname), &stripped, jerr.msg, sizeof(jerr.msg));
		if (rc == -ENOMEM)
			goto out;
		if (rc >= 0)
			rc = jpb_decode_any(stripped ? stripped : e, paths[i], NULL, NULL, &msg, &jerr);
		cJSON_Delete(stripped);
		if (rc == -ENOMEM)
			goto out;
		/* Istio's own checks of a PeerAuthentication, refused as a bad
		 * edit is (the running version stays). */
		if (rc >= 0 && pa && peerauth_check((const void *)msg, why, sizeof(why)) < 0) {
			snprintf(jerr.msg, sizeof(jerr.msg), "%s.%s", paths[i], why);
			protobuf_c_message_free_unpacked(msg, NULL);
			msg = NULL;
			rc = -EINVAL;
		}
		if (rc < 0) {
			/* The report keeps the decoder's words. The builder gets
			 * the running version of what the element names, if any
			 * (a resource is shared by reference count), else the
			 * element as undecoded (res NULL). */
			const struct mres *old = prev_for_raw(e, prev, paths[i]);

			undecoded[i] = true;
			if (old) {
				in[i].res = mres_ref((struct mres *)old);
				rep->kept++;
			}
			report_line(rep, &ps, i, "%s%s", jerr.msg[0] ? jerr.msg : paths[i],
			    old ? " (the previous version stays)" : "");
		} else {
			/* A PeerAuthentication has no name of its own: the file's
			 * "namespace"/"name", else its place, name it. No other
			 * type gets a fallback, so that a missing name is refused. */
			why[0] = '\0';
			in[i].res = mres_new(msg, "", pa ? paname : NULL, why, sizeof(why));
			if (!in[i].res) {
				if (strcmp(why, "out of memory") == 0)
					goto out;
				undecoded[i] = true;
				report_line(rep, &ps, i, "%s%s%s", paths[i], join_sep(why), why);
			}
		}
		i++;
	}

	if (!(m = model_build(in, n, prev, &opts, &mrep)))
		goto out;
	/* The inputs themselves, for the xDS client (the file's resources are
	 * part of every model it builds). */
	if (res && (*res = calloc(n, sizeof(**res)))) {
		for (i = 0; i < n; i++)
			if (in[i].res)
				(*res)[(*nres)++] = mres_ref(in[i].res);
	} else if (res) {
		model_free(m);
		m = NULL;
		goto out;
	}
	for (size_t p = 0; p < mrep.nproblems; p++) {
		const struct model_problem *pb = &mrep.problems[p];
		size_t pl = pb->path ? strlen(pb->path) : 0;
		/* The path is one of ours: its place in paths is the input. */
		size_t k = pb->path >= paths[0] && pb->path < paths[n] ?
		    (size_t)(pb->path - paths[0]) / PATH_LEN : n;

		/* The decoder already said why an undecoded input was refused. */
		if (k < n && undecoded[k])
			continue;
		if (pb->kept_previous)
			rep->kept++;
		if (pl && strncmp(pb->msg, pb->path, pl) == 0)
			report_line(rep, &ps, k, "%s%s", pb->msg,
			    pb->kept_previous ? " (the previous version stays)" : "");
		else
			report_line(rep, &ps, k, "%s: %s%s", pb->path ? pb->path : "resources", pb->msg,
			    pb->kept_previous ? " (the previous version stays)" : "");
	}
out:
	report_finish(rep, &ps);
	model_report_free(&mrep);
	/* model_build took its own references. */
	for (i = 0; in && i < n; i++)
		if (in[i].res)
			mres_unref(in[i].res);
	free(in);
	free(paths);
	free(undecoded);
	return m;
}

void
resources_free_list(struct mres **res, size_t n)
{
	for (size_t i = 0; i < n; i++)
		mres_unref(res[i]);
	free(res);
}
