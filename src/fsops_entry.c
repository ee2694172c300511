/* fsops_entry.c - names and attributes: lookup, forget, getattr, setattr,
 * readlink, access, statfs, and the namespace changes (mknod, mkdir,
 * symlink, link, unlink, rmdir, rename).
 *
 * A lookup resolves the name on the source (openat relative to the
 * parent's O_PATH fd) and takes a reference on the inode in inode.c, which
 * also decides how long the kernel may cache the entry and the attributes
 * (meta.c).  Every change is made as the caller (src_cred_enter): the
 * source sets owner and group of what is created and checks the caller's
 * rights itself (its ACLs, modes changed on another host; docs/design.md,
 * "Permissions").  Lookups, getattr and readlink run as the daemon.  An unlink or
 * a rename over a regular file that leaves it with no name drops its cache
 * record at once; a rename updates where the inode table has the names.
 *
 * Locks: none of its own; inode fds are held (ifd) across each source call
 * and the inode table's lock is taken inside inode.c only.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fsops_int.h"
#include "log.h"

/* The source's client still resolved name to a file that has no link left
 * (an NFS client trusts its cached name for acdirmin; the file was removed
 * or replaced on the server).  An open by name makes an NFSv4 client ask the
 * server (OPEN re-resolves the name; a stale handle makes the kernel redo
 * the walk), after which a lookup sees what the name is now.  fd is
 * replaced.  Returns 0 or -errno (-ENOENT: the name is gone). */
static int lookup_again(int pfd, const char *name, int *fd, struct stat *st)
{
	int ofd = src_open_at(pfd, name, O_RDONLY | O_NONBLOCK);

	close(*fd);
	*fd = -1;
	/* -ESTALE: the name now leads to something that is not a file (the
	 * open refused it); the lookup below says what. */
	if (ofd < 0 && ofd != -ESTALE)
		return ofd;
	if (ofd >= 0)
		close(ofd);
	return src_lookup(pfd, name, fd, st);
}

/* Look name up in parent and take a lookup reference.  Returns 0 or -errno. */
int do_lookup(struct efs_fs *fs, struct efs_inode *parent, const char *name,
		     struct fuse_entry_param *e)
{
	struct efs_inode *i;
	int fd, pfd, r;

	if (bad_name(name))
		return -EINVAL;
	/* The directory index answers while it may (fsops_index.c). */
	r = index_lookup(fs, parent, name, e);
	if (r != -EAGAIN)
		return r;
	memset(e, 0, sizeof(*e));
	pfd = ifd(fs, parent);
	if (pfd < 0)
		return pfd;
	r = src_lookup(pfd, name, &fd, &e->attr);
	stats_add(&fs->stats, ST_source_lookups, 1);
	if (out_of_fds(r)) {
		note_no_fds(fs, r, "a lookup");
		r = src_lookup(pfd, name, &fd, &e->attr);
	}
	if (r == 0 && S_ISREG(e->attr.st_mode) && e->attr.st_nlink == 0)
		r = lookup_again(pfd, name, &fd, &e->attr);
	ifd_put(fs, parent);
	if (r == -ENOENT)
		e->entry_timeout = itab_entry_timeout(fs->itab, parent, &fs->policy, true);
	if (r < 0)
		return r;
	i = itab_get(fs->itab, parent, name, fd, &e->attr);
	if (!i) {
		log_once(fs->logged_nomem, LOG_LVL_WARN,
			 "out of memory for a new inode (lookup of '%s'): the lookup fails with "
			 "ENOMEM",
			 name);
		return -ENOMEM;
	}
	e->ino = ino_id(fs, i);
	e->attr_timeout = itab_observe(fs->itab, i, &fs->policy, &e->attr);
	e->entry_timeout = itab_entry_timeout(fs->itab, parent, &fs->policy, false);
	return 0;
}

void reply_entry_or_err(fuse_req_t req, int r, const struct fuse_entry_param *e)
{
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_entry(req, e);
}

/* The name no longer leads where an inode the kernel knows was last seen:
 * the kernel is revalidating a name whose file was deleted or replaced on
 * the source (by another host), or renamed there.  A file gone for good
 * gives its cache space back now; the kernel may never open it again to
 * tell us.  `now` is what the name leads to now (NULL: nothing).  A
 * round trip only when such an inode exists and still holds its fd. */
