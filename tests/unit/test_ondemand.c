/* Unit tests for src/ondemand.c (on-demand workload discovery) and the
 * waiting stage of src/tunnel.c: the lookup name, one lookup shared by the
 * connections of every worker, answers, negative answers cached, the
 * timeout, the idle expiry and the LRU bound (with what is unsubscribed),
 * the bounded queue; then real loopback connections through a hand-built
 * worker that wait, and resume with the snapshot the answer came with. The
 * xDS client is replaced (--wrap=xds_subscribe,--wrap=xds_unsubscribe): the
 * names asked for are recorded. */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "config.h"
#include "json.h"
#include "metrics.h"
#include "model.h"
#include "ondemand.h"
#include "resources.h"
#include "server.h"
#include "snapshot.h"
#include "sock.h"
#include "tunnel.h"
#include "worker.h"
#include "xds.h"
#include "testlo.h"

/* ---- the xDS client, recorded ---- */

#define MAXCALLS 64
static char subs[MAXCALLS][1024], unsubs[MAXCALLS][1024];
static int nsub_calls, nunsub_calls;
static int sub_rc;

static void
record(char (*to)[1024], int *n, const char *const *names, size_t k)
{
	char *p;

	assert_true(*n < MAXCALLS);
	p = to[(*n)++];
	*p = '\0';
	for (size_t i = 0; i < k; i++) {
		if (i)
			strcat(p, " ");
		strncat(p, names[i], 1000 - strlen(p));
	}
}

int __wrap_xds_subscribe(enum mres_type t, const char *const *names, size_t n);
int __wrap_xds_unsubscribe(enum mres_type t, const char *const *names, size_t n);

int
__wrap_xds_subscribe(enum mres_type t, const char *const *names, size_t n)
{
	assert_int_equal(t, MRES_ADDRESS);
	if (sub_rc)
		return sub_rc;
	record(subs, &nsub_calls, names, n);
	return 0;
}

int
__wrap_xds_unsubscribe(enum mres_type t, const char *const *names, size_t n)
{
	assert_int_equal(t, MRES_ADDRESS);
	record(unsubs, &nunsub_calls, names, n);
	return 0;
}

/* ---- answers, recorded (or posted to the test worker) ---- */

static struct od_answer answers[256];
static size_t nanswers;
static struct worker *post_to;	/* set: answers go to its mailbox, as in the proxy */

static void
answers_run(struct worker *w, void *arg)
{
	struct od_answer *a = arg;

	if (w)
		ondemand_answers(w->id, a + 1, a[0].k.fam, ev_now(w->loop));
	free(a);
}

static void
deliver(const struct od_answer *a, size_t n)
{
	for (size_t i = 0; i < n && nanswers < 256; i++)
		answers[nanswers++] = a[i];
	if (post_to) {
		/* a[0] carries the count (k.fam): the batch as one allocation. */
		struct od_answer *b = calloc(n + 1, sizeof(*b));
		assert_non_null(b);
		b[0].k.fam = (uint8_t)n;
		memcpy(b + 1, a, n * sizeof(*a));
		assert_int_equal(worker_post(post_to, answers_run, b), 0);
	}
}

/* ---- models ---- */

static struct model *
mesh_model(const char *fmt, ...)
{
	char text[4096], err[256];
	struct res_report rep = { 0 };
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	cJSON *list = json_parse_strict(text, strlen(text), err, sizeof(err));
	if (!list)
		fail_msg("%s: %s", text, err);
	struct model *m = resources_build(list, NULL, &rep);
	assert_non_null(m);
	if (rep.nlines)
		fail_msg("resource refused: %s", rep.lines[0]);
	res_report_free(&rep);
	cJSON_Delete(list);
	return m;
}

/* A workload (uid, base64 address) serving the echo service at port. */
#define WL(uid, addr_b64, port) \
	"{\"@type\":\"type.googleapis.com/istio.workload.Address\",\"workload\":{\"uid\":\"" uid "\"," \
	"\"name\":\"" uid "\",\"namespace\":\"default\",\"addresses\":[\"" addr_b64 "\"]," \
	"\"services\":{\"default/echo.default.svc.cluster.local\":{\"ports\":[{\"servicePort\":80," \
	"\"targetPort\":" port "}]}}}}"
/* A workload of no service. */
#define WL0(uid, addr_b64) \
	"{\"@type\":\"type.googleapis.com/istio.workload.Address\",\"workload\":{\"uid\":\"" uid "\"," \
	"\"name\":\"" uid "\",\"namespace\":\"default\",\"addresses\":[\"" addr_b64 "\"]}}"
/* The echo service at VIP 10.255.0.1 (Cv8AAQ==). */
#define SVC_ECHO(port) \
	"{\"@type\":\"type.googleapis.com/istio.workload.Address\",\"service\":{\"name\":\"echo\"," \
	"\"namespace\":\"default\",\"hostname\":\"echo.default.svc.cluster.local\"," \
	"\"addresses\":[{\"network\":\"\",\"address\":\"Cv8AAQ==\"}]," \
	"\"ports\":[{\"servicePort\":80,\"targetPort\":" port "}]}}"
/* Base64 of 10.1.0.1 .. 10.1.0.4. */
#define B64_10_1_0_1 "CgEAAQ=="
#define B64_10_1_0_2 "CgEAAg=="
#define B64_10_1_0_3 "CgEAAw=="
#define B64_10_1_0_4 "CgEABA=="

/* The running snapshot (what od_known reads) gets model m (taken over). */
static void
set_model(struct model *m)
{
	struct config cfg;

	config_defaults(&cfg);
	struct snapshot *s = snapshot_new(&cfg, m, server.snap ? server.snap->generation + 1 : 1);
	assert_non_null(s);
	snapshot_unref(server.snap);
	server.snap = s;
}

