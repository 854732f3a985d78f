/* apply: iptables / nftables programming, drift check, cleanup (see apply.h). */
#include "autoconfig.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apply.h"
#include "exec.h"
#include "ilog.h"
#include "nft.h"
#include "strbuf.h"

static const char *const tables[] = { "mangle", "nat", "raw" };

/* Fill the three names from a flavour prefix ("iptables-legacy"). */
static void xt_names(struct xt_bin *b, unsigned fam, const char *flavour)
{
	const char *base = fam == RULE_V6 ? "ip6tables" : "iptables";

	snprintf(b->iptables, sizeof(b->iptables), "%s%s", base, flavour);
	snprintf(b->restore, sizeof(b->restore), "%s%s-restore", base, flavour);
	snprintf(b->save, sizeof(b->save), "%s%s-save", base, flavour);
}

/* Run "<save>"; 0 with the text in out, or the failure. */
static int xt_save(const struct xt_bin *b, struct strbuf *out)
{
	char *argv[] = { (char *)b->save, NULL };

	return exec_run(argv, NULL, out, EXEC_STDERR_QUIET);
}

/* istio shouldUseBinaryForCurrentContext: -save --version runs, and a
 * no-op rule can be added to (and removed from) nat INPUT. */
static bool xt_works(struct xt_bin *b)
{
	char *ver[] = { b->save, (char *)"--version", NULL };
	char *probe_add[] = { b->iptables, (char *)"-t", (char *)"nat", (char *)"-A",
			      (char *)"INPUT", (char *)"-p", (char *)"255", (char *)"-j",
			      (char *)"RETURN", NULL };
	char *probe_del[] = { b->iptables, (char *)"-t", (char *)"nat", (char *)"-D",
			      (char *)"INPUT", (char *)"-p", (char *)"255", (char *)"-j",
			      (char *)"RETURN", NULL };
	struct strbuf out = { 0 };
	bool legacy;
	int rc;

	rc = exec_run(ver, NULL, &out, EXEC_STDERR_QUIET);
	/* (an incomplete text, out.oom, is not looked at) */
	legacy = !out.oom && out.p != NULL && strstr(out.p, "nf_tables") == NULL &&
		 strstr(out.p, "legacy") != NULL;
	sb_free(&out);
	if (rc != 0)
		return false;
	if (legacy)
		b->legacy = true;
	if (exec_run(probe_add, NULL, NULL, EXEC_STDERR_QUIET) != 0)
		return false;
	exec_run(probe_del, NULL, NULL, EXEC_STDERR_QUIET);
	return true;
}

/* Does a -save dump hold any rule? */
static bool has_rules(const char *dump)
{
	for (const char *l = dump; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
		if (strncmp(l, "-A ", 3) == 0)
			return true;
	return false;
}

int xt_detect(const struct init_config *c, unsigned fam, struct xt_bin *out)
{
	const char *fname = fam == RULE_V6 ? "IPv6" : "IPv4";
	struct strbuf dump = { 0 };
	bool legacy_rules;

	memset(out, 0, sizeof(*out));
	if (c->force_binary != XT_FORCE_NONE) {
		bool legacy = c->force_binary == XT_FORCE_LEGACY;
		xt_names(out, fam, legacy ? "-legacy" : "-nft");
		out->legacy = legacy;
		ilog_info("%s: using %s (--force-iptables-binary)", fname, out->iptables);
		return 0;
	}
	/* Legacy only if it already holds rules: reading it first (save
	 * does not instantiate tables) avoids creating legacy tables on an
	 * nft node. */
	xt_names(out, fam, "-legacy");
	legacy_rules = xt_save(out, &dump) == 0 && !dump.oom && has_rules(dump.p);
	sb_free(&dump);
	if (legacy_rules && xt_works(out)) {
		out->legacy = true;
		ilog_info("%s: using %s (legacy tables hold rules)", fname, out->iptables);
		return 0;
	}
	memset(out, 0, sizeof(*out));
	xt_names(out, fam, "-nft");
	if (xt_works(out)) {
		out->legacy = false;
		ilog_info("%s: using %s", fname, out->iptables);
		return 0;
	}
	memset(out, 0, sizeof(*out));
	xt_names(out, fam, "");
	if (xt_works(out)) {
		ilog_info("%s: using %s%s", fname, out->iptables, out->legacy ? " (legacy)" : "");
		return 0;
	}
	ilog_error("%s: no working iptables found (tried %s-legacy, -nft and plain; is the nat table available in this kernel?)",
		   fname, fam == RULE_V6 ? "ip6tables" : "iptables");
	return -ENOENT;
}

/* Run "<iptables> [--wait=30] ARGS". */
static int xt_cmd(const struct xt_bin *b, char *const *args, enum exec_stderr err)
{
	char *argv[160];
	size_t k = 0;

	argv[k++] = (char *)b->iptables;
	if (b->legacy)
		argv[k++] = (char *)"--wait=30";
	for (size_t i = 0; args[i] != NULL && k < 158; i++)
		argv[k++] = args[i];
	argv[k] = NULL;
	return exec_run(argv, NULL, NULL, err);
}

static int xt_restore(const struct xt_bin *b, const char *text)
{
	char *argv[] = { (char *)b->restore, (char *)"--noflush",
			 b->legacy ? (char *)"--wait=30" : NULL, NULL };

	return exec_run(argv, text, NULL, EXEC_STDERR_PASS);
}

/* Parsed "-save" output: which ISTIO_* chains exist per table and how many
 * rules each holds. */
struct saved_chain {
	char table[16];
	char chain[64];
	int rules;
};

struct saved {
	struct saved_chain v[64];
	size_t n;
	char *text; /* the dump, malloc'd; NULL when it is empty */
};

static struct saved_chain *saved_find(struct saved *s, const char *table, const char *chain)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->v[i].table, table) == 0 && strcmp(s->v[i].chain, chain) == 0)
			return &s->v[i];
	return NULL;
}

