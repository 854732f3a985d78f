/* xds_state: the last acknowledged xDS state on disk (xds_state.h). The
 * file is one outrigger.XdsState message (src/proto/outrigger/
 * xds_state.proto); each TypeState is wire-compatible with a
 * DeltaDiscoveryResponse, so loading runs it through xds_decode_delta and
 * xds_store_apply: an entry is validated exactly as a response's resource. */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pb.h"
#include "xds_state.h"
#include "outrigger/xds_state.pb-c.h"
#include "google/protobuf/any.pb-c.h"

#define STATE_FORMAT 1
/* Larger than any state a mesh makes (ztunnel's limit for one response is
 * 200 MiB); a file above it is not ours. */
#define STATE_MAX (1024u << 20)
#define TYPE_PREFIX "type.googleapis.com/"

/* ---- Saving ---- */

struct collect {
	Envoy__Service__Discovery__V3__Resource **res;
	Google__Protobuf__Any *any;
	Envoy__Service__Discovery__V3__Resource *rs;
	size_t n, cap;
	bool oom;
};

static void
collect_cb(void *ud, const struct mres *r, const char *const *aliases, size_t naliases)
{
	struct collect *c = ud;
	Envoy__Service__Discovery__V3__Resource *x;
	Google__Protobuf__Any *a;
	size_t len;

	if (c->oom || c->n >= c->cap)
		return;
	x = &c->rs[c->n];
	a = &c->any[c->n];
	envoy__service__discovery__v3__resource__init(x);
	google__protobuf__any__init(a);
	len = protobuf_c_message_get_packed_size(r->msg);
	if (!(a->value.data = malloc(len ? len : 1))) {
		c->oom = true;
		return;
	}
	a->value.len = protobuf_c_message_pack(r->msg, a->value.data);
	/* type_url: set by the caller (one per type). */
	x->resource = a;
	x->name = r->name;
	x->version = r->version;
	x->aliases = (char **)aliases;
	x->n_aliases = naliases;
	c->res[c->n++] = x;
}

/* write(2) until done. */
static int
write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* fsync of path's directory, so the rename is on disk. */
static int
sync_dir(const char *path)
{
	char *copy = strdup(path);
	int fd, rc = 0;

	if (!copy)
		return -ENOMEM;
	if ((fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		rc = -errno;
	else {
		if (fsync(fd) < 0)
			rc = -errno;
		close(fd);
	}
	free(copy);
	return rc;
}

int
xds_state_save(const char *path, const struct xds_store *s, char *err, size_t errlen)
{
	Outrigger__XdsState st = OUTRIGGER__XDS_STATE__INIT;
	Outrigger__TypeState ts[MRES__COUNT], *tsp[MRES__COUNT];
	struct collect c[MRES__COUNT];
	char *tmp = NULL, url[MRES__COUNT][160];
	uint8_t *buf = NULL;
	size_t len;
	int fd = -1, rc = -ENOMEM;

	memset(c, 0, sizeof(c));
	if (errlen)
		err[0] = '\0';
	for (int t = 0; t < MRES__COUNT; t++) {
		size_t n = xds_store_count(s, (enum mres_type)t);

		outrigger__type_state__init(&ts[t]);
		snprintf(url[t], sizeof(url[t]), TYPE_PREFIX "%s", mres_type_names[t]);
		ts[t].type_url = url[t];
		ts[t].version = (char *)xds_store_version(s, (enum mres_type)t);
		c[t].cap = n;
		if (n && (!(c[t].res = calloc(n, sizeof(*c[t].res))) || !(c[t].any = calloc(n, sizeof(*c[t].any))) ||
		    !(c[t].rs = calloc(n, sizeof(*c[t].rs)))))
			goto oom;
		xds_store_each(s, (enum mres_type)t, collect_cb, &c[t]);
		if (c[t].oom)
			goto oom;
		for (size_t i = 0; i < c[t].n; i++)
			c[t].any[i].type_url = url[t];
		ts[t].resources = c[t].res;
		ts[t].n_resources = c[t].n;
		tsp[st.n_types++] = &ts[t];
	}
	st.types = tsp;
	st.saved_unix = (int64_t)time(NULL);
	st.format_version = STATE_FORMAT;
	len = outrigger__xds_state__get_packed_size(&st);
	if (!(buf = malloc(len ? len : 1)))
		goto oom;
	outrigger__xds_state__pack(&st, buf);
	/* Beside it, so that the rename stays on one file system. */
	if (!(tmp = malloc(strlen(path) + 5)))
		goto oom;
	sprintf(tmp, "%s.tmp", path);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", tmp, strerror(-rc));
		goto out;
	}
	if ((rc = write_all(fd, buf, len)) < 0 || (fsync(fd) < 0 && (rc = -errno))) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(-rc));
		goto fail;
	}
	if (close(fd) < 0) {
		fd = -1;
		rc = -errno;
		snprintf(err, errlen, "%s: %s", tmp, strerror(-rc));
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		rc = -errno;
		snprintf(err, errlen, "rename %s to %s: %s", tmp, path, strerror(-rc));
		goto fail;
	}
	/* The new file is in place: a failed directory sync only means the
	 * rename may not survive a crash (the old file or the new one, whole
	 * either way), so it is said but not a failure. */
	if ((rc = sync_dir(path)) < 0)
		snprintf(err, errlen, "fsync of %s's directory: %s", path, strerror(-rc));
	rc = 0;
	goto out;