static struct sockaddr_storage
addr(const char *ip, int port)
{
	struct sockaddr_storage a;

	assert_int_equal(sock_addr_parse(ip, (uint16_t)port, &a), 0);
	return a;
}

/* ---- fixture: on demand started on a loop of its own ---- */

static struct ev_loop *ctl;
static struct config ctl_cfg;

static void
od_setup_with(int cache, uint32_t idle_ms, unsigned workers)
{
	nsub_calls = nunsub_calls = 0;
	sub_rc = 0;
	nanswers = 0;
	post_to = NULL;
	memset(server.stats, 0, sizeof(server.stats));
	set_model(NULL);
	config_defaults(&ctl_cfg);
	ctl_cfg.xds_on_demand = true;
	snprintf(ctl_cfg.xds_address, sizeof(ctl_cfg.xds_address), "http://127.0.0.1:1");
	ctl_cfg.ondemand_cache_size = cache;
	ctl_cfg.ondemand_idle_ms = idle_ms;
	ctl_cfg.ondemand_timeout_ms = 2000;
	ctl_cfg.concurrency = (int)workers;
	ctl = ev_loop_new(EVFLAG_AUTO);
	assert_non_null(ctl);
	ondemand_set_deliver(deliver);
	assert_int_equal(ondemand_start(ctl, &ctl_cfg), 0);
	assert_true(ondemand_enabled());
}

static void
od_teardown(void)
{
	ondemand_stop();
	ondemand_set_deliver(NULL);
	assert_false(ondemand_enabled());
	ev_loop_destroy(ctl);
	ctl = NULL;
	snapshot_unref(server.snap);
	server.snap = NULL;
}

/* Waiters that count their resumes. */
struct waiter {
	struct od_wait wt;
	int resumed;
	bool found;
};

static void
waiter_resume(struct od_wait *wt, bool found)
{
	struct waiter *w = wt->owner;

	w->resumed++;
	w->found = found;
}

static void
waiter_init(struct waiter *w)
{
	memset(w, 0, sizeof(*w));
	w->wt.owner = w;
	w->wt.resume = waiter_resume;
}

/* ---- the lookup name ---- */

static void
test_name(void **state)
{
	struct sockaddr_storage a;
	char out[64];

	a = addr("10.1.2.3", 80);
	assert_int_equal(ondemand_name(out, sizeof(out), "", &a), 9);
	assert_string_equal(out, "/10.1.2.3");
	assert_int_equal(ondemand_name(out, sizeof(out), "net-1", &a), 14);
	assert_string_equal(out, "net-1/10.1.2.3");
	assert_int_equal(ondemand_name(out, sizeof(out), NULL, &a), 9);
	assert_string_equal(out, "/10.1.2.3");
	/* IPv6 in its RFC 5952 form (istiod's netip.Addr.String()). */
	a = addr("2001:db8:0:0:0:0:0:1", 80);
	assert_int_equal(ondemand_name(out, sizeof(out), "", &a), (int)strlen("/2001:db8::1"));
	assert_string_equal(out, "/2001:db8::1");
	/* IPv4-mapped: the IPv4 address, as the model keys it. */
	a = addr("::ffff:10.1.2.3", 80);
	ondemand_name(out, sizeof(out), "n", &a);
	assert_string_equal(out, "n/10.1.2.3");
	/* Short buffer: snprintf's length, the text cut. */
	a = addr("10.1.2.3", 80);
	assert_int_equal(ondemand_name(out, 5, "net-1", &a), 14);
	assert_string_equal(out, "net-");
	memset(&a, 0, sizeof(a));
	a.ss_family = AF_UNIX;
	assert_int_equal(ondemand_name(out, sizeof(out), "", &a), -1);
}

/* ---- the cache ---- */

/* 20 connections on two workers to one address: one subscription, one
 * lookup, 20 waits; the answer releases all 20, found, once each. */
static void
test_lookup_shared(void **state)
{
	struct waiter w[20];
	struct sockaddr_storage a = addr("10.1.0.1", 8080);

	od_setup_with(100, 60000, 2);
	for (int i = 0; i < 20; i++) {
		waiter_init(&w[i]);
		assert_int_equal(ondemand_wait(&w[i].wt, (unsigned)(i % 2), &a, 100.0), 0);
	}
	ondemand_drain(100.0);
	assert_int_equal(nsub_calls, 1);
	assert_string_equal(subs[0], "/10.1.0.1");
	assert_int_equal(server.stats[SM_ONDEMAND_LOOKUPS], 1);
	assert_int_equal(server.stats[SM_ONDEMAND_WAITS], 20);
	assert_int_equal(ondemand_state("/10.1.0.1"), OD_LOOKING);
	assert_int_equal(nanswers, 0);
	/* More of them while it is in flight: still one lookup. */
	struct waiter late;
	waiter_init(&late);
	assert_int_equal(ondemand_wait(&late.wt, 1, &a, 100.1), 0);
	ondemand_drain(100.1);
	assert_int_equal(nsub_calls, 1);
	assert_int_equal(server.stats[SM_ONDEMAND_WAITS], 21);

	/* The response: published first (the model knows it), then noted. */
	set_model(mesh_model("[" WL0("wl-1", B64_10_1_0_1) "]"));
	const char *found[] = { "wl-1", "/10.1.0.1" };
	ondemand_set_time(100.15);
	ondemand_note(found, 2, NULL, 0);
	assert_int_equal(ondemand_state("/10.1.0.1"), OD_FOUND);
	/* What it brought is subscribed too (istiod merged it into ours). */
	assert_int_equal(nsub_calls, 2);
	assert_string_equal(subs[1], "wl-1");
	assert_int_equal(nanswers, 1);
	assert_true(answers[0].found);
	for (unsigned wid = 0; wid < 2; wid++)
		ondemand_answers(wid, answers, nanswers, 100.2);
	for (int i = 0; i < 20; i++) {
		assert_int_equal(w[i].resumed, 1);
		assert_true(w[i].found);
	}
	assert_int_equal(late.resumed, 1);
	/* A second answer for it finds nobody waiting. */
	ondemand_answers(0, answers, nanswers, 100.3);
	assert_int_equal(w[0].resumed, 1);
	assert_int_equal(server.stats[SM_ONDEMAND_CACHED], 1);
	od_teardown();
}

