/* bench_xds: the control path of a delta push, in process, as the xDS client
 * runs it (issue 10, "Performance"): DeltaDiscoveryResponse bytes (packed
 * with protobuf-c) -> xds_decode_delta -> xds_store_apply (model_build over
 * the running model) -> snapshot_new -> worker_publish to N idle workers,
 * until every worker has adopted the snapshot on its own thread (the real
 * mailbox and worker_adopt; the workers have no listeners). A full push of
 * 10,000 workloads and 2,000 services into an empty state, then pushes of
 * one changed workload into it; medians, CPU time, and VmRSS growth.
 * Not run by make check: speed is never asserted in tests. See
 * tests/bench/README.md ("The control-plane push"). */
#include "autoconfig.h"

#include <cjson/cJSON.h>
#include <ev.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "json.h"
#include "json_pb.h"
#include "model.h"
#include "snapshot.h"
#include "strbuf.h"
#include "worker.h"
#include "xds_store.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "istio/workload/workload.pb-c.h"

#define FULL_RUNS 5
#define INC_RUNS 21		/* a fourth argument sets it (a profile of the incremental path) */
#define MAX_WORKERS 16

static const char type_url[] = "type.googleapis.com/istio.workload.Address";

static double
ms(clockid_t c)
{
	struct timespec ts;

	clock_gettime(c, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* VmRSS of this process, KiB. */
static long
rss_kib(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kib = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

static void
b64(const unsigned char *in, size_t n, char *out)
{
	static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t o = 0;

	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) |
		    (i + 2 < n ? in[i + 2] : 0);

		out[o++] = t[v >> 18 & 63];
		out[o++] = t[v >> 12 & 63];
		out[o++] = i + 1 < n ? t[v >> 6 & 63] : '=';
		out[o++] = i + 2 < n ? t[v & 63] : '=';
	}
	out[o] = '\0';
}

/* One Address in proto3 JSON: service s (ns-(s % 50), a VIP, ports 80 and
 * 443, a SAN) for s < nsvc, else workload w = s - nsvc (one IPv4 address
 * 10.<w>, shifted by `moved` for an incremental push, HBONE, locality, and
 * a services entry with both ports for service w / 5), as istiod sends. */
static void
address_json(struct strbuf *sb, int i, int nsvc, int moved)
{
	char ip[16];

	if (i < nsvc) {
		unsigned char a[4] = { 10, 96, (unsigned char)(i >> 8), (unsigned char)i };

		b64(a, 4, ip);
		sb_printf(sb, "{\"@type\":\"%s\",\"service\":{"
		    "\"name\":\"svc-%d\",\"namespace\":\"ns-%d\",\"hostname\":\"svc-%d.ns-%d.svc.cluster.local\","
		    "\"addresses\":[{\"network\":\"\",\"address\":\"%s\"}],"
		    "\"ports\":[{\"servicePort\":80,\"targetPort\":8080},{\"servicePort\":443,\"targetPort\":8443}],"
		    "\"subjectAltNames\":[\"spiffe://cluster.local/ns/ns-%d/sa/svc-%d\"]}}",
		    type_url, i, i % 50, i, i % 50, ip, i % 50, i);
	} else {
		int w = i - nsvc, s = w / 5 % nsvc, ns = s % 50;
		unsigned char a[4] = { 10, (unsigned char)(moved ? 200 + moved % 50 : w >> 16), (unsigned char)(w >> 8),
			(unsigned char)w };

		b64(a, 4, ip);
		sb_printf(sb, "{\"@type\":\"%s\",\"workload\":{"
		    "\"uid\":\"Kubernetes//Pod/ns-%d/name-%d\",\"name\":\"name-%d\",\"namespace\":\"ns-%d\","
		    "\"addresses\":[\"%s\"],\"serviceAccount\":\"svc-%d\",\"node\":\"node-%d\","
		    "\"tunnelProtocol\":\"HBONE\",\"workloadName\":\"name-%d\",\"workloadType\":\"POD\","
		    "\"canonicalName\":\"svc-%d\",\"canonicalRevision\":\"v1\",\"clusterId\":\"Kubernetes\","
		    "\"locality\":{\"region\":\"us-east1\",\"zone\":\"us-east1-b\"},"
		    "\"services\":{\"ns-%d/svc-%d.ns-%d.svc.cluster.local\":{\"ports\":["
		    "{\"servicePort\":80,\"targetPort\":8080},{\"servicePort\":443,\"targetPort\":8443}]}}}}",
		    type_url, ns, w, w, ns, ip, s, w % 100, w / 5, s, ns, s, ns);
	}
}

/* A DeltaDiscoveryResponse of Addresses first..first+n-1 (moved: see
 * address_json), packed; *len its size. NULL on failure. */
static uint8_t *
response(int first, int n, int nsvc, int moved, const char *version, size_t *len)
{
	Envoy__Service__Discovery__V3__DeltaDiscoveryResponse rsp =
	    ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_RESPONSE__INIT;
	Envoy__Service__Discovery__V3__Resource *rs = calloc((size_t)n, sizeof(*rs)), **rp = calloc((size_t)n, sizeof(*rp));
	Google__Protobuf__Any *any = calloc((size_t)n, sizeof(*any));
	uint8_t *out = NULL;

	if (!rs || !rp || !any)
		goto out;
	for (int k = 0; k < n; k++) {
		struct strbuf sb;
		char err[256], why[256];
		ProtobufCMessage *msg = NULL;
		struct jpb_err je;
		struct mres *r;
		cJSON *j;

		memset(&sb, 0, sizeof(sb));
		address_json(&sb, first + k, nsvc, moved);
		if (sb.oom || !(j = json_parse_strict(sb.p, sb.len, err, sizeof(err))) ||
		    jpb_decode_any(j, "r", NULL, NULL, &msg, &je) < 0)
			goto out;
		cJSON_Delete(j);
		sb_free(&sb);
		google__protobuf__any__init(&any[k]);
		any[k].type_url = (char *)type_url;
		any[k].value.len = protobuf_c_message_get_packed_size(msg);
		if (!(any[k].value.data = malloc(any[k].value.len ? any[k].value.len : 1)))
			goto out;
		protobuf_c_message_pack(msg, any[k].value.data);
		/* The name as istiod gives it: what mres_new names it. */
		if (!(r = mres_new(msg, NULL, NULL, why, sizeof(why))))
			goto out;
		envoy__service__discovery__v3__resource__init(&rs[k]);
		rs[k].name = strdup(r->name);
		mres_unref(r);
		rs[k].version = (char *)version;
		rs[k].resource = &any[k];
		rp[k] = &rs[k];
	}
	rsp.type_url = (char *)type_url;
	rsp.nonce = (char *)version;
	rsp.system_version_info = (char *)version;
	rsp.n_resources = (size_t)n;
	rsp.resources = rp;
	*len = protobuf_c_message_get_packed_size(&rsp.base);
	if ((out = malloc(*len)))
		protobuf_c_message_pack(&rsp.base, out);
out:
	for (int k = 0; rs && any && k < n; k++) {
		free(rs[k].name);
		free(any[k].value.data);
	}
	free(rs);
	free(rp);
	free(any);
	return out;
}

/* ---- Idle workers: their own loops and mailboxes, nothing else ---- */

static struct worker workers[MAX_WORKERS];
static unsigned nworkers;
/* The snapshot each worker runs, as its own thread saw it after its
 * callbacks (its wsnap may be freed by it at any time: not read here). */
static struct snapshot *live[MAX_WORKERS];

static void
pending_cb(struct ev_loop *loop)
{
	ev_invoke_pending(loop);
	for (unsigned i = 0; i < MAX_WORKERS; i++)
		if (workers[i].loop == loop)
			__atomic_store_n(&live[i], workers[i].snap ? workers[i].snap->s : NULL, __ATOMIC_RELEASE);
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;

	ev_run(w->loop, 0);
	return NULL;
}

static int
start_workers(unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		struct worker *w = &workers[i];

		w->id = i;
		snprintf(w->tag, sizeof(w->tag), "w%u", i);
		if (!(w->loop = ev_loop_new(EVFLAG_AUTO)))
			return -1;
		ev_set_invoke_pending_cb(w->loop, pending_cb);
		worker_mbox_init(w);
		if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
			return -1;
	}
	nworkers = n;
	return 0;
}

