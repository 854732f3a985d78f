/* strbuf: a growable text buffer for responses built on the control thread. */
#ifndef OR_STRBUF_H
#define OR_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

struct strbuf {
	char *p;
	size_t len, cap;
	bool oom;	/* an append failed: the content is incomplete */
};

void sb_printf(struct strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sb_append(struct strbuf *sb, const char *s, size_t n);
void sb_free(struct strbuf *sb);

/* The length (1 to 4) of the well-formed UTF-8 sequence at p (RFC 3629: no
 * overlong form, no surrogate, nothing past U+10FFFF), 0 when p's bytes are
 * not one (a NUL ends p: a sequence cut by it is not one). */
size_t utf8_seq(const unsigned char *p);

#endif