/* A lookup answered under a name we do not parse (a VIP that came as its
 * Service's "namespace/hostname" and its endpoints' uids): the model says. */
static void
test_vip_found_by_model(void **state)
{
	struct waiter w;
	struct sockaddr_storage vip = addr("10.255.0.1", 80);

	od_setup_with(100, 60000, 1);
	waiter_init(&w);
	assert_int_equal(ondemand_wait(&w.wt, 0, &vip, 10.0), 0);
	ondemand_drain(10.0);
	assert_string_equal(subs[0], "/10.255.0.1");
	set_model(mesh_model("[" SVC_ECHO("8080") "," WL("wl-1", B64_10_1_0_1, "8080") "]"));
	const char *found[] = { "default/echo.default.svc.cluster.local", "wl-1" };
	ondemand_set_time(10.05);
	ondemand_note(found, 2, NULL, 0);
	assert_int_equal(ondemand_state("/10.255.0.1"), OD_FOUND);
	assert_int_equal(nsub_calls, 2);
	assert_string_equal(subs[1], "default/echo.default.svc.cluster.local wl-1");
	ondemand_answers(0, answers, nanswers, 10.1);
	assert_int_equal(w.resumed, 1);
	assert_true(w.found);

	/* Idle: the VIP goes with the Service and its endpoint (istiod merged
	 * them into the subscription). */
	ondemand_sweep(10.0 + 61);
	assert_int_equal(ondemand_state("/10.255.0.1"), OD_NONE);
	assert_int_equal(nunsub_calls, 1);
	assert_string_equal(unsubs[0], "/10.255.0.1 default/echo.default.svc.cluster.local wl-1");
	assert_int_equal(server.stats[SM_ONDEMAND_EVICTIONS], 1);
	assert_int_equal(server.stats[SM_ONDEMAND_CACHED], 0);
	od_teardown();
}

/* A Service with two VIPs (dual-stack, or two addresses): each VIP's
 * lookup brought the Service. Evicting one VIP must not unsubscribe the
 * Service (nor its endpoints) the other VIP's entry still holds. */
static void
test_two_vips_one_service(void **state)
{
	struct waiter w;
	struct sockaddr_storage v1 = addr("10.255.0.1", 80), v2 = addr("10.255.0.2", 80);

	(void)state;
	od_setup_with(100, 60000, 1);
	for (int i = 0; i < 2; i++) {
		waiter_init(&w);
		assert_int_equal(ondemand_wait(&w.wt, 0, i ? &v2 : &v1, 10.0), 0);
		ondemand_drain(10.0);
	}
	set_model(mesh_model("[{\"@type\":\"type.googleapis.com/istio.workload.Address\",\"service\":{"
	    "\"name\":\"echo\",\"namespace\":\"default\",\"hostname\":\"echo.default.svc.cluster.local\","
	    "\"addresses\":[{\"network\":\"\",\"address\":\"Cv8AAQ==\"},{\"network\":\"\",\"address\":\"Cv8AAg==\"}],"
	    "\"ports\":[{\"servicePort\":80,\"targetPort\":8080}]}}," WL("wl-1", B64_10_1_0_1, "8080") "]"));
	ondemand_set_time(10.0);
	ondemand_note((const char *[]){ "default/echo.default.svc.cluster.local", "wl-1" }, 2, NULL, 0);
	assert_int_equal(ondemand_state("/10.255.0.1"), OD_FOUND);
	assert_int_equal(ondemand_state("/10.255.0.2"), OD_FOUND);
	ondemand_touch(&v1, 50.0);
	ondemand_sweep(10.0 + 61);
	assert_int_equal(ondemand_state("/10.255.0.2"), OD_NONE);
	assert_int_equal(ondemand_state("/10.255.0.1"), OD_FOUND);
	assert_int_equal(nunsub_calls, 1);
	assert_string_equal(unsubs[0], "/10.255.0.2");
	/* The last one takes them all. */
	ondemand_sweep(50.0 + 61);
	assert_int_equal(ondemand_state("/10.255.0.1"), OD_NONE);
	assert_string_equal(unsubs[1], "/10.255.0.1 default/echo.default.svc.cluster.local wl-1");
	od_teardown();
}

/* Not found: the waiters go on, the answer is cached for
 * ONDEMAND_NEGATIVE_S by the control thread (no second subscription) and by
 * each worker (no second request at all), then the name is unsubscribed. */
