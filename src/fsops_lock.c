/* fsops_lock.c - flock and fcntl (POSIX record) lock ops.
 *
 * Locks are real (DESIGN.md): flock goes to flock(2) on the handle's source
 * fd; a POSIX lock owner's record locks become OFD locks on a source fd of
 * its own (inode_lock_owner_get), so two mounts of one SOURCE exclude each
 * other.  A request is first tried without waiting on the FUSE worker; only
 * one that must wait is parked (lockwait.c), and a lock released or
 * weakened through this mount kicks the parked waits of its file.  A
 * record lock wait that would close a cycle of this mount's owners waiting
 * for each other is answered EDEADLK, as the source's kernel answers its
 * POSIX locks (lockdep.c; OFD locks have no such check).  getlk
 * asks through the owner's fd, so the owner's own locks are no conflict.
 *
 * A close by the owner (FLUSH) closes the owner's fd at once, dropping its
 * locks: a lock call running on that fd meanwhile holds a reference (the
 * fd closes after it), finds that its lock went with the fd, and applies it
 * again through the owner's new fd; a parked wait holds no fd at all and
 * takes the owner's fd at each try.  So after a close the owner holds
 * exactly what it locked after it, as POSIX says.
 *
 * Locks: none of its own (the owner table is under the inode's lock in
 * inode.c; waits under lockwait.c's, holds under lockdep.c's).  lockdep
 * records a grant, and a close forgets the owner's holds, under the inode's
 * lock-owner lock (i->lock -> ld->mu), so they happen in that order.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/file.h>

#include "fsops_int.h"
#include "lockdep.h"
#include "lockwait.h"

/* Tries of one lock request through its owner's entry: the entry a close
 * takes off may be closed under a try, and a lock applied through it went
 * with it, so the request is tried again through the owner's new entry.
 * Each retry needs another close by the owner meanwhile; after this many
 * the request is answered EINTR and the caller may try again. */
#define OWNER_RETRIES 100

/* What a grant must record in lockdep, under the inode's lock owner lock
 * (inode_lock_owner_if_listed), so that a close's lockdep_forget cannot
 * come between the grant and its record. */
struct grant {
	struct lockdep *ld;
	struct efs_inode *i;
	uint64_t owner;
	const struct flock *lk;
	bool waited;         /* a parked wait: lockdep knows it, ends it */
};

static void record_grant(void *arg)
{
	struct grant *g = arg;

	if (g->waited)
		lockdep_wait_end(g->ld, g->i, g->owner, g->lk, true);
	else
		lockdep_granted(g->ld, g->i, g->owner, g->lk);
}

/* Forget what the owner held on the file: called under the same lock by
 * its close (inode_lock_owner_release). */
struct forget {
	struct lockdep *ld;
	struct efs_inode *i;
	uint64_t owner;
};

static void forget_owner(void *arg)
{
	struct forget *f = arg;

	lockdep_forget(f->ld, f->i, f->owner);
}

/* One try of record lock lk for owner on i without waiting, through the
 * owner's entry (created unless lk unlocks).  Returns 0 (granted and
 * recorded), -EAGAIN (held by someone else), -ENOENT (an unlock of an owner
 * with no entry: nothing to do) or -errno. */
static int try_setlk(struct efs_fs *fs, struct efs_inode *i, uint64_t owner, struct flock *lk,
		     bool waited)
{
	struct grant g = {.ld = fs->lockdep, .i = i, .owner = owner, .lk = lk, .waited = waited};

	for (int k = 0; k < OWNER_RETRIES; k++) {
		struct efs_lock_owner *o;
		int r, err;

		o = inode_lock_owner_get(fs->itab, i, owner, lk->l_type != F_UNLCK, &err);
		if (!o)
			return err;
		r = src_setlk(o->fd, lk, false);
		if (r == -EACCES)
			r = -EAGAIN;
		if (r == 0 && !inode_lock_owner_if_listed(i, o, record_grant, &g)) {
			/* The owner closed the file meanwhile and its fd went
			 * with this lock: an unlock is done, a lock is tried
			 * again through the owner's new fd. */
			inode_lock_owner_put(i, o);
			if (lk->l_type == F_UNLCK)
				return 0;
			continue;
		}
		inode_lock_owner_put(i, o);
		return r;
	}
	return -EINTR;
}

