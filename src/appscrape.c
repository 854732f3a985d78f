/* appscrape: the app's own metrics for the merged endpoint on 15020
 * (pilot-agent's metrics merge): ISTIO_PROMETHEUS_ANNOTATIONS, the
 * non-blocking scrape of each target on the control loop, and the bounded
 * response parser. */
#include "autoconfig.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "appscrape.h"
#include "json.h"
#include "sock.h"

/* pilot-agent's istioReservedPorts: the data plane's own ports, never an
 * app's metrics (15020 would scrape itself; 15090 is Envoy's, merged already). */
static const unsigned reserved_ports[] = { 15000, 15001, 15004, 15006, 15008, 15020, 15021, 15053, 15090 };

/* A JSON member that must be a string when present (pilot-agent's struct has
 * string fields: a number there fails its json.Unmarshal). */
static int
member_str(const cJSON *obj, const char *key, const char *where, const char **out, char *err, size_t errlen)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

	*out = NULL;
	if (!v || cJSON_IsNull(v))
		return 0;
	if (!cJSON_IsString(v)) {
		snprintf(err, errlen, "%s: %s%s: expected a string", APPSCRAPE_ENV, where, key);
		return -EINVAL;
	}
	*out = v->valuestring;
	return 0;
}

/* One target: port (decimal, as strconv.Atoi reads it: leading zeros name
 * the same port, so "015020" is 15020 and refused like it) and path. */
static int
add_target(struct appscrape_cfg *out, const char *port, const char *path, unsigned status_port,
    const char *where, char *err, size_t errlen)
{
	struct appscrape_target *t;
	unsigned long n = 0;

	if (out->ntargets >= APPSCRAPE_MAX_TARGETS) {
		snprintf(err, errlen, "%s: more than %u targets", APPSCRAPE_ENV, APPSCRAPE_MAX_TARGETS);
		return -EINVAL;
	}
	if (!port || !*port || strlen(port) > 10) {
		snprintf(err, errlen, "%s: %sport: invalid port \"%.16s\"", APPSCRAPE_ENV, where, port ? port : "");
		return -EINVAL;
	}
	for (const char *p = port; *p; p++) {
		if (*p < '0' || *p > '9') {
			snprintf(err, errlen, "%s: %sport: invalid port \"%.16s\"", APPSCRAPE_ENV, where, port);
			return -EINVAL;
		}
		n = n * 10 + (unsigned long)(*p - '0');
	}
	if (n < 1 || n > 65535) {
		snprintf(err, errlen, "%s: %sport: invalid port \"%.16s\"", APPSCRAPE_ENV, where, port);
		return -EINVAL;
	}
	if (n == status_port) {
		snprintf(err, errlen, "%s: %sport: %lu is the status port itself (a scrape would loop)",
		    APPSCRAPE_ENV, where, n);
		return -EINVAL;
	}
	for (size_t i = 0; i < sizeof(reserved_ports) / sizeof(reserved_ports[0]); i++) {
		if (n == reserved_ports[i]) {
			snprintf(err, errlen, "%s: %sport: %lu is reserved for the proxy", APPSCRAPE_ENV, where, n);
			return -EINVAL;
		}
	}
	if (!path || !*path)
		path = "/metrics";
	if (path[0] != '/' || strlen(path) >= APPSCRAPE_PATH_MAX) {
		snprintf(err, errlen, "%s: %spath: must start with '/' and be shorter than %u bytes",
		    APPSCRAPE_ENV, where, APPSCRAPE_PATH_MAX);
		return -EINVAL;
	}
	for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
		if (*p <= ' ' || *p == 0x7f) {
			snprintf(err, errlen, "%s: %spath: a space or control byte", APPSCRAPE_ENV, where);
			return -EINVAL;
		}
	}
	t = &out->t[out->ntargets++];
	t->port = (uint16_t)n;
	snprintf(t->path, sizeof(t->path), "%s", path);
	return 0;
}

