/* testbait.h: for tests that must prove a library call never prompts (an
 * OpenSSL passphrase prompt reads /dev/tty or stdin): stdin becomes a pipe
 * holding a bait line; a prompt eats it. An alarm alone would not show it
 * (OpenSSL's prompt catches SIGALRM); it only bounds a test that blocks.
 * Include after cmocka.h. */
#ifndef OR_TESTBAIT_H
#define OR_TESTBAIT_H

#include <sys/ioctl.h>
#include <unistd.h>

struct bait {
	int saved, p[2];
};

#define BAIT "bait\nbait\nbait\nbait\n"

static inline void
bait_set(struct bait *b)
{
	b->saved = dup(0);
	assert_int_equal(pipe(b->p), 0);
	assert_int_equal(write(b->p[1], BAIT, sizeof(BAIT) - 1), (ssize_t)sizeof(BAIT) - 1);
	assert_true(dup2(b->p[0], 0) == 0);
	alarm(3);
}

static inline void
bait_check(struct bait *b)
{
	int left = -1;

	alarm(0);
	assert_int_equal(ioctl(0, FIONREAD, &left), 0);
	dup2(b->saved, 0);
	close(b->saved);
	close(b->p[0]);
	close(b->p[1]);
	if (left != (int)sizeof(BAIT) - 1)
		fail_msg("a password prompt: %d of %zu bait bytes left", left, sizeof(BAIT) - 1);
}

#endif
