/* Unit tests for src/appscrape.c: ISTIO_PROMETHEUS_ANNOTATIONS as pilot-agent
 * reads it, the app response parser (untrusted bytes), the merge of bodies,
 * and one scrape against a loopback server on a real loop. */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "appscrape.h"

static int
parse(const char *json, struct appscrape_cfg *c, char *err)
{
	err[0] = '\0';
	return appscrape_parse_env(json, 15020, c, err, 256);
}

static void
test_env_defaults(void **state)
{
	struct appscrape_cfg c;
	char err[256];

	(void)state;
	/* Unset or empty: nothing to merge. */
	assert_int_equal(parse(NULL, &c, err), 0);
	assert_int_equal(c.ntargets, 0);
	assert_int_equal(parse("", &c, err), 0);
	assert_int_equal(c.ntargets, 0);
	/* The injector's usual value. */
	assert_int_equal(parse("{\"scrape\":\"true\",\"path\":\"/metrics\",\"port\":\"8080\"}", &c, err), 0);
	assert_int_equal(c.ntargets, 1);
	assert_int_equal(c.t[0].port, 8080);
	assert_string_equal(c.t[0].path, "/metrics");
	/* pilot-agent's defaults: port 80, path /metrics; no "scrape" means on. */
	assert_int_equal(parse("{}", &c, err), 0);
	assert_int_equal(c.ntargets, 1);
	assert_int_equal(c.t[0].port, 80);
	assert_string_equal(c.t[0].path, "/metrics");
	assert_int_equal(parse("{\"port\":\"9090\",\"path\":\"\"}", &c, err), 0);
	assert_string_equal(c.t[0].path, "/metrics");
	assert_int_equal(parse("{\"path\":\"/m?x=1\",\"unknown\":1}", &c, err), 0);
	assert_string_equal(c.t[0].path, "/m?x=1");
	/* Only the exact "false" turns it off (pilot-agent compares the string). */
	assert_int_equal(parse("{\"scrape\":\"false\",\"port\":\"8080\"}", &c, err), 0);
	assert_int_equal(c.ntargets, 0);
	assert_int_equal(parse("{\"scrape\":\"False\",\"port\":\"8080\"}", &c, err), 0);
	assert_int_equal(c.ntargets, 1);
	/* Leading zeros name the same port (strconv.Atoi). */
	assert_int_equal(parse("{\"port\":\"08080\"}", &c, err), 0);
	assert_int_equal(c.t[0].port, 8080);
}

static void
test_env_targets(void **state)
{
	struct appscrape_cfg c;
	char err[256];

	(void)state;
	assert_int_equal(parse("{\"port\":\"1\",\"targets\":[{\"port\":\"8080\",\"path\":\"/a\"},"
	    "{\"port\":\"9090\"}]}", &c, err), 0);
	assert_int_equal(c.ntargets, 2);
	assert_int_equal(c.t[0].port, 8080);
	assert_string_equal(c.t[0].path, "/a");
	assert_int_equal(c.t[1].port, 9090);
	assert_string_equal(c.t[1].path, "/metrics");
	/* An empty list: the legacy port/path. */
	assert_int_equal(parse("{\"port\":\"7070\",\"targets\":[]}", &c, err), 0);
	assert_int_equal(c.ntargets, 1);
	assert_int_equal(c.t[0].port, 7070);
}

static void
expect_bad(const char *json, const char *why)
{
	struct appscrape_cfg c;
	char err[256];

	assert_int_equal(parse(json, &c, err), -EINVAL);
	assert_non_null(strstr(err, APPSCRAPE_ENV));
	if (!strstr(err, why))
		fail_msg("%s: \"%s\" lacks \"%s\"", json, err, why);
	assert_int_equal(c.ntargets, 0);
}

