/* ltab: bounded per-worker label-set counters and their merged exposition. */
#include "autoconfig.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ltab.h"
#include "metrics.h"

static uint64_t
key_hash(unsigned nl, const char *const *labels)
{
	uint64_t h = 1469598103934665603ULL;	/* FNV-1a */

	for (unsigned i = 0; i < nl; i++) {
		for (const char *p = labels[i] ? labels[i] : ""; *p; p++)
			h = (h ^ (unsigned char)*p) * 1099511628211ULL;
		h = (h ^ 0xff) * 1099511628211ULL;	/* separator: ("a","b") != ("ab","") */
	}
	return h;
}

static int
key_eq(unsigned nl, char *const *a, const char *const *b)
{
	for (unsigned i = 0; i < nl; i++)
		if (strcmp(a[i], b[i] ? b[i] : "") != 0)
			return 0;
	return 1;
}

int
ltab_init(struct ltab *t, unsigned nlabels, size_t cap)
{
	size_t sz = 16;

	*t = (struct ltab){ .nlabels = nlabels, .cap = cap };
	while (sz < cap * 2)
		sz *= 2;
	t->e = calloc(cap ? cap : 1, sizeof(*t->e));
	t->idx = calloc(sz, sizeof(*t->idx));
	if (!t->e || !t->idx) {
		ltab_free(t);
		return -ENOMEM;
	}
	t->mask = sz - 1;
	return 0;
}

void
ltab_free(struct ltab *t)
{
	for (size_t i = 0; t->e && i < t->count; i++) {
		for (unsigned j = 0; j < t->nlabels; j++)
			free(t->e[i].lab[j]);
		free(t->e[i].lab);
	}
	free(t->e);
	free(t->idx);
	*t = (struct ltab){ 0 };
}

struct ltab_ent *
ltab_get(struct ltab *t, const char *const *labels)
{
	uint64_t h = key_hash(t->nlabels, labels);
	size_t i = h & t->mask;

	for (; t->idx[i]; i = (i + 1) & t->mask) {
		struct ltab_ent *e = &t->e[t->idx[i] - 1];
		if (e->hash == h && key_eq(t->nlabels, e->lab, labels))
			return e;
	}
	if (t->count >= t->cap)
		goto overflow;
	struct ltab_ent *e = &t->e[t->count];
	e->lab = calloc(t->nlabels, sizeof(*e->lab));
	if (!e->lab)
		goto overflow;
	for (unsigned j = 0; j < t->nlabels; j++) {
		if (!(e->lab[j] = strdup(labels[j] ? labels[j] : ""))) {
			while (j--)
				free(e->lab[j]);
			free(e->lab);
			e->lab = NULL;
			goto overflow;
		}
	}
	e->hash = h;
	t->idx[i] = (uint32_t)(t->count + 1);
	/* Publish: the scraper sees the entry's strings once it sees the count. */
	__atomic_store_n(&t->count, t->count + 1, __ATOMIC_RELEASE);
	return e;
overflow:
	stat_add(&t->overflows, 1);
	return &t->overflow;
}

/* The scraper's merge: an index over the first table entry of each key. */
struct mrg {
	const struct ltab_ent **key;
	uint64_t *val;
	size_t n, mask;
};

void
ltab_render(struct strbuf *sb, struct ltab *const *tabs, size_t n, const char *const *lnames,
    const char *const *names, const char *const *help, uint64_t *overflows)
{
	size_t total = 0, sz = 16;
	unsigned nl = n ? tabs[0]->nlabels : 0;
	size_t *cnt = calloc(n ? n : 1, sizeof(*cnt));

	*overflows = 0;
	if (!cnt) {
		sb->oom = true;
		return;
	}
	for (size_t k = 0; k < n; k++) {
		cnt[k] = __atomic_load_n(&tabs[k]->count, __ATOMIC_ACQUIRE);
		total += cnt[k];
		*overflows += stat_read(&tabs[k]->overflows);
	}
	while (sz < total * 2)
		sz *= 2;
	struct mrg m = { .mask = sz - 1 };
	uint32_t *idx = calloc(sz, sizeof(*idx));
	m.key = calloc(total ? total : 1, sizeof(*m.key));
	m.val = calloc((total ? total : 1) * LTAB_NVALS, sizeof(*m.val));
	if (!idx || !m.key || !m.val) {
		sb->oom = true;
		goto out;
	}
	for (size_t k = 0; k < n; k++) {
		for (size_t j = 0; j < cnt[k]; j++) {
			const struct ltab_ent *e = &tabs[k]->e[j];
			size_t i = e->hash & m.mask;
			for (; idx[i]; i = (i + 1) & m.mask) {
				const struct ltab_ent *o = m.key[idx[i] - 1];
				if (o->hash == e->hash && key_eq(nl, o->lab, (const char *const *)e->lab))
					break;
			}
			if (!idx[i]) {
				m.key[m.n] = e;
				idx[i] = (uint32_t)++m.n;
			}
			for (unsigned v = 0; v < LTAB_NVALS; v++)
				m.val[(idx[i] - 1) * LTAB_NVALS + v] += stat_read(&e->val[v]);
		}
	}
	/* Each key's label text once, shared by the four families; escaping
	 * appends runs, not bytes (1,000 sets must render in < 10 ms). */
	struct strbuf lt = { 0 };
	size_t *off = calloc(m.n + 1, sizeof(*off));
	if (!off) {
		sb->oom = true;
		goto out;
	}
	for (size_t i = 0; i < m.n; i++) {
		off[i] = lt.len;
		for (unsigned j = 0; j < nl; j++) {
			if (j)
				sb_append(&lt, ",", 1);
			sb_append(&lt, lnames[j], strlen(lnames[j]));
			sb_append(&lt, "=\"", 2);
			prom_label_value(&lt, m.key[i]->lab[j]);
			sb_append(&lt, "\"", 1);
		}
	}
	off[m.n] = lt.len;
	for (unsigned v = 0; v < LTAB_NVALS; v++) {
		size_t nlen = strlen(names[v]);
		prom_family(sb, names[v], help[v], METRIC_COUNTER);
		for (size_t i = 0; i < m.n; i++) {
			char num[32];
			int k = snprintf(num, sizeof(num), "} %llu\n", (unsigned long long)m.val[i * LTAB_NVALS + v]);
			sb_append(sb, names[v], nlen);
			sb_append(sb, "{", 1);
			sb_append(sb, lt.p + off[i], off[i + 1] - off[i]);
			sb_append(sb, num, (size_t)k);
		}
	}
	if (lt.oom)
		sb->oom = true;
	sb_free(&lt);
	free(off);
out:
	free(cnt);
	free(idx);
	free(m.key);
	free(m.val);
}
