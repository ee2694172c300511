/* fsops_dir.c - directory handles: open, list (readdir, readdirplus), close.
 *
 * A struct efs_dir holds a directory stream of the source directory while
 * it is being read, and where the kernel is in it: the offset the kernel
 * asks for is the telldir cookie of the next entry, an entry read but not
 * yet returned (the reply was full) is kept for the next call, and a stream
 * read to its end is not read again until the kernel seeks.  readdirplus
 * looks every entry up (do_lookup): names removed since the listing are
 * skipped, and a name whose lookup fails otherwise is listed without
 * attributes, so one bad entry never ends a listing.  At open the kernel
 * may keep its cached listing if the directory is unchanged (inode.c
 * decides, as an NFS client would).
 *
 * fds: a stream holds one, and programs keep directories open long after
 * they read them (find keeps every ancestor open while it descends).  So
 * the stream is closed once read to its end, and at open when the kernel
 * keeps its cached listing; a later readdir opens it again at the cookie it
 * asks for (as an NFS client reads a directory by cookie).  The open at
 * opendir is the caller's (the source checks read permission); a reopen is
 * the daemon's, for a handle already granted.
 *
 * Locks: none.  An efs_dir has no lock of its own: the kernel serialises
 * getdents on one open directory, so its requests come one at a time.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fsops_int.h"

/* A stream of i's directory (as the caller of req, or the daemon with req
 * NULL), retried once when the process is out of fds.  0 or -errno. */
static int open_stream(struct efs_fs *fs, struct efs_inode *i, fuse_req_t req, DIR **dp)
{
	struct src_cred saved;
	int fd = ifd(fs, i), r;

	if (fd < 0)
		return fd;
	for (int tries = 0;; tries++) {
		if (req)
			enter_caller(req, &saved);
		r = src_opendir(fd, dp);
		if (req)
			src_cred_leave(&saved);
		if (!out_of_fds(r) || tries)
			break;
		note_no_fds(fs, r, "an opendir");
	}
	ifd_put(fs, i);
	return r;
}

static void close_stream(struct efs_dir *d)
{
	if (d->dp)
		src_closedir(d->dp);
	d->dp = NULL;
	d->entry = NULL;
}

void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *i = inode_of(req, ino);
	struct efs_dir *d = calloc(1, sizeof(*d));
	struct stat st;
	int r;

	stats_add(&fs->stats, ST_kernel_opens, 1);
	if (fs->no_open) {
		/* -o immutable: the kernel opens directories itself from now
		 * on and keeps their listings (see do_readdir without a handle). */
		free(d);
		fuse_reply_err(req, ENOSYS);
		return;
	}
	if (!d) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	/* The source says whether the caller may list it. */
	r = open_stream(fs, i, req, &d->dp);
	stats_add(&fs->stats, ST_source_readdirs, 1);
	note_root_fault(fs, i, r);
	if (r < 0) {
		free(d);
		fuse_reply_err(req, -r);
		return;
	}
	d->ino = i;
	/* The kernel may cache the listing; it keeps what it cached at the
	 * last open while the directory is unchanged (the open of the
	 * directory just revalidated its attributes, as NFS does). */
	if (fs->policy.lookupcache != LOOKUPCACHE_NONE &&
	    src_stat(dirfd(d->dp), &st) == 0) {
		fi->cache_readdir = 1;
		fi->keep_cache = itab_listing_unchanged(fs->itab, i, &st);
		itab_observe(fs->itab, i, &fs->policy, &st);
	}
	if (fi->keep_cache)
		close_stream(d); /* the kernel lists from its cache */
	fi->fh = (uint64_t)(uintptr_t)d;
	handle_add(fs_of(req), &d->h, true);
	if (fuse_reply_open(req, fi) == -ENOENT) {
		handle_del(fs_of(req), &d->h);
		close_stream(d);
		free(d);
	}
}

static bool is_dot_or_dotdot(const char *name)
{
	return name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'));
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
		       struct fuse_file_info *fi, bool plus)
{
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *dir = inode_of(req, ino);
	/* A directory the kernel opened itself (-o immutable) has no handle:
	 * a stream for this call, at the cookie asked. */
	struct efs_dir once = {.ino = dir};
	struct efs_dir *d = no_handle(fi) ? &once : dir_of(fi);
	char *buf = malloc(size), *p = buf;
	size_t rem = size;
	int err = 0;