#define GONE_CHECK_MAX 4 /* inodes checked per lookup; more wait for the LRU */
static void drop_gone_at(struct efs_fs *fs, struct efs_inode *dir, const char *name,
			 const struct efs_inode *now)
{
	struct efs_inode *old[GONE_CHECK_MAX];
	unsigned n = itab_others_at(fs->itab, dir, name, now, old, GONE_CHECK_MAX);

	for (unsigned k = 0; k < n; k++) {
		if (S_ISREG(old[k]->type) && source_object_gone(fs, old[k])) {
			log_debug("lookup: '%s' no longer leads to inode %llu, gone from the "
				  "source: its cache record is removed",
				  name, (unsigned long long)old[k]->ino);
			cache_source_gone(fs->cache, old[k]->dev, (uint64_t)old[k]->ino);
		}
		itab_unhold(fs->itab, old[k]);
	}
}

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *dir = inode_of(req, parent);
	struct fuse_entry_param e;
	int r;

	stats_add(&fs->stats, ST_kernel_lookups, 1);
	r = do_lookup(fs, dir, name, &e);
	note_root_fault(fs, dir, r);
	if (r == 0 || r == -ENOENT)
		drop_gone_at(fs, dir, name, r == 0 ? inode_of(req, e.ino) : NULL);
	if (r == -ENOENT) {
		/* A negative entry: the kernel remembers the name is absent
		 * for as long as do_lookup said. */
		double t = e.entry_timeout;

		memset(&e, 0, sizeof(e));
		e.entry_timeout = t;
		if (e.entry_timeout > 0)
			r = 0;
	}
	reply_entry_or_err(req, r, &e);
}

void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	itab_forget(fs_of(req)->itab, inode_of(req, ino), nlookup);
	fuse_reply_none(req);
}

void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	size_t k;

	for (k = 0; k < count; k++)
		itab_forget(fs_of(req)->itab, inode_of(req, forgets[k].ino), forgets[k].nlookup);
	fuse_reply_none(req);
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *i = inode_of(req, ino);
	struct meta_attr a;
	struct timespec now;
	double age = -1;
	struct stat st;
	double t;
	int fd, r;

	stats_add(&fs->stats, ST_kernel_getattrs, 1);
	/* Inside the window of what was last seen, and the directory index
	 * has just that: no fd to open again for it. */
	if (index_getattr(fs, i, &st, &t) == 0) {
		fuse_reply_attr(req, &st, t);
		return;
	}
	fd = ifd(fs, i);
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	itab_attr(fs->itab, i, &a);
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (a.seen)
		age = meta_elapsed(&a.at, &now);
	/* Confirmed by the server inside the window (a lookup, an open):
	 * what its client cached is that answer, no need to ask again.  Unless
	 * the client holds something else: then one of the two is older (the
	 * client may have dropped a newer answer), and only the server knows
	 * which.  Answering older attributes than an open validated would let
	 * the kernel read past the end of what the cache serves. */
	if (age >= 0 && age < a.timeo && src_stat_cached(fd, &st) == 0 && meta_attr_same(&a, &st)) {
		ifd_put(fs, i);
		fuse_reply_attr(req, &st, a.timeo - age);
		return;
	}
	r = src_stat(fd, &st);
	stats_add(&fs->stats, ST_source_getattrs, 1);
	ifd_put(fs, i);
	note_root_fault(fs, i, r);
	index_gone(fs, i, r);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_attr(req, &st, itab_observe(fs->itab, i, &fs->policy, &st));
}

/* Is mode the object's current mode less setuid and setgid, of which it has
 * at least one? */
static bool only_drops_setid(int fd, mode_t mode)
{
	struct stat st;

	if (src_stat(fd, &st) < 0 || !(st.st_mode & (S_ISUID | S_ISGID)) ||
	    (mode & 07777) == (st.st_mode & 07777))
		return false;
	return (mode & 07777) == (st.st_mode & 07777 & ~(mode_t)(S_ISUID | S_ISGID)) ||
	       (mode & 07777) == (st.st_mode & 07777 & ~(mode_t)S_ISUID) ||
	       (mode & 07777) == (st.st_mode & 07777 & ~(mode_t)S_ISGID);
}

void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int valid,
		       struct fuse_file_info *fi)
{
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *i = inode_of(req, ino);
	int fence = (valid & FUSE_SET_ATTR_SIZE) ? push_fence_begin(fs, i, false) : 0;

