#!/bin/sh
# mandoc -Tlint on every man page: any warning or style message fails, except
# those about this machine's man database (our own pages are not installed).
srcdir=${srcdir:-.}
command -v mandoc >/dev/null 2>&1 || { echo "mandoc not installed: skipped"; exit 77; }
rc=0
for m in "$srcdir"/man/*.[0-9]; do
	out=$(mandoc -Tlint "$m" 2>&1 | grep -v -e 'referenced manual not found' -e 'outdated mandoc.db')
	if [ -n "$out" ]; then echo "$out"; rc=1; fi
done
exit $rc