static int saved_load(const struct xt_bin *b, struct saved *s)
{
	struct strbuf out = { 0 };
	char table[16] = "";
	int rc;

	memset(s, 0, sizeof(*s));
	rc = xt_save(b, &out);
	if (rc != 0 || out.oom) {
		sb_free(&out);
		return rc < 0 ? rc : -EIO;
	}
	s->text = out.p; /* NULL when the dump is empty */
	for (char *l = s->text; l && *l;) {
		char *nl = strchr(l, '\n');
		size_t len = nl ? (size_t)(nl - l) : strlen(l);
		char line[512];

		if (len >= sizeof(line))
			len = sizeof(line) - 1;
		memcpy(line, l, len);
		line[len] = '\0';
		if (line[0] == '*') {
			snprintf(table, sizeof(table), "%.15s", line + 1);
		} else if (strncmp(line, ":ISTIO_", 7) == 0 && s->n < 64) {
			char *sp = strchr(line, ' ');
			if (sp)
				*sp = '\0';
			snprintf(s->v[s->n].table, sizeof(s->v[s->n].table), "%s", table);
			snprintf(s->v[s->n].chain, sizeof(s->v[s->n].chain), "%.63s", line + 1);
			s->v[s->n++].rules = 0;
		} else if (strncmp(line, "-A ISTIO_", 9) == 0) {
			char *sp = strchr(line + 3, ' ');
			struct saved_chain *sc;
			if (sp)
				*sp = '\0';
			if ((sc = saved_find(s, table, line + 3)) != NULL)
				sc->rules++;
		}
		l = nl ? nl + 1 : NULL;
	}
	return 0;
}

/* State of one family compared with rs. */
enum xt_state {
	XT_NONE,  /* none of our chains */
	XT_SAME,  /* everything we would install is there, nothing else */
	XT_DIFF,  /* some of ours, not the same */
};

/* istio VerifyIptablesState: same chains, same number of rules in each,
 * and "iptables -C" finds every rule (order is not compared). */