void op_getlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		     struct flock *lock)
{
	/* Through the owner's fd, so the owner's own locks are no conflict. */
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *i = inode_of(req, ino);
	struct efs_lock_owner *o;
	int err, fd, r;

	o = inode_lock_owner_get(fs->itab, i, fi->lock_owner, false, &err);
	fd = o ? o->fd : no_handle(fi) ? -ENOLCK : file_fd(fs, i, file_of(fi));
	r = fd < 0 ? fd : src_getlk(fd, lock);

	if (o)
		inode_lock_owner_put(i, o);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_lock(req, lock);
}

/* A parked request: what its tries and its answer need. */
struct parked {
	fuse_req_t req;
	struct efs_fs *fs;
	struct efs_inode *i;
	uint64_t owner;
	bool posix;          /* a record lock (lockdep knows the wait) */
	bool granted;        /* a try granted it (and recorded it) */
	struct flock lk;
};

/* A parked record lock's try (lockwait's waiter thread): through the
 * owner's fd as it is now, so that the wait keeps no fd of the owner, and
 * none of its locks, alive after the owner closed the file. */
static int wait_try(void *arg)
{
	struct parked *p = arg;
	int r = try_setlk(p->fs, p->i, p->owner, &p->lk, true);

	p->granted = r == 0;
	return r;
}

static void wait_done(void *arg, int r)
{
	struct parked *p = arg;

	/* A grant ended the wait in lockdep already (wait_try). */
	if (p->posix && !p->granted)
		lockdep_wait_end(p->fs->lockdep, p->i, p->owner, &p->lk, false);
	fuse_reply_err(p->req, -r);
	free(p);
}

static void wait_interrupt(fuse_req_t req, void *data)
{
	lockwait_interrupt(fs_of(req)->locks, data, req);
}

/* Park req's lock until it is granted or interrupted: record lock lk of
 * owner (tried through the owner's fd each time), or, with lk NULL, flock
 * operation flock_op on fd (the handle's).  Replies to req in any case. */
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
		w = lockwait_prepare_try(fs->locks, wait_try, i, wait_done, p, req, &r);
	} else {
		for (int tries = 0;; tries++) {
			w = lockwait_prepare(fs->locks, fd, NULL, flock_op, i, wait_done, p, req,
					     &r);
			if (w || !out_of_fds(r) || tries)
				break;
			note_no_fds(fs, r, "a lock wait");
		}
	}
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
	int r;

	/* Through a handle whose close sends no FLUSH: the owner's locks
	 * go at its RELEASE (noted before it may get any). */
	if (lock->l_type != F_UNLCK && !no_handle(fi))
		file_note_lock_owner(file_of(fi), fi->lock_owner);
	/* On this worker, without waiting: most locks are granted here. */
	r = try_setlk(fs, i, fi->lock_owner, lock, false);

	if (r == -ENOENT) {
		fuse_reply_err(req, 0); /* unlocking what was never locked */
		return;
	}
	if (r == 0 && lock->l_type != F_WRLCK)
		lockwait_kick(fs->locks, i); /* a range freed or shared */
	if (r != -EAGAIN) {
		fuse_reply_err(req, -r);
		return;
	}
	if (!sleep) {
		fuse_reply_err(req, EAGAIN);
		return;
	}
	park(req, i, fi->lock_owner, -1, lock, 0);
}

void op_flock(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, int op)
{
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *i = inode_of(req, ino);
	int fd = no_handle(fi) ? -ENOLCK : file_fd(fs, i, file_of(fi)), r;

	r = fd < 0 ? fd : src_flock(fd, op | LOCK_NB);
	if (r == 0 && !(op & LOCK_EX))
		lockwait_kick(fs->locks, i); /* unlocked, or shared */
	if (r != -EWOULDBLOCK || (op & LOCK_NB)) {
		fuse_reply_err(req, -r);
		return;
	}
	park(req, i, 0, fd, NULL, op);
}

/* The owner's fcntl locks go with any close of the file by it (FLUSH). */
bool release_lock_owner(struct efs_fs *fs, struct efs_inode *i, uint64_t owner)
{
	struct forget f = {.ld = fs->lockdep, .i = i, .owner = owner};

	if (!inode_lock_owner_release(i, owner, forget_owner, &f))
		return false;
	lockwait_kick(fs->locks, i); /* parked waits for them may go on */
	return true;
}
