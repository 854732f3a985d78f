/* sbuf: a growable text buffer for building restore input and nft scripts.
 *
 * Errors are sticky: after a failed allocation every append is a no-op and
 * sbuf_done() returns NULL, so builders check once at the end. */
#ifndef OR_INIT_SBUF_H
#define OR_INIT_SBUF_H

#include <stdbool.h>
#include <stddef.h>

/* The buffer; zero-initialise before use. */
struct sbuf {
	char *s;
	size_t len, cap;
	bool failed;
};

/* Append formatted text. */
void sbuf_printf(struct sbuf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Append a string. */
void sbuf_puts(struct sbuf *b, const char *s);
/* Hand over the text (never NULL unless an allocation failed; "" when
 * nothing was appended).  The buffer is left empty. */
char *sbuf_done(struct sbuf *b);

#endif
