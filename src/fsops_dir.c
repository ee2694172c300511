/* fsops_dir.c - directory handles: open, list (readdir, readdirplus), close.
 *
 * A struct efs_dir holds a directory stream of the source directory and
 * where the kernel is in it: the offset the kernel asks for is the telldir
 * cookie of the next entry, an entry read but not yet returned (the reply
 * was full) is kept for the next call, and a stream read to its end is not
 * read again until the kernel seeks.  readdirplus looks every entry up
 * (do_lookup), so names removed since the listing are skipped.  At open the
 * kernel may keep its cached listing if the directory is unchanged
 * (inode.c decides, as an NFS client would).
 *
 * Locks: none.  An efs_dir has no lock of its own: the kernel serialises
 * getdents on one open directory, so its requests come one at a time.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fsops_int.h"

void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *i = inode_of(req, ino);
	struct efs_dir *d = calloc(1, sizeof(*d));
	struct stat st;
	int r, fd;

	if (!d) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fd = ifd(fs, i);
	r = fd < 0 ? fd : src_opendir(fd, &d->dp);
	stats_add(&fs->stats, ST_source_readdirs, fd >= 0);
	if (fd >= 0)
		ifd_put(fs, i);
	note_root_fault(fs, i, r);
	if (r < 0) {
		free(d);
		fuse_reply_err(req, -r);
		return;
	}
	/* The kernel may cache the listing; it keeps what it cached at the
	 * last open while the directory is unchanged (the open of the
	 * directory just revalidated its attributes, as NFS does). */
	if (fs->policy.lookupcache != LOOKUPCACHE_NONE &&
	    src_stat(dirfd(d->dp), &st) == 0) {
		fi->cache_readdir = 1;
		fi->keep_cache = itab_listing_unchanged(fs->itab, i, &st);
		itab_observe(fs->itab, i, &fs->policy, &st);
	}
	fi->fh = (uint64_t)(uintptr_t)d;
	handle_add(fs_of(req), &d->h, true);
	if (fuse_reply_open(req, fi) == -ENOENT) {
		handle_del(fs_of(req), &d->h);
		src_closedir(d->dp);
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
	struct efs_dir *d = dir_of(fi);
	char *buf = malloc(size), *p = buf;
	size_t rem = size;
	int err = 0;

	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
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
			err = -do_lookup(fs, dir, d->entry->d_name, &e);
			if (err == ENOENT) {
				/* Removed since readdir saw it: skip it. */
				d->offset = d->entry->d_off;
				d->entry = NULL;
				err = 0;
				continue;
			}
			if (err)
				break;
			n = fuse_add_direntry_plus(req, p, rem, d->entry->d_name, &e,
						   d->entry->d_off);
			if (n > rem) {
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

	handle_del(fs_of(req), &d->h);
	src_closedir(d->dp);
	free(d);
	fuse_reply_err(req, 0);
}

void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	fuse_reply_err(req, -src_fsyncdir(dir_of(fi)->dp, datasync));
}
