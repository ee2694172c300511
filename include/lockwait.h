/* lockwait.h - lock requests that must wait, parked off the FUSE workers.
 *
 * The lock ops try a lock without waiting first, on the FUSE worker; only a
 * request that must wait is parked here.  No thread blocks in the kernel
 * for a parked wait: one waiter thread per mount (started at the first
 * wait) tries every parked lock again without waiting, at once when a lock
 * of the same file was released through this mount (lockwait_kick), else
 * after a backoff that grows to LOCKWAIT_POLL_MAX_MS (a holder elsewhere, on
 * another host of the same SOURCE, releases without telling us; an NFS
 * client waits for a blocking lock the same way).
 *
 * Each wait answers exactly once through its done callback: 0 when the lock
 * is granted, -EINTR when interrupted or when the mount stops, or the
 * source's -errno.  The callback runs on the waiter thread (or the caller of
 * lockwait_start/lockwait_stop) with no lock of this module held.
 */
#ifndef EFS_LOCKWAIT_H
#define EFS_LOCKWAIT_H

#include <fcntl.h>
#include <stdbool.h>

struct lockwait;
struct lw_wait;

/* Called once per wait with its result (0 or -errno). */
typedef void (*lockwait_done_fn)(void *arg, int r);

/* Returns 0 or -errno.  No thread is started until the first wait. */
int lockwait_new(struct lockwait **out);
/* Answer every parked wait with -EINTR, stop and join the waiter thread.
 * Waits started later are answered -EINTR at once.  Idempotent. */
void lockwait_stop(struct lockwait *lw);
/* lockwait_stop, then free.  NULL is fine. */
void lockwait_free(struct lockwait *lw);

/* A wait on a dup of fd (the caller keeps fd; the wait's own reference to
 * the open file description keeps it alive): for the record lock *lk if lk
 * is not NULL (an OFD lock), else for flock(2) operation flock_op.  key
 * names the file (kicks of the same key retry it at once), arg is passed to
 * done, id names the request for lockwait_interrupt.  The wait is listed but not tried until lockwait_start, so that an
 * interrupt arriving in between finds it.  Returns NULL with *err = -errno.
 */
struct lw_wait *lockwait_prepare(struct lockwait *lw, int fd, const struct flock *lk,
				 int flock_op, const void *key, lockwait_done_fn done, void *arg,
				 const void *id, int *err);
/* The tries of a wait made by the caller: try(arg) returns 0 when the lock
 * is granted, -EAGAIN while it is held by someone else, or -errno (the
 * answer).  For record locks, whose fd belongs to the lock owner and may be
 * closed while the wait is parked (the owner closed another fd of the
 * file): each try takes the owner's fd as it is then, so a parked wait
 * keeps no fd, and no lock, alive.  Otherwise as lockwait_prepare. */
struct lw_wait *lockwait_prepare_try(struct lockwait *lw, int (*try)(void *arg),
				     const void *key, lockwait_done_fn done, void *arg,
				     const void *id, int *err);
/* Let the waiter try w.  From here on w may be answered and freed at any
 * moment by another thread. */
void lockwait_start(struct lockwait *lw, struct lw_wait *w);
/* The wait w of request id, if it is still parked, answers -EINTR (or 0 if
 * its lock is granted first).  w may already be freed: it is only compared
 * against the parked waits, never dereferenced otherwise. */
void lockwait_interrupt(struct lockwait *lw, const struct lw_wait *w, const void *id);
/* A lock on key was released or weakened through this mount: try its parked
 * waits now. */
void lockwait_kick(struct lockwait *lw, const void *key);

/* Threads this module runs now (0 or 1), and waits parked. */
void lockwait_counts(struct lockwait *lw, unsigned *threads, unsigned *waits);

#endif