oom:
	snprintf(err, errlen, "out of memory");
	rc = -ENOMEM;
	goto out;
fail:
	if (fd >= 0)
		close(fd);
	fd = -1;
	unlink(tmp);
out:
	if (fd >= 0)
		close(fd);
	for (int t = 0; t < MRES__COUNT; t++) {
		for (size_t i = 0; i < c[t].n; i++)
			free(c[t].any[i].value.data);
		free(c[t].res);
		free(c[t].any);
		free(c[t].rs);
	}
	free(buf);
	free(tmp);
	return rc;
}

/* ---- Loading ---- */

static int
read_file(const char *path, uint8_t **out, size_t *len, char *err, size_t errlen)
{
	struct stat sb;
	uint8_t *buf = NULL;
	size_t got = 0;
	int fd, rc;

	/* O_NONBLOCK: a FIFO there would block open(2) until a writer came. */
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(-rc));
		return rc;
	}
	if (fstat(fd, &sb) < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(-rc));
		goto fail;
	}
	if (!S_ISREG(sb.st_mode) || (uint64_t)sb.st_size > STATE_MAX) {
		snprintf(err, errlen, "%s: not a state file (%s)", path,
		    !S_ISREG(sb.st_mode) ? "not a regular file" : "over 1 GiB");
		rc = -EINVAL;
		goto fail;
	}
	if (!(buf = malloc(sb.st_size ? (size_t)sb.st_size : 1))) {
		snprintf(err, errlen, "out of memory");
		rc = -ENOMEM;
		goto fail;
	}
	while (got < (size_t)sb.st_size) {
		ssize_t r = read(fd, buf + got, (size_t)sb.st_size - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = -errno;
			snprintf(err, errlen, "%s: %s", path, strerror(-rc));
			goto fail;
		}
		if (r == 0)
			break;	/* shrank under us: what we have is checked */
		got += (size_t)r;
	}
	close(fd);
	*out = buf;
	*len = got;
	return 0;
fail:
	close(fd);
	free(buf);
	return rc;
}

int
xds_state_load(const char *path, struct xds_store *s, size_t *skipped, char *err, size_t errlen)
{
	Outrigger__XdsState *st = NULL;
	uint8_t *file = NULL, *tb = NULL;
	size_t len = 0, tbcap = 0;
	int rc;

	*skipped = 0;
	if (errlen)
		err[0] = '\0';
	if ((rc = read_file(path, &file, &len, err, errlen)) < 0)
		return rc;
	/* The file is ours and bounded; the resources' decode is bounded by
	 * xds_decode_delta as a response's is. */
	if (pb_depth_ok(&outrigger__xds_state__descriptor, file, len, PB_MAX_DEPTH) < 0 ||
	    !(st = outrigger__xds_state__unpack(NULL, len, file))) {
		snprintf(err, errlen, "%s: not a state file (%zu bytes that do not decode)", path, len);
		rc = -EINVAL;
		goto out;
	}
	if (st->format_version != STATE_FORMAT) {
		if (st->format_version)
			snprintf(err, errlen, "%s: state file format %u, not %u", path, st->format_version,
			    STATE_FORMAT);
		else
			snprintf(err, errlen, "%s: not a whole state file (no format_version: truncated?)", path);
		rc = -EINVAL;
		goto out;
	}
	for (size_t i = 0; i < st->n_types; i++) {
		const Outrigger__TypeState *ts = st->types[i];
		struct xds_update u;
		struct xds_result r;
		enum mres_type type;
		char why[256];
		size_t n = outrigger__type_state__get_packed_size(ts);

		if (n > tbcap) {
			void *nb = realloc(tb, n);

			if (!nb) {
				rc = -ENOMEM;
				goto oom;
			}
			tb = nb;
			tbcap = n;
		}
		outrigger__type_state__pack(ts, tb);
		/* A TypeState is a DeltaDiscoveryResponse (same numbers). */
		if ((rc = xds_decode_delta(tb, n, &u, why, sizeof(why))) < 0) {
			xds_update_free(&u);
			if (rc == -ENOMEM)
				goto oom;
			*skipped += ts->n_resources;	/* a type we do not take */
			continue;
		}
		type = u.type;
		rc = xds_store_apply(s, &u, NULL, &r);
		xds_update_free(&u);
		if (rc < 0)
			goto oom;
		*skipped += r.refused;
		xds_result_free(&r);
		/* Also when an entry was refused: the version the server gave. */
		if ((rc = xds_store_set_version(s, type, ts->version)) < 0)
			goto oom;
	}
	rc = 0;
	goto out;
oom:
	snprintf(err, errlen, "out of memory");
out:
	outrigger__xds_state__free_unpacked(st, NULL);
	free(file);
	free(tb);
	return rc;
}
