/* ltab: a bounded per-worker table of label sets (a tuple of strings) and
 * their counters, for the Istio istio_tcp_* families. One writer (its worker)
 * inserts and increments; a scraper on another thread reads entries [0, count)
 * after an acquire load of count. Entries are append-only in a preallocated
 * array; strings are copied in, so the model may change under it. */
#ifndef OR_LTAB_H
#define OR_LTAB_H

#include <stddef.h>
#include <stdint.h>

#include "strbuf.h"

#define LTAB_NVALS 4

struct ltab_ent {
	char **lab;			/* nlabels copied strings; NULL for the overflow set */
	uint64_t hash;
	uint64_t val[LTAB_NVALS];	/* stat_add by the writer, stat_read by the scraper */
};

struct ltab {
	unsigned nlabels;
	size_t cap;			/* the bound: label sets per table */
	size_t count;			/* published entries: release store, acquire load */
	struct ltab_ent *e;		/* cap entries */
	uint32_t *idx;			/* writer-only open-addressing index (entry + 1), size mask + 1 */
	size_t mask;
	struct ltab_ent overflow;	/* connections whose set did not fit */
	uint64_t overflows;		/* how many lookups fell on the overflow set */
};

/* 0 or -ENOMEM. cap 0 is allowed (everything overflows). */
int ltab_init(struct ltab *t, unsigned nlabels, size_t cap);
void ltab_free(struct ltab *t);
/* The writer's entry for labels[0, nlabels) (NULL values count as ""),
 * inserted if new; the overflow entry when the table is full or a copy
 * fails. Never NULL. */
struct ltab_ent *ltab_get(struct ltab *t, const char *const *labels);

/* Scrape: merge tabs[0, n) by key and render Prometheus text for the
 * LTAB_NVALS families names[i] (help[i], counters), labels named lnames.
 * The overflow sets are left out of the families; *overflows gets their sum. */
void ltab_render(struct strbuf *sb, struct ltab *const *tabs, size_t n, const char *const *lnames,
    const char *const *names, const char *const *help, uint64_t *overflows);

#endif