static enum xt_state xt_compare(const struct xt_bin *b, const struct ruleset *rs,
				unsigned fam)
{
	struct saved s;
	enum xt_state st = XT_SAME;

	if (saved_load(b, &s) < 0) {
		free(s.text);
		return XT_DIFF;
	}
	if (s.n == 0) {
		free(s.text);
		return XT_NONE;
	}
	for (size_t t = 0; t < 3 && st == XT_SAME; t++) {
		const char *chains[64];
		size_t nc = rules_chains(rs, fam, tables[t], chains, 64);

		for (size_t i = 0; i < nc && st == XT_SAME; i++) {
			struct saved_chain *sc = saved_find(&s, tables[t], chains[i]);
			int want = 0;

			for (size_t k = 0; k < rs->n; k++)
				want += (rs->v[k].fam & fam) &&
					strcmp(rs->v[k].table, tables[t]) == 0 &&
					strcmp(rs->v[k].chain, chains[i]) == 0;
			if (sc == NULL || sc->rules != want) {
				ilog_info("chain %s/%s: %d rules installed, %d wanted", tables[t],
					  chains[i], sc ? sc->rules : -1, want);
				st = XT_DIFF;
			}
		}
	}
	/* An ISTIO_* chain we would not create is a difference too. */
	for (size_t i = 0; i < s.n && st == XT_SAME; i++) {
		const char *chains[64];
		size_t nc = rules_chains(rs, fam, s.v[i].table, chains, 64);
		bool wanted = false;
		for (size_t k = 0; k < nc && k < 64; k++)
			wanted |= strcmp(chains[k], s.v[i].chain) == 0;
		if (!wanted) {
			ilog_info("chain %s/%s is installed but not wanted", s.v[i].table,
				  s.v[i].chain);
			st = XT_DIFF;
		}
	}
	for (size_t i = 0; i < rs->n && st == XT_SAME; i++) {
		const struct rule *r = &rs->v[i];
		char *args[140];

		if (!(r->fam & fam) || r->argc > 130)
			continue;
		rules_cmd(r, "-C", args);
		if (xt_cmd(b, args, EXEC_STDERR_QUIET) != 0) {
			char *line = rules_line(r);
			ilog_info("rule missing: -t %s %s", r->table, line ? line : "?");
			free(line);
			st = XT_DIFF;
		}
	}
	free(s.text);
	return st;
}

/* Delete every rule of a built-in chain (nat, mangle, raw) that jumps to
 * an ISTIO_* chain: what a cleanup with other flags than the apply would
 * otherwise leave behind, keeping the chains referenced. */
static void xt_drop_jumps(const struct xt_bin *b)
{
	struct saved s;
	char table[16] = "";

	if (saved_load(b, &s) < 0 || s.text == NULL) {
		free(s.text);
		return;
	}
	for (char *l = s.text; l && *l;) {
		char *nl = strchr(l, '\n');
		char *args[140];
		size_t k = 0;
		char *tok, *save = NULL;

		if (nl)
			*nl = '\0';
		if (l[0] == '*')
			snprintf(table, sizeof(table), "%.15s", l + 1);
		if (strncmp(l, "-A ", 3) == 0 && strstr(l, " -j ISTIO_") != NULL &&
		    strchr(l, '"') == NULL && strncmp(l, "-A ISTIO_", 9) != 0 &&
		    (strcmp(table, "nat") == 0 || strcmp(table, "mangle") == 0 ||
		     strcmp(table, "raw") == 0)) {
			args[k++] = (char *)"-t";
			args[k++] = table;
			for (tok = strtok_r(l, " ", &save); tok && k < 138;
			     tok = strtok_r(NULL, " ", &save)) {
				bool first = k == 2;
				args[k++] = first && strcmp(tok, "-A") == 0 ? (char *)"-D" : tok;
			}
			args[k] = NULL;
			xt_cmd(b, args, EXEC_STDERR_QUIET);
		}
		l = nl ? nl + 1 : NULL;
	}
	free(s.text);
}

/* Best-effort removal of rs from one family. */
static void xt_cleanup_family(const struct xt_bin *b, const struct ruleset *rs,
			      unsigned fam)
{
	struct cmdlist cl = { 0 };

	if (rules_cleanup(rs, fam, true, &cl) < 0) {
		cmdlist_free(&cl);
		return;
	}
	/* "-D" commands first, then leftover jumps, then "-F"/"-X". */
	for (size_t i = 0; i < cl.n; i++)
		if (strcmp(cl.v[i][2], "-D") == 0)
			xt_cmd(b, cl.v[i], EXEC_STDERR_QUIET);
	xt_drop_jumps(b);
	for (size_t i = 0; i < cl.n; i++)
		if (strcmp(cl.v[i][2], "-D") != 0)
			xt_cmd(b, cl.v[i], EXEC_STDERR_QUIET);
	cmdlist_free(&cl);
}

/* istio's reconcile guardrails: drop TCP and UDP in filter while the
 * rules are swapped, so no connection slips past half-installed rules. */
static void guardrails(const struct xt_bin *b, bool on)
{
	static const char *const chains[] = { "INPUT", "FORWARD", "OUTPUT" };
	static const char *const protos[] = { "tcp", "udp" };

	for (size_t c = 0; c < 3; c++) {
		for (size_t p = 0; p < 2; p++) {
			char *add[] = { (char *)"-t", (char *)"filter", (char *)"-I",
					(char *)chains[c], (char *)"1", (char *)"-p",
					(char *)protos[p], (char *)"-j", (char *)"DROP", NULL };
			char *del[] = { (char *)"-t", (char *)"filter", (char *)"-D",
					(char *)chains[c], (char *)"-p", (char *)protos[p],
					(char *)"-j", (char *)"DROP", NULL };
			xt_cmd(b, on ? add : del, on ? EXEC_STDERR_PASS : EXEC_STDERR_QUIET);
		}
	}
}

