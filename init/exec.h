/* exec: run the helper programs outrigger-init drives (iptables-restore,
 * iptables, iptables-save, nft, ip), feeding stdin and collecting stdout.
 *
 * No shell is involved: every argument is passed as is, so interface names
 * and CIDRs from the flags cannot be interpreted by anything but the tool. */
#ifndef OR_INIT_EXEC_H
#define OR_INIT_EXEC_H

#include <stdbool.h>

#include "strbuf.h"

/* How a command's stderr is handled. */
enum exec_stderr {
	EXEC_STDERR_PASS,  /* to our stderr (errors worth seeing) */
	EXEC_STDERR_QUIET, /* to /dev/null (probes, best-effort cleanup) */
};

/* Run argv (argv[0] looked up in PATH).  input, when not NULL, is written
 * to its stdin; out, when not NULL, receives its stdout.  Returns the exit
 * status (0-255; 127 when the program does not exist), or -errno when it
 * could not be started. */
int exec_run(char *const argv[], const char *input, struct strbuf *out,
	     enum exec_stderr err);

/* The command as one line, for logs.  Static buffer. */
const char *exec_line(char *const argv[]);

#endif
