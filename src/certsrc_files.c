/* certsrc_files: the certificate from Istio's file-mounted layout
 * (cert-chain.pem, key.pem, root-cert.pem in one directory), loaded at start
 * and again whenever the files change, found by a stat of the three every
 * second (inotify misses the atomic ..data symlink swap of a Kubernetes
 * secret volume unless the directory is watched too; a stat follows it). */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "certsrc.h"
#include "identity.h"
#include "log.h"
#include "server.h"

/* A refusal is reported once the files have not changed for settle_s: a
 * writer that replaces key.pem and then cert-chain.pem leaves a moment in
 * which they do not match, and that is no error. */
static double poll_s = 1.0, settle_s = 3.0;
#define FILE_MAX (1u << 20)

enum { F_CHAIN, F_KEY, F_ROOTS, NFILES };
static const char *const fnames[NFILES] = { CERTSRC_CHAIN_FILE, CERTSRC_KEY_FILE, CERTSRC_ROOTS_FILE };

/* What a stat says of the three files; equal signatures: the same bytes
 * (as far as a cheap check can tell). A missing file has ino 0, err set. */
struct sig {
	struct {
		dev_t dev;
		ino_t ino;
		off_t size;
		struct timespec mtime;
		int err;
	} f[NFILES];
};

static struct {
	struct ev_loop *loop;
	ev_timer timer;
	char dir[256];
	char source[128];
	bool started;
	struct sig loaded;		/* the version serving (or first tried) */
	struct sig refused;		/* a version already reported as refused */
	bool have_loaded, have_refused;
	struct sig seen;		/* the latest version seen, since seen_at */
	ev_tstamp seen_at;
	struct certbundle *cur;		/* our reference to the bundle serving */
	bool warned_near, warned_expired;
} fs;

static void
sig_take(struct sig *s)
{
	char path[512];
	struct stat st;

	memset(s, 0, sizeof(*s));
	for (int i = 0; i < NFILES; i++) {
		snprintf(path, sizeof(path), "%s/%s", fs.dir, fnames[i]);
		if (stat(path, &st) < 0) {
			s->f[i].err = errno;
			continue;
		}
		s->f[i].dev = st.st_dev;
		s->f[i].ino = st.st_ino;
		s->f[i].size = st.st_size;
		s->f[i].mtime = st.st_mtim;
	}
}

static bool
sig_eq(const struct sig *a, const struct sig *b)
{
	for (int i = 0; i < NFILES; i++) {
		if (a->f[i].dev != b->f[i].dev || a->f[i].ino != b->f[i].ino || a->f[i].size != b->f[i].size ||
		    a->f[i].mtime.tv_sec != b->f[i].mtime.tv_sec || a->f[i].mtime.tv_nsec != b->f[i].mtime.tv_nsec ||
		    a->f[i].err != b->f[i].err)
			return false;
	}
	return true;
}

/* A regular file's bytes (at most FILE_MAX), without blocking on a FIFO. */
static int
slurp(const char *path, char **out, size_t *len, char *err, size_t errlen)
{
	struct stat st;
	char *buf;
	ssize_t n;
	size_t got = 0;
	int fd, rc;

	*out = NULL;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot open %.300s: %s", path, strerror(-rc));
		return rc;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > (off_t)FILE_MAX) {
		snprintf(err, errlen, "%.300s: not a regular file of at most %u bytes", path, FILE_MAX);
		close(fd);
		return -EINVAL;
	}
	if (!(buf = malloc((size_t)st.st_size + 1))) {
		close(fd);
		snprintf(err, errlen, "%.300s: out of memory", path);
		return -ENOMEM;
	}
	while (got < (size_t)st.st_size && (n = read(fd, buf + got, (size_t)st.st_size - got)) > 0)
		got += (size_t)n;
	close(fd);
	buf[got] = '\0';
	*out = buf;
	*len = got;
	return 0;
}

/* Reads and checks the three files as they are now. 0 with *b, or -errno
 * with err saying which file and why. The signature is taken again after
 * the reads: bytes that changed under us are not a version to judge. */
static int
load(struct sig *s, struct certbundle **b, char *err, size_t errlen)
{
	char *txt[NFILES] = { NULL }, path[512], why[400];
	size_t len[NFILES] = { 0 };
	struct sig after;
	int rc = 0;

	*b = NULL;
	sig_take(s);
	for (int i = 0; i < NFILES && rc == 0; i++) {
		snprintf(path, sizeof(path), "%s/%s", fs.dir, fnames[i]);
		rc = slurp(path, &txt[i], &len[i], err, errlen);
	}
	if (rc == 0) {
		sig_take(&after);
		if (!sig_eq(s, &after)) {
			snprintf(err, errlen, "the files changed while being read");
			*s = after;
			rc = -EAGAIN;
		}
	}
	if (rc == 0 && (rc = certbundle_from_pem(txt[F_CHAIN], len[F_CHAIN], txt[F_KEY], len[F_KEY],
	    txt[F_ROOTS], len[F_ROOTS], fs.source, time(NULL), b, why, sizeof(why))) < 0)
		snprintf(err, errlen, "%s", why);
	for (int i = 0; i < NFILES; i++)
		free(txt[i]);
	return rc;
}