static void
test_env_bad(void **state)
{
	(void)state;
	expect_bad("{", "not JSON");
	expect_bad("[]", "expected a JSON object");
	expect_bad("{\"port\":8080}", "port: expected a string");
	expect_bad("{\"scrape\":true}", "scrape: expected a string");
	expect_bad("{\"port\":\"abc\"}", "invalid port");
	expect_bad("{\"port\":\"-1\"}", "invalid port");
	expect_bad("{\"port\":\"0\"}", "invalid port");
	expect_bad("{\"port\":\"65536\"}", "invalid port");
	expect_bad("{\"port\":\"99999999999999\"}", "invalid port");
	/* The status port itself: a scrape would loop. */
	expect_bad("{\"port\":\"15020\"}", "status port itself");
	expect_bad("{\"port\":\"015020\"}", "status port itself");
	/* Istio's reserved ports. */
	expect_bad("{\"port\":\"15090\"}", "reserved");
	expect_bad("{\"port\":\"15000\"}", "reserved");
	expect_bad("{\"port\":\"15008\"}", "reserved");
	expect_bad("{\"path\":\"metrics\"}", "must start with '/'");
	expect_bad("{\"path\":\"/a b\"}", "space or control byte");
	expect_bad("{\"path\":\"/a\\r\\nHost: x\"}", "space or control byte");
	expect_bad("{\"targets\":{}}", "targets: expected a list");
	expect_bad("{\"targets\":[1]}", "expected an object");
	expect_bad("{\"targets\":[{\"port\":\"8080\"},{\"port\":\"x\"}]}", "targets[1].port: invalid port");
	expect_bad("{\"targets\":[{\"path\":\"/m\"}]}", "targets[0].port: invalid port");
	expect_bad("{\"port\":\"80\"} x", "not JSON");
}

/* Feed a response in pieces of step bytes; returns the last feed result. */
static int
feed(struct appscrape_resp *r, const char *s, size_t step)
{
	size_t len = strlen(s);
	int rc = 0;

	for (size_t off = 0; off < len && rc == 0; off += step)
		rc = appscrape_resp_feed(r, s + off, len - off < step ? len - off : step);
	return rc;
}

static void
test_resp_forms(void **state)
{
	static const char *const ok[] = {
		"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\na 1\nb ",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\na \r\n4\r\n1\nb \r\n0\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\na 1\nb ",
	};
	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		for (size_t step = 1; step <= 64; step *= 4) {
			struct appscrape_resp r;
			appscrape_resp_init(&r, 1024);
			assert_int_equal(feed(&r, ok[i], step), 1);
			assert_int_equal(r.status, 200);
			assert_int_equal(r.body.len, 6);
			assert_memory_equal(r.body.p, "a 1\nb ", 6);
			appscrape_resp_free(&r);
		}
	}
}

