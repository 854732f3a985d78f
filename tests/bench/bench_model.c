/* bench_model: how long a snapshot of 10,000 workloads and 2,000 services
 * takes to decode and to build, and how much memory it holds (issue 8,
 * "Performance": under 100 ms and 20 MiB). Generates the resources as the
 * static JSON file would hold them, decodes them with jpb_decode_any through
 * a counting allocator, wraps them (mres_new) and runs model_build 5 times;
 * prints the medians and the bytes. Not run by make check: speed is never
 * asserted in tests. See tests/bench/README.md ("The model's build"). */
#include "autoconfig.h"

#include <cjson/cJSON.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "json.h"
#include "json_pb.h"
#include "model.h"
#include "strbuf.h"
#include "istio/workload/workload.pb-c.h"

#define RUNS 5

static size_t msg_bytes;	/* what the decoded messages hold (malloc_usable_size) */

static void *
count_alloc(void *ctx, size_t size)
{
	void *p = malloc(size);

	(void)ctx;
	if (p)
		msg_bytes += malloc_usable_size(p);
	return p;
}

static void
count_free(void *ctx, void *p)
{
	(void)ctx;
	if (p)
		msg_bytes -= malloc_usable_size(p);
	free(p);
}

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* CPU time of this thread: on a shared machine, wall time also counts the
 * time other processes had the core. */
static double
cpu_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
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

/* The resources: service s in namespace ns-(s % 50), with a VIP and ports
 * 80 and 443; workload w serves service w / 5, in its namespace. */
static int
generate(struct strbuf *sb, int nwl, int nsvc)
{
	unsigned seed = 1;
	char ip[16];

	sb_append(sb, "{\"resources\":[", 14);
	for (int s = 0; s < nsvc; s++) {
		unsigned char a[4] = { 10, 96, (unsigned char)(s >> 8), (unsigned char)s };

		b64(a, 4, ip);
		sb_printf(sb, "%s{\"@type\":\"type.googleapis.com/istio.workload.Address\",\"service\":{"
		    "\"name\":\"svc-%d\",\"namespace\":\"ns-%d\",\"hostname\":\"svc-%d.ns-%d.svc.cluster.local\","
		    "\"addresses\":[{\"network\":\"\",\"address\":\"%s\"}],"
		    "\"ports\":[{\"servicePort\":80,\"targetPort\":8080},{\"servicePort\":443,\"targetPort\":8443}],"
		    "\"subjectAltNames\":[\"spiffe://cluster.local/ns/ns-%d/sa/svc-%d\"]}}",
		    s ? "," : "", s, s % 50, s, s % 50, ip, s % 50, s);
	}
	for (int w = 0; w < nwl; w++) {
		int s = w / 5 % nsvc, ns = s % 50;
		unsigned char a[4] = { 10, (unsigned char)(w >> 16), (unsigned char)(w >> 8), (unsigned char)w };
		char sfx[6];

		for (int i = 0; i < 5; i++) {
			seed = seed * 1103515245 + 12345;
			sfx[i] = "bcdfghjklmnpqrstvwxz2456789"[(seed >> 16) % 27];
		}
		sfx[5] = '\0';
		b64(a, 4, ip);
		sb_printf(sb, ",{\"@type\":\"type.googleapis.com/istio.workload.Address\",\"workload\":{"
		    "\"uid\":\"Kubernetes//Pod/ns-%d/name-%d-%s\",\"name\":\"name-%d-%s\",\"namespace\":\"ns-%d\","
		    "\"addresses\":[\"%s\"],\"serviceAccount\":\"svc-%d\",\"node\":\"node-%d\","
		    "\"tunnelProtocol\":\"HBONE\",\"workloadName\":\"name-%d\",\"workloadType\":\"POD\","
		    "\"canonicalName\":\"svc-%d\",\"canonicalRevision\":\"v1\",\"clusterId\":\"Kubernetes\","
		    "\"locality\":{\"region\":\"us-east1\",\"zone\":\"us-east1-b\"},"
		    "\"services\":{\"ns-%d/svc-%d.ns-%d.svc.cluster.local\":{\"ports\":["
		    "{\"servicePort\":80,\"targetPort\":8080},{\"servicePort\":443,\"targetPort\":8443}]}}}}",
		    ns, w, sfx, w, sfx, ns, ip, s, w % 100, w / 5, s, ns, s, ns);
	}
	sb_append(sb, "]}", 2);
	return sb->oom ? -1 : 0;
}

/* A copy of workload resource r with its address moved to 10.250.x.y (x.y
 * from k) and its node renamed: what an incremental push of one workload
 * (a pod rescheduled) brings. */