int apply_iptables(const struct init_config *c, const struct ruleset *rs, bool ipv6)
{
	struct xt_bin bins[2];
	unsigned fams[2] = { RULE_V4, RULE_V6 };
	enum xt_state st[2] = { XT_NONE, XT_NONE };
	size_t nf = ipv6 ? 2 : 1;
	bool reconcile = false;
	int rc;

	for (size_t i = 0; i < nf; i++)
		if ((rc = xt_detect(c, fams[i], &bins[i])) < 0)
			return rc;

	if (!c->force_apply) {
		bool all_none = true, all_same = true;
		for (size_t i = 0; i < nf; i++) {
			st[i] = xt_compare(&bins[i], rs, fams[i]);
			all_none &= st[i] == XT_NONE;
			all_same &= st[i] == XT_SAME;
		}
		if (all_same) {
			ilog_info("the rules are already installed and identical: nothing to do");
			return 0;
		}
		if (!all_none) {
			if (c->reconcile) {
				ilog_info("installed rules differ from the wanted ones: reconciling (clean up, then apply)");
				reconcile = true;
			} else {
				ilog_warn("installed rules differ from the wanted ones and --reconcile is not set: applying anyway, the outcome is not guaranteed");
			}
		}
	}
	if (reconcile) {
		for (size_t i = 0; i < nf; i++) {
			guardrails(&bins[i], true);
			xt_cleanup_family(&bins[i], rs, fams[i]);
		}
	}
	rc = 0;
	for (size_t i = 0; i < nf; i++) {
		char *text = rules_restore_text(rs, fams[i]);
		int r;

		if (text == NULL) {
			rc = -ENOMEM;
			break;
		}
		if (*text == '\0') {
			free(text);
			continue;
		}
		r = xt_restore(&bins[i], text);
		free(text);
		if (r != 0) {
			ilog_error("%s --noflush failed (exit %d)%s", bins[i].restore, r,
				   st[i] == XT_DIFF && !reconcile
					   ? "; other ISTIO_* rules are installed: --reconcile replaces them"
					   : "");
			rc = -EIO;
			/* Restore is atomic per family: only the families
			 * before this one hold rules; take them out again. */
			for (size_t k = 0; k < i; k++) {
				ilog_info("removing the %s rules applied before the failure",
					  fams[k] == RULE_V4 ? "IPv4" : "IPv6");
				xt_cleanup_family(&bins[k], rs, fams[k]);
			}
			break;
		}
		ilog_info("%s: rules applied", bins[i].restore);
	}
	if (reconcile)
		for (size_t i = 0; i < nf; i++)
			guardrails(&bins[i], false);
	return rc;
}

int cleanup_iptables(const struct init_config *c, const struct ruleset *rs)
{
	unsigned fams[2] = { RULE_V4, RULE_V6 };

	for (size_t i = 0; i < 2; i++) {
		struct xt_bin b;
		/* IPv6 may be missing (ipv6.disable=1, istio #57199): skip. */
		if (xt_detect(c, fams[i], &b) < 0)
			continue;
		xt_cleanup_family(&b, rs, fams[i]);
		ilog_info("%s: cleanup done", b.iptables);
	}
	return 0;
}

int apply_nft(const struct ruleset *rs, bool ipv6)
{
	char *argv[] = { (char *)"nft", (char *)"-f", (char *)"-", NULL };
	int err, rc;
	char *script = nft_script(rs, ipv6, &err);

	if (script == NULL)
		return err ? err : -ENOMEM;
	rc = exec_run(argv, script, NULL, EXEC_STDERR_PASS);
	free(script);
	if (rc != 0) {
		ilog_error("nft -f - failed (exit %d); the transaction was not applied", rc);
		return -EIO;
	}
	ilog_info("nft: rules applied in one transaction");
	return 0;
}

int cleanup_nft(void)
{
	char *argv[] = { (char *)"nft", (char *)"-f", (char *)"-", NULL };
	int rc = exec_run(argv, nft_cleanup_script(), NULL, EXEC_STDERR_PASS);

	return rc == 0 ? 0 : -EIO;
}
