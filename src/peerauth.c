/* peerauth: PeerAuthentication resolved for this proxy's workload (see
 * peerauth.h), following Istio's ComposePeerAuthentication
 * (pilot/pkg/security/authn/policy_applier.go). */
#include "autoconfig.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "istio/security/v1beta1/peer_authentication.pb-c.h"
#include "json.h"
#include "peerauth.h"

typedef Istio__Security__V1beta1__PeerAuthentication PA;

#define LABELS_FILE "/etc/istio/pod/labels"
#define LABELS_MAX (256 * 1024)	/* a pod's labels are at most 256 KiB in all (Kubernetes) */

const char *
pa_mode_str(enum pa_mode m)
{
	switch (m) {
	case PA_UNSET: return "UNSET";
	case PA_DISABLE: return "DISABLE";
	case PA_PERMISSIVE: return "PERMISSIVE";
	case PA_STRICT: return "STRICT";
	}
	return "?";
}

/* --- who we are ------------------------------------------------------------ */

static int
label_cmp(const void *a, const void *b)
{
	return strcmp(((const struct pa_label *)a)->key, ((const struct pa_label *)b)->key);
}

int
pa_self_set_label(struct pa_self *self, const char *key, const char *value)
{
	struct pa_label *l;
	char *v;

	for (size_t i = 0; i < self->nlabels; i++)
		if (strcmp(self->labels[i].key, key) == 0) {
			if (!(v = strdup(value)))
				return -ENOMEM;
			free(self->labels[i].value);
			self->labels[i].value = v;
			return 0;
		}
	if (!(l = realloc(self->labels, (self->nlabels + 1) * sizeof(*l))))
		return -ENOMEM;
	self->labels = l;
	l += self->nlabels;
	l->key = strdup(key);
	l->value = strdup(value);
	if (!l->key || !l->value) {
		free(l->key);
		free(l->value);
		return -ENOMEM;
	}
	self->nlabels++;
	qsort(self->labels, self->nlabels, sizeof(*self->labels), label_cmp);
	return 0;
}

static const char *
self_label(const struct pa_self *self, const char *key)
{
	struct pa_label k = { .key = (char *)key };
	const struct pa_label *l = self->nlabels ?
	    bsearch(&k, self->labels, self->nlabels, sizeof(k), label_cmp) : NULL;

	return l ? l->value : NULL;
}

void
pa_self_free(struct pa_self *self)
{
	if (!self)
		return;
	for (size_t i = 0; i < self->nlabels; i++) {
		free(self->labels[i].key);
		free(self->labels[i].value);
	}
	free(self->labels);
	free(self->ns);
	*self = (struct pa_self){ 0 };
}

static int
hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 :
	    c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* A Go-quoted string ("..." as Kubernetes writes downward-API values with
 * %q) into out; the escapes Go's %q writes for label text. false if bad. */
static bool
unquote(const char *s, size_t len, char *out)
{
	size_t o = 0;

	if (len < 2 || s[0] != '"' || s[len - 1] != '"')
		return false;
	for (size_t i = 1; i < len - 1; i++) {
		char c = s[i];
		if (c == '"' || c == '\0')
			return false;
		if (c != '\\') {
			out[o++] = c;
			continue;
		}
		if (++i >= len - 1)
			return false;
		switch (s[i]) {
		case '"': case '\\': out[o++] = s[i]; break;
		case 'n': out[o++] = '\n'; break;
		case 't': out[o++] = '\t'; break;
		case 'r': out[o++] = '\r'; break;
		case 'x': {
			int h, l;
			if (i + 2 >= len - 1)	/* two hex digits before the closing quote */
				return false;
			if ((h = hexval(s[i + 1])) < 0 || (l = hexval(s[i + 2])) < 0 || (h == 0 && l == 0))
				return false;
			out[o++] = (char)(h << 4 | l);
			i += 2;
			break;
		}
		default:
			return false;
		}
	}
	out[o] = '\0';
	return true;
}

