/* Unit tests for src/xds_state.c: the state file round trip, atomic
 * replacement (a failing write leaves the old file whole), truncated and
 * garbage files refused (-EINVAL, never half loaded), damaged entries
 * skipped and counted. */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"
#include "json_pb.h"
#include "model.h"
#include "xds_state.h"
#include "xds_store.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "outrigger/xds_state.pb-c.h"

#define T_ADDRESS "type.googleapis.com/istio.workload.Address"
#define T_CLUSTER "type.googleapis.com/envoy.config.cluster.v3.Cluster"
#define ADDR "'@type':'" T_ADDRESS "'"
#define WL(uid, ip64) \
	"{" ADDR ",'workload':{'uid':'" uid "','name':'" uid "','namespace':'ns','addresses':['" ip64 "']}}"
#define CLUSTER(name) "{'@type':'" T_CLUSTER "','name':'" name "'}"

static char dir[64];

static int
setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/or-xds-state-XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int
teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static char *
path_of(const char *name)
{
	static char p[128];

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	return p;
}

/* A resource from JSON (single quotes for double), as its Any's value. */
static uint8_t *
packed(const char *json, size_t *len)
{
	char *t = strdup(json), err[256];
	ProtobufCMessage *msg = NULL;
	struct jpb_err je;
	cJSON *j;
	uint8_t *out;

	for (char *p = t; *p; p++)
		if (*p == '\'')
			*p = '"';
	if (!(j = json_parse_strict(t, strlen(t), err, sizeof(err))))
		fail_msg("bad JSON %s", err);
	if (jpb_decode_any(j, NULL, NULL, NULL, &msg, &je) < 0)
		fail_msg("decode: %s", je.msg);
	*len = protobuf_c_message_get_packed_size(msg);
	out = malloc(*len + 1);
	protobuf_c_message_pack(msg, out);
	protobuf_c_message_free_unpacked(msg, NULL);
	cJSON_Delete(j);
	free(t);
	return out;
}

/* Applies one delta response of n resources (names[i], versions[i], json[i],
 * one alias each: "/alias-<name>") to s. */
static void
feed(struct xds_store *s, const char *type_url, size_t n, const char *const *names, const char *version,
    const char *const *json, bool sotw)
{
	Envoy__Service__Discovery__V3__DeltaDiscoveryResponse d = ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_RESPONSE__INIT;
	Envoy__Service__Discovery__V3__DiscoveryResponse w = ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_RESPONSE__INIT;
	Envoy__Service__Discovery__V3__Resource res[8], *rp[8];
	Google__Protobuf__Any any[8], *ap[8];
	char alias[8][64], *al[8];
	struct xds_update u;
	struct xds_result r;
	char err[256];
	uint8_t *b;
	size_t len;

	for (size_t i = 0; i < n; i++) {
		envoy__service__discovery__v3__resource__init(&res[i]);
		google__protobuf__any__init(&any[i]);
		any[i].type_url = (char *)type_url;
		any[i].value.data = packed(json[i], &any[i].value.len);
		res[i].name = (char *)names[i];
		res[i].version = (char *)version;
		snprintf(alias[i], sizeof(alias[i]), "/alias-%s", names[i]);
		al[i] = alias[i];
		res[i].aliases = &al[i];
		res[i].n_aliases = 1;
		res[i].resource = &any[i];
		rp[i] = &res[i];
		ap[i] = &any[i];
	}
	if (sotw) {
		w.type_url = (char *)type_url;
		w.version_info = (char *)version;
		w.resources = ap;
		w.n_resources = n;
		len = envoy__service__discovery__v3__discovery_response__get_packed_size(&w);
		b = malloc(len + 1);
		envoy__service__discovery__v3__discovery_response__pack(&w, b);
		assert_int_equal(xds_decode_sotw(b, len, &u, err, sizeof(err)), 0);
	} else {
		d.type_url = (char *)type_url;
		d.resources = rp;
		d.n_resources = n;
		len = envoy__service__discovery__v3__delta_discovery_response__get_packed_size(&d);
		b = malloc(len + 1);
		envoy__service__discovery__v3__delta_discovery_response__pack(&d, b);
		assert_int_equal(xds_decode_delta(b, len, &u, err, sizeof(err)), 0);
	}
	assert_int_equal(xds_store_apply(s, &u, NULL, &r), 0);
	if (r.error)
		fail_msg("%s", r.error);
	xds_result_free(&r);
	xds_update_free(&u);
	free(b);
	for (size_t i = 0; i < n; i++)
		free(any[i].value.data);
}

