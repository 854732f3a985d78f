/* ctltarget: how the proxy reaches a control plane (the Istio CA, the xDS
 * server) as pilot-agent and ztunnel do: the address forms ("https://host:
 * port" or "host:port" is TLS, "http://host:port" plaintext for tests), the
 * name the server's certificate must carry, and the files read at each
 * connection (the bearer token, a root bundle). Shared by ca.c and xds.c. */
#ifndef OR_CTLTARGET_H
#define OR_CTLTARGET_H

#include <stdbool.h>
#include <stddef.h>

struct ctl_target {
	char addr[256];		/* host:port, without a scheme */
	char host[256];
	bool plaintext;		/* "http://" */
	/* The name the server's TLS certificate must carry, as pilot-agent
	 * picks it: ISTIOD_SAN when set, "istiod.istio-system.svc" for a
	 * localhost address (port-forwarding), else the address's host. */
	char verify_name[256];
};

/* 0, or -EINVAL for anything but [http[s]://]host:port. */
int ctl_target_parse(const char *url, struct ctl_target *t);

/* A regular file's bytes, NUL-terminated, at most CTL_FILE_MAX. 0 or -errno
 * (-EFBIG: larger, -EINVAL: not a regular file). */
#define CTL_FILE_MAX (1 << 20)
int ctl_read_file(const char *path, char **out, size_t *len);

/* The bearer token in path (kubelet rotates the projected token: read it at
 * every call), trailing white space dropped. 0, -ENODATA (empty), -EINVAL
 * (a control character would break the header) or -errno. */
int ctl_read_token(const char *path, char **tok);

/* Frees a string that held a secret (a token, an authorization header),
 * wiped first. NULL: no-op. */
void ctl_free_secret(char *s);

/* The delay before retry number failures (0 the first) of a stream:
 * base doubling up to max, jittered to between half and all of it (so a
 * mesh of proxies does not come back to a restarted server in step). */
double ctl_backoff(double base, double max, unsigned failures);

#endif