/* The downward-API labels file: one `key="value"` per line; lines without
 * '=' are skipped (as pilot-agent does); a value that does not unquote
 * refuses the file. 0, -ENOENT, -EINVAL (warn says why) or -ENOMEM. */
static int
load_labels_file(struct pa_self *self, const char *path, char *warn, size_t warnlen)
{
	FILE *f = fopen(path, "r");
	char *text = NULL, *line, *next, *val = NULL;
	size_t n;
	int rc = 0;

	if (!f)
		return -ENOENT;
	if (!(text = malloc(LABELS_MAX + 1)) || !(val = malloc(LABELS_MAX + 1))) {
		rc = -ENOMEM;
		goto out;
	}
	n = fread(text, 1, LABELS_MAX + 1, f);
	if (n > LABELS_MAX) {
		snprintf(warn, warnlen, "%s: longer than %d bytes", path, LABELS_MAX);
		rc = -EINVAL;
		goto out;
	}
	text[n] = '\0';
	if (memchr(text, '\0', n)) {
		snprintf(warn, warnlen, "%s: a NUL byte", path);
		rc = -EINVAL;
		goto out;
	}
	for (line = text; line && *line; line = next) {
		char *eq, *end;
		if ((next = strchr(line, '\n')))
			*next++ = '\0';
		if (!(eq = strchr(line, '=')))
			continue;
		*eq = '\0';
		end = eq + 1 + strlen(eq + 1);
		if (!unquote(eq + 1, (size_t)(end - eq - 1), val)) {
			snprintf(warn, warnlen, "%s: label %.100s: value is not a quoted string", path, line);
			rc = -EINVAL;
			goto out;
		}
		/* Deployment's per-revision hash: not a label to select by. */
		if (strcmp(line, "pod-template-hash") == 0)
			continue;
		if ((rc = pa_self_set_label(self, line, val)) < 0)
			goto out;
	}
out:
	free(text);
	free(val);
	fclose(f);
	return rc;
}

int
pa_self_load(struct pa_self *self, const char *labels_path, char *warn, size_t warnlen)
{
	const char *ns = getenv("POD_NAMESPACE"), *js = getenv("ISTIO_METAJSON_LABELS");
	struct pa_self next = { 0 };
	char w[256];
	int rc;

	if (warnlen)
		warn[0] = '\0';
	if (!(next.ns = strdup(ns ? ns : "")))
		return -ENOMEM;
	if (js && *js) {
		cJSON *o = json_parse_strict(js, strlen(js), w, sizeof(w)), *e;
		bool ok = cJSON_IsObject(o);
		cJSON *list = ok ? o : NULL;
		cJSON_ArrayForEach(e, list)
			ok = ok && cJSON_IsString(e);
		if (!ok)
			snprintf(warn, warnlen, "ISTIO_METAJSON_LABELS: not a JSON object of strings; ignored");
		if (!ok)
			list = NULL;
		cJSON_ArrayForEach(e, list)
			if (pa_self_set_label(&next, e->string, e->valuestring) < 0) {
				cJSON_Delete(o);
				pa_self_free(&next);
				return -ENOMEM;
			}
		cJSON_Delete(o);
	}
	if (!labels_path)
		labels_path = getenv("OUTRIGGER_POD_LABELS");
	if (!labels_path || !*labels_path)
		labels_path = LABELS_FILE;
	{
		struct pa_self file = { 0 };
		rc = load_labels_file(&file, labels_path, w, sizeof(w));
		if (rc == -ENOMEM) {
			pa_self_free(&file);
			pa_self_free(&next);
			return rc;
		}
		if (rc == -EINVAL)
			snprintf(warn, warnlen, "%s; pod labels from the file ignored", w);
		for (size_t i = 0; rc == 0 && i < file.nlabels; i++)
			if (pa_self_set_label(&next, file.labels[i].key, file.labels[i].value) < 0) {
				pa_self_free(&file);
				pa_self_free(&next);
				return -ENOMEM;
			}
		pa_self_free(&file);
	}
	pa_self_free(self);
	*self = next;
	return 0;
}