/* Publishes s to every worker (one reference each, s's own dropped) and
 * waits until each has adopted it. */
static void
publish_and_wait(struct snapshot *s)
{
	for (unsigned i = 0; i < nworkers; i++)
		worker_publish(&workers[i], snapshot_ref(s));
	for (unsigned i = 0; i < nworkers; i++)
		for (;;) {
			if (__atomic_load_n(&live[i], __ATOMIC_ACQUIRE) == s)
				break;
			sched_yield();
		}
	snapshot_unref(s);
}

struct push {
	double wall, cpu, proc;		/* ms: response to live; this thread's CPU; the process's */
	double decode, apply;		/* ms of wall: decode, apply (with the build) */
	size_t applied;
};

/* One push: bytes -> live in every worker. *running is the running model
 * (replaced). 0 or -1. */
static int
push(struct xds_store *st, const uint8_t *buf, size_t len, struct model **running, const struct config *cfg,
    uint64_t gen, struct push *p)
{
	double t0 = ms(CLOCK_MONOTONIC), c0 = ms(CLOCK_THREAD_CPUTIME_ID), q0 = ms(CLOCK_PROCESS_CPUTIME_ID), t1, t2;
	struct xds_update u;
	struct xds_result r;
	struct snapshot *s;
	char err[256];

	memset(&u, 0, sizeof(u));
	if (xds_decode_delta(buf, len, &u, err, sizeof(err)) < 0) {
		fprintf(stderr, "decode: %s\n", err);
		return -1;
	}
	t1 = ms(CLOCK_MONOTONIC);
	if (xds_store_apply(st, &u, *running, &r) < 0 || r.error || !r.model) {
		fprintf(stderr, "apply: %s\n", r.error ? r.error : "failed or nothing changed");
		return -1;
	}
	t2 = ms(CLOCK_MONOTONIC);
	p->applied = r.applied;
	if (!(s = snapshot_new(cfg, model_ref(r.model), gen)))
		return -1;
	publish_and_wait(s);
	p->wall = ms(CLOCK_MONOTONIC) - t0;
	p->cpu = ms(CLOCK_THREAD_CPUTIME_ID) - c0;
	p->proc = ms(CLOCK_PROCESS_CPUTIME_ID) - q0;
	p->decode = t1 - t0;
	p->apply = t2 - t1;
	model_free(*running);
	*running = r.model;
	r.model = NULL;
	xds_result_free(&r);
	xds_update_free(&u);
	return 0;
}