	stats_add(&fs->stats, ST_kernel_readdirs, 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (!d->dp && !(d->eof && offset == d->offset)) {
		/* Closed at its end or at open: again, at the cookie asked. */
		int r = open_stream(fs, d->ino, NULL, &d->dp);

		if (r < 0) {
			free(buf);
			fuse_reply_err(req, -r);
			return;
		}
		if (offset)
			src_seekdir(d->dp, offset);
		d->offset = offset;
		d->eof = false;
	}
	if (offset != d->offset) {
		src_seekdir(d->dp, offset);
		d->entry = NULL;
		d->offset = offset;
		d->eof = false;
	}
	for (;;) {
		struct fuse_entry_param e;
		size_t n;

		if (!d->entry) {
			if (d->eof)
				break;
			err = -src_readdir(d->dp, &d->entry);
			if (!d->entry) {
				d->eof = !err; /* no error: the end of the directory */
				break;
			}
		}
		memset(&e, 0, sizeof(e));
		e.attr.st_ino = d->entry->d_ino;
		e.attr.st_mode = DTTOIF(d->entry->d_type);
		if (plus && !is_dot_or_dotdot(d->entry->d_name)) {
			int r = do_lookup(fs, dir, d->entry->d_name, &e);

			if (r == -ENOENT) {
				/* Removed since readdir saw it: skip it. */
				d->offset = d->entry->d_off;
				d->entry = NULL;
				continue;
			}
			if (r < 0) {
				/* Listed, but its lookup fails now (a dead mount
				 * under it, a source refusing, no fds): the name
				 * without attributes (ino 0: the kernel makes no
				 * entry), so the listing goes on; a stat of it then
				 * looks it up and gets the error, as on SOURCE. */
				memset(&e, 0, sizeof(e));
				e.attr.st_ino = d->entry->d_ino;
				e.attr.st_mode = DTTOIF(d->entry->d_type);
			}
			n = fuse_add_direntry_plus(req, p, rem, d->entry->d_name, &e,
						   d->entry->d_off);
			if (n > rem) {
				if (e.ino)
					itab_forget(fs->itab, inode_of(req, e.ino), 1);
				break;
			}
		} else if (plus) {
			n = fuse_add_direntry_plus(req, p, rem, d->entry->d_name, &e,
						   d->entry->d_off);
			if (n > rem)
				break;
		} else {
			n = fuse_add_direntry(req, p, rem, d->entry->d_name, &e.attr,
					      d->entry->d_off);
			if (n > rem)
				break;
		}
		p += n;
		rem -= n;
		d->offset = d->entry->d_off;
		d->entry = NULL;
	}
	/* Read to its end: no fd for a handle kept open after its listing. */
	if (d->eof || d == &once)
		close_stream(d);
	/* An error after some entries were packed is reported next time. */
	if (err && rem == size)
		fuse_reply_err(req, err);
	else
		fuse_reply_buf(req, buf, size - rem);
	free(buf);
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
		       struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, offset, fi, false);
}

void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
			   struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, offset, fi, true);
}

void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct efs_dir *d = dir_of(fi);

	stats_add(&fs_of(req)->stats, ST_kernel_releases, 1);
	if (!d) {
		fuse_reply_err(req, 0);
		return;
	}

	handle_del(fs_of(req), &d->h);
	close_stream(d);
	free(d);
	fuse_reply_err(req, 0);
}

void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct efs_dir *d = dir_of(fi);
	DIR *dp = d ? d->dp : NULL;
	int r;

	if (!d) {
		fuse_reply_err(req, 0); /* -o immutable: nothing to sync */
		return;
	}
	r = dp ? 0 : open_stream(fs_of(req), d->ino, NULL, &dp);

	if (r == 0)
		r = src_fsyncdir(dp, datasync);
	if (dp && dp != d->dp)
		src_closedir(dp);
	fuse_reply_err(req, -r);
}