static struct pa_self current;

void
pa_self_install(struct pa_self *self)
{
	pa_self_free(&current);
	if (self) {
		current = *self;
		*self = (struct pa_self){ 0 };
	}
}

const struct pa_self *
pa_self_current(void)
{
	return &current;
}

/* --- the resolution ---------------------------------------------------------- */

void
peerauth_res_ns(const struct mres *r, char *ns, size_t len)
{
	const char *slash = strchr(r->name, '/');

	if (!slash)
		snprintf(ns, len, "%s", PA_ROOT_NAMESPACE);
	else
		snprintf(ns, len, "%.*s", (int)(slash - r->name), r->name);
}

static bool
has_selector(const PA *p)
{
	return p->selector && p->selector->n_match_labels > 0;
}

/* Every label the selector asks for, with its value (Kubernetes' matchLabels). */
static bool
selects(const PA *p, const struct pa_self *self)
{
	for (size_t i = 0; i < p->selector->n_match_labels; i++) {
		const char *v = self_label(self, p->selector->match_labels[i]->key);
		if (!v || strcmp(v, p->selector->match_labels[i]->value) != 0)
			return false;
	}
	return true;
}

static enum pa_mode
mode_of(const Istio__Security__V1beta1__PeerAuthentication__MutualTLS *m)
{
	/* A number no schema has (proto3 enums are open) is refused by the
	 * model's builder; here it would only be UNSET. */
	if (!m || (int)m->mode < PA_DISABLE || (int)m->mode > PA_STRICT)
		return PA_UNSET;
	return (enum pa_mode)m->mode;
}

static int
port_cmp(const void *a, const void *b)
{
	return (int)((const struct pa_port *)a)->port - (int)((const struct pa_port *)b)->port;
}

struct peerauth *
peerauth_resolve(const struct model *m, const struct pa_self *self)
{
	const struct mres *mesh = NULL, *nsp = NULL, *wl = NULL;
	struct peerauth *pa = calloc(1, sizeof(*pa));
	size_t n = model_count(m, MRES_PEER_AUTHENTICATION);
	char ns[128];

	if (!pa)
		return NULL;
	/* One policy per level; two at a level: Istio takes the oldest, a
	 * static file has no age, so the first in the model's (name) order. */
	for (size_t i = 0; i < n; i++) {
		const struct mres *r = model_resource(m, MRES_PEER_AUTHENTICATION, i);
		const PA *p = (const PA *)r->msg;

		peerauth_res_ns(r, ns, sizeof(ns));
		if (!has_selector(p)) {
			if (strcmp(ns, PA_ROOT_NAMESPACE) == 0) {
				if (!mesh)
					mesh = r;
			} else if (self->ns && strcmp(ns, self->ns) == 0) {
				if (!nsp)
					nsp = r;
			}
		} else if (strcmp(ns, PA_ROOT_NAMESPACE) != 0 && self->ns && strcmp(ns, self->ns) == 0 &&
		    selects(p, self) && !wl) {
			wl = r;	/* a selector in the root namespace selects nothing (Istio) */
		}
	}
	pa->mode = PA_PERMISSIVE;
	if (mesh && mode_of(((const PA *)mesh->msg)->mtls) != PA_UNSET)
		pa->mode = mode_of(((const PA *)mesh->msg)->mtls);
	if (nsp && mode_of(((const PA *)nsp->msg)->mtls) != PA_UNSET)
		pa->mode = mode_of(((const PA *)nsp->msg)->mtls);
	if (wl && mode_of(((const PA *)wl->msg)->mtls) != PA_UNSET)
		pa->mode = mode_of(((const PA *)wl->msg)->mtls);
	snprintf(pa->mesh, sizeof(pa->mesh), "%s", mesh ? mesh->name : "");
	snprintf(pa->ns, sizeof(pa->ns), "%s", nsp ? nsp->name : "");
	snprintf(pa->workload, sizeof(pa->workload), "%s", wl ? wl->name : "");
	if (wl) {
		const PA *p = (const PA *)wl->msg;
		if (p->n_port_level_mtls && !(pa->ports = calloc(p->n_port_level_mtls, sizeof(*pa->ports)))) {
			free(pa);
			return NULL;
		}
		for (size_t i = 0; i < p->n_port_level_mtls; i++) {
			enum pa_mode pm = mode_of(p->port_level_mtls[i]->value);
			uint32_t port = p->port_level_mtls[i]->key;
			if (port == 0 || port > 65535)
				continue;	/* refused when loaded (peerauth_check) */
			pa->ports[pa->nports].port = (uint16_t)port;
			pa->ports[pa->nports].mode = (uint8_t)(pm == PA_UNSET ? pa->mode : pm);
			pa->nports++;
		}
		if (pa->nports)
			qsort(pa->ports, pa->nports, sizeof(*pa->ports), port_cmp);
	}
	return pa;
}