	/* A truncate's reply makes the kernel cut its pages: after every push
	 * of the file's chunks in flight (cache.h), as op_open. */
	if (fence == -EWOULDBLOCK) {
		if (push_defer_setattr(fs, req, ino, attr, valid, fi) == 0)
			return;
		fence = push_fence_begin(fs, i, true);
	}
	setattr_fenced(req, ino, attr, valid, fi);
	push_fence_end(fs, i, fence);
}

void setattr_fenced(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int valid,
		    struct fuse_file_info *fi)
{
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *i = inode_of(req, ino);
	int openfd = !no_handle(fi) ? file_fd_now(file_of(fi)) : -1;
	int r = 0, fd = ifd(fs, i);
	struct src_cred saved;

	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	/* The source decides who may change what (its ACLs, a chmod made on
	 * another host), as it would for the caller on an NFS client. */
	enter_caller(req, &saved);
	if (valid & FUSE_SET_ATTR_MODE) {
		if (only_drops_setid(fd, attr->st_mode)) {
			/* The kernel drops setuid and setgid after a write or a
			 * truncate by someone else than the owner (FUSE sends it
			 * as a chmod from the writer): as on a local file system,
			 * not a right of the caller's. */
			src_cred_leave(&saved);
			r = src_chmod(fd, openfd, attr->st_mode);
			enter_caller(req, &saved);
		} else {
			r = src_chmod(fd, openfd, attr->st_mode);
		}
		if (r < 0)
			goto out_err;
	}
	if (valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		uid_t uid = (valid & FUSE_SET_ATTR_UID) ? attr->st_uid : (uid_t)-1;
		gid_t gid = (valid & FUSE_SET_ATTR_GID) ? attr->st_gid : (gid_t)-1;

		r = src_chown(fd, uid, gid);
		if (r < 0)
			goto out_err;
	}
	if (valid & FUSE_SET_ATTR_SIZE) {
		r = src_truncate(fd, openfd, attr->st_size);
		cache_written(fs->cache, i);
		if (r < 0)
			goto out_err;
	}
	if (valid & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
		struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_nsec = UTIME_OMIT}};

		if (valid & FUSE_SET_ATTR_ATIME_NOW)
			ts[0].tv_nsec = UTIME_NOW;
		else if (valid & FUSE_SET_ATTR_ATIME)
			ts[0] = attr->st_atim;
		if (valid & FUSE_SET_ATTR_MTIME_NOW)
			ts[1].tv_nsec = UTIME_NOW;
		else if (valid & FUSE_SET_ATTR_MTIME)
			ts[1] = attr->st_mtim;
		r = src_utimens(fd, openfd, i->type, ts);
		if (r < 0)
			goto out_err;
	}
	src_cred_leave(&saved);
	ifd_put(fs, i);
	index_parent_changed(fs, i);
	op_getattr(req, ino, fi);
	return;
out_err:
	src_cred_leave(&saved);
	ifd_put(fs, i);
	fuse_reply_err(req, -r);
}

void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *i = inode_of(req, ino);
	char buf[PATH_MAX + 1];
	int fd = ifd(fs, i);
	ssize_t n = fd < 0 ? fd : src_readlink(fd, buf, sizeof(buf));

	if (fd >= 0)
		ifd_put(fs, i);

	if (n < 0) {
		fuse_reply_err(req, (int)-n);
		return;
	}
	if ((size_t)n >= sizeof(buf)) {
		fuse_reply_err(req, ENAMETOOLONG);
		return;
	}
	buf[n] = '\0';
	fuse_reply_readlink(req, buf);
}

void op_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	fuse_reply_err(req, -access_as_caller(req, inode_of(req, ino), mask));
}

void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *i = inode_of(req, ino);
	struct statvfs st;
	int fd = ifd(fs, i), r = fd < 0 ? fd : src_statfs(fd, &st);

	if (fd >= 0)
		ifd_put(fs, i);

	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_statfs(req, &st);
}

/* ---- namespace changes ------------------------------------------------- */

/* The kinds of object a request can create. */
enum mk_kind { MK_NODE, MK_DIR, MK_SYMLINK };

