/* exec: run helper programs (see exec.h). */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "exec.h"
#include "ilog.h"

const char *exec_line(char *const argv[])
{
	static char line[4096];
	size_t len = 0;

	line[0] = '\0';
	for (size_t i = 0; argv[i] != NULL && len + 1 < sizeof(line); i++) {
		int n = snprintf(line + len, sizeof(line) - len, "%s%s", i ? " " : "", argv[i]);
		if (n < 0)
			break;
		len += (size_t)n;
	}
	return line;
}

int exec_run(char *const argv[], const char *input, struct strbuf *out,
	     enum exec_stderr err)
{
	int in_pipe[2] = { -1, -1 }, out_pipe[2] = { -1, -1 };
	size_t in_len = input ? strlen(input) : 0, in_off = 0;
	int status, rc = 0;
	pid_t pid;
	void (*old_pipe)(int);

	ilog_debug("exec: %s", exec_line(argv));
	if (input != NULL && pipe2(in_pipe, O_CLOEXEC) < 0)
		return -errno;
	if (out != NULL && pipe2(out_pipe, O_CLOEXEC) < 0) {
		rc = -errno;
		goto close_in;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		rc = -errno;
		goto close_out;
	}
	if (pid == 0) {
		int fd;
		if (input != NULL)
			dup2(in_pipe[0], STDIN_FILENO);
		else if ((fd = open("/dev/null", O_RDONLY)) >= 0)
			dup2(fd, STDIN_FILENO);
		if (out != NULL)
			dup2(out_pipe[1], STDOUT_FILENO);
		else
			dup2(STDERR_FILENO, STDOUT_FILENO); /* keep our stdout clean */
		if (err == EXEC_STDERR_QUIET && (fd = open("/dev/null", O_WRONLY)) >= 0)
			dup2(fd, STDERR_FILENO);
		execvp(argv[0], argv);
		_exit(127);
	}
	/* The child may exit before reading all its input. */
	old_pipe = signal(SIGPIPE, SIG_IGN);
	if (input != NULL) {
		close(in_pipe[0]);
		in_pipe[0] = -1;
	}
	if (out != NULL) {
		close(out_pipe[1]);
		out_pipe[1] = -1;
	}
	/* Feed stdin and drain stdout together: neither side can block the
	 * other however large the input or the output. */
	while (in_pipe[1] >= 0 || out_pipe[0] >= 0) {
		struct pollfd pfd[2];
		nfds_t n = 0;
		int in_i = -1, out_i = -1;

		if (in_pipe[1] >= 0) {
			if (in_off == in_len) {
				close(in_pipe[1]);
				in_pipe[1] = -1;
				continue;
			}
			pfd[n] = (struct pollfd){ .fd = in_pipe[1], .events = POLLOUT };
			in_i = (int)n++;
		}
		if (out_pipe[0] >= 0) {
			pfd[n] = (struct pollfd){ .fd = out_pipe[0], .events = POLLIN };
			out_i = (int)n++;
		}
		if (poll(pfd, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (in_i >= 0 && pfd[in_i].revents) {
			ssize_t w = write(in_pipe[1], input + in_off, in_len - in_off);
			if (w > 0) {
				in_off += (size_t)w;
			} else if (w < 0 && errno != EINTR && errno != EAGAIN) {
				close(in_pipe[1]);
				in_pipe[1] = -1;
			}
		}
		if (out_i >= 0 && pfd[out_i].revents) {
			char buf[4096];
			ssize_t r = read(out_pipe[0], buf, sizeof(buf));
			if (r > 0) {
				sb_append(out, buf, (size_t)r);
			} else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
				close(out_pipe[0]);
				out_pipe[0] = -1;
			}
		}
	}
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			status = 127 << 8;
			break;
		}
	}
	signal(SIGPIPE, old_pipe);
	if (WIFEXITED(status))
		rc = WEXITSTATUS(status);
	else
		rc = 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	ilog_debug("exec: %s: exit %d", argv[0], rc);
	return rc;
close_out:
	if (out != NULL) {
		close(out_pipe[0]);
		close(out_pipe[1]);
	}
close_in:
	if (input != NULL) {
		close(in_pipe[0]);
		close(in_pipe[1]);
	}
	return rc;
}