void
peerauth_free(struct peerauth *pa)
{
	if (!pa)
		return;
	free(pa->ports);
	free(pa);
}

enum pa_mode
peerauth_mode(const struct peerauth *pa, uint16_t port)
{
	size_t lo = 0, hi = pa->nports;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (pa->ports[mid].port == port)
			return (enum pa_mode)pa->ports[mid].mode;
		if (pa->ports[mid].port < port)
			lo = mid + 1;
		else
			hi = mid;
	}
	return pa->mode;
}

cJSON *
peerauth_to_json(const struct peerauth *pa, const struct pa_self *self)
{
	cJSON *o = cJSON_CreateObject(), *ports, *pol, *labels;
	char key[8];
	bool ok = o != NULL;

	ok = ok && cJSON_AddStringToObject(o, "mode", pa_mode_str(pa->mode));
	ok = ok && (ports = cJSON_AddObjectToObject(o, "ports"));
	for (size_t i = 0; ok && i < pa->nports; i++) {
		snprintf(key, sizeof(key), "%u", pa->ports[i].port);
		ok = cJSON_AddStringToObject(ports, key, pa_mode_str((enum pa_mode)pa->ports[i].mode)) != NULL;
	}
	ok = ok && (pol = cJSON_AddObjectToObject(o, "policies")) &&
	    cJSON_AddStringToObject(pol, "mesh", pa->mesh) &&
	    cJSON_AddStringToObject(pol, "namespace", pa->ns) &&
	    cJSON_AddStringToObject(pol, "workload", pa->workload) &&
	    cJSON_AddStringToObject(o, "namespace", self->ns ? self->ns : "") &&
	    (labels = cJSON_AddObjectToObject(o, "labels"));
	for (size_t i = 0; ok && i < self->nlabels; i++)
		ok = cJSON_AddStringToObject(labels, self->labels[i].key, self->labels[i].value) != NULL;
	if (!ok) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}

int
peerauth_check(const PA *p, char *why, size_t len)
{
	for (size_t i = 0; i < p->n_port_level_mtls; i++) {
		uint32_t port = p->port_level_mtls[i]->key;
		if (port == 0 || port > 65535) {
			snprintf(why, len, "portLevelMtls[\"%u\"]: port must be 1-65535", port);
			return -EINVAL;
		}
	}
	if (p->n_port_level_mtls && !has_selector(p)) {
		snprintf(why, len, "portLevelMtls: needs a selector with matchLabels (Istio: port level mtls is "
		    "only for workload-specific policies)");
		return -EINVAL;
	}
	return 0;
}