static void
test_not_found_cached(void **state)
{
	struct waiter w, w2;
	struct sockaddr_storage a = addr("10.1.0.9", 80);

	od_setup_with(100, 60000, 2);
	waiter_init(&w);
	assert_int_equal(ondemand_wait(&w.wt, 0, &a, 50.0), 0);
	ondemand_drain(50.0);
	const char *gone[] = { "/10.1.0.9" };
	ondemand_set_time(50.0);
	ondemand_note(NULL, 0, gone, 1);
	assert_int_equal(ondemand_state("/10.1.0.9"), OD_MISSING);
	assert_int_equal(server.stats[SM_ONDEMAND_NOT_FOUND], 1);
	assert_int_equal(nanswers, 1);
	assert_false(answers[0].found);
	assert_true(answers[0].neg_until >= 50.0 + ONDEMAND_NEGATIVE_S - 0.01);
	ondemand_answers(0, answers, nanswers, 50.1);
	assert_int_equal(w.resumed, 1);
	assert_false(w.found);

	/* Worker 0 knows: at once, no request. */
	waiter_init(&w2);
	assert_int_equal(ondemand_wait(&w2.wt, 0, &a, 51.0), -ENOENT);
	/* Worker 1 was told as well (answers go to every worker). */
	ondemand_answers(1, answers, nanswers, 50.1);
	assert_int_equal(ondemand_wait(&w2.wt, 1, &a, 51.0), -ENOENT);
	/* A worker that missed it asks; the control thread answers from its
	 * cache, without istiod. */
	struct waiter w3;
	waiter_init(&w3);
	nanswers = 0;
	ondemand_answers(1, (struct od_answer[]){ { .k = answers[0].k, .found = true } }, 1, 51.0);
	assert_int_equal(ondemand_wait(&w3.wt, 1, &a, 51.0), 0);
	ondemand_drain(51.0);
	assert_int_equal(nsub_calls, 1);
	assert_int_equal(nanswers, 1);
	assert_false(answers[0].found);
	ondemand_answers(1, answers, nanswers, 51.0);
	assert_int_equal(w3.resumed, 1);

	/* Expired before the sweep dropped it: asked again, out then in (the
	 * name is still subscribed: subscribing alone would send nothing). */
	waiter_init(&w3);
	ondemand_answers(1, (struct od_answer[]){ { .k = answers[0].k, .found = true } }, 1, 55.5);
	assert_int_equal(ondemand_wait(&w3.wt, 1, &a, 55.5), 0);
	ondemand_drain(55.5);
	assert_int_equal(nunsub_calls, 1);
	assert_string_equal(unsubs[0], "/10.1.0.9");
	assert_int_equal(nsub_calls, 2);
	assert_string_equal(subs[1], "/10.1.0.9");
	assert_int_equal(ondemand_state("/10.1.0.9"), OD_LOOKING);
	ondemand_cancel(&w3.wt);
	ondemand_set_time(55.6);
	ondemand_note(NULL, 0, gone, 1);
	nunsub_calls = nsub_calls = 0;

	/* After it: unsubscribed, and the worker asks again. */
	ondemand_sweep(55.6 + ONDEMAND_NEGATIVE_S + 0.1);
	assert_int_equal(ondemand_state("/10.1.0.9"), OD_NONE);
	assert_int_equal(nunsub_calls, 1);
	assert_string_equal(unsubs[0], "/10.1.0.9");
	assert_int_equal(server.stats[SM_ONDEMAND_EVICTIONS], 0);	/* not an eviction */
	waiter_init(&w2);
	assert_int_equal(ondemand_wait(&w2.wt, 0, &a, 55.6 + ONDEMAND_NEGATIVE_S + 0.2), 0);
	ondemand_drain(55.6 + ONDEMAND_NEGATIVE_S + 0.2);
	assert_int_equal(nsub_calls, 1);
	ondemand_cancel(&w2.wt);
	od_teardown();
}

/* IPv6 names back from the server, and IPv4-mapped ones (fuzz_ondemand
 * found the parse reading an in6_addr at an odd address: UBSan). */
static void
test_ipv6_names(void **state)
{
	struct waiter w6, w4;
	struct sockaddr_storage a6 = addr("2001:db8::5", 80), a4 = addr("10.1.0.7", 80);

	od_setup_with(100, 60000, 1);
	waiter_init(&w6);
	waiter_init(&w4);
	assert_int_equal(ondemand_wait(&w6.wt, 0, &a6, 1.0), 0);
	assert_int_equal(ondemand_wait(&w4.wt, 0, &a4, 1.0), 0);
	ondemand_drain(1.0);
	assert_string_equal(subs[0], "/2001:db8::5 /10.1.0.7");
	ondemand_set_time(1.5);
	ondemand_note(NULL, 0, (const char *[]){ "/2001:0db8:0::5", "/::ffff:10.1.0.7", "x/10.1.0.7" }, 3);
	assert_int_equal(ondemand_state("/2001:db8::5"), OD_MISSING);
	assert_int_equal(ondemand_state("/10.1.0.7"), OD_MISSING);
	assert_int_equal(server.stats[SM_ONDEMAND_NOT_FOUND], 2);
	ondemand_answers(0, answers, nanswers, 1.5);
	assert_int_equal(w6.resumed, 1);
	assert_int_equal(w4.resumed, 1);
	od_teardown();
}

/* No answer within xds.onDemandTimeout: counted once per lookup, the
 * waiters are released (not found), the negative answer cached; an answer
 * that comes later still makes it found. */
