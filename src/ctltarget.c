/* ctltarget: the address, server name and files of a control-plane
 * connection (ctltarget.h). */
#include "autoconfig.h"

#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "ctltarget.h"
#include "grpc.h"

int
ctl_target_parse(const char *url, struct ctl_target *t)
{
	const char *a = url, *san = getenv("ISTIOD_SAN");
	uint16_t port;
	bool is_unix;

	memset(t, 0, sizeof(*t));
	/* "http://" is for tests only: plaintext (the token goes in clear).
	 * "https://" or nothing: TLS. */
	if (!strncmp(a, "http://", 7)) {
		t->plaintext = true;
		a += 7;
	} else if (!strncmp(a, "https://", 8)) {
		a += 8;
	}
	if ((size_t)snprintf(t->addr, sizeof(t->addr), "%s", a) >= sizeof(t->addr) ||
	    grpc_addr_parse(t->addr, t->host, sizeof(t->host), &port, &is_unix) < 0 || is_unix)
		return -EINVAL;
	if (san && *san)
		snprintf(t->verify_name, sizeof(t->verify_name), "%s", san);
	else if (strstr(t->addr, "localhost"))
		snprintf(t->verify_name, sizeof(t->verify_name), "istiod.istio-system.svc");
	else
		snprintf(t->verify_name, sizeof(t->verify_name), "%s", t->host);
	return 0;
}

int
ctl_read_file(const char *path, char **out, size_t *len)
{
	struct stat st;
	char *buf = NULL;
	size_t n = 0;
	ssize_t r;
	int fd, rc = 0;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > CTL_FILE_MAX) {
		rc = S_ISREG(st.st_mode) ? -EFBIG : -EINVAL;
		goto out;
	}
	if (!(buf = malloc((size_t)st.st_size + 1))) {
		rc = -ENOMEM;
		goto out;
	}
	while (n < (size_t)st.st_size && (r = read(fd, buf + n, (size_t)st.st_size - n)) > 0)
		n += (size_t)r;
	buf[n] = '\0';
	*out = buf;
	*len = n;
	buf = NULL;
out:
	free(buf);
	close(fd);
	return rc;
}

int
ctl_read_token(const char *path, char **tok)
{
	size_t len;
	int rc;

	if ((rc = ctl_read_file(path, tok, &len)) < 0)
		return rc;
	while (len && ((*tok)[len - 1] == '\n' || (*tok)[len - 1] == '\r' || (*tok)[len - 1] == ' '))
		(*tok)[--len] = '\0';
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)(*tok)[i] < 0x20 || (*tok)[i] == 0x7f) {
			free(*tok);
			*tok = NULL;
			return -EINVAL;	/* would break the header */
		}
	if (!len) {
		free(*tok);
		*tok = NULL;
		return -ENODATA;
	}
	return 0;
}

void
ctl_free_secret(char *s)
{
	if (s)
		OPENSSL_cleanse(s, strlen(s));
	free(s);
}

double
ctl_backoff(double base, double max, unsigned failures)
{
	double d = base * pow(2.0, failures < 16 ? failures : 16);
	uint32_t r = UINT32_MAX;

	if (d > max)
		d = max;
	(void)RAND_bytes((unsigned char *)&r, sizeof(r));	/* on failure: the whole delay */
	return d * (0.5 + 0.5 * ((double)r / UINT32_MAX));
}
