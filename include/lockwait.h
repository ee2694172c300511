/* lockwait.h - blocking lock requests parked off the FUSE worker threads.
 *
 * The ops try a lock without waiting first; only a request that must wait
 * is parked here.  The wait replies to its request exactly once: 0 when the
 * lock is granted, EINTR when FUSE interrupts it, or the source's errno.
 */
#ifndef EFS_LOCKWAIT_H
#define EFS_LOCKWAIT_H

#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdbool.h>

/* A blocking lock request parked on its own thread.  Live waits are on a
 * list under waits_mu; the interrupt callback only touches a wait it finds
 * there, so a wait that already finished and was freed is never used. */
struct lock_wait {
	fuse_req_t req;
	int fd;                  /* dup of the file's fd, owned by the wait */
	bool is_flock;
	int flock_op;
	struct flock lk;
	pthread_t thread;
	bool started;            /* protected by waits_mu */
	bool interrupted;        /* protected by waits_mu */
	struct lock_wait *next;  /* protected by waits_mu */
};

/* Install the wake-up signal's handler (no SA_RESTART).  Once, at init. */
void lockwait_setup(void);
/* A wait on a dup of fd (the caller keeps fd), or NULL when out of memory
 * or fds.  Fill is_flock/flock_op or lk, then park it. */
struct lock_wait *lock_wait_new(int fd);
/* Reply to req from a new thread once the lock is granted or interrupted;
 * takes w. */
void park_lock_wait(fuse_req_t req, struct lock_wait *w);

#endif