static void
test_timeout(void **state)
{
	struct waiter w;
	struct sockaddr_storage a = addr("10.1.0.2", 80);

	od_setup_with(100, 60000, 1);
	waiter_init(&w);
	assert_int_equal(ondemand_wait(&w.wt, 0, &a, 20.0), 0);
	ondemand_drain(20.0);
	ondemand_sweep(21.9);
	assert_int_equal(ondemand_state("/10.1.0.2"), OD_LOOKING);
	assert_int_equal(server.stats[SM_ONDEMAND_TIMEOUTS], 0);
	ondemand_sweep(22.0);
	assert_int_equal(ondemand_state("/10.1.0.2"), OD_MISSING);
	assert_int_equal(server.stats[SM_ONDEMAND_TIMEOUTS], 1);
	assert_int_equal(nanswers, 1);
	assert_false(answers[0].found);
	ondemand_answers(0, answers, nanswers, 22.0);
	assert_int_equal(w.resumed, 1);
	/* Late answer. */
	set_model(mesh_model("[" WL0("wl-2", B64_10_1_0_2) "]"));
	const char *found[] = { "wl-2", "/10.1.0.2" };
	ondemand_set_time(22.5);
	ondemand_note(found, 2, NULL, 0);
	assert_int_equal(ondemand_state("/10.1.0.2"), OD_FOUND);
	assert_true(answers[1].found);
	/* A subscription that cannot be made (state of the world): not found. */
	sub_rc = -ENOTSUP;
	struct sockaddr_storage b = addr("10.1.0.3", 80);
	waiter_init(&w);
	assert_int_equal(ondemand_wait(&w.wt, 0, &b, 23.0), 0);
	ondemand_drain(23.0);
	assert_int_equal(ondemand_state("/10.1.0.3"), OD_MISSING);
	assert_false(answers[nanswers - 1].found);
	od_teardown();
}

/* Idle: a used entry stays, an unused one goes after xds.onDemandIdle;
 * "used" is the stamp ondemand_touch leaves from the data path. */
static void
test_idle_expiry(void **state)
{
	struct waiter w;
	struct sockaddr_storage a1 = addr("10.1.0.1", 80), a2 = addr("10.1.0.2", 80);

	od_setup_with(100, 10000, 1);
	for (int i = 0; i < 2; i++) {
		waiter_init(&w);
		assert_int_equal(ondemand_wait(&w.wt, 0, i ? &a2 : &a1, 1000.0), 0);
		ondemand_drain(1000.0);
	}
	set_model(mesh_model("[" WL0("wl-1", B64_10_1_0_1) "," WL0("wl-2", B64_10_1_0_2) "]"));
	const char *found[] = { "wl-1", "/10.1.0.1", "wl-2", "/10.1.0.2" };
	ondemand_set_time(1000.0);
	ondemand_note(found, 4, NULL, 0);
	assert_int_equal(ondemand_cached(), 2);
	/* a1 used at 1008 (a connection resolved to it), a2 never. */
	ondemand_touch(&a1, 1008.0);
	ondemand_sweep(1009.0);
	assert_int_equal(ondemand_cached(), 2);
	ondemand_sweep(1010.5);
	assert_int_equal(ondemand_state("/10.1.0.2"), OD_NONE);
	assert_int_equal(ondemand_state("/10.1.0.1"), OD_FOUND);
	assert_int_equal(nunsub_calls, 1);
	assert_string_equal(unsubs[0], "/10.1.0.2 wl-2");
	ondemand_sweep(1018.5);
	assert_int_equal(ondemand_state("/10.1.0.1"), OD_NONE);
	assert_string_equal(unsubs[1], "/10.1.0.1 wl-1");
	assert_int_equal(server.stats[SM_ONDEMAND_EVICTIONS], 2);
	od_teardown();
}

/* What an entry's answers brought goes with it, also what the model no
 * longer shows: wl-1 came with the first answer for 10.1.0.1, which was
 * then removed; the address came back as wl-9 (a new pod). The eviction
 * unsubscribes both. */
static void
test_evict_what_it_brought(void **state)
{
	struct waiter w;
	struct sockaddr_storage a1 = addr("10.1.0.1", 80);

	(void)state;
	od_setup_with(100, 10000, 1);
	waiter_init(&w);
	assert_int_equal(ondemand_wait(&w.wt, 0, &a1, 1000.0), 0);
	ondemand_drain(1000.0);
	set_model(mesh_model("[" WL0("wl-1", B64_10_1_0_1) "]"));
	ondemand_set_time(1000.0);
	ondemand_note((const char *[]){ "wl-1", "/10.1.0.1" }, 2, NULL, 0);
	assert_int_equal(ondemand_state("/10.1.0.1"), OD_FOUND);
	set_model(mesh_model("[]"));
	ondemand_set_time(1001.0);
	ondemand_note(NULL, 0, (const char *[]){ "wl-1", "/10.1.0.1" }, 2);
	assert_int_equal(ondemand_state("/10.1.0.1"), OD_MISSING);
	set_model(mesh_model("[" WL0("wl-9", B64_10_1_0_1) "]"));
	ondemand_set_time(1002.0);
	ondemand_note((const char *[]){ "wl-9", "/10.1.0.1" }, 2, NULL, 0);
	assert_int_equal(ondemand_state("/10.1.0.1"), OD_FOUND);
	ondemand_sweep(1013.0);
	assert_int_equal(ondemand_state("/10.1.0.1"), OD_NONE);
	assert_int_equal(nunsub_calls, 1);
	assert_string_equal(unsubs[0], "/10.1.0.1 wl-9 wl-1");
	od_teardown();
}

/* The bound: a lookup over xds.onDemandCacheSize evicts the least
 * recently used entry (never one still waiting for its answer); with every
 * entry in flight the new lookup is refused at once. */