static struct xds_store *
sample(void)
{
	static const struct model_opts o = { .network = "" };
	static const char *const wn[] = { "w1", "w2" }, *const wj[] = { WL("w1", "CgAAAQ=="), WL("w2", "CgAAAg==") };
	static const char *const cn[] = { "c1" }, *const cj[] = { CLUSTER("c1") };
	struct xds_store *s = xds_store_new(&o);

	assert_non_null(s);
	feed(s, T_ADDRESS, 2, wn, "v7", wj, false);
	feed(s, T_CLUSTER, 1, cn, "sotw-3", cj, true);
	assert_string_equal(xds_store_version(s, MRES_CLUSTER), "sotw-3");
	return s;
}

/* Everything a store says about itself, as text: names, versions, aliases,
 * per type, and the types' versions. */
static void
dump_cb(void *ud, const struct mres *r, const char *const *aliases, size_t naliases)
{
	char *buf = ud;
	size_t l = strlen(buf);

	snprintf(buf + l, 4096 - l, "%s@%s", r->name, r->version);
	for (size_t i = 0; i < naliases; i++) {
		l = strlen(buf);
		snprintf(buf + l, 4096 - l, "+%s", aliases[i]);
	}
	l = strlen(buf);
	snprintf(buf + l, 4096 - l, ";");
}

static void
dump(const struct xds_store *s, char *buf)
{
	buf[0] = '\0';
	for (int t = 0; t < MRES__COUNT; t++) {
		size_t l = strlen(buf);

		snprintf(buf + l, 4096 - l, "[%d %s]", t, xds_store_version(s, (enum mres_type)t));
		xds_store_each(s, (enum mres_type)t, dump_cb, buf);
	}
}

