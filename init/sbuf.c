/* sbuf: a growable text buffer (see sbuf.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pipe2, accept4, setns, strdup */
#endif

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sbuf.h"

static bool grow(struct sbuf *b, size_t need)
{
	size_t cap;
	char *ns;

	if (b->failed)
		return false;
	if (b->len + need + 1 <= b->cap)
		return true;
	cap = b->cap ? b->cap : 256;
	while (cap < b->len + need + 1)
		cap *= 2;
	ns = realloc(b->s, cap);
	if (ns == NULL) {
		b->failed = true;
		return false;
	}
	b->s = ns;
	b->cap = cap;
	return true;
}

void sbuf_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || !grow(b, (size_t)n))
		return;
	va_start(ap, fmt);
	vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void sbuf_puts(struct sbuf *b, const char *s)
{
	size_t n = strlen(s);

	if (!grow(b, n))
		return;
	memcpy(b->s + b->len, s, n + 1);
	b->len += n;
}

char *sbuf_done(struct sbuf *b)
{
	char *s;

	if (b->failed) {
		free(b->s);
		s = NULL;
	} else {
		s = b->s ? b->s : strdup("");
	}
	b->s = NULL;
	b->len = b->cap = 0;
	b->failed = false;
	return s;
}