static void
medians(struct push *v, int n, struct push *out)
{
	double a[64];

#define MED(f) do { for (int i = 0; i < n; i++) a[i] = v[i].f; qsort(a, (size_t)n, sizeof(a[0]), cmp_double); \
		out->f = a[n / 2]; } while (0)
	MED(wall);
	MED(cpu);
	MED(proc);
	MED(decode);
	MED(apply);
#undef MED
	out->applied = v[0].applied;
}

int
main(int argc, char **argv)
{
	int nwl = argc > 1 ? atoi(argv[1]) : 10000, nsvc = argc > 2 ? atoi(argv[2]) : 2000;
	unsigned nw = argc > 3 ? (unsigned)atoi(argv[3]) : 2;
	struct model_opts opts = { .network = "", .strict_refs = false };
	int ninc = argc > 4 ? atoi(argv[4]) : INC_RUNS;
	struct push full[FULL_RUNS], *inc = calloc(ninc > 0 ? (size_t)ninc : 1, sizeof(*inc)), fm, im;
	long rss0 = 0, rss1 = 0, rss_inc = 0;
	struct config cfg;
	struct model *running = NULL;
	struct xds_store *st = NULL;
	uint8_t *buf, **ibuf = calloc(ninc > 0 ? (size_t)ninc : 1, sizeof(*ibuf));
	size_t len, *ilen = calloc(ninc > 0 ? (size_t)ninc : 1, sizeof(*ilen));
	uint64_t gen = 1;

	if (nwl <= 0 || nsvc <= 0 || nw == 0 || nw > MAX_WORKERS || ninc < 1 || !inc || !ibuf || !ilen ||
	    model_register_types() < 0)
		return 2;
	config_defaults(&cfg);
	if (!(buf = response(0, nsvc + nwl, nsvc, 0, "1", &len)))
		return 1;
	for (int k = 0; k < ninc; k++) {
		char v[16];

		snprintf(v, sizeof(v), "%d", k + 2);
		if (!(ibuf[k] = response(nsvc + (k * 997) % nwl, 1, nsvc, k + 1, v, &ilen[k])))
			return 1;
	}
	if (start_workers(nw) < 0)
		return 1;
	{
		/* The workers start on the empty model, as at start-up. */
		struct snapshot *s = snapshot_new(&cfg, model_empty(), gen++);

		if (!s)
			return 1;
		publish_and_wait(s);
	}
	for (int r = 0; r < FULL_RUNS; r++) {
		/* Each full push into a new, empty store; the last one stays for
		 * the incremental pushes. RSS growth: the first run's, before
		 * the heap holds freed memory of earlier runs. */
		if (st) {
			struct snapshot *s = snapshot_new(&cfg, model_empty(), gen++);

			publish_and_wait(s);
			model_free(running);
			xds_store_free(st);
		}
		running = model_empty();
		if (!(st = xds_store_new(&opts)))
			return 1;
		if (r == 0)
			rss0 = rss_kib();
		if (push(st, buf, len, &running, &cfg, gen++, &full[r]) < 0)
			return 1;
		if (r == 0)
			rss1 = rss_kib();
	}
	for (int k = 0; k < ninc; k++)
		if (push(st, ibuf[k], ilen[k], &running, &cfg, gen++, &inc[k]) < 0)
			return 1;
	rss_inc = rss_kib();
	medians(full, FULL_RUNS, &fm);
	medians(inc, ninc < 64 ? ninc : 63, &im);
	printf("response: %d workloads, %d services, %zu bytes (DeltaDiscoveryResponse); %u idle workers\n", nwl,
	    nsvc, len, nw);
	printf("full push (%zu applied), median of %d: live in every worker %.1f ms (decode %.1f, apply+build %.1f); "
	    "control-thread CPU %.1f ms, process CPU %.1f ms\n", fm.applied, FULL_RUNS, fm.wall, fm.decode, fm.apply,
	    fm.cpu, fm.proc);
	printf("RSS: %.1f MiB before the first full push, %.1f MiB after it: growth %.1f MiB (response bytes "
	    "%.1f MiB held by the bench throughout); %.1f MiB after %d incremental pushes\n", rss0 / 1024.0,
	    rss1 / 1024.0, (rss1 - rss0) / 1024.0, len / 1048576.0, rss_inc / 1024.0, ninc);
	printf("incremental push of 1 workload, median of %d: live in every worker %.2f ms (decode %.3f, "
	    "apply+build %.2f); control-thread CPU %.2f ms, process CPU %.2f ms\n", ninc < 64 ? ninc : 63, im.wall, im.decode,
	    im.apply, im.cpu, im.proc);
	printf("json: {\"workloads\": %d, \"services\": %d, \"workers\": %u, \"full_ms\": %.1f, \"full_cpu_ms\": %.1f, "
	    "\"rss_growth_mib\": %.1f, \"incremental_ms\": %.2f, \"incremental_cpu_ms\": %.2f}\n", nwl, nsvc, nw,
	    fm.wall, fm.proc, (rss1 - rss0) / 1024.0, im.wall, im.proc);
	fflush(stdout);
	/* The workers idle in their loops; the process ends with them. */
	_exit(0);
}
