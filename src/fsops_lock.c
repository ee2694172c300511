/* fsops_lock.c - flock and fcntl (POSIX record) lock ops.
 *
 * Locks are real (DESIGN.md): flock goes to flock(2) on the handle's source
 * fd; a POSIX lock owner's record locks become OFD locks on a source fd of
 * its own (inode_lock_owner_fd), so two mounts of one SOURCE exclude each
 * other.  A request is first tried without waiting on the FUSE worker; only
 * one that must wait is parked (lockwait.c), and a lock released or
 * weakened through this mount kicks the parked waits of its file.  A
 * record lock wait that would close a cycle of this mount's owners waiting
 * for each other is answered EDEADLK, as the source's kernel answers its
 * POSIX locks (lockdep.c; OFD locks have no such check).  getlk
 * asks through the owner's fd, so the owner's own locks are no conflict.
 *
 * Locks: none of its own (the owner table is under the inode's lock in
 * inode.c; waits under lockwait.c's, holds under lockdep.c's).
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/file.h>

#include "fsops_int.h"
#include "lockdep.h"
#include "lockwait.h"

void op_getlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		     struct flock *lock)
{
	/* Through the owner's fd, so the owner's own locks are no conflict. */
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *i = inode_of(req, ino);
	int fd = inode_lock_owner_fd(fs->itab, i, fi->lock_owner, false);
	int r;

	if (fd < 0)
		fd = file_fd(fs, i, file_of(fi));
	r = fd < 0 ? fd : src_getlk(fd, lock);

	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_lock(req, lock);
}

/* A parked request: what its answer must update. */
struct parked {
	fuse_req_t req;
	struct efs_fs *fs;
	struct efs_inode *i;
	uint64_t owner;
	bool posix;          /* a record lock (lockdep knows the wait) */
	struct flock lk;
};

static void wait_done(void *arg, int r)
{
	struct parked *p = arg;

	/* Granted to an owner that closed the file meanwhile (FLUSH closed
	 * its fd): the lock lives on the wait's dup only, and goes with it. */
	if (p->posix)
		lockdep_wait_end(p->fs->lockdep, p->i, p->owner, &p->lk,
				 r == 0 && inode_lock_owner_fd(p->fs->itab, p->i, p->owner, false) >= 0);
	fuse_reply_err(p->req, -r);
	free(p);
}

static void wait_interrupt(fuse_req_t req, void *data)
{
	lockwait_interrupt(fs_of(req)->locks, data, req);
}

/* Park req's lock on fd (lk, or flock_op if lk is NULL) until it is
 * granted or interrupted; replies to req in any case. */
static void park(fuse_req_t req, struct efs_inode *i, uint64_t owner, int fd,
		 const struct flock *lk, int flock_op)
{
	struct efs_fs *fs = fs_of(req);
	struct parked *p = calloc(1, sizeof(*p));
	struct lw_wait *w;
	int r;

	if (!p) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	*p = (struct parked){.req = req, .fs = fs, .i = i, .owner = owner, .posix = lk != NULL};
	if (lk) {
		p->lk = *lk;
		/* Where the source would answer EDEADLK, so do we. */
		r = lockdep_wait_begin(fs->lockdep, i, owner, lk);
		if (r < 0) {
			free(p);
			fuse_reply_err(req, -r);
			return;
		}
	}
	w = lockwait_prepare(fs->locks, fd, lk, flock_op, i, wait_done, p, req, &r);
	if (!w) {
		if (lk)
			lockdep_wait_end(fs->lockdep, i, owner, lk, false);
		free(p);
		fuse_reply_err(req, -r);
		return;
	}
	/* Listed before the callback is registered: an interrupt that came
	 * already is delivered from in here and finds the wait. */
	fuse_req_interrupt_func(req, wait_interrupt, w);
	lockwait_start(fs->locks, w);
}

void op_setlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		     struct flock *lock, int sleep)
{
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *i = inode_of(req, ino);
	int fd, r;

	fd = inode_lock_owner_fd(fs->itab, i, fi->lock_owner, lock->l_type != F_UNLCK);
	if (fd == -ENOENT) {
		fuse_reply_err(req, 0); /* unlocking what was never locked */
		return;
	}
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	/* On this worker, without waiting: most locks are granted here. */
	r = src_setlk(fd, lock, false);
	if (r == 0) {
		lockdep_granted(fs->lockdep, i, fi->lock_owner, lock);
		if (lock->l_type != F_WRLCK)
			lockwait_kick(fs->locks, i); /* a range freed or shared */
	}
	if (r != -EAGAIN && r != -EACCES) {
		fuse_reply_err(req, -r);
		return;
	}
	if (!sleep) {
		fuse_reply_err(req, EAGAIN);
		return;
	}
	park(req, i, fi->lock_owner, fd, lock, 0);
}

void op_flock(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, int op)
{
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *i = inode_of(req, ino);
	int fd = file_fd(fs, i, file_of(fi)), r;

	r = fd < 0 ? fd : src_flock(fd, op | LOCK_NB);
	if (r == 0 && !(op & LOCK_EX))
		lockwait_kick(fs->locks, i); /* unlocked, or shared */
	if (r != -EWOULDBLOCK || (op & LOCK_NB)) {
		fuse_reply_err(req, -r);
		return;
	}
	park(req, i, 0, fd, NULL, op);
}