static void
test_lru_bound(void **state)
{
	struct waiter w;
	struct sockaddr_storage a[4] = { addr("10.1.0.1", 80), addr("10.1.0.2", 80), addr("10.1.0.3", 80),
	    addr("10.1.0.4", 80) };

	od_setup_with(3, 600000, 1);
	for (int i = 0; i < 3; i++) {
		waiter_init(&w);
		assert_int_equal(ondemand_wait(&w.wt, 0, &a[i], 100.0), 0);
		ondemand_drain(100.0);
	}
	set_model(mesh_model("[" WL0("wl-1", B64_10_1_0_1) "," WL0("wl-2", B64_10_1_0_2) ","
	    WL0("wl-3", B64_10_1_0_3) "]"));
	ondemand_set_time(100.0);
	ondemand_note((const char *[]){ "/10.1.0.1", "/10.1.0.2", "/10.1.0.3" }, 3, NULL, 0);
	assert_int_equal(ondemand_cached(), 3);
	/* Used: 3 at 110, 1 at 120, 2 at 130: 3 is the least recent. */
	ondemand_touch(&a[2], 110.0);
	ondemand_touch(&a[0], 120.0);
	ondemand_touch(&a[1], 130.0);
	waiter_init(&w);
	assert_int_equal(ondemand_wait(&w.wt, 0, &a[3], 140.0), 0);
	ondemand_drain(140.0);
	assert_int_equal(ondemand_cached(), 3);
	assert_int_equal(ondemand_state("/10.1.0.3"), OD_NONE);
	assert_int_equal(ondemand_state("/10.1.0.4"), OD_LOOKING);
	assert_string_equal(unsubs[0], "/10.1.0.3 wl-3");
	assert_string_equal(subs[nsub_calls - 1], "/10.1.0.4");
	assert_int_equal(server.stats[SM_ONDEMAND_EVICTIONS], 1);
	ondemand_cancel(&w.wt);
	od_teardown();

	/* Every entry in flight: refused, counted, nothing subscribed. */
	od_setup_with(2, 600000, 1);
	struct waiter ws[3];
	for (int i = 0; i < 3; i++) {
		waiter_init(&ws[i]);
		assert_int_equal(ondemand_wait(&ws[i].wt, 0, &a[i], 5.0), 0);
	}
	ondemand_drain(5.0);
	assert_int_equal(nsub_calls, 1);
	assert_string_equal(subs[0], "/10.1.0.1 /10.1.0.2");
	assert_int_equal(server.stats[SM_ONDEMAND_QUEUE_FULL], 1);
	assert_int_equal(nanswers, 1);
	assert_false(answers[0].found);
	assert_true(answers[0].neg_until == 0);	/* refused, not a negative answer */
	ondemand_answers(0, answers, nanswers, 5.0);
	assert_int_equal(ws[2].resumed, 1);
	for (int i = 0; i < 3; i++)
		if (!ws[i].resumed)
			ondemand_cancel(&ws[i].wt);
	od_teardown();
}

/* A negative answer goes before any found entry, however recently used:
 * a flood of connections to unknown addresses must not evict the mesh
 * destinations in use (each eviction an unsubscribe, each next connection
 * a lookup again). */
static void
test_lru_negative_first(void **state)
{
	struct waiter w;
	struct sockaddr_storage a[4] = { addr("10.1.0.1", 80), addr("10.1.0.2", 80), addr("10.1.0.3", 80),
	    addr("10.1.0.4", 80) };

	(void)state;
	od_setup_with(3, 600000, 1);
	for (int i = 0; i < 3; i++) {
		waiter_init(&w);
		assert_int_equal(ondemand_wait(&w.wt, 0, &a[i], 100.0), 0);
		ondemand_drain(100.0);
	}
	set_model(mesh_model("[" WL0("wl-1", B64_10_1_0_1) "," WL0("wl-2", B64_10_1_0_2) "]"));
	ondemand_set_time(100.0);
	ondemand_note((const char *[]){ "/10.1.0.1", "/10.1.0.2" }, 2, NULL, 0);
	ondemand_touch(&a[0], 110.0);
	ondemand_touch(&a[1], 110.0);
	/* 10.1.0.3 is unknown to the server, answered later than the uses. */
	ondemand_set_time(120.0);
	ondemand_note(NULL, 0, (const char *[]){ "/10.1.0.3" }, 1);
	assert_int_equal(ondemand_state("/10.1.0.3"), OD_MISSING);
	waiter_init(&w);
	assert_int_equal(ondemand_wait(&w.wt, 0, &a[3], 121.0), 0);
	ondemand_drain(121.0);
	assert_int_equal(ondemand_state("/10.1.0.3"), OD_NONE);
	assert_int_equal(ondemand_state("/10.1.0.1"), OD_FOUND);
	assert_int_equal(ondemand_state("/10.1.0.2"), OD_FOUND);
	assert_int_equal(ondemand_state("/10.1.0.4"), OD_LOOKING);
	assert_int_equal(server.stats[SM_ONDEMAND_EVICTIONS], 0);
	ondemand_cancel(&w.wt);
	od_teardown();
}

/* The queue toward the control thread is bounded: the one over it is
 * refused at once (-EAGAIN) and counted at the next drain. */
static void
test_queue_bounded(void **state)
{
	static struct waiter w[ONDEMAND_QUEUE_MAX + 1];
	struct sockaddr_storage a = addr("10.1.0.1", 80);

	od_setup_with(100, 60000, 1);
	for (int i = 0; i < ONDEMAND_QUEUE_MAX; i++) {
		waiter_init(&w[i]);
		assert_int_equal(ondemand_wait(&w[i].wt, 0, &a, 1.0), 0);
	}
	waiter_init(&w[ONDEMAND_QUEUE_MAX]);
	assert_int_equal(ondemand_wait(&w[ONDEMAND_QUEUE_MAX].wt, 0, &a, 1.0), -EAGAIN);
	ondemand_drain(1.0);
	assert_int_equal(server.stats[SM_ONDEMAND_QUEUE_FULL], 1);
	assert_int_equal(server.stats[SM_ONDEMAND_WAITS], ONDEMAND_QUEUE_MAX);
	assert_int_equal(nsub_calls, 1);
	/* Drained: room again. */
	assert_int_equal(ondemand_wait(&w[ONDEMAND_QUEUE_MAX].wt, 0, &a, 1.0), 0);
	for (int i = 0; i <= ONDEMAND_QUEUE_MAX; i++)
		ondemand_cancel(&w[i].wt);
	/* A worker id it was not started with. */
	assert_int_equal(ondemand_wait(&w[0].wt, 7, &a, 1.0), -EINVAL);
	od_teardown();
}