int
appscrape_parse_env(const char *json, unsigned status_port, struct appscrape_cfg *out, char *err, size_t errlen)
{
	const char *scrape, *port, *path;
	const cJSON *targets;
	cJSON *root;
	char jerr[160];
	int rc = -EINVAL;

	memset(out, 0, sizeof(*out));
	if (!json || !*json)
		return 0;
	if (!(root = json_parse_strict(json, strlen(json), jerr, sizeof(jerr)))) {
		snprintf(err, errlen, "%s: not JSON (%s)", APPSCRAPE_ENV, jerr);
		return -EINVAL;
	}
	if (!cJSON_IsObject(root)) {
		snprintf(err, errlen, "%s: expected a JSON object", APPSCRAPE_ENV);
		goto out;
	}
	if (member_str(root, "scrape", "", &scrape, err, errlen) < 0 ||
	    member_str(root, "port", "", &port, err, errlen) < 0 ||
	    member_str(root, "path", "", &path, err, errlen) < 0)
		goto out;
	targets = cJSON_GetObjectItemCaseSensitive(root, "targets");
	if (targets && !cJSON_IsNull(targets) && !cJSON_IsArray(targets)) {
		snprintf(err, errlen, "%s: targets: expected a list", APPSCRAPE_ENV);
		goto out;
	}
	/* pilot-agent: only the exact string "false" turns merging off. */
	if (scrape && strcmp(scrape, "false") == 0) {
		rc = 0;
		goto out;
	}
	if (targets && cJSON_GetArraySize(targets) > 0) {
		const cJSON *t;
		unsigned i = 0;
		char where[32];

		cJSON_ArrayForEach(t, targets) {
			const char *tp, *tpath;

			snprintf(where, sizeof(where), "targets[%u].", i++);
			if (!cJSON_IsObject(t)) {
				snprintf(err, errlen, "%s: %s: expected an object", APPSCRAPE_ENV, where);
				goto out;
			}
			if (member_str(t, "port", where, &tp, err, errlen) < 0 ||
			    member_str(t, "path", where, &tpath, err, errlen) < 0 ||
			    add_target(out, tp, tpath, status_port, where, err, errlen) < 0)
				goto out;
		}
	} else if (add_target(out, port && *port ? port : "80", path, status_port, "", err, errlen) < 0) {
		goto out;
	}
	rc = 0;
out:
	if (rc < 0)
		memset(out, 0, sizeof(*out));
	cJSON_Delete(root);
	return rc;
}

/* --- the response parser ---------------------------------------------- */

static int
on_body(llhttp_t *p, const char *at, size_t len)
{
	struct appscrape_resp *r = p->data;

	if (r->body.len + len > r->cap) {
		r->too_big = true;
		return -1;
	}
	sb_append(&r->body, at, len);
	return r->body.oom ? -1 : 0;
}

static int
on_message_complete(llhttp_t *p)
{
	struct appscrape_resp *r = p->data;
	int code = llhttp_get_status_code(p);

	/* RFC 9110 §15.2: 1xx responses are interim; the final one follows. */
	if (code >= 100 && code < 200 && code != 101) {
		sb_free(&r->body);
		return 0;
	}
	r->status = code;
	r->complete = true;
	return HPE_PAUSED;
}

void
appscrape_resp_init(struct appscrape_resp *r, size_t cap)
{
	memset(r, 0, sizeof(*r));
	llhttp_settings_init(&r->s);
	r->s.on_body = on_body;
	r->s.on_message_complete = on_message_complete;
	llhttp_init(&r->p, HTTP_RESPONSE, &r->s);
	r->p.data = r;
	r->cap = cap;
}

int
appscrape_resp_feed(struct appscrape_resp *r, const char *buf, size_t len)
{
	llhttp_errno_t e;

	if (r->complete)
		return 1;
	if (r->too_big)
		return -EMSGSIZE;
	r->seen += len;
	if (r->seen > r->cap + APPSCRAPE_HEAD_MAX) {
		r->too_big = true;
		return -EMSGSIZE;
	}
	e = llhttp_execute(&r->p, buf, len);
	if (r->complete)
		return 1;
	if (e == HPE_OK)
		return 0;
	return r->too_big ? -EMSGSIZE : -EPROTO;
}

int
appscrape_resp_eof(struct appscrape_resp *r)
{
	if (r->complete)
		return 1;
	if (r->too_big)
		return -EMSGSIZE;
	/* A close-delimited body (no Content-Length, not chunked) ends here. */
	if (llhttp_finish(&r->p) == HPE_OK && r->complete)
		return 1;
	return r->complete ? 1 : -EPROTO;
}

void
appscrape_resp_free(struct appscrape_resp *r)
{
	sb_free(&r->body);
}