static void
test_resp_close_delimited_and_cut(void **state)
{
	struct appscrape_resp r;

	(void)state;
	appscrape_resp_init(&r, 1024);
	assert_int_equal(feed(&r, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nx 1\n", 7), 0);
	assert_int_equal(appscrape_resp_eof(&r), 1);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.body.len, 4);
	appscrape_resp_free(&r);
	/* Content-Length not reached: cut short. */
	appscrape_resp_init(&r, 1024);
	assert_int_equal(feed(&r, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nx 1\n", 7), 0);
	assert_int_equal(appscrape_resp_eof(&r), -EPROTO);
	appscrape_resp_free(&r);
	/* Head not complete. */
	appscrape_resp_init(&r, 1024);
	assert_int_equal(feed(&r, "HTTP/1.1 200 OK\r\nContent-", 7), 0);
	assert_int_equal(appscrape_resp_eof(&r), -EPROTO);
	appscrape_resp_free(&r);
	/* Nothing at all. */
	appscrape_resp_init(&r, 1024);
	assert_int_equal(appscrape_resp_eof(&r), -EPROTO);
	appscrape_resp_free(&r);
}

static void
test_resp_bad_and_big(void **state)
{
	struct appscrape_resp r;
	char *big;

	(void)state;
	appscrape_resp_init(&r, 1024);
	assert_int_equal(feed(&r, "NOT HTTP\r\n\r\n", 64), -EPROTO);
	appscrape_resp_free(&r);
	appscrape_resp_init(&r, 1024);
	assert_int_equal(feed(&r, "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", 64), -EPROTO);
	appscrape_resp_free(&r);
	/* A status other than 200 is complete; the caller refuses it. */
	appscrape_resp_init(&r, 1024);
	assert_int_equal(feed(&r, "HTTP/1.1 500 Oops\r\nContent-Length: 2\r\n\r\nno", 64), 1);
	assert_int_equal(r.status, 500);
	appscrape_resp_free(&r);
	/* Body over the cap, announced or chunked. */
	appscrape_resp_init(&r, 8);
	assert_int_equal(feed(&r, "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n123456789", 64), -EMSGSIZE);
	appscrape_resp_free(&r);
	appscrape_resp_init(&r, 8);
	assert_int_equal(feed(&r, "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n12345678", 64), 1);
	appscrape_resp_free(&r);
	appscrape_resp_init(&r, 8);
	assert_int_equal(feed(&r, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n5\r\n67890\r\n", 3),
	    -EMSGSIZE);
	appscrape_resp_free(&r);
	/* Endless headers: bounded by cap + APPSCRAPE_HEAD_MAX of input. */
	big = malloc(APPSCRAPE_HEAD_MAX + 2000);
	assert_non_null(big);
	memset(big, 'a', APPSCRAPE_HEAD_MAX + 1999);
	big[APPSCRAPE_HEAD_MAX + 1999] = '\0';
	memcpy(big, "HTTP/1.1 200 OK\r\nX: ", 20);
	appscrape_resp_init(&r, 8);
	assert_int_equal(feed(&r, big, 4096), -EMSGSIZE);
	appscrape_resp_free(&r);
	free(big);
}

static void
test_append_body(void **state)
{
	struct strbuf sb = { 0 };

	(void)state;
	appscrape_append_body(&sb, "a 1", 3);
	appscrape_append_body(&sb, "b 2\n", 4);
	appscrape_append_body(&sb, "", 0);
	appscrape_append_body(&sb, "c 3\n# EOF\n", 10);
	appscrape_append_body(&sb, "d 4\n# EOF", 9);
	appscrape_append_body(&sb, "# EOF\r\n", 7);
	/* Not the terminator: a comment that ends in "# EOF" text. */
	appscrape_append_body(&sb, "#x # EOF", 8);
	assert_string_equal(sb.p, "a 1\nb 2\nc 3\nd 4\n#x # EOF\n");
	sb_free(&sb);
}

/* --- one scrape on a real loop ----------------------------------------- */

static int done_calls;

static void
on_done(struct appscrape *s, void *arg)
{
	const struct strbuf *b = appscrape_body(s, 0);

	done_calls++;
	if (arg) {
		assert_non_null(b);
		assert_int_equal(b->len, 4);
		assert_memory_equal(b->p, "x 1\n", 4);
	} else {
		assert_null(b);
		assert_true(appscrape_error(s, 0)[0] != '\0');
	}
}

/* A listener on 127.0.0.1 with an ephemeral port. */
static int
listen_lo(uint16_t *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 4), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	*port = ntohs(sa.sin_port);
	return fd;
}

struct srv {
	int lfd, cfd;
	ev_io io, cio;
	const char *answer;
};

/* The request came: answer and close. */
static void
srv_conn_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct srv *s = io->data;
	char buf[2048];
	ssize_t n;

	(void)revents;
	n = recv(s->cfd, buf, sizeof(buf) - 1, 0);
	assert_true(n > 0);
	buf[n] = '\0';
	/* The request is small: one segment on loopback. */
	assert_non_null(strstr(buf, "GET /m HTTP/1.1\r\n"));
	ev_io_stop(loop, &s->cio);
	if (s->answer && strcmp(s->answer, "hang") == 0)
		return;	/* never answers: the scrape's deadline ends it */
	if (s->answer)
		assert_true(send(s->cfd, s->answer, strlen(s->answer), 0) > 0);
	close(s->cfd);
	s->cfd = -1;
}

static void
srv_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct srv *s = io->data;

	(void)revents;
	s->cfd = accept(s->lfd, NULL, NULL);
	assert_true(s->cfd >= 0);
	ev_io_stop(loop, &s->io);
	ev_io_init(&s->cio, srv_conn_cb, s->cfd, EV_READ);
	s->cio.data = s;
	ev_io_start(loop, &s->cio);
}

static void
run_one(const char *answer, double timeout, bool expect_ok)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct appscrape_cfg cfg = { .ntargets = 1 };
	struct srv srv = { .answer = answer, .cfd = -1 };
	struct appscrape *s;
	ev_tstamp t0;

	srv.lfd = listen_lo(&cfg.t[0].port);
	strcpy(cfg.t[0].path, "/m");
	ev_io_init(&srv.io, srv_cb, srv.lfd, EV_READ);
	srv.io.data = &srv;
	ev_io_start(loop, &srv.io);
	done_calls = 0;
	ev_now_update(loop);
	t0 = ev_now(loop);
	s = appscrape_start(loop, &cfg, timeout, "ua", "1", on_done, expect_ok ? (void *)1 : NULL);
	assert_non_null(s);
	/* Never called from appscrape_start. */
	assert_int_equal(done_calls, 0);
	while (!done_calls)
		ev_run(loop, EVRUN_ONCE);
	assert_int_equal(done_calls, 1);
	ev_now_update(loop);
	/* Done by the deadline at the latest (and not long after it). */
	assert_true(ev_now(loop) - t0 < timeout + 1.0);
	ev_io_stop(loop, &srv.io);
	if (srv.cfd >= 0)
		close(srv.cfd);
	close(srv.lfd);
	ev_loop_destroy(loop);
}

