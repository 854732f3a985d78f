/* Unit tests for src/peerauth.c (issue 9, "Inbound on 15006"): Istio's
 * resolution of PeerAuthentication (workload selector over namespace over
 * mesh, UNSET inherits, port-level only from a selector policy, default
 * PERMISSIVE), the static form with "name"/"namespace" (src/resources.c),
 * and the pod's namespace and labels as pilot-agent reads them. */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json.h"
#include "model.h"
#include "peerauth.h"
#include "resources.h"
#include "snapshot.h"

#define PA "\"@type\":\"type.googleapis.com/istio.security.v1beta1.PeerAuthentication\""

static struct model *
build(const char *const *elems, size_t n, struct res_report *rep)
{
	char text[8192], err[256];
	size_t off = 0;
	struct model *m;
	cJSON *j;

	off += (size_t)snprintf(text + off, sizeof(text) - off, "[");
	for (size_t i = 0; i < n; i++)
		off += (size_t)snprintf(text + off, sizeof(text) - off, "%s%s", i ? "," : "", elems[i]);
	snprintf(text + off, sizeof(text) - off, "]");
	if (!(j = json_parse_strict(text, strlen(text), err, sizeof(err))))
		fail_msg("%s: %s", text, err);
	m = resources_build(j, NULL, rep);
	assert_non_null(m);
	cJSON_Delete(j);
	return m;
}

/* The resolution of elems for a workload in namespace ns with labels
 * "k=v,k=v" (NULL none). Every resource must be accepted. */