void
appscrape_append_body(struct strbuf *out, const char *body, size_t len)
{
	size_t n = len;

	/* OpenMetrics ends with "# EOF" (and optional whitespace): it would
	 * end the whole exposition early, so it goes (pilot-agent strips it). */
	while (n && (body[n - 1] == ' ' || body[n - 1] == '\t' || body[n - 1] == '\r' || body[n - 1] == '\n'))
		n--;
	if (n >= 5 && memcmp(body + n - 5, "# EOF", 5) == 0 && (n == 5 || body[n - 6] == '\n'))
		len = n - 5;
	if (!len)
		return;
	sb_append(out, body, len);
	if (body[len - 1] != '\n')
		sb_append(out, "\n", 1);
}

/* --- the scrape on the loop ------------------------------------------- */

enum tgt_state { TGT_CONNECTING, TGT_SENDING, TGT_READING, TGT_DONE };

struct tgt {
	struct appscrape *s;
	int fd;
	enum tgt_state state;
	ev_io io;
	struct strbuf req;
	size_t reqoff;
	struct appscrape_resp resp;
	uint16_t port;
	bool v6;		/* connecting to [::1]: 127.0.0.1 refused */
	bool ok;
	char error[96];
};

struct appscrape {
	struct ev_loop *loop;
	ev_timer timer;		/* the deadline; also the deferred completion */
	unsigned n, pending;
	appscrape_done_fn *done;
	void *arg;
	struct tgt t[];
};

static void
tgt_finish(struct tgt *t, bool ok, const char *why)
{
	struct appscrape *s = t->s;

	if (t->state == TGT_DONE)
		return;
	if (t->fd >= 0) {
		ev_io_stop(s->loop, &t->io);
		close(t->fd);
		t->fd = -1;
	}
	t->state = TGT_DONE;
	t->ok = ok;
	if (why)
		snprintf(t->error, sizeof(t->error), "%s", why);
	if (!ok)
		appscrape_resp_free(&t->resp);
	sb_free(&t->req);
	if (--s->pending == 0) {
		/* Always through the loop: the caller of appscrape_start must
		 * never see done before it returns. */
		ev_timer_stop(s->loop, &s->timer);
		ev_timer_set(&s->timer, 0., 0.);
		ev_timer_start(s->loop, &s->timer);
	}
}

static void
tgt_arm(struct tgt *t, int events)
{
	ev_io_stop(t->s->loop, &t->io);
	ev_io_set(&t->io, t->fd, events);
	ev_io_start(t->s->loop, &t->io);
}

static void
tgt_read(struct tgt *t)
{
	char buf[16384];

	for (int i = 0; i < 64; i++) {
		ssize_t n = recv(t->fd, buf, sizeof(buf), 0);
		int rc;

		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			tgt_finish(t, false, strerror(errno));
			return;
		}
		rc = n == 0 ? appscrape_resp_eof(&t->resp) : appscrape_resp_feed(&t->resp, buf, (size_t)n);
		if (rc == 1) {
			if (t->resp.status != 200) {
				char why[48];
				snprintf(why, sizeof(why), "status %d", t->resp.status);
				tgt_finish(t, false, why);
			} else {
				tgt_finish(t, true, NULL);
			}
			return;
		}
		if (rc == -EMSGSIZE) {
			tgt_finish(t, false, "response larger than 10 MiB");
			return;
		}
		if (rc < 0) {
			tgt_finish(t, false, n == 0 ? "connection closed before the whole response" :
			    "malformed HTTP response");
			return;
		}
	}
}

/* Connect to the app: pilot-agent dials "localhost", which Go tries as
 * 127.0.0.1 and then ::1; so do we, when 127.0.0.1 refuses (an app on
 * [::1] only, an IPv6-only pod). Returns 0 (in progress) or -errno. */
static int
tgt_connect(struct tgt *t)
{
	struct sockaddr_storage sa;
	int fd;

	if (t->fd >= 0) {
		ev_io_stop(t->s->loop, &t->io);
		close(t->fd);
		t->fd = -1;
	}
	if (sock_addr_parse(t->v6 ? "::1" : "127.0.0.1", t->port, &sa) < 0)
		return -EINVAL;
	if ((fd = sock_connect(&sa, NULL, false, 0)) < 0)
		return fd;
	t->fd = fd;
	t->state = TGT_CONNECTING;
	tgt_arm(t, EV_WRITE);
	return 0;
}

/* A connect failed: ::1 next, if not tried yet. Returns true when retrying. */
static bool
tgt_retry_v6(struct tgt *t, int err)
{
	if (t->v6 || (err != -ECONNREFUSED && err != -ENETUNREACH && err != -EADDRNOTAVAIL))
		return false;
	t->v6 = true;
	return tgt_connect(t) == 0;
}