/* ---- the waiting stage, on real connections ---- */

struct fixture {
	struct worker w;
	struct config cfg;
	int app_lfd;
	struct sockaddr_storage app;
};

static void
spin(struct fixture *f, int ms)
{
	double end = now() + ms / 1000.0;
	do {
		ev_run(f->w.loop, EVRUN_NOWAIT);
		poll(NULL, 0, 1);
	} while (now() < end);
}

/* A worker (id 0) with a mailbox, whose loop is also the control loop; the
 * snapshot has model m (NULL: empty) and policy. */
static void
fx_setup(struct fixture *f, struct model *m, enum outbound_policy policy, uint32_t timeout_ms)
{
	memset(f, 0, sizeof(*f));
	nsub_calls = nunsub_calls = 0;
	sub_rc = 0;
	nanswers = 0;
	memset(server.stats, 0, sizeof(server.stats));
	config_defaults(&f->cfg);
	f->cfg.outbound_policy = policy;
	f->cfg.xds_on_demand = true;
	snprintf(f->cfg.xds_address, sizeof(f->cfg.xds_address), "http://127.0.0.1:1");
	f->cfg.ondemand_timeout_ms = timeout_ms;
	f->cfg.concurrency = 1;
	test_worker_init(&f->w, &f->cfg, 4);
	wsnap_retire(f->w.snap);
	f->w.snap = wsnap_new(snapshot_new(&f->cfg, m, 1));
	assert_non_null(f->w.snap);
	snapshot_unref(server.snap);
	server.snap = snapshot_ref(f->w.snap->s);
	worker_mbox_init(&f->w);
	ondemand_set_deliver(deliver);
	post_to = &f->w;
	assert_int_equal(ondemand_start(f->w.loop, &f->cfg), 0);
	f->app_lfd = listen_lo(&f->app);
}

static void
fx_teardown(struct fixture *f)
{
	tunnel_close_all(&f->w);
	ondemand_stop();
	ondemand_set_deliver(NULL);
	post_to = NULL;
	worker_mbox_fini(&f->w);
	close(f->app_lfd);
	test_worker_fini(&f->w);
	snapshot_unref(server.snap);
	server.snap = NULL;
}

/* A client connection handed to a tunnel towards dst. */
static struct tunnel *
fx_connect(struct fixture *f, const struct sockaddr_storage *dst, int *client)
{
	struct sockaddr_storage proxy;
	int plfd = listen_lo(&proxy), ds;

	*client = sock_connect(&proxy, NULL, false, 0);
	assert_true(*client >= 0);
	ds = accept_wait(plfd);
	close(plfd);
	return tunnel_start(&f->w, LST_OUTBOUND, ds, dst);
}

/* Publish model m as the running snapshot, to the worker too (as
 * server_publish: the worker's mailbox gets it before any answer). */
static void
fx_publish(struct fixture *f, struct model *m)
{
	struct snapshot *s = snapshot_new(&f->cfg, m, server.snap->generation + 1);

	assert_non_null(s);
	snapshot_unref(server.snap);
	server.snap = s;
	worker_publish(&f->w, snapshot_ref(s));
}

/* Five connections to a VIP nobody knows yet wait for one lookup; the
 * response's snapshot reaches the worker before the answer, and each
 * connection resumes with it: routed through the service to its endpoint
 * (the app), bytes flow. */
static void
test_tunnels_wait_and_resume(void **state)
{
	struct fixture f;
	struct sockaddr_storage vip = addr("10.255.0.1", 80);
	struct tunnel *t[5];
	int client[5], app[5];
	char buf[8];

	fx_setup(&f, NULL, OUTBOUND_REGISTRY_ONLY, 5000);
	for (int i = 0; i < 5; i++) {
		t[i] = fx_connect(&f, &vip, &client[i]);
		assert_non_null(t[i]);
		assert_int_equal(t[i]->state, TUN_WAITING);
	}
	spin(&f, 20);	/* the ev_async: the control thread drains */
	assert_int_equal(nsub_calls, 1);
	assert_string_equal(subs[0], "/10.255.0.1");
	assert_int_equal(server.stats[SM_ONDEMAND_WAITS], 5);
	assert_int_equal(server.stats[SM_ONDEMAND_LOOKUPS], 1);
	for (int i = 0; i < 5; i++)
		assert_int_equal(t[i]->state, TUN_WAITING);
	uint64_t gen1 = t[0]->snap->s->generation;

	int port = sock_addr_port(&f.app);
	fx_publish(&f, mesh_model("[" SVC_ECHO("%d") "," WL("wl-a", "fwAAAQ==", "%d") "]", port, port));
	ondemand_note((const char *[]){ "default/echo.default.svc.cluster.local", "wl-a" }, 2, NULL, 0);
	spin(&f, 30);
	for (int i = 0; i < 5; i++) {
		app[i] = accept_wait(f.app_lfd);
		assert_true(app[i] >= 0);
	}
	spin(&f, 20);
	for (int i = 0; i < 5; i++) {
		assert_int_equal(t[i]->state, TUN_FORWARDING);
		assert_true(t[i]->snap->s->generation > gen1);	/* the new snapshot */
		assert_non_null(t[i]->svc);
		assert_string_equal(t[i]->peer->uid, "wl-a");
		assert_int_equal(send(client[i], "ping", 4, 0), 4);
	}
	spin(&f, 20);
	for (int i = 0; i < 5; i++) {
		assert_int_equal(recv(app[i], buf, sizeof(buf), MSG_DONTWAIT), 4);
		close(app[i]);
		close(client[i]);
	}
	assert_int_equal(f.w.stats.lst[LST_OUTBOUND][LM_DOWNSTREAM_CX_NO_ROUTE], 0);
	fx_teardown(&f);
}