static struct peerauth *
resolve(const char *const *elems, size_t n, const char *ns, const char *labels)
{
	struct pa_self self = { 0 };
	struct res_report rep;
	struct model *m = build(elems, n, &rep);
	struct peerauth *pa;

	if (rep.refused)
		fail_msg("refused: %s", rep.lines[0]);
	res_report_free(&rep);
	self.ns = strdup(ns);
	if (labels) {
		char buf[256], *save, *kv;
		snprintf(buf, sizeof(buf), "%s", labels);
		for (kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
			char *eq = strchr(kv, '=');
			*eq = '\0';
			assert_int_equal(pa_self_set_label(&self, kv, eq + 1), 0);
		}
	}
	pa = peerauth_resolve(m, &self);
	assert_non_null(pa);
	pa_self_free(&self);
	model_free(m);
	return pa;
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

static void
test_default_permissive(void **state)
{
	struct peerauth *pa = resolve(NULL, 0, "default", NULL);

	assert_int_equal(pa->mode, PA_PERMISSIVE);
	assert_int_equal(peerauth_mode(pa, 8080), PA_PERMISSIVE);
	peerauth_free(pa);
}

/* The form: no name, no namespace: mesh-wide. */
static void
test_mesh_wide_static(void **state)
{
	static const char *const r[] = { "{" PA ",\"mtls\":{\"mode\":\"STRICT\"}}" };
	struct peerauth *pa = resolve(r, 1, "default", NULL);

	assert_int_equal(pa->mode, PA_STRICT);
	assert_string_equal(pa->mesh, "resources[0]");
	peerauth_free(pa);
	/* Mesh-wide means every namespace, and a proxy that knows none. */
	pa = resolve(r, 1, "", NULL);
	assert_int_equal(pa->mode, PA_STRICT);
	peerauth_free(pa);
	static const char *const d[] = { "{" PA ",\"mtls\":{\"mode\":\"DISABLE\"}}" };
	pa = resolve(d, 1, "default", NULL);
	assert_int_equal(pa->mode, PA_DISABLE);
	peerauth_free(pa);
}

static void
test_namespace_over_mesh(void **state)
{
	static const char *const r[] = {
		"{" PA ",\"namespace\":\"istio-system\",\"name\":\"mesh\",\"mtls\":{\"mode\":\"STRICT\"}}",
		"{" PA ",\"namespace\":\"default\",\"name\":\"ns\",\"mtls\":{\"mode\":\"PERMISSIVE\"}}",
		"{" PA ",\"namespace\":\"legacy\",\"name\":\"ns\",\"mtls\":{}}",	/* UNSET: inherits */
	};
	struct peerauth *pa = resolve(r, N(r), "default", NULL);

	assert_int_equal(pa->mode, PA_PERMISSIVE);
	assert_string_equal(pa->mesh, "istio-system/mesh");
	assert_string_equal(pa->ns, "default/ns");
	peerauth_free(pa);
	pa = resolve(r, N(r), "other", NULL);	/* no policy of its own: the mesh's */
	assert_int_equal(pa->mode, PA_STRICT);
	assert_string_equal(pa->ns, "");
	peerauth_free(pa);
	pa = resolve(r, N(r), "legacy", NULL);
	assert_int_equal(pa->mode, PA_STRICT);
	assert_string_equal(pa->ns, "legacy/ns");
	peerauth_free(pa);
}

static void
test_workload_selector(void **state)
{
	static const char *const r[] = {
		"{" PA ",\"mtls\":{\"mode\":\"DISABLE\"}}",
		"{" PA ",\"namespace\":\"default\",\"name\":\"ns\",\"mtls\":{\"mode\":\"PERMISSIVE\"}}",
		"{" PA ",\"namespace\":\"default\",\"name\":\"reviews\",\"selector\":{\"matchLabels\":"
		    "{\"app\":\"reviews\",\"version\":\"v1\"}},\"mtls\":{\"mode\":\"STRICT\"}}",
		/* A selector in the root namespace selects nothing (Istio). */
		"{" PA ",\"namespace\":\"istio-system\",\"name\":\"root-sel\",\"selector\":{\"matchLabels\":"
		    "{\"app\":\"ratings\"}},\"mtls\":{\"mode\":\"STRICT\"}}",
		/* Another namespace's selector policy does not apply here. */
		"{" PA ",\"namespace\":\"other\",\"name\":\"ratings\",\"selector\":{\"matchLabels\":"
		    "{\"app\":\"ratings\"}},\"mtls\":{\"mode\":\"STRICT\"}}",
	};
	struct peerauth *pa = resolve(r, N(r), "default", "app=reviews,version=v1,extra=x");

	assert_int_equal(pa->mode, PA_STRICT);
	assert_string_equal(pa->workload, "default/reviews");
	peerauth_free(pa);
	/* All labels must match. */
	pa = resolve(r, N(r), "default", "app=reviews,version=v2");
	assert_int_equal(pa->mode, PA_PERMISSIVE);
	assert_string_equal(pa->workload, "");
	peerauth_free(pa);
	pa = resolve(r, N(r), "default", "app=ratings");
	assert_int_equal(pa->mode, PA_PERMISSIVE);
	peerauth_free(pa);
	pa = resolve(r, N(r), "other", "app=ratings");
	assert_int_equal(pa->mode, PA_STRICT);
	peerauth_free(pa);
	/* An empty selector is a namespace policy. */
	static const char *const e[] = {
		"{" PA ",\"namespace\":\"default\",\"name\":\"empty\",\"selector\":{},\"mtls\":{\"mode\":\"STRICT\"}}",
	};
	pa = resolve(e, 1, "default", "app=x");
	assert_int_equal(pa->mode, PA_STRICT);
	assert_string_equal(pa->ns, "default/empty");
	peerauth_free(pa);
}

static void
test_port_level(void **state)
{
	static const char *const r[] = {
		"{" PA ",\"namespace\":\"default\",\"name\":\"ns\",\"mtls\":{\"mode\":\"DISABLE\"}}",
		"{" PA ",\"namespace\":\"default\",\"name\":\"app\",\"selector\":{\"matchLabels\":{\"app\":\"a\"}},"
		    "\"mtls\":{},\"portLevelMtls\":{\"8080\":{\"mode\":\"STRICT\"},\"9090\":{},"
		    "\"80\":{\"mode\":\"PERMISSIVE\"}}}",
	};
	struct peerauth *pa = resolve(r, N(r), "default", "app=a");

	/* The workload's own mode is UNSET: the namespace's. */
	assert_int_equal(pa->mode, PA_DISABLE);
	assert_int_equal(peerauth_mode(pa, 8080), PA_STRICT);
	assert_int_equal(peerauth_mode(pa, 80), PA_PERMISSIVE);
	assert_int_equal(peerauth_mode(pa, 9090), PA_DISABLE);	/* UNSET port: the workload's */
	assert_int_equal(peerauth_mode(pa, 8081), PA_DISABLE);
	assert_int_equal(pa->nports, 3);
	assert_true(pa->ports[0].port < pa->ports[1].port && pa->ports[1].port < pa->ports[2].port);
	/* As /config_dump shows it. */
	struct pa_self self = { .ns = "default" };
	cJSON *j = peerauth_to_json(pa, &self);
	char *txt = cJSON_PrintUnformatted(j);
	assert_string_equal(txt, "{\"mode\":\"DISABLE\",\"ports\":{\"80\":\"PERMISSIVE\",\"8080\":\"STRICT\","
	    "\"9090\":\"DISABLE\"},\"policies\":{\"mesh\":\"\",\"namespace\":\"default/ns\",\"workload\":"
	    "\"default/app\"},\"namespace\":\"default\",\"labels\":{}}");
	free(txt);
	cJSON_Delete(j);
	peerauth_free(pa);
	/* Not selected: no port modes. */
	pa = resolve(r, N(r), "default", "app=b");
	assert_int_equal(pa->nports, 0);
	assert_int_equal(peerauth_mode(pa, 8080), PA_DISABLE);
	peerauth_free(pa);
}

static void
test_two_at_one_level(void **state)
{
	static const char *const r[] = {
		"{" PA ",\"name\":\"b\",\"mtls\":{\"mode\":\"DISABLE\"}}",
		"{" PA ",\"name\":\"a\",\"mtls\":{\"mode\":\"STRICT\"}}",
	};
	struct peerauth *pa = resolve(r, N(r), "default", NULL);

	/* Istio takes the oldest; static ones have no age: the first by name. */
	assert_int_equal(pa->mode, PA_STRICT);
	assert_string_equal(pa->mesh, "istio-system/a");
	peerauth_free(pa);
}

static void
refused(const char *elem, const char *want)
{
	struct res_report rep;
	const char *const r[] = { elem };
	struct model *m = build(r, 1, &rep);

	assert_int_equal(rep.refused, 1);
	if (!strstr(rep.lines[0], want))
		fail_msg("%s: got %s, want %s", elem, rep.lines[0], want);
	assert_int_equal(model_count(m, MRES_PEER_AUTHENTICATION), 0);
	res_report_free(&rep);
	model_free(m);
}

static void
test_refused_at_load(void **state)
{
	refused("{" PA ",\"portLevelMtls\":{\"8080\":{\"mode\":\"STRICT\"}}}",
	    "resources[0].portLevelMtls: needs a selector");
	refused("{" PA ",\"selector\":{\"matchLabels\":{\"a\":\"b\"}},\"portLevelMtls\":{\"0\":{\"mode\":\"STRICT\"}}}",
	    "resources[0].portLevelMtls[\"0\"]: port must be 1-65535");
	refused("{" PA ",\"namespace\":\"Bad_NS\"}", "resources[0].namespace: not a Kubernetes namespace");
	refused("{" PA ",\"namespace\":\"a/b\"}", "resources[0].namespace: not a Kubernetes namespace");
	refused("{" PA ",\"name\":\"x/y\"}", "resources[0].name: not a Kubernetes object name");
	refused("{" PA ",\"name\":7}", "resources[0].name: a string is wanted");
	refused("{" PA ",\"mtls\":{\"mode\":\"STRICTER\"}}", "resources[0].mtls.mode");
	refused("{" PA ",\"nam\":\"x\"}", "resources[0]");
	/* Two of the same namespace and name: the second is refused. */
	struct res_report rep;
	static const char *const two[] = {
		"{" PA ",\"namespace\":\"default\",\"name\":\"x\"}",
		"{" PA ",\"namespace\":\"default\",\"name\":\"x\",\"mtls\":{\"mode\":\"STRICT\"}}",
	};
	struct model *m = build(two, 2, &rep);
	assert_int_equal(rep.refused, 1);
	assert_int_equal(model_count(m, MRES_PEER_AUTHENTICATION), 1);
	assert_string_equal(model_resource(m, MRES_PEER_AUTHENTICATION, 0)->name, "default/x");
	res_report_free(&rep);
	model_free(m);
}

static void
write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void
test_self_from_pod(void **state)
{
	char path[] = "/tmp/test_peerauth_labelsXXXXXX", warn[320];
	struct pa_self self = { 0 };
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	close(fd);
	/* The downward API's format: key="value", the value Go-quoted. */
	write_file(path, "app=\"reviews\"\nsecurity.istio.io/tlsMode=\"istio\"\npod-template-hash=\"5d8f\"\n"
	    "q=\"a\\\"b\\x41\"\nno-equals-line\n");
	setenv("POD_NAMESPACE", "bookinfo", 1);
	setenv("ISTIO_METAJSON_LABELS", "{\"app\":\"from-env\",\"version\":\"v1\"}", 1);
	assert_int_equal(pa_self_load(&self, path, warn, sizeof(warn)), 0);
	assert_string_equal(warn, "");
	assert_string_equal(self.ns, "bookinfo");
	assert_int_equal(self.nlabels, 4);	/* app, q, security..., version */
	assert_string_equal(self.labels[0].key, "app");
	assert_string_equal(self.labels[0].value, "reviews");	/* the file wins */
	assert_string_equal(self.labels[1].key, "q");
	assert_string_equal(self.labels[1].value, "a\"bA");
	assert_string_equal(self.labels[3].key, "version");
	pa_self_free(&self);

	/* A value that does not unquote: the file is ignored, with a warning. */
	write_file(path, "app=reviews\n");
	assert_int_equal(pa_self_load(&self, path, warn, sizeof(warn)), 0);
	assert_non_null(strstr(warn, "not a quoted string"));
	assert_int_equal(self.nlabels, 2);
	assert_string_equal(self.labels[0].value, "from-env");
	pa_self_free(&self);

	/* No file, bad JSON: no labels, a warning, never a failure. */
	unlink(path);
	setenv("ISTIO_METAJSON_LABELS", "[1]", 1);
	assert_int_equal(pa_self_load(&self, path, warn, sizeof(warn)), 0);
	assert_non_null(strstr(warn, "ISTIO_METAJSON_LABELS"));
	assert_int_equal(self.nlabels, 0);
	pa_self_free(&self);
	unsetenv("ISTIO_METAJSON_LABELS");
	unsetenv("POD_NAMESPACE");
	assert_int_equal(pa_self_load(&self, path, warn, sizeof(warn)), 0);
	assert_string_equal(self.ns, "");
	pa_self_free(&self);
}

/* The builder resolves once per snapshot, with the installed self. */
static void
test_snapshot_resolves(void **state)
{
	static const char *const r[] = {
		"{" PA ",\"namespace\":\"shop\",\"name\":\"s\",\"mtls\":{\"mode\":\"STRICT\"}}",
	};
	struct pa_self self = { 0 };
	struct res_report rep;
	struct config cfg;
	struct snapshot *s;

	config_defaults(&cfg);
	self.ns = strdup("shop");
	pa_self_install(&self);
	s = snapshot_new(&cfg, build(r, 1, &rep), 1);
	res_report_free(&rep);
	assert_non_null(s);
	assert_int_equal(peerauth_mode(s->peerauth, 80), PA_STRICT);
	snapshot_unref(s);
	pa_self_install(NULL);
	s = snapshot_new(&cfg, build(r, 1, &rep), 2);
	res_report_free(&rep);
	assert_int_equal(peerauth_mode(s->peerauth, 80), PA_PERMISSIVE);
	snapshot_unref(s);
}

static int
setup(void **state)
{
	return model_register_types() < 0 ? -1 : 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_default_permissive),
		cmocka_unit_test(test_mesh_wide_static),
		cmocka_unit_test(test_namespace_over_mesh),
		cmocka_unit_test(test_workload_selector),
		cmocka_unit_test(test_port_level),
		cmocka_unit_test(test_two_at_one_level),
		cmocka_unit_test(test_refused_at_load),
		cmocka_unit_test(test_self_from_pod),
		cmocka_unit_test(test_snapshot_resolves),
	};
	return cmocka_run_group_tests(tests, setup, NULL);
}