static void
tgt_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct tgt *t = io->data;
	int rc;

	(void)loop;
	(void)revents;
	if (t->state == TGT_CONNECTING) {
		if ((rc = sock_error(t->fd)) < 0) {
			if (!tgt_retry_v6(t, rc))
				tgt_finish(t, false, strerror(-rc));
			return;
		}
		t->state = TGT_SENDING;
	}
	if (t->state == TGT_SENDING) {
		while (t->reqoff < t->req.len) {
			ssize_t n = send(t->fd, t->req.p + t->reqoff, t->req.len - t->reqoff, MSG_NOSIGNAL);
			if (n < 0) {
				if (errno == EAGAIN || errno == EINTR) {
					tgt_arm(t, EV_WRITE);
					return;
				}
				tgt_finish(t, false, strerror(errno));
				return;
			}
			t->reqoff += (size_t)n;
		}
		t->state = TGT_READING;
		tgt_arm(t, EV_READ);
		return;
	}
	tgt_read(t);
}

static void
timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct appscrape *s = w->data;

	(void)loop;
	(void)revents;
	for (unsigned i = 0; i < s->n; i++)
		tgt_finish(&s->t[i], false, "timed out");
	/* tgt_finish re-armed the timer at 0 when the last one finished here. */
	ev_timer_stop(s->loop, &s->timer);
	s->done(s, s->arg);
	appscrape_cancel(s);
}

struct appscrape *
appscrape_start(struct ev_loop *loop, const struct appscrape_cfg *cfg, double timeout, const char *user_agent,
    const char *timeout_hdr, appscrape_done_fn *done, void *arg)
{
	struct appscrape *s = calloc(1, sizeof(*s) + cfg->ntargets * sizeof(struct tgt));

	if (!s)
		return NULL;
	s->loop = loop;
	s->n = s->pending = cfg->ntargets;
	s->done = done;
	s->arg = arg;
	ev_timer_init(&s->timer, timer_cb, timeout > 0 ? timeout : 0., 0.);
	s->timer.data = s;
	ev_timer_start(loop, &s->timer);
	for (unsigned i = 0; i < cfg->ntargets; i++) {
		struct tgt *t = &s->t[i];
		int rc;

		t->s = s;
		t->fd = -1;
		t->port = cfg->t[i].port;
		appscrape_resp_init(&t->resp, APPSCRAPE_BODY_MAX);
		ev_init(&t->io, tgt_io_cb);
		t->io.data = t;
		/* pilot-agent asks http://localhost:<port><path> (tgt_connect).
		 * One format out of
		 * 15020: ours is the text format, so the app is asked for it
		 * first (an OpenMetrics answer still merges, its "# EOF" removed). */
		sb_printf(&t->req, "GET %s HTTP/1.1\r\nHost: localhost:%u\r\nUser-Agent: %s\r\n"
		    "Accept: text/plain;version=0.0.4;q=1,*/*;q=0.1\r\n", cfg->t[i].path, cfg->t[i].port,
		    user_agent && *user_agent ? user_agent : "outrigger");
		if (timeout_hdr && *timeout_hdr)
			sb_printf(&t->req, "X-Prometheus-Scrape-Timeout-Seconds: %s\r\n", timeout_hdr);
		sb_printf(&t->req, "Connection: close\r\n\r\n");
		if (t->req.oom) {
			tgt_finish(t, false, "out of memory");
			continue;
		}
		if ((rc = tgt_connect(t)) < 0 && !tgt_retry_v6(t, rc))
			tgt_finish(t, false, strerror(-rc));
	}
	return s;
}

void
appscrape_cancel(struct appscrape *s)
{
	if (!s)
		return;
	ev_timer_stop(s->loop, &s->timer);
	for (unsigned i = 0; i < s->n; i++) {
		struct tgt *t = &s->t[i];
		if (t->fd >= 0) {
			ev_io_stop(s->loop, &t->io);
			close(t->fd);
		}
		sb_free(&t->req);
		appscrape_resp_free(&t->resp);
	}
	free(s);
}

unsigned
appscrape_ntargets(const struct appscrape *s)
{
	return s->n;
}

const struct strbuf *
appscrape_body(const struct appscrape *s, unsigned i)
{
	return i < s->n && s->t[i].ok ? &s->t[i].resp.body : NULL;
}

const char *
appscrape_error(const struct appscrape *s, unsigned i)
{
	return i < s->n ? s->t[i].error : "";
}
