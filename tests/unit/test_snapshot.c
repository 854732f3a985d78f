/* Unit tests for live configuration (issue 7 §4): src/snapshot.c, the worker
 * mailbox (src/worker.c) and the control path (src/server.c). A hand-built
 * worker runs tunnels over real loopback sockets while snapshots are published
 * to it: a connection keeps the snapshot it started with, new connections get
 * the newest one, 1,000 swaps under traffic lose no byte, and a reload keeps
 * the "restart" keys and the running snapshot when the file is bad. */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "json.h"
#include "model.h"
#include "resources.h"
#include "server.h"
#include "snapshot.h"
#include "sock.h"
#include "tunnel.h"
#include "worker.h"
#include "testlo.h"

#define NSWAPS 1000
#define MAXCL 16

/* The "application": an echo server on its own thread (poll, one thread for
 * every connection), so the worker's loop is the only thing the test drives. */
struct echo {
	int lfd;
	struct sockaddr_storage addr;
	pthread_t th;
	int stop;	/* atomic */
};

static void *
echo_main(void *arg)
{
	struct echo *e = arg;
	struct pollfd p[MAXCL + 1];
	int n = 1;
	char buf[65536];

	p[0] = (struct pollfd){ .fd = e->lfd, .events = POLLIN };
	while (!__atomic_load_n(&e->stop, __ATOMIC_ACQUIRE)) {
		if (poll(p, (nfds_t)n, 20) <= 0)
			continue;
		if ((p[0].revents & POLLIN) && n < MAXCL + 1) {
			int fd = accept4(e->lfd, NULL, NULL, 0);	/* blocking: write all */
			if (fd >= 0)
				p[n++] = (struct pollfd){ .fd = fd, .events = POLLIN };
		}
		for (int i = 1; i < n; i++) {
			if (p[i].fd < 0 || !(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			ssize_t r = recv(p[i].fd, buf, sizeof(buf), MSG_DONTWAIT);
			if (r > 0) {
				for (ssize_t off = 0; off < r;) {
					ssize_t w = send(p[i].fd, buf + off, (size_t)(r - off), MSG_NOSIGNAL);
					if (w <= 0)
						break;
					off += w;
				}
			} else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
				shutdown(p[i].fd, SHUT_WR);
				close(p[i].fd);
				p[i].fd = -1;	/* poll ignores negative fds */
			}
		}
	}
	for (int i = 1; i < n; i++)
		if (p[i].fd >= 0)
			close(p[i].fd);
	return NULL;
}

static void
echo_start(struct echo *e)
{
	memset(e, 0, sizeof(*e));
	e->lfd = listen_lo(&e->addr);
	assert_int_equal(pthread_create(&e->th, NULL, echo_main, e), 0);
}

static void
echo_stop(struct echo *e)
{
	__atomic_store_n(&e->stop, 1, __ATOMIC_RELEASE);
	pthread_join(e->th, NULL);
	close(e->lfd);
}

/* A worker without listeners or thread: the test runs its loop. */
struct fixture {
	struct worker w;
	struct echo echo;
	int plfd;			/* stands in for a capture listener */
	struct sockaddr_storage proxy;
};

static void
fixture_setup(struct fixture *f, const struct config *cfg)
{
	memset(f, 0, sizeof(*f));
	test_worker_init(&f->w, cfg, 16);
	worker_mbox_init(&f->w);
	echo_start(&f->echo);
	f->plfd = listen_lo(&f->proxy);
}

static void
fixture_teardown(struct fixture *f)
{
	tunnel_close_all(&f->w);
	worker_mbox_fini(&f->w);
	test_worker_fini(&f->w);
	close(f->plfd);
	echo_stop(&f->echo);
}

static void
spin(struct fixture *f, int ms)
{
	double end = now() + ms / 1000.0;
	do {
		ev_run(f->w.loop, EVRUN_NOWAIT);
		poll(NULL, 0, 1);
	} while (now() < end);
}

/* Run the loop until the worker's current generation is gen (bounded). */
static void
wait_generation(struct fixture *f, uint64_t gen)
{
	double end = now() + 10;
	while (f->w.snap->s->generation != gen && now() < end)
		spin(f, 1);
	assert_int_equal(f->w.snap->s->generation, gen);
}

/* A client connection through a tunnel of the worker to the echo app. */
struct client {
	int fd;
	struct tunnel *t;
	struct wsnap *ws;	/* the snapshot the tunnel started with */
	uint64_t gen;
	size_t sent, rcvd;
	bool shut, eof;
	int bad;		/* first wrong byte + 1 */
};

static void
client_open(struct fixture *f, struct client *c)
{
	memset(c, 0, sizeof(*c));
	c->fd = sock_connect(&f->proxy, NULL, false, 0);
	assert_true(c->fd >= 0);
	int ds = accept_wait(f->plfd);
	c->t = tunnel_start(&f->w, LST_OUTBOUND, ds, &f->echo.addr);
	assert_non_null(c->t);
	c->ws = c->t->snap;
	c->gen = c->ws->s->generation;
	/* A new connection gets the worker's current snapshot. */
	assert_ptr_equal(c->ws, f->w.snap);
}

/* Byte k of client j's stream: not periodic in any buffer size. */
static unsigned char
pattern(int j, size_t k)
{
	uint64_t x = (k + 1) * 0x9E3779B97F4A7C15ull + (uint64_t)j * 0xBF58476D1CE4E5B9ull;
	return (unsigned char)(x >> 56 ^ x >> 29);
}

/* Send some (at most 256 KiB ahead of what came back), read what is there and
 * check it byte by byte. */
static void
client_pump(struct client *c, int j, size_t limit)
{
	unsigned char buf[16384];

	if (!c->shut && c->sent < limit && c->sent - c->rcvd < 256 * 1024) {
		size_t n = sizeof(buf) < limit - c->sent ? sizeof(buf) : limit - c->sent;
		for (size_t i = 0; i < n; i++)
			buf[i] = pattern(j, c->sent + i);
		ssize_t w = send(c->fd, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (w > 0)
			c->sent += (size_t)w;
	}
	for (int round = 0; round < 4 && !c->eof; round++) {
		ssize_t r = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (r > 0) {
			for (ssize_t i = 0; i < r; i++)
				if (!c->bad && buf[i] != pattern(j, c->rcvd + (size_t)i))
					c->bad = (int)(c->rcvd + (size_t)i) + 1;
			c->rcvd += (size_t)r;
		} else {
			if (r == 0 || (errno != EAGAIN && errno != EINTR))
				c->eof = true;
			break;
		}
	}
}

/* A connection keeps its snapshot (here: its idle timeout) while new ones get
 * the new one: before issue 7 §4 workers_publish() had no caller at all. */
static void
test_connection_keeps_its_snapshot(void **state)
{
	struct fixture f;
	struct config cfg, next;
	struct client old, young;
	char err[256];

	config_defaults(&cfg);
	cfg.idle_timeout_ms = 0;	/* never */
	fixture_setup(&f, &cfg);
	struct snapshot *first = snapshot_ref(f.w.snap->s);
	client_open(&f, &old);
	assert_int_equal(old.gen, 1);

	next = cfg;
	assert_int_equal(config_set(&next, "proxy.idleTimeout", "0.2s", err, sizeof(err)), 0);
	worker_publish(&f.w, snapshot_new(&next, NULL, 2));
	wait_generation(&f, 2);
	client_open(&f, &young);
	assert_int_equal(young.gen, 2);
	assert_int_equal(young.ws->s->cfg.idle_timeout_ms, 200);

	/* Bytes flow on both; then both stay idle for 0.6 s. */
	double end = now() + 5;
	while ((old.rcvd < 1000 || young.rcvd < 1000) && now() < end) {
		client_pump(&old, 0, 1000);
		client_pump(&young, 1, 1000);
		spin(&f, 1);
	}
	assert_int_equal(old.rcvd, 1000);
	assert_int_equal(young.rcvd, 1000);
	spin(&f, 600);
	client_pump(&old, 0, 1000);
	client_pump(&young, 1, 1000);
	/* The new connection had the new 0.2 s idle timeout; the old one, its
	 * generation 1 "never", and it still echoes. */
	assert_true(young.eof);
	assert_int_equal(f.w.stats.lst[LST_OUTBOUND][LM_DOWNSTREAM_CX_IDLE_TIMEOUT], 1);
	assert_false(old.eof);
	assert_ptr_equal(old.t->snap, old.ws);
	assert_int_equal(old.t->snap->s->generation, 1);
	end = now() + 5;
	while (old.rcvd < 2000 && now() < end) {
		client_pump(&old, 0, 2000);
		spin(&f, 1);
	}
	assert_int_equal(old.rcvd, 2000);
	assert_int_equal(old.bad, 0);
	assert_int_equal(young.bad, 0);

	/* Generation 1 is retired: the worker lets go of it with its last
	 * connection (our own reference is all that is left). */
	assert_int_equal(__atomic_load_n(&first->refs, __ATOMIC_RELAXED), 2);
	close(old.fd);
	end = now() + 5;
	while (__atomic_load_n(&first->refs, __ATOMIC_RELAXED) != 1 && now() < end)
		spin(&f, 1);
	assert_int_equal(__atomic_load_n(&first->refs, __ATOMIC_RELAXED), 1);
	snapshot_unref(first);
	close(young.fd);
	fixture_teardown(&f);
}

#define WL(name, addr) "{\"@type\":\"type.googleapis.com/istio.workload.Address\",\"workload\":{" \
	"\"uid\":\"cluster1//Pod/default/" name "\",\"name\":\"" name "\",\"namespace\":\"default\"," \
	"\"serviceAccount\":\"sa\",\"addresses\":[\"" addr "\"]}}"

struct publisher {
	struct worker *w;
	struct config cfg;
	int done;		/* atomic */
	uint64_t seen;		/* atomic: the worker's generation, as the test loop saw it */
	uint64_t built;		/* models built with both workloads (read after the join) */
};

/* The control side: NSWAPS snapshots (generations 2..NSWAPS+1, each with
 * another connect timeout), published from another thread as
 * server_publish() does, spread over about half a second. Every 200 it waits
 * until the worker has adopted them, so that connections are opened on
 * generations between the first and the last whatever the scheduling. */
static void *
publisher_main(void *arg)
{
	struct publisher *p = arg;

	struct snapshot *prev = NULL;

	for (uint64_t g = 2; g <= NSWAPS + 1; g++) {
		struct config c = p->cfg;
		c.connect_timeout_ms = (uint32_t)(1000 + g);
		/* Each generation has a model of its own, built over the one before
		 * (as SIGHUP does): workload "a" moves, "b" stays. The retired ones
		 * are freed by their last connection, on the worker's thread. */
		char text[1024], err[256];
		unsigned char ip[4] = { 10, 1, (unsigned char)(g >> 8), (unsigned char)g };
		char b64[16];
		static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
		uint32_t v = (uint32_t)ip[0] << 16 | (uint32_t)ip[1] << 8 | ip[2];
		snprintf(b64, sizeof(b64), "%c%c%c%c%c%c==", tab[v >> 18], tab[(v >> 12) & 63], tab[(v >> 6) & 63],
		    tab[v & 63], tab[ip[3] >> 2], tab[(ip[3] & 3) << 4]);
		snprintf(text, sizeof(text), "[" WL("a", "%s") "," WL("b", "CgAAAg==") "]", b64);
		cJSON *list = json_parse_strict(text, strlen(text), err, sizeof(err));
		struct res_report rep;
		struct model *m = list ? resources_build(list, prev ? prev->model : NULL, &rep) : NULL;
		cJSON_Delete(list);
		if (!m)
			break;
		if (rep.refused)
			fprintf(stderr, "generation %llu: %s\n", (unsigned long long)g, rep.lines[0]);
		else if (model_count(m, MRES_ADDRESS) == 2)
			p->built++;
		res_report_free(&rep);
		struct snapshot *s = snapshot_new(&c, m, g);
		if (!s)
			break;
		snapshot_unref(prev);
		prev = snapshot_ref(s);
		worker_publish(p->w, s);
		if (g % 4 == 0)
			poll(NULL, 0, 2);
		for (double end = now() + 10; g % 200 == 0 && now() < end &&
		    __atomic_load_n(&p->seen, __ATOMIC_ACQUIRE) < g;)
			poll(NULL, 0, 1);
	}
	snapshot_unref(prev);
	__atomic_store_n(&p->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* 1,000 swaps under traffic lose no byte: four connections opened before the
 * first swap and four more opened while the swaps run echo a checked pattern
 * through the worker; each keeps the snapshot it started with. */
static void
test_1000_swaps_under_traffic(void **state)
{
	struct fixture f;
	struct publisher pub;
	struct client cl[8];
	pthread_t th;
	int ncl = 0, nlater = 0;
	size_t limit = 1 << 20;		/* at least this many bytes per connection */
	double end;

	config_defaults(&pub.cfg);
	pub.cfg.idle_timeout_ms = 0;
	fixture_setup(&f, &pub.cfg);
	pub.w = &f.w;
	pub.done = 0;
	pub.built = 0;
	pub.seen = 1;
	for (; ncl < 4; ncl++)
		client_open(&f, &cl[ncl]);
	assert_int_equal(pthread_create(&th, NULL, publisher_main, &pub), 0);

	end = now() + 60;
	uint64_t next_open = 2;
	for (;;) {
		assert_true(now() < end);
		ev_run(f.w.loop, EVRUN_NOWAIT);
		bool done = __atomic_load_n(&pub.done, __ATOMIC_ACQUIRE) &&
		    f.w.snap->s->generation == NSWAPS + 1;
		/* Keep the traffic going until the last swap is adopted. */
		size_t lim = done ? limit : (size_t)-1 / 2;
		for (int j = 0; j < ncl; j++) {
			client_pump(&cl[j], j, lim);
			assert_int_equal(cl[j].bad, 0);
			/* A connection keeps its snapshot through every swap. */
			assert_ptr_equal(cl[j].t->snap, cl[j].ws);
			assert_int_equal(cl[j].ws->s->generation, cl[j].gen);
		}
		/* New connections while the swaps run get the newest snapshot. */
		uint64_t g = f.w.snap->s->generation;
		__atomic_store_n(&pub.seen, g, __ATOMIC_RELEASE);
		if (ncl < 8 && g >= next_open && g <= NSWAPS) {
			client_open(&f, &cl[ncl]);
			assert_int_equal(cl[ncl].gen, g);
			assert_int_equal(cl[ncl].ws->s->cfg.connect_timeout_ms, 1000 + g);
			ncl++;
			nlater++;
			next_open = g + NSWAPS / 5;
		}
		if (done) {
			bool all = true;
			for (int j = 0; j < ncl; j++)
				all &= cl[j].sent >= limit && cl[j].rcvd == cl[j].sent;
			if (all)
				break;
		}
		poll(NULL, 0, 0);
	}
	pthread_join(th, NULL);
	assert_int_equal(pub.built, NSWAPS);	/* every swap carried a model of two workloads */
	assert_true(nlater >= 1);
	for (int j = 0; j < 4; j++)
		assert_int_equal(cl[j].gen, 1);
	for (int j = 4; j < ncl; j++)
		assert_true(cl[j].gen > 1);

	/* Half-close every client: everything comes back, then EOF. */
	for (int j = 0; j < ncl; j++) {
		shutdown(cl[j].fd, SHUT_WR);
		cl[j].shut = true;
	}
	end = now() + 10;
	for (bool all = false; !all && now() < end;) {
		all = true;
		for (int j = 0; j < ncl; j++) {
			client_pump(&cl[j], j, limit);
			all &= cl[j].eof;
		}
		spin(&f, 1);
	}
	uint64_t total = 0;
	for (int j = 0; j < ncl; j++) {
		assert_true(cl[j].eof);
		assert_int_equal(cl[j].bad, 0);
		assert_int_equal(cl[j].rcvd, cl[j].sent);
		total += cl[j].rcvd;
		close(cl[j].fd);
	}
	assert_true(total >= (uint64_t)ncl * limit);
	assert_int_equal(f.w.stats.lst[LST_OUTBOUND][LM_DOWNSTREAM_CX_RX_BYTES_TOTAL], total);
	assert_int_equal(f.w.stats.lst[LST_OUTBOUND][LM_DOWNSTREAM_CX_TX_BYTES_TOTAL], total);
	/* The newest connection after the last swap gets generation NSWAPS+1. */
	struct client last;
	client_open(&f, &last);
	assert_int_equal(last.gen, NSWAPS + 1);
	close(last.fd);
	spin(&f, 20);
	fixture_teardown(&f);	/* LeakSanitizer: every retired snapshot was freed */
}

static void
write_file(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	assert_int_equal(fputs(text, fp) >= 0, 1);
	fclose(fp);
}

/* SIGHUP's path (server_reload): live keys apply, restart keys keep their
 * running value and are reported, the command-line overrides are applied
 * again, and a bad file keeps the running snapshot and counts a failure. */
static void
test_server_reload(void **state)
{
	char path[] = "/tmp/or-test-reload-XXXXXX";
	static const struct config_override ovr[] = { { "proxy.logLevel", "warn" } };
	struct config cfg;
	char err[256];
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	close(fd);
	write_file(path, "{\"proxy\":{\"idleTimeout\":\"60s\"}}");
	memset(&server, 0, sizeof(server));
	server.config_path = path;
	server.overrides = ovr;
	server.noverrides = 1;
	assert_int_equal(server_load_config(&cfg, err, sizeof(err)), 0);
	assert_int_equal(cfg.idle_timeout_ms, 60000);
	assert_int_equal(cfg.log_level, LL_WARN);
	server_publish(snapshot_new(&cfg, NULL, 1));
	assert_int_equal(server.stats[SM_CONFIG_GENERATION], 1);

	write_file(path, "{\"proxy\":{\"idleTimeout\":\"5s\",\"proxyListenPort\":16001,\"logLevel\":\"debug\"}}");
	assert_int_equal(server_reload(), 0);
	assert_int_equal(server.snap->generation, 2);
	assert_int_equal(server.snap->cfg.idle_timeout_ms, 5000);
	assert_int_equal(server.snap->cfg.outbound_port, 15001);	/* needs a restart */
	assert_int_equal(server.snap->cfg.log_level, LL_WARN);		/* the override wins */
	assert_int_equal(log_threshold, LL_WARN);
	assert_int_equal(server.stats[SM_CONFIG_GENERATION], 2);
	assert_int_equal(server.stats[SM_CONFIG_RELOAD_SUCCESS], 1);
	assert_int_equal(server.stats[SM_CONFIG_RESTART_PENDING], 1);

	struct snapshot *before = server.snap;
	write_file(path, "{\"proxy\":{\"idleTimeout\":\"1s\",\"idleTimeout\":\"2s\"}}");
	assert_int_equal(server_reload(), -EINVAL);
	write_file(path, "{\"proxy\":{\"idleTimeout\":\"1s\"}} trailing");
	assert_int_equal(server_reload(), -EINVAL);
	unlink(path);
	assert_true(server_reload() < 0);	/* unreadable */
	assert_ptr_equal(server.snap, before);
	assert_int_equal(server.snap->generation, 2);
	assert_int_equal(server.snap->cfg.idle_timeout_ms, 5000);
	assert_int_equal(server.stats[SM_CONFIG_RELOAD_FAILURE], 3);
	assert_int_equal(server.stats[SM_CONFIG_RELOAD_SUCCESS], 1);
	assert_int_equal(server.stats[SM_CONFIG_GENERATION], 2);

	/* Back to the defaults with no file: nothing needs a restart any more. */
	server.config_path = NULL;
	assert_int_equal(server_reload(), 0);
	assert_int_equal(server.snap->cfg.idle_timeout_ms, 3600000);
	assert_int_equal(server.stats[SM_CONFIG_RESTART_PENDING], 0);
	snapshot_unref(server.snap);
	memset(&server, 0, sizeof(server));
	log_threshold = LL_INFO;
}

/* The Address resource of the running model named uid, or NULL. */
static const struct mres *
running_address(const char *uid)
{
	const struct model *m = server.snap->model;

	for (size_t i = 0; i < model_count(m, MRES_ADDRESS); i++)
		if (strcmp(model_resource(m, MRES_ADDRESS, i)->name, uid) == 0)
			return model_resource(m, MRES_ADDRESS, i);
	return NULL;
}

/* Issue 8, "Live swap" and "/stats counts": SIGHUP builds the file's
 * resources over the running model. A bad edit keeps the running version of
 * that resource while the rest apply (and the reload counts as applied); a
 * file that is itself invalid (JSON, "mesh", the shape of "resources") is
 * refused whole and the running snapshot stays. */
static void
test_server_reload_resources(void **state)
{
	char path[] = "/tmp/or-test-reload-res-XXXXXX";
	struct res_report rep;
	struct model *model;
	struct config cfg;
	char err[512];
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	close(fd);
	write_file(path, "{\"resources\":[" WL("a", "CgAAAQ==") "," WL("b", "CgAAAg==") "]}");
	memset(&server, 0, sizeof(server));
	server.config_path = path;
	assert_int_equal(server_load(&cfg, NULL, &model, &rep, err, sizeof(err)), 0);
	assert_int_equal(rep.refused, 0);
	res_report_free(&rep);
	server_publish(snapshot_new(&cfg, model, 1));
	assert_int_equal(server.stats[SM_MODEL_BUILDS], 1);
	assert_int_equal(server.stats[SM_RESOURCES_ADDRESS], 2);
	assert_int_equal(server.stats[SM_RESOURCES_CLUSTER], 0);
	const struct mres *a1 = running_address("cluster1//Pod/default/a");
	assert_non_null(a1);

	/* a gets a 5-byte address (refused: the running a stays), b is removed,
	 * c is new, and the mesh policy changes. */
	write_file(path, "{\"mesh\":{\"outboundTrafficPolicy\":{\"mode\":\"REGISTRY_ONLY\"}},\"resources\":["
	    WL("a", "CgAAAQE=") "," WL("c", "CgAAAw==") "]}");
	assert_int_equal(server_reload(), 0);
	assert_int_equal(server.snap->generation, 2);
	assert_int_equal(server.snap->cfg.outbound_policy, OUTBOUND_REGISTRY_ONLY);
	assert_ptr_equal(running_address("cluster1//Pod/default/a"), a1);
	assert_null(running_address("cluster1//Pod/default/b"));
	assert_non_null(running_address("cluster1//Pod/default/c"));
	assert_int_equal(server.stats[SM_CONFIG_RELOAD_SUCCESS], 1);
	assert_int_equal(server.stats[SM_CONFIG_RELOAD_FAILURE], 0);
	assert_int_equal(server.stats[SM_RESOURCES_REFUSED], 1);
	assert_int_equal(server.stats[SM_MODEL_BUILDS], 2);
	assert_int_equal(server.stats[SM_RESOURCES_ADDRESS], 2);

	/* Refused whole: nothing changes, not even the resources that were fine. */
	struct snapshot *before = server.snap;
	static const char *const bad[] = {
		"{\"mesh\":{\"outboundTrafficPolicy\":{\"mode\":\"DENY\"}},\"resources\":[" WL("d", "CgAABA==") "]}",
		"{\"resources\":{}}",
		"{\"resources\":[" WL("d", "CgAABA==") "]",
		"{\"proxy\":{\"concurrency\":0},\"resources\":[]}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		write_file(path, bad[i]);
		assert_int_equal(server_reload(), -EINVAL);
	}
	assert_ptr_equal(server.snap, before);
	assert_null(running_address("cluster1//Pod/default/d"));
	assert_int_equal(server.stats[SM_CONFIG_RELOAD_FAILURE], 4);
	assert_int_equal(server.stats[SM_MODEL_BUILDS], 2);
	assert_int_equal(server.stats[SM_RESOURCES_REFUSED], 1);

	/* Fixed: a applies at its new address. */
	write_file(path, "{\"resources\":[" WL("a", "CgAAEQ==") "," WL("c", "CgAAAw==") "]}");
	assert_int_equal(server_reload(), 0);
	const struct mres *a3 = running_address("cluster1//Pod/default/a");
	assert_non_null(a3);
	assert_ptr_not_equal(a3, a1);
	assert_int_equal(server.stats[SM_RESOURCES_REFUSED], 1);
	assert_int_equal(server.snap->cfg.outbound_policy, OUTBOUND_ALLOW_ANY);

	/* An element that is no object at all is one bad resource like any
	 * other: refused alone, d applies beside it (a review found it refused
	 * the whole file). */
	write_file(path, "{\"resources\":[" WL("a", "CgAAEQ==") "," WL("c", "CgAAAw==") ",7,"
	    WL("d", "CgAABA==") "]}");
	assert_int_equal(server_reload(), 0);
	assert_non_null(running_address("cluster1//Pod/default/d"));
	assert_non_null(running_address("cluster1//Pod/default/a"));
	assert_int_equal(server.stats[SM_RESOURCES_REFUSED], 2);

	/* No file: the empty model. */
	server.config_path = NULL;
	assert_int_equal(server_reload(), 0);
	assert_int_equal(server.stats[SM_RESOURCES_ADDRESS], 0);
	assert_int_equal(model_count(server.snap->model, MRES_ADDRESS), 0);
	unlink(path);
	snapshot_unref(server.snap);
	memset(&server, 0, sizeof(server));
	log_threshold = LL_INFO;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_connection_keeps_its_snapshot),
		cmocka_unit_test(test_1000_swaps_under_traffic),
		cmocka_unit_test(test_server_reload),
		cmocka_unit_test(test_server_reload_resources),
	};
	if (model_register_types() < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