/* Switch to the caller's uid, gid and supplementary groups. */
void enter_caller(fuse_req_t req, struct src_cred *saved)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	gid_t groups[SRC_MAX_GROUPS];
	int n = fuse_req_getgroups(req, SRC_MAX_GROUPS, groups);

	if (n > SRC_MAX_GROUPS)
		n = SRC_MAX_GROUPS; /* the first ones; the source decides */
	src_cred_enter(saved, ctx->uid, ctx->gid, groups, n);
}

int access_as_caller(fuse_req_t req, struct efs_inode *i, int mask)
{
	struct efs_fs *fs = fs_of(req);
	struct src_cred saved;
	int fd = ifd(fs, i), r;

	if (fd < 0)
		return fd;
	enter_caller(req, &saved);
	r = src_access(fd, mask);
	src_cred_leave(&saved);
	ifd_put(fs, i);
	return r;
}

static void make_node(fuse_req_t req, fuse_ino_t parent, const char *name, enum mk_kind kind,
		      mode_t mode, dev_t rdev, const char *target)
{
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *dir = inode_of(req, parent);
	struct fuse_entry_param e;
	struct src_cred saved;
	int r, dfd;

	if (bad_name(name)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	dfd = ifd(fs, dir);
	if (dfd < 0) {
		fuse_reply_err(req, -dfd);
		return;
	}
	enter_caller(req, &saved);
	switch (kind) {
	case MK_DIR:
		r = src_mkdir(dfd, name, mode);
		break;
	case MK_SYMLINK:
		r = src_symlink(target, dfd, name);
		break;
	default:
		r = src_mknod(dfd, name, mode, rdev);
		break;
	}
	src_cred_leave(&saved);
	ifd_put(fs, dir);
	index_dir_changed(fs, dir);
	if (r == 0)
		r = do_lookup(fs_of(req), dir, name, &e);
	reply_entry_or_err(req, r, &e);
}

void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		     dev_t rdev)
{
	make_node(req, parent, name, MK_NODE, mode, rdev, NULL);
}

void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	make_node(req, parent, name, MK_DIR, S_IFDIR | mode, 0, NULL);
}

void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	make_node(req, parent, name, MK_SYMLINK, 0, 0, link);
}

void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *i = inode_of(req, ino);
	struct fuse_entry_param e;
	int r;

	if (bad_name(newname)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	{
		struct efs_inode *np = inode_of(req, newparent);
		int fd = ifd(fs, i), nfd = fd < 0 ? -1 : ifd(fs, np);
		struct src_cred saved;

		r = fd < 0 ? fd : nfd;
		if (r >= 0) {
			enter_caller(req, &saved);
			r = src_link(fd, nfd, newname);
			src_cred_leave(&saved);
		}
		if (nfd >= 0)
			ifd_put(fs, np);
		if (fd >= 0)
			ifd_put(fs, i);
		index_dir_changed(fs, np);
		index_parent_changed(fs, i); /* its link count */
	}
	if (r == 0)
		r = do_lookup(fs, inode_of(req, newparent), newname, &e);
	reply_entry_or_err(req, r, &e);
}

/* Space comes back: before an unlink or a rename over name, an O_PATH fd
 * of the regular file that may lose its last name there (and its inode
 * number in *ino), or -1; *held: its inode if the kernel knows it, held,
 * and marked for the cache (cache_victim_begin) until victim_done. */
static int victim_open(struct efs_fs *fs, int dirfd, const char *name, dev_t *dev, uint64_t *ino,
		       struct efs_inode **held)
{
	struct efs_inode *open_ino;
	struct stat st;
	int fd;

	*held = NULL;
	if (src_lookup(dirfd, name, &fd, &st) < 0)
		return -1;
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return -1;
	}
	*dev = st.st_dev;
	*ino = (uint64_t)st.st_ino;
	open_ino = itab_find_hold(fs->itab, st.st_dev, st.st_ino);
	if (open_ino) {
		files_hold_source(fs, open_ino);
		/* A reader whose open the cache checked by name without
		 * opening the file (or is checking now) has no source fd, and
		 * its handle may not be on the list yet: the cache keeps one
		 * for it (cache_dup_checked). */
		if (cache_victim_begin(fs->cache, open_ino)) {
			int rfd = src_open(fd, O_RDONLY);

			if (rfd >= 0)
				cache_adopt_source(fs->cache, open_ino, rfd);
		}
		*held = open_ino;
	}
	return fd;
}