static void
test_scrape_loop(void **state)
{
	(void)state;
	run_one("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nx 1\n", 5.0, true);
	run_one("HTTP/1.1 200 OK\r\n\r\nx 1\n", 5.0, true);
	run_one("HTTP/1.1 404 No\r\nContent-Length: 4\r\n\r\nx 1\n", 5.0, false);
	run_one("garbage\r\n\r\n", 5.0, false);
	run_one(NULL, 5.0, false);
	/* The app accepts and never answers: failed at the 0.2 s deadline. */
	run_one("hang", 0.2, false);
}

static void
test_scrape_refused(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct appscrape_cfg cfg = { .ntargets = 1 };
	uint16_t port;
	int fd = listen_lo(&port);

	(void)state;
	close(fd);	/* nothing listens there now */
	cfg.t[0].port = port;
	strcpy(cfg.t[0].path, "/m");
	done_calls = 0;
	assert_non_null(appscrape_start(loop, &cfg, 5.0, NULL, NULL, on_done, NULL));
	assert_int_equal(done_calls, 0);
	while (!done_calls)
		ev_run(loop, EVRUN_ONCE);
	ev_loop_destroy(loop);
}

static void
test_scrape_cancel(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct appscrape_cfg cfg = { .ntargets = 1 };
	uint16_t port;
	int fd = listen_lo(&port);
	struct appscrape *s;

	(void)state;
	cfg.t[0].port = port;
	strcpy(cfg.t[0].path, "/m");
	done_calls = 0;
	s = appscrape_start(loop, &cfg, 5.0, NULL, NULL, on_done, NULL);
	assert_non_null(s);
	ev_run(loop, EVRUN_NOWAIT);
	appscrape_cancel(s);
	ev_run(loop, EVRUN_NOWAIT);
	assert_int_equal(done_calls, 0);
	close(fd);
	ev_loop_destroy(loop);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_env_defaults),
		cmocka_unit_test(test_env_targets),
		cmocka_unit_test(test_env_bad),
		cmocka_unit_test(test_resp_forms),
		cmocka_unit_test(test_resp_close_delimited_and_cut),
		cmocka_unit_test(test_resp_bad_and_big),
		cmocka_unit_test(test_append_body),
		cmocka_unit_test(test_scrape_loop),
		cmocka_unit_test(test_scrape_refused),
		cmocka_unit_test(test_scrape_cancel),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