static struct mres *
edited_workload(const struct mres *r, unsigned k)
{
	size_t len = protobuf_c_message_get_packed_size(r->msg);
	uint8_t *buf = malloc(len ? len : 1);
	Istio__Workload__Address *a;
	char why[256];
	struct mres *x;

	if (!buf)
		return NULL;
	protobuf_c_message_pack(r->msg, buf);
	a = (void *)protobuf_c_message_unpack(&istio__workload__address__descriptor, NULL, len, buf);
	free(buf);
	if (!a || !a->workload || a->workload->n_addresses != 1 || a->workload->addresses[0].len != 4)
		return NULL;
	a->workload->addresses[0].data[0] = 10;
	a->workload->addresses[0].data[1] = 250;
	a->workload->addresses[0].data[2] = (uint8_t)(k >> 8);
	a->workload->addresses[0].data[3] = (uint8_t)k;
	if (!(x = mres_new(&a->base, "2", NULL, why, sizeof(why))))
		fprintf(stderr, "edited workload: %s\n", why);
	return x;
}

/* Builds over prev RUNS times, input set changed by edit (NULL: nothing
 * changed; else one workload replaced per run), each over the last:
 * medians in *wall, *cpu. The last model replaces *m. */
static int
incremental(struct model_input *in, size_t n, size_t nsvc, struct model **m, bool edit, double *wall,
    double *cpu)
{
	double w[RUNS], c[RUNS];

	for (int r = 0; r < RUNS; r++) {
		struct model_report rep;
		struct model *next;
		double t0, c0;
		size_t at = nsvc + (size_t)r * 997 % (n - nsvc);

		if (edit) {
			struct mres *x = edited_workload(in[at].res, (unsigned)r);

			if (!x)
				return -1;
			mres_unref(in[at].res);
			in[at].res = x;
		}
		t0 = now_ms();
		c0 = cpu_ms();
		next = model_build(in, n, *m, &(struct model_opts){ .network = "", .strict_refs = true }, &rep);
		w[r] = now_ms() - t0;
		c[r] = cpu_ms() - c0;
		if (!next || rep.nproblems) {
			fprintf(stderr, "incremental build: %s\n", next ? rep.problems[0].msg : "out of memory");
			return -1;
		}
		model_report_free(&rep);
		model_free(*m);
		*m = next;
	}
	qsort(w, RUNS, sizeof(w[0]), cmp_double);
	qsort(c, RUNS, sizeof(c[0]), cmp_double);
	*wall = w[RUNS / 2];
	*cpu = c[RUNS / 2];
	return 0;
}