static void
test_round_trip(void **state)
{
	static const struct model_opts o = { .network = "" };
	struct xds_store *s = sample(), *l;
	char a[4096], b[4096], err[256];
	size_t skipped = 99;
	struct model_report rep;
	struct model *m;
	struct stat sb;

	(void)state;
	assert_int_equal(xds_state_save(path_of("state"), s, err, sizeof(err)), 0);
	assert_int_equal(stat(path_of("state"), &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	assert_int_not_equal(access(path_of("state.tmp"), F_OK), 0);
	assert_non_null(l = xds_store_new(&o));
	assert_int_equal(xds_state_load(path_of("state"), l, &skipped, err, sizeof(err)), 0);
	assert_int_equal(skipped, 0);
	dump(s, a);
	dump(l, b);
	assert_string_equal(a, b);
	assert_non_null(strstr(b, "w1@v7+/alias-w1;"));
	assert_non_null(strstr(b, "c1@sotw-3"));
	/* What it holds makes a model. */
	assert_non_null(m = xds_store_build(l, NULL, &rep));
	assert_int_equal(rep.nproblems, 0);
	assert_non_null(model_find(m, MRES_ADDRESS, "w2"));
	assert_non_null(model_cluster(m, "c1"));
	model_report_free(&rep);
	model_free(m);
	xds_store_free(l);

	/* No file: -ENOENT. */
	assert_non_null(l = xds_store_new(&o));
	assert_int_equal(xds_state_load(path_of("nothing"), l, &skipped, err, sizeof(err)), -ENOENT);
	xds_store_free(l);
	xds_store_free(s);
}

/* A write that fails, at open or half way, leaves the old file whole and
 * no temporary behind. */
static void
test_atomic(void **state)
{
	static const struct model_opts o = { .network = "" };
	static const char *const wn[] = { "w3" }, *const wj[] = { WL("w3", "CgAAAw==") };
	struct xds_store *s = sample(), *l;
	char before[4096], after[4096], err[256];
	size_t skipped;
	struct rlimit old, small;

	(void)state;
	assert_int_equal(xds_state_save(path_of("atomic"), s, err, sizeof(err)), 0);
	dump(s, before);
	feed(s, T_ADDRESS, 1, wn, "v8", wj, false);

	/* The temporary cannot be made (a directory has its name). */
	assert_int_equal(mkdir(path_of("atomic.tmp"), 0700), 0);
	assert_true(xds_state_save(path_of("atomic"), s, err, sizeof(err)) < 0);
	assert_non_null(strstr(err, "atomic.tmp"));
	assert_int_equal(rmdir(path_of("atomic.tmp")), 0);

	/* The write fails after some bytes (RLIMIT_FSIZE: EFBIG). */
	signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	small = old;
	small.rlim_cur = 64;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
	assert_int_equal(xds_state_save(path_of("atomic"), s, err, sizeof(err)), -EFBIG);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_DFL);
	assert_int_not_equal(access(path_of("atomic.tmp"), F_OK), 0);

	assert_non_null(l = xds_store_new(&o));
	assert_int_equal(xds_state_load(path_of("atomic"), l, &skipped, err, sizeof(err)), 0);
	dump(l, after);
	assert_string_equal(before, after);
	assert_null(strstr(after, "w3"));
	xds_store_free(l);

	/* And a good write replaces it. */
	assert_int_equal(xds_state_save(path_of("atomic"), s, err, sizeof(err)), 0);
	assert_non_null(l = xds_store_new(&o));
	assert_int_equal(xds_state_load(path_of("atomic"), l, &skipped, err, sizeof(err)), 0);
	dump(l, after);
	assert_non_null(strstr(after, "w3@v8"));
	xds_store_free(l);
	xds_store_free(s);
}

static void
write_file(const char *p, const void *b, size_t n)
{
	FILE *f = fopen(p, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(b, 1, n, f), n);
	fclose(f);
}

/* Every prefix of a state file is refused whole: -EINVAL, nothing loaded. */
static void
test_truncated(void **state)
{
	static const struct model_opts o = { .network = "" };
	struct xds_store *s = sample(), *l;
	char err[256];
	uint8_t *b;
	size_t skipped;
	long n;
	FILE *f;

	(void)state;
	assert_int_equal(xds_state_save(path_of("full"), s, err, sizeof(err)), 0);
	assert_non_null(f = fopen(path_of("full"), "rb"));
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	b = malloc((size_t)n);
	assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	for (long k = 0; k < n; k++) {
		write_file(path_of("cut"), b, (size_t)k);
		assert_non_null(l = xds_store_new(&o));
		if (xds_state_load(path_of("cut"), l, &skipped, err, sizeof(err)) != -EINVAL)
			fail_msg("a file cut at %ld of %ld bytes was not refused", k, n);
		assert_true(err[0] != '\0');
		for (int t = 0; t < MRES__COUNT; t++)
			assert_int_equal(xds_store_count(l, (enum mres_type)t), 0);
		xds_store_free(l);
	}
	free(b);
	xds_store_free(s);
}

/* Garbage, an empty file, a directory, another format version: -EINVAL. */
static void
test_garbage(void **state)
{
	static const struct model_opts o = { .network = "" };
	static const struct {
		const char *bytes;
		size_t len;
	} junk[] = {
		{ "hello, world\n", 13 },
		{ "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 11 },
		{ "\x78\x02", 2 },	/* format_version (15) = 2 */
		{ "\x0a\x03\x0a\x01", 4 },	/* a TypeState cut short */
		{ "", 0 },
	};
	struct xds_store *l;
	char err[256];
	size_t skipped;

	(void)state;
	assert_non_null(l = xds_store_new(&o));
	for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
		write_file(path_of("junk"), junk[i].bytes, junk[i].len);
		assert_int_equal(xds_state_load(path_of("junk"), l, &skipped, err, sizeof(err)), -EINVAL);
		assert_true(err[0] != '\0');
	}
	assert_int_equal(xds_state_load(path_of("junk"), l, &skipped, err, sizeof(err)), -EINVAL);
	assert_int_equal(mkdir(path_of("adir"), 0700), 0);
	assert_int_equal(xds_state_load(path_of("adir"), l, &skipped, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "not a regular file"));
	/* A FIFO: open(2) waited for a writer, and the control thread with
	 * it, for ever (alarm: the test fails rather than hangs). */
	assert_int_equal(mkfifo(path_of("afifo"), 0600), 0);
	alarm(10);
	assert_int_equal(xds_state_load(path_of("afifo"), l, &skipped, err, sizeof(err)), -EINVAL);
	alarm(0);
	assert_non_null(strstr(err, "not a regular file"));
	assert_int_equal(xds_store_count(l, MRES_ADDRESS), 0);
	xds_store_free(l);
}

/* A file whose entries are damaged: the good ones load, the others are
 * skipped and counted (a damaged file must not keep a proxy from starting). */
static void
test_damaged_entries(void **state)
{
	static const struct model_opts o = { .network = "" };
	Outrigger__XdsState st = OUTRIGGER__XDS_STATE__INIT;
	Outrigger__TypeState ts[2], *tsp[2];
	Envoy__Service__Discovery__V3__Resource res[4], *rp[4];
	Google__Protobuf__Any any[4];
	struct xds_store *l;
	char err[256], out[4096];
	size_t skipped, len;
	uint8_t *b;

	(void)state;
	for (int i = 0; i < 4; i++) {
		envoy__service__discovery__v3__resource__init(&res[i]);
		google__protobuf__any__init(&any[i]);
		res[i].resource = &any[i];
		res[i].version = (char *)"v1";
		rp[i] = &res[i];
	}
	/* Good; bytes that do not decode; an Any of another type; bad enum. */
	res[0].name = (char *)"w1";
	any[0].type_url = (char *)T_ADDRESS;
	any[0].value.data = packed(WL("w1", "CgAAAQ=="), &any[0].value.len);
	res[1].name = (char *)"w2";
	any[1].type_url = (char *)T_ADDRESS;
	any[1].value.data = (uint8_t *)strdup("\x0a\x7f");
	any[1].value.len = 2;
	res[2].name = (char *)"c1";
	any[2].type_url = (char *)T_CLUSTER;
	any[2].value.data = packed(CLUSTER("c1"), &any[2].value.len);
	res[3].name = (char *)"w4";
	any[3].type_url = (char *)T_ADDRESS;
	any[3].value.data = packed("{" ADDR ",'workload':{'uid':'w4','addresses':['CgAABA=='],'tunnelProtocol':42}}",
	    &any[3].value.len);
	outrigger__type_state__init(&ts[0]);
	ts[0].type_url = (char *)T_ADDRESS;
	ts[0].version = (char *)"sys-1";
	ts[0].resources = rp;
	ts[0].n_resources = 4;
	/* A type we do not take: its entries are skipped. */
	outrigger__type_state__init(&ts[1]);
	ts[1].type_url = (char *)"type.googleapis.com/istio.workload.Workload";
	ts[1].resources = rp;
	ts[1].n_resources = 1;
	tsp[0] = &ts[0];
	tsp[1] = &ts[1];
	st.types = tsp;
	st.n_types = 2;
	st.format_version = 1;
	len = outrigger__xds_state__get_packed_size(&st);
	b = malloc(len);
	outrigger__xds_state__pack(&st, b);
	write_file(path_of("damaged"), b, len);
	free(b);
	for (int i = 0; i < 4; i++)
		free(any[i].value.data);

	assert_non_null(l = xds_store_new(&o));
	assert_int_equal(xds_state_load(path_of("damaged"), l, &skipped, err, sizeof(err)), 0);
	assert_int_equal(skipped, 4);
	assert_int_equal(xds_store_count(l, MRES_ADDRESS), 1);
	dump(l, out);
	assert_non_null(strstr(out, "w1@v1;"));
	assert_string_equal(xds_store_version(l, MRES_ADDRESS), "sys-1");
	xds_store_free(l);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_atomic),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_garbage),
		cmocka_unit_test(test_damaged_entries),
	};

	if (model_register_types() < 0)
		return 1;
	return cmocka_run_group_tests(tests, setup, teardown);
}
