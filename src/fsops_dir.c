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

/* Listings served from a directory index snapshot number their entries
 * by position: "." is 0, ".." 1, the snapshot's i-th name i + 2, and the
 * cookie of an entry (where the next call starts) is its position + 1,
 * tagged.  A handle that lists from a snapshot hands out no other
 * cookie (its stream is closed); a directory without a handle, see
 * list_once_from_snapshot. */
#define SNAP_COOKIE_TAG (1ULL << 62)

static bool is_snap_cookie(off_t off)
{
	return off == 0 || ((uint64_t)off & SNAP_COOKIE_TAG);
}

/* Answer a listing of dir from snapshot snap, from cookie offset. */
static void reply_snapshot(fuse_req_t req, struct efs_fs *fs, struct efs_inode *dir,
			   struct dix_dir *snap, size_t size, off_t offset, bool plus)
{
	uint64_t pos = (uint64_t)offset & ~SNAP_COOKIE_TAG;
	char *buf = malloc(size), *p = buf;
	size_t rem = size;

	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	for (; pos < (uint64_t)snap->n + 2; pos++) {
		const struct dix_entry *ent = pos >= 2 ? &snap->ent[pos - 2] : NULL;
		const off_t next = (off_t)(SNAP_COOKIE_TAG | (pos + 1));
		char name[DIX_NAME_MAX + 1];
		struct fuse_entry_param e;
		size_t n;

		memset(&e, 0, sizeof(e));
		if (!ent) {
			strcpy(name, pos ? ".." : ".");
			e.attr.st_ino = pos ? (ino_t)snap->dotdot_ino : (ino_t)snap->dot_ino;
			e.attr.st_mode = S_IFDIR;
		} else {
			memcpy(name, dix_name(snap, ent), ent->name_len);
			name[ent->name_len] = '\0';
			/* Looked up with the listing (readdirplus); a name the
			 * index cannot answer for is listed without attributes
			 * (the kernel looks it up itself when it needs it). */
			if (!plus || index_entry(fs, dir, snap, ent, &e) < 0) {
				memset(&e, 0, sizeof(e));
				e.attr.st_ino = (ino_t)ent->a.ino;
				e.attr.st_mode = (mode_t)(ent->a.mode & S_IFMT);
			}
		}
		n = plus ? fuse_add_direntry_plus(req, p, rem, name, &e, next)
			 : fuse_add_direntry(req, p, rem, name, &e.attr, next);
		if (n > rem) {
			if (e.ino)
				itab_forget(fs->itab, inode_of(req, e.ino), 1);
			break;
		}
		p += n;
		rem -= n;
	}
	stats_add(&fs->stats, ST_index_listings, 1);
	/* Once replied to, the kernel may close the handle whose reference
	 * on snap the caller holds (a RELEASEDIR on another thread): one
	 * of our own for what follows the reply. */
	dix_ref(fs->dix, snap);
	fuse_reply_buf(req, buf, size - rem);
	free(buf);
	/* A listing from the start is where an import begins with a
	 * directory: its files' records are read next (index_listed). */
	if (offset == 0)
		index_listed(fs, snap);
	index_put(fs, snap);
}

/* A directory listed without a handle (-o immutable) is listed either
 * from snapshots or from the source's stream for as long as the inode
 * lives (the kernel's cookies go with the inode): a call cannot tell a
 * stream's cookie from a snapshot's.  The first listing decides. */
enum { LIST_UNDECIDED, LIST_SNAPSHOT, LIST_STREAM };

/* Is dir's list mode `mode`, deciding it if it was not yet? */
static bool list_mode_is(struct efs_inode *dir, uint8_t mode)
{
	uint8_t was = LIST_UNDECIDED;

	if (__atomic_compare_exchange_n(&dir->list_mode, &was, mode, false, __ATOMIC_RELAXED,
					__ATOMIC_RELAXED))
		return true;
	return was == mode;
}

/* A listing without a handle from a snapshot, if dir's are.  True if it
 * replied. */
static bool list_once_from_snapshot(fuse_req_t req, struct efs_fs *fs, struct efs_inode *dir,
				    size_t size, off_t offset, bool plus)
{
	struct dix_dir *snap;

	if (!fs->dix || __atomic_load_n(&dir->list_mode, __ATOMIC_RELAXED) == LIST_STREAM)
		return false;
	/* The snapshot that may answer now, else a new one (an immutable
	 * directory lists the same again). */
	snap = index_dir(fs, dir, true);
	if (!snap)
		snap = index_build(fs, dir, DIX_MAX_ENTRIES, NULL);
	if (snap && list_mode_is(dir, LIST_SNAPSHOT)) {
		reply_snapshot(req, fs, dir, snap, size, offset, plus);
		index_put(fs, snap);
		return true;
	}
	if (snap)
		index_put(fs, snap);
	if (list_mode_is(dir, LIST_STREAM))
		return false;
	/* Listed from snapshots before, none to be had now (a fault, or
	 * the directory grew past the index's bound): an error, never a
	 * cookie of one given to the other. */
	fuse_reply_err(req, EIO);
	return true;
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
		/* A snapshot of the directory that may answer now lists it
		 * (checked against the server if its window passed). */
		d->snap = index_dir(fs, i, true);
	}
	/* Default options, no snapshot fresh enough to list it: the kernel's
	 * cached listing has names whose attributes it must then ask for one
	 * by one (a GETATTR each at the source after a find or an import's
	 * listdir).  Listed again instead: one pass, whose attributes come
	 * with the entries, as an NFS client turns a stat storm into one
	 * READDIRPLUS. */
	if (fi->keep_cache && fs->dix && !fs->policy.immutable && !d->snap)
		fi->keep_cache = 0;
	if (d->snap)
		close_stream(d); /* listed from the snapshot */
	if (fi->keep_cache)
		close_stream(d); /* the kernel lists from its cache */
	fi->fh = (uint64_t)(uintptr_t)d;
	handle_add(fs_of(req), &d->h, true);
	if (fuse_reply_open(req, fi) == -ENOENT) {
		handle_del(fs_of(req), &d->h);
		close_stream(d);
		index_put(fs, d->snap);
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
	char *buf, *p;
	size_t rem = size;
	int err = 0;

	stats_add(&fs->stats, ST_kernel_readdirs, 1);
	if (d == &once && list_once_from_snapshot(req, fs, dir, size, offset, plus))
		return;
	if (d != &once && plus && !d->snap && offset == 0 && !d->tried_index && fs->dix) {
		/* The first listing with attributes of this handle from its
		 * start: one pass over the source (the lookups readdirplus
		 * makes anyway) makes a snapshot, which lists it and answers
		 * the lookups that follow.  A directory without a handle (-o
		 * immutable) is listed from the stream, whose cookies are the
		 * source's: a call cannot tell them from a snapshot's, so it
		 * never mixes the two; its readdirplus lookups are answered
		 * from the index (do_lookup). */
		bool unread = d->dp && d->offset == 0 && !d->entry && !d->eof;

		d->tried_index = true;
		/* The handle's stream makes it if nothing was read from it. */
		d->snap = index_build(fs, dir, DIX_MAX_ENTRIES, unread ? d->dp : NULL);
		if (d->snap)
			close_stream(d);
	}
	if (d->snap && is_snap_cookie(offset)) {
		reply_snapshot(req, fs, dir, d->snap, size, offset, plus);
		return;
	}
	buf = malloc(size);
	p = buf;
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
	index_put(fs_of(req), d->snap);
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
