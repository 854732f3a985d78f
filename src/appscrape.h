/* appscrape: the app's own metrics for the merged endpoint on 15020
 * (pilot-agent's "metrics merge"): the scrape configuration the injector
 * passes in ISTIO_PROMETHEUS_ANNOTATIONS, a non-blocking HTTP/1.1 GET of each
 * target on 127.0.0.1 run on the control loop with a deadline, and the
 * response parser (llhttp), which is pure and fuzzed: the app's answer is
 * untrusted input. */
#ifndef OR_APPSCRAPE_H
#define OR_APPSCRAPE_H

#include <ev.h>
#include <llhttp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "strbuf.h"

/* The environment variable the injector sets on the sidecar with the pod's
 * prometheus.io/{scrape,port,path} annotations (and prometheus.istio.io/
 * scrape-targets as "targets"), pilot-agent's PrometheusScrapingConfig. */
#define APPSCRAPE_ENV "ISTIO_PROMETHEUS_ANNOTATIONS"
/* pilot-agent's defaultMaxAppMetricsBodyBytes: a larger body is dropped
 * whole (a cut one would end in half a line) and counted as a failure. */
#define APPSCRAPE_BODY_MAX (10u * 1024 * 1024)
/* All targets' bodies together, merged: each waiting 15020 request gets a
 * copy, so this bounds the memory of a scrape (targets past it are dropped
 * and counted as failures). */
#define APPSCRAPE_MERGED_MAX (16u * 1024 * 1024)
/* Status line and headers on top of the body cap. */
#define APPSCRAPE_HEAD_MAX (64u * 1024)
#define APPSCRAPE_MAX_TARGETS 16
#define APPSCRAPE_PATH_MAX 512

struct appscrape_target {
	uint16_t port;
	char path[APPSCRAPE_PATH_MAX];	/* starts with '/', no space or control byte */
};

/* What to scrape: no targets = only our own metrics on 15020. */
struct appscrape_cfg {
	unsigned ntargets;
	struct appscrape_target t[APPSCRAPE_MAX_TARGETS];
};

/* Parse the variable's value as pilot-agent does: a JSON object of strings,
 * {"scrape","path","port"} and optionally "targets": [{"port","path"}]
 * (unknown keys ignored). "scrape": "false" turns merging off (anything else,
 * or no "scrape", leaves it on); with no "targets" the one target is "port"
 * (default "80") and "path" (default "/metrics"); a target's empty path is
 * "/metrics". A port that is not 1..65535, is status_port, or is one of
 * Istio's reserved ports (15000, 15001, 15004, 15006, 15008, 15020, 15021,
 * 15053, 15090) is refused, as pilot-agent refuses to start with it; so is a
 * path not starting with '/' or holding a space or a control byte (it would
 * not make a request line). json NULL or "": *out has no targets. Returns 0,
 * or -EINVAL with err naming the key. */
int appscrape_parse_env(const char *json, unsigned status_port, struct appscrape_cfg *out,
    char *err, size_t errlen);

/* One app response being parsed: status, then the body up to a cap. */
struct appscrape_resp {
	llhttp_t p;
	llhttp_settings_t s;
	struct strbuf body;
	size_t cap;		/* body bytes kept at most */
	size_t seen;		/* every byte fed, head included */
	int status;		/* the final (non-1xx) status, 0 before it */
	bool complete;		/* the whole final response was read */
	bool too_big;
};

/* Start parsing a response to a GET with a body of at most cap bytes. */
void appscrape_resp_init(struct appscrape_resp *r, size_t cap);
/* Feed bytes read from the app. Returns 1 when the response is complete (a
 * Content-Length or chunked body read whole; the rest of buf is ignored), 0
 * when more is needed, -EMSGSIZE past the cap (body over cap, or head and
 * body over cap + APPSCRAPE_HEAD_MAX), -EPROTO for a malformed response. */
int appscrape_resp_feed(struct appscrape_resp *r, const char *buf, size_t len);
/* The app closed the connection: 1 when that ends the response (a body
 * delimited by the close), else -EPROTO (cut short). */
int appscrape_resp_eof(struct appscrape_resp *r);
void appscrape_resp_free(struct appscrape_resp *r);

/* Append an app's body to out as pilot-agent merges it: a trailing
 * OpenMetrics "# EOF" line removed, and a newline added if the body does not
 * end with one, so the next family never starts mid-line. */
void appscrape_append_body(struct strbuf *out, const char *body, size_t len);

/* One scrape of every target at once, on the control loop. */
struct appscrape;

/* Called once, from the loop (never from appscrape_start), when every
 * target answered or failed or the deadline passed. The scrape is freed
 * after it returns. */
typedef void appscrape_done_fn(struct appscrape *s, void *arg);

/* Start GET <path> on 127.0.0.1:<port> for each target of cfg (copied),
 * with User-Agent and X-Prometheus-Scrape-Timeout-Seconds forwarded when
 * given (NULL: none) as pilot-agent does, and a deadline of timeout seconds
 * for all of them. NULL on out of memory. */
struct appscrape *appscrape_start(struct ev_loop *loop, const struct appscrape_cfg *cfg, double timeout,
    const char *user_agent, const char *timeout_hdr, appscrape_done_fn *done, void *arg);
/* Stop and free a scrape whose done has not run (done is then never called). */
void appscrape_cancel(struct appscrape *s);
/* In done: the number of targets, and target i's body (NULL when it failed:
 * refused, timed out, not 200, malformed, too big). */
unsigned appscrape_ntargets(const struct appscrape *s);
const struct strbuf *appscrape_body(const struct appscrape *s, unsigned i);
/* In done: why target i failed ("" when it did not), for the log. */
const char *appscrape_error(const struct appscrape *s, unsigned i);

#endif
