/* fsops_lock.c - flock and fcntl (POSIX record) lock ops.
 *
 * Locks are real (DESIGN.md): flock goes to flock(2) on the handle's source
 * fd; a POSIX lock owner's record locks become OFD locks on a source fd of
 * its own (inode_lock_owner_fd), so two mounts of one SOURCE exclude each
 * other.  A request is first tried without waiting on the FUSE worker; only
 * one that must wait is parked (lockwait.c).  getlk asks through the
 * owner's fd, so the owner's own locks are no conflict.
 *
 * Locks: none of its own (the owner table is under the inode's lock in
 * inode.c; waits under lockwait.c's).
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/file.h>

#include "fsops_int.h"
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

void op_setlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		     struct flock *lock, int sleep)
{
	struct efs_inode *i = inode_of(req, ino);
	struct lock_wait *w;
	int fd, r;

	fd = inode_lock_owner_fd(fs_of(req)->itab, i, fi->lock_owner, lock->l_type != F_UNLCK);
	if (fd == -ENOENT) {
		fuse_reply_err(req, 0); /* unlocking what was never locked */
		return;
	}
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	r = src_setlk(fd, lock, false);
	if (r != -EAGAIN && r != -EACCES) {
		fuse_reply_err(req, -r);
		return;
	}
	if (!sleep) {
		fuse_reply_err(req, EAGAIN);
		return;
	}
	w = lock_wait_new(fd);
	if (!w) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	w->lk = *lock;
	park_lock_wait(req, w);
}

void op_flock(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, int op)
{
	struct efs_file *f = file_of(fi);
	struct lock_wait *w;
	int fd = file_fd(fs_of(req), inode_of(req, ino), f), r;

	r = fd < 0 ? fd : src_flock(fd, op | LOCK_NB);
	if (r != -EWOULDBLOCK || (op & LOCK_NB)) {
		fuse_reply_err(req, -r);
		return;
	}
	w = lock_wait_new(fd);
	if (!w) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	w->is_flock = true;
	w->flock_op = op;
	park_lock_wait(req, w);
}