/* No answer: after xds.onDemandTimeout the connection goes on as unknown:
 * ALLOW_ANY passes it to the original destination, REGISTRY_ONLY resets
 * it. A not-found answer then lets the next connection go on at once. */
static void
test_tunnel_timeout_policy(void **state)
{
	struct fixture f;
	struct tunnel *t;
	int client, app;
	char b;

	fx_setup(&f, NULL, OUTBOUND_ALLOW_ANY, 100);
	t = fx_connect(&f, &f.app, &client);
	assert_non_null(t);
	assert_int_equal(t->state, TUN_WAITING);
	spin(&f, 50);
	assert_int_equal(t->state, TUN_WAITING);
	spin(&f, 150);
	app = accept_wait(f.app_lfd);	/* passthrough to the original destination */
	spin(&f, 10);
	assert_int_equal(t->state, TUN_FORWARDING);
	close(app);
	close(client);
	spin(&f, 20);
	/* The control thread's own deadline for the lookup: counted once. */
	spin(&f, 100);
	assert_int_equal(server.stats[SM_ONDEMAND_TIMEOUTS], 1);
	/* Its negative answer reached the worker: the next one goes on at once. */
	t = fx_connect(&f, &f.app, &client);
	assert_non_null(t);
	assert_int_not_equal(t->state, TUN_WAITING);
	app = accept_wait(f.app_lfd);
	close(app);
	close(client);
	assert_int_equal(server.stats[SM_ONDEMAND_LOOKUPS], 1);
	fx_teardown(&f);

	fx_setup(&f, NULL, OUTBOUND_REGISTRY_ONLY, 100);
	t = fx_connect(&f, &f.app, &client);
	assert_non_null(t);
	spin(&f, 200);
	assert_null(f.w.tunnels);
	assert_int_equal(recv(client, &b, 1, MSG_DONTWAIT), -1);
	assert_int_equal(errno, ECONNRESET);
	assert_int_equal(f.w.stats.lst[LST_OUTBOUND][LM_DOWNSTREAM_CX_NO_ROUTE], 1);
	close(client);
	fx_teardown(&f);
}

/* A known destination does not wait (no request, nothing allocated for it)
 * and stamps its last use; a waiting connection whose client goes away, or
 * whose worker stops, leaves no waiter behind (ASan would see it). */
static void
test_known_does_not_wait(void **state)
{
	struct fixture f;
	struct tunnel *t;
	int client, app;
	struct sockaddr_storage other = addr("10.255.0.9", 80);

	fx_setup(&f, mesh_model("[" WL0("wl-a", "fwAAAQ==") "]"), OUTBOUND_ALLOW_ANY, 5000);
	t = fx_connect(&f, &f.app, &client);	/* 127.0.0.1: wl-a */
	assert_non_null(t);
	assert_int_not_equal(t->state, TUN_WAITING);
	assert_null(t->odw);
	app = accept_wait(f.app_lfd);
	spin(&f, 20);
	assert_int_equal(nsub_calls, 0);
	assert_int_equal(server.stats[SM_ONDEMAND_WAITS], 0);
	close(app);
	close(client);
	spin(&f, 20);
	t = fx_connect(&f, &other, &client);
	assert_non_null(t);
	assert_int_equal(t->state, TUN_WAITING);
	spin(&f, 20);
	fx_teardown(&f);	/* tunnel_close_all while it waits */
	close(client);
}

/* A client that resets while its connection waits: seen at once by the
 * hang-up watch (not at the end of xds.onDemandTimeout), its waiter gone. */
static void
test_waiting_client_reset(void **state)
{
	struct fixture f;
	struct sockaddr_storage other = addr("10.255.0.9", 80);
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	struct tunnel *t;
	int client;

	fx_setup(&f, NULL, OUTBOUND_ALLOW_ANY, 5000);
	t = fx_connect(&f, &other, &client);
	assert_non_null(t);
	assert_int_equal(t->state, TUN_WAITING);
	spin(&f, 20);
	assert_int_equal(setsockopt(client, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
	close(client);	/* a reset */
	double end = now() + 1.0;
	while (f.w.tunnels && now() < end)
		spin(&f, 5);
	assert_null(f.w.tunnels);
	assert_int_equal(f.w.stats.lst[LST_OUTBOUND][LM_DOWNSTREAM_CX_RESET], 1);
	fx_teardown(&f);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_name),
		cmocka_unit_test(test_lookup_shared),
		cmocka_unit_test(test_vip_found_by_model),
		cmocka_unit_test(test_two_vips_one_service),
		cmocka_unit_test(test_not_found_cached),
		cmocka_unit_test(test_ipv6_names),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_idle_expiry),
		cmocka_unit_test(test_evict_what_it_brought),
		cmocka_unit_test(test_lru_bound),
		cmocka_unit_test(test_lru_negative_first),
		cmocka_unit_test(test_queue_bounded),
		cmocka_unit_test(test_tunnels_wait_and_resume),
		cmocka_unit_test(test_tunnel_timeout_policy),
		cmocka_unit_test(test_known_does_not_wait),
		cmocka_unit_test(test_waiting_client_reset),
	};
	assert_int_equal(model_register_types(), 0);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