int
main(int argc, char **argv)
{
	int nwl = argc > 1 ? atoi(argv[1]) : 10000, nsvc = argc > 2 ? atoi(argv[2]) : 2000;
	ProtobufCAllocator counting = { count_alloc, count_free, NULL };
	double dec[RUNS], bld[RUNS], deccpu[RUNS], bldcpu[RUNS], first, treefree, same, samecpu, inc, inccpu;
	struct model_input *in;
	struct model_report rep;
	struct model_sizes sz;
	struct model *m = NULL;
	struct strbuf sb;
	size_t n, heap_res, heap_model;
	char err[512];
	char (*paths)[32];
	cJSON *root, *e;

	if (nwl <= 0 || nsvc <= 0 || model_register_types() < 0)
		return 2;
	memset(&sb, 0, sizeof(sb));
	if (generate(&sb, nwl, nsvc) < 0)
		return 1;
	n = (size_t)nwl + (size_t)nsvc;
	in = calloc(n, sizeof(*in));
	paths = calloc(n, sizeof(*paths));
	if (!in || !paths)
		return 1;

	/* Decode: the strict parse and jpb_decode_any of each, RUNS times
	 * (the last one's messages are kept). The file loader keeps the tree
	 * until the model is built, so the last tree is freed after the builds:
	 * freeing its ~10^6 nodes makes glibc consolidate them at the next large
	 * allocation (~45 ms here), which the first build would otherwise pay. */
	for (int r = 0; r < RUNS; r++) {
		size_t i = 0;
		struct mallinfo2 mi0, mi1;
		double t0 = now_ms(), c0 = cpu_ms(), tp, cp;

		msg_bytes = 0;	/* mres_unref frees with free(), not count_free */
		if (!(root = json_parse_strict(sb.p, sb.len, err, sizeof(err)))) {
			fprintf(stderr, "%s\n", err);
			return 1;
		}
		tp = now_ms() - t0;
		cp = cpu_ms() - c0;
		mi0 = mallinfo2();	/* walks the heap: not timed */
		t0 = now_ms();
		c0 = cpu_ms();
		cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(root, "resources")) {
			ProtobufCMessage *msg = NULL;
			struct jpb_err je;

			snprintf(paths[i], sizeof(paths[i]), "resources[%zu]", i);
			if (jpb_decode_any(e, paths[i], NULL, &counting, &msg, &je) < 0) {
				fprintf(stderr, "%s\n", je.msg);
				return 1;
			}
			in[i].path = paths[i];
			if (!(in[i].res = mres_new(msg, "", NULL, err, sizeof(err)))) {
				fprintf(stderr, "%s: %s\n", paths[i], err);
				return 1;
			}
			i++;
		}
		dec[r] = tp + now_ms() - t0;
		deccpu[r] = cp + cpu_ms() - c0;
		mi1 = mallinfo2();
		heap_res = mi1.uordblks - mi0.uordblks;	/* the resources, not the tree */
		if (r + 1 < RUNS) {
			cJSON_Delete(root);
			for (size_t k = 0; k < n; k++)
				mres_unref(in[k].res);
		}
	}
	for (int r = 0; r < RUNS; r++) {
		struct mallinfo2 mi0;
		double t0, c0;

		model_free(m);
		mi0 = mallinfo2();
		t0 = now_ms();
		c0 = cpu_ms();
		m = model_build(in, n, NULL, &(struct model_opts){ .network = "", .strict_refs = true }, &rep);
		bld[r] = now_ms() - t0;
		bldcpu[r] = cpu_ms() - c0;
		heap_model = mallinfo2().uordblks - mi0.uordblks;
		if (!m || rep.nproblems) {
			fprintf(stderr, "build: %s\n", m ? rep.problems[0].msg : "out of memory");
			return 1;
		}
		model_report_free(&rep);
	}
	{
		/* The tree's free, with the consolidation it causes (forced by a
		 * large allocation, as the next one would). */
		double t0 = now_ms();

		cJSON_Delete(root);
		free(malloc(1 << 20));
		treefree = now_ms() - t0;
	}
	if (incremental(in, n, (size_t)nsvc, &m, false, &same, &samecpu) < 0 ||
	    incremental(in, n, (size_t)nsvc, &m, true, &inc, &inccpu) < 0)
		return 1;
	/* A third argument repeats the incremental builds, for a profile. */
	for (int k = argc > 3 ? atoi(argv[3]) : 0; k > 0; k--)
		if (incremental(in, n, (size_t)nsvc, &m, true, &inc, &inccpu) < 0)
			return 1;
	model_sizes(m, &sz);
	qsort(dec, RUNS, sizeof(dec[0]), cmp_double);
	first = bld[0];
	qsort(bld, RUNS, sizeof(bld[0]), cmp_double);
	qsort(deccpu, RUNS, sizeof(deccpu[0]), cmp_double);
	qsort(bldcpu, RUNS, sizeof(bldcpu[0]), cmp_double);
	printf("resources: %d workloads, %d services (%zu bytes of JSON)\n", nwl, nsvc, sb.len);
	printf("model: %zu workloads, %zu addresses, %zu services, %zu VIPs, %zu service ports, %zu endpoints\n",
	    sz.workloads, sz.workload_addresses, sz.services, sz.service_vips, (size_t)model_nports(m),
	    sz.endpoints);
	printf("decode (parse + jpb_decode_any + mres_new; not the tree's free), median of %d: %.1f ms (min %.1f, max %.1f); "
	    "CPU %.1f ms\n", RUNS, dec[RUNS / 2], dec[0], dec[RUNS - 1], deccpu[RUNS / 2]);
	printf("build (model_build), median of %d: %.1f ms (min %.1f, max %.1f); CPU %.1f ms; the first: %.1f ms\n",
	    RUNS, bld[RUNS / 2], bld[0], bld[RUNS - 1], bldcpu[RUNS / 2], first);
	printf("rebuild over the last model, nothing changed, median of %d: %.2f ms; CPU %.2f ms\n", RUNS, same,
	    samecpu);
	printf("incremental: one workload replaced, built over the last model, median of %d: %.2f ms; "
	    "CPU %.2f ms\n", RUNS, inc, inccpu);
	printf("the JSON tree's free (cJSON_Delete and the consolidation it leaves to malloc): %.1f ms\n",
	    treefree);
	printf("memory: decoded messages %.2f MiB (allocator count); resources with their wrappers %.2f MiB "
	    "(heap); model's indexes %.2f MiB (heap; model_sizes says %.2f MiB); total %.2f MiB\n",
	    msg_bytes / 1048576.0, heap_res / 1048576.0, heap_model / 1048576.0, sz.bytes / 1048576.0,
	    (heap_res + heap_model) / 1048576.0);
	/* The same figures for the make bench report (tests/bench/report.py). */
	printf("json: {\"workloads\": %d, \"services\": %d, \"endpoints\": %zu, \"decode_ms\": %.1f, "
	    "\"build_ms\": %.1f, \"build_first_ms\": %.1f, \"rebuild_same_ms\": %.2f, \"incremental_ms\": %.2f, \"resources_mib\": %.2f, \"model_mib\": %.2f, "
	    "\"total_mib\": %.2f}\n", nwl, nsvc, sz.endpoints, dec[RUNS / 2], bld[RUNS / 2], first, same, inc,
	    heap_res / 1048576.0, heap_model / 1048576.0, (heap_res + heap_model) / 1048576.0);
	model_free(m);
	for (size_t k = 0; k < n; k++)
		mres_unref(in[k].res);
	free(in);
	free(paths);
	sb_free(&sb);
	return 0;
}