static void
expiry_check(void)
{
	time_t now = time(NULL);
	struct certbundle *b = fs.cur;
	double life, left;

	if (!b)
		return;
	life = difftime(b->not_after, b->not_before);
	left = difftime(b->not_after, now);
	if (left <= 0) {
		if (!fs.warned_expired)
			log_error("certificate %s from %s (serial %s) has EXPIRED; peers will refuse it: replace "
			    "the files in %s", b->identity, b->source, b->serial, fs.dir);
		fs.warned_expired = fs.warned_near = true;
	} else if (left < life * 0.1 || left < 3600) {
		/* Files do not renew themselves: say so while there is time. */
		if (!fs.warned_near)
			log_warn("certificate %s from %s (serial %s) expires in %.0f s; replace the files in %s",
			    b->identity, b->source, b->serial, left, fs.dir);
		fs.warned_near = true;
	}
}

/* A checked bundle: publish it, and keep a reference for the expiry checks. */
static void
install(struct certbundle *b, const struct sig *s)
{
	certbundle_ref(b);
	if (server_set_certs(b) < 0) {	/* logged and counted there */
		certbundle_unref(b);
		fs.refused = *s;
		fs.have_refused = true;
		return;
	}
	/* Not a refusal: with files the certificate is the operator's word
	 * (pilot-agent does not check it either); but peers that expect
	 * identity.trustDomain will refuse it, so say so. */
	if (server.snap && strcmp(b->id.td, server.snap->cfg.trust_domain) != 0)
		log_warn("certificate %s from %s is of trust domain %s, not identity.trustDomain %s "
		    "(TRUST_DOMAIN): peers of %s will refuse it", b->identity, b->source, b->id.td,
		    server.snap->cfg.trust_domain, server.snap->cfg.trust_domain);
	certbundle_unref(fs.cur);
	fs.cur = b;
	fs.loaded = *s;
	fs.have_loaded = true;
	fs.have_refused = false;
	fs.warned_near = fs.warned_expired = false;
	expiry_check();
}

static void
refuse(const struct sig *s, const char *why)
{
	server.stats[SM_CERT_REFUSED]++;
	fs.refused = *s;
	fs.have_refused = true;
	log_error("certificate files in %s refused: %s; %s", fs.dir, why,
	    fs.cur ? "the running certificate serves on" : "no certificate yet (mTLS is refused)");
}

static void
tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct certbundle *b;
	struct sig now;
	char err[512];
	int rc;

	(void)loop, (void)t, (void)revents;
	expiry_check();
	sig_take(&now);
	if ((fs.have_loaded && sig_eq(&now, &fs.loaded)) || (fs.have_refused && sig_eq(&now, &fs.refused)))
		return;
	if (!sig_eq(&now, &fs.seen)) {
		/* Changed since the last look: a writer may be at work. Wait
		 * for a check that finds it as it was. */
		fs.seen = now;
		fs.seen_at = ev_now(fs.loop);
		return;
	}
	if ((rc = load(&now, &b, err, sizeof(err))) == 0) {
		install(b, &now);
		return;
	}
	if (rc == -EAGAIN || !sig_eq(&now, &fs.seen)) {
		fs.seen = now;
		fs.seen_at = ev_now(fs.loop);
		return;
	}
	if (ev_now(fs.loop) - fs.seen_at < settle_s) {
		log_debug("certificate files in %s not loaded yet (%s); retrying while they settle", fs.dir, err);
		return;
	}
	refuse(&now, err);
}

int
certsrc_files_start(struct ev_loop *loop, const char *dir, char *err, size_t errlen)
{
	struct certbundle *b;
	struct sig s;
	char why[512];

	if (strlen(dir) >= sizeof(fs.dir)) {
		snprintf(err, errlen, "certificate directory %.64s...: path too long", dir);
		return -ENAMETOOLONG;
	}
	memset(&fs, 0, sizeof(fs));
	fs.loop = loop;
	snprintf(fs.dir, sizeof(fs.dir), "%s", dir);
	snprintf(fs.source, sizeof(fs.source), "files %s", dir);
	/* At start there is no running certificate to protect and no writer
	 * to wait for: a refusal is reported at once (and retried when the
	 * files change). */
	if (load(&s, &b, why, sizeof(why)) == 0)
		install(b, &s);
	else
		refuse(&s, why);
	fs.seen = s;
	fs.seen_at = ev_now(loop);
	ev_timer_init(&fs.timer, tick_cb, poll_s, poll_s);
	ev_timer_start(loop, &fs.timer);
	fs.started = true;
	return 0;
}

void
certsrc_files_tune(double poll, double settle)
{
	poll_s = poll;
	settle_s = settle;
}

void
certsrc_files_stop(void)
{
	if (!fs.started)
		return;
	ev_timer_stop(fs.loop, &fs.timer);
	certbundle_unref(fs.cur);
	fs.cur = NULL;
	fs.started = false;
}
