#!/bin/sh
# mandoc -Tlint on every man page: style and syntax warnings fail the check.
srcdir=${srcdir:-.}
command -v mandoc >/dev/null 2>&1 || { echo "mandoc not installed: skipped"; exit 77; }
rc=0
for m in "$srcdir"/man/*.[0-9]; do
	out=$(mandoc -Tlint -W style "$m" 2>&1)
	if [ -n "$out" ]; then echo "$out"; rc=1; fi
done
exit $rc
