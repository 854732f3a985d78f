#!/bin/sh
# The complete file in outrigger.json(5)'s EXAMPLES is one the proxy accepts:
# the man page's example is cut out of the source and given to
# --check-config, so a change to the format that the page misses fails here.
srcdir=${srcdir:-.}
bin=${OUTRIGGER_BIN:-./outrigger}
tmp=$(mktemp) || exit 1
trap 'rm -f "$tmp"' EXIT
sed -n '/^\.Sh EXAMPLES/,/^\.Ed/p' "$srcdir/man/outrigger.json.5" | sed -n '/^\.Bd/,/^\.Ed/p' |
	sed '1d;$d' >"$tmp"
[ -s "$tmp" ] || { echo "no example found in outrigger.json.5"; exit 1; }
out=$("$bin" --check-config -c "$tmp" 2>&1) || { echo "$out"; exit 1; }
echo "$out" | grep -q 'is valid (3 resources)' || { echo "$out"; exit 1; }