/* After the call: a file left with no name loses its cache record now.  Its
 * fd tells (so a hard link made meanwhile keeps the record): a link count
 * of 0, or, on NFS, a handle the server no longer knows. */
static void victim_done(struct efs_fs *fs, int fd, dev_t dev, uint64_t ino, int r,
			struct efs_inode *held)
{
	struct stat st;
	int sr;

	if (fd < 0)
		return;
	if (r == 0) {
		sr = src_stat(fd, &st);
		if ((sr == 0 && st.st_nlink == 0) || sr == -ESTALE || sr == -ENOENT)
			cache_source_gone(fs->cache, dev, ino);
	}
	close(fd);
	if (held) {
		cache_victim_end(fs->cache, held);
		itab_unhold(fs->itab, held);
	}
}

void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *dir = inode_of(req, parent);
	struct efs_inode *held = NULL;
	uint64_t ino = 0;
	dev_t vdev = 0;
	int fd = ifd(fs, dir), victim = -1, r;

	if (fd >= 0) {
		struct src_cred saved;

		victim = victim_open(fs, fd, name, &vdev, &ino, &held);
		enter_caller(req, &saved);
		r = src_unlink(fd, name);
		src_cred_leave(&saved);
		victim_done(fs, victim, vdev, ino, r, held);
		ifd_put(fs, dir);
		index_dir_changed(fs, dir);
	} else {
		r = fd;
	}
	fuse_reply_err(req, -r);
}

void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *dir = inode_of(req, parent);
	int fd = ifd(fs, dir), r = fd;
	struct src_cred saved;
	struct stat gone;

	if (fd >= 0) {
		bool known = fs->dix && src_stat_at(fd, name, &gone) == 0;

		enter_caller(req, &saved);
		r = src_rmdir(fd, name);
		src_cred_leave(&saved);
		ifd_put(fs, dir);
		index_dir_changed(fs, dir);
		/* Its own snapshot too: the inode number may come back. */
		if (r == 0 && known && fs->dix)
			dix_forget(fs->dix, (uint64_t)gone.st_dev, (uint64_t)gone.st_ino);
	}
	fuse_reply_err(req, -r);
}

/* The inode (if the kernel knows it) of name in the directory behind dfd. */
static struct efs_inode *known_child(struct efs_fs *fs, int dfd, const char *name)
{
	struct stat st;

	if (src_stat_at(dfd, name, &st) < 0)
		return NULL;
	return itab_find(fs->itab, st.st_dev, st.st_ino);
}

void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *dir = inode_of(req, parent), *ndir = inode_of(req, newparent);
	struct efs_inode *moved = NULL, *swapped = NULL, *held = NULL;
	int fd, nfd, r, victim = -1;
	uint64_t ino = 0;
	dev_t vdev = 0;

	if (bad_name(name) || bad_name(newname)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	fd = ifd(fs, dir);
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	nfd = ifd(fs, ndir);
	if (nfd < 0) {
		ifd_put(fs, dir);
		fuse_reply_err(req, -nfd);
		return;
	}
	/* Inodes record where their names are: follow the move.  The kernel
	 * serialises renames against lookups of these names. */
	moved = known_child(fs, fd, name);
	if (flags & RENAME_EXCHANGE)
		swapped = known_child(fs, nfd, newname);
	else if (!(flags & RENAME_NOREPLACE))
		victim = victim_open(fs, nfd, newname, &vdev, &ino, &held);
	{
		struct src_cred saved;

		enter_caller(req, &saved);
		r = src_rename(fd, name, nfd, newname, flags);
		src_cred_leave(&saved);
	}
	victim_done(fs, victim, vdev, ino, r, held);
	index_dir_changed(fs, dir);
	index_dir_changed(fs, ndir);
	/* A directory moved or swapped has another "..". */
	if (r == 0 && moved && S_ISDIR(moved->type))
		index_dir_changed(fs, moved);
	if (r == 0 && swapped && S_ISDIR(swapped->type))
		index_dir_changed(fs, swapped);
	if (r == 0 && moved)
		itab_moved(fs->itab, moved, ndir, newname);
	if (r == 0 && swapped)
		itab_moved(fs->itab, swapped, dir, name);
	ifd_put(fs, ndir);
	ifd_put(fs, dir);
	fuse_reply_err(req, -r);
}
