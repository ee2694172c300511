/* test_lockdep.c - the deadlock table: ranges split as POSIX says, cycles
 * of waiting owners found, through one file or several. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>

#include "check.h"
#include "lockdep.h"

static struct flock lk(short type, off_t start, off_t len)
{
	struct flock l = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};

	return l;
}

static int wait_on(struct lockdep *ld, const void *file, uint64_t owner, short type, off_t start,
		   off_t len)
{
	struct flock l = lk(type, start, len);

	return lockdep_wait_begin(ld, file, owner, &l);
}

static void grant(struct lockdep *ld, const void *file, uint64_t owner, short type, off_t start,
		  off_t len)
{
	struct flock l = lk(type, start, len);

	lockdep_granted(ld, file, owner, &l);
}

static void end_wait(struct lockdep *ld, const void *file, uint64_t owner, short type,
		     off_t start, off_t len, bool granted)
{
	struct flock l = lk(type, start, len);

	lockdep_wait_end(ld, file, owner, &l, granted);
}

int main(void)
{
	struct lockdep *ld;
	int f1, f2; /* two files: only their addresses matter */

	CHECK(lockdep_new(&ld) == 0);

	/* The classic: 1 holds [0,10), 2 holds [10,20), each wants the other's. */
	grant(ld, &f1, 1, F_WRLCK, 0, 10);
	grant(ld, &f1, 2, F_WRLCK, 10, 10);
	CHECK(wait_on(ld, &f1, 1, F_WRLCK, 10, 10) == 0);
	CHECK(wait_on(ld, &f1, 2, F_WRLCK, 0, 10) == -EDEADLK);
	/* Waiting for a range nobody of ours holds is no cycle. */
	CHECK(wait_on(ld, &f1, 2, F_WRLCK, 100, 10) == 0);
	end_wait(ld, &f1, 2, F_WRLCK, 100, 10, false);
	/* 2 unlocks part of its range: 1's wait is still for the rest. */
	grant(ld, &f1, 2, F_UNLCK, 10, 5);
	CHECK(wait_on(ld, &f1, 2, F_WRLCK, 0, 10) == -EDEADLK);
	grant(ld, &f1, 2, F_UNLCK, 0, 0); /* everything */
	end_wait(ld, &f1, 1, F_WRLCK, 10, 10, true);
	/* Now 1 holds [0,20): 2 may wait for it (1 waits for nothing). */
	CHECK(wait_on(ld, &f1, 2, F_WRLCK, 15, 1) == 0);
	end_wait(ld, &f1, 2, F_WRLCK, 15, 1, false);
	lockdep_forget(ld, &f1, 1);

	/* Read locks do not conflict with read waits. */
	grant(ld, &f1, 3, F_RDLCK, 0, 0);
	grant(ld, &f1, 4, F_RDLCK, 0, 0);
	CHECK(wait_on(ld, &f1, 3, F_WRLCK, 0, 1) == 0); /* 3 waits for 4 */
	CHECK(wait_on(ld, &f1, 4, F_RDLCK, 5, 1) == 0); /* shares with 3 */
	end_wait(ld, &f1, 4, F_RDLCK, 5, 1, true);
	CHECK(wait_on(ld, &f1, 4, F_WRLCK, 0, 1) == -EDEADLK); /* 4 for 3 for 4 */
	/* A split: 3 unlocks the middle of its whole-file read lock; the
	 * pieces on both sides stay. */
	grant(ld, &f1, 3, F_UNLCK, 100, 10);
	CHECK(wait_on(ld, &f1, 4, F_WRLCK, 100, 10) == 0);
	end_wait(ld, &f1, 4, F_WRLCK, 100, 10, false);
	CHECK(wait_on(ld, &f1, 4, F_WRLCK, 200, 1) == -EDEADLK);
	CHECK(wait_on(ld, &f1, 4, F_WRLCK, 50, 1) == -EDEADLK);
	end_wait(ld, &f1, 3, F_WRLCK, 0, 1, false);
	lockdep_forget(ld, &f1, 3);
	lockdep_forget(ld, &f1, 4);

	/* A cycle through two files and three owners. */
	grant(ld, &f1, 5, F_WRLCK, 0, 1);
	grant(ld, &f2, 6, F_WRLCK, 0, 1);
	grant(ld, &f2, 7, F_WRLCK, 5, 1);
	CHECK(wait_on(ld, &f2, 5, F_WRLCK, 0, 1) == 0); /* 5 -> 6 */
	CHECK(wait_on(ld, &f2, 6, F_WRLCK, 5, 1) == 0); /* 6 -> 7 */
	CHECK(wait_on(ld, &f1, 7, F_WRLCK, 0, 1) == -EDEADLK); /* 7 -> 5 */
	CHECK(wait_on(ld, &f1, 8, F_WRLCK, 0, 1) == 0);        /* 8 holds nothing */

	lockdep_free(ld); /* with holds and waits left: freed too */
	return check_done("lockdep");
}
