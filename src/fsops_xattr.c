/* fsops_xattr.c - extended attribute ops: the source's, and our own.
 *
 * Names under user.efscache. (ctlproto.h) are ours: reading one answers a
 * query (the daemon's counters, a file's cache status) with no side
 * effect; they cannot be set or removed (EPERM) and are left out of
 * listings.  Actions (evict, verify) go through the control socket
 * (control.c), which only root and the mount's owner can reach.  Every other
 * name goes to the source object through source.c.
 *
 * Locks: none of its own; the inode fd is held (ifd) across each source
 * call, and the text of a query is built by cache.c and inode.c under
 * their own locks.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ctlproto.h"
#include "fsops_int.h"

/* Our reserved xattr names (ctlproto.h) are queries only: reading them has
 * no side effect, and they cannot be set or removed.  Actions (evict,
 * verify) go through the control socket (control.c), which only root and
 * the mount's owner can reach. */
#define RESERVED_XATTR_PREFIX CTL_XATTR_PREFIX

static bool reserved_xattr(const char *name)
{
	return !strncmp(name, RESERVED_XATTR_PREFIX, sizeof(RESERVED_XATTR_PREFIX) - 1);
}

/* The first buffer for a reserved attribute's text, enough for the
 * counters' text today; a longer text is built again in a buffer of the
 * size it reported. */
#define RESERVED_TEXT_FIRST_CAP 8192

/* The status query's text (ctlproto.h) of one file. */
static size_t status_text(struct efs_fs *fs, struct efs_inode *i, char *buf, size_t cap)
{
	static const enum ctl_file_state state[] = {
		[CACHE_FILE_UNCACHED] = CTL_STATE_UNCACHED,
		[CACHE_FILE_UNVALIDATED] = CTL_STATE_UNVALIDATED,
		[CACHE_FILE_VALID] = CTL_STATE_VALID,
		[CACHE_FILE_STALE] = CTL_STATE_STALE,
	};
	struct cache_file_status cs;
	struct ctl_file_status st;

	cache_status(fs->cache, i, &cs);
	st = (struct ctl_file_status){
		.state = state[cs.state],
		.size = cs.size,
		.cached_bytes = cs.cached_bytes,
		.chunk_size = cs.chunk_size,
		.chunks = cs.chunks,
		.chunks_cached = cs.chunks_cached,
		.chunks_verified = cs.chunks_verified,
		.last_validated = cs.last_validated > 0 ? (uint64_t)cs.last_validated : 0,
	};
	return ctl_status_format(&st, buf, cap);
}

/* Our own attributes: queries only (efscachectl stats and status). */
static void reply_reserved_xattr(fuse_req_t req, struct efs_inode *i, const char *name,
				 size_t size)
{
	struct efs_fs *fs = fs_of(req);
	size_t need, cap = RESERVED_TEXT_FIRST_CAP;
	char *buf;

	for (;;) {
		buf = malloc(cap);
		if (!buf) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
		if (!strcmp(name, CTL_XATTR_STATS))
			need = fsops_stats_text(fs, buf, cap);
		else if (!strcmp(name, CTL_XATTR_STATUS))
			need = status_text(fs, i, buf, cap);
		else {
			free(buf);
			fuse_reply_err(req, ENODATA);
			return;
		}
		if (need < cap)
			break;
		free(buf);
		cap = need + 1;
	}
	if (!size)
		fuse_reply_xattr(req, need);
	else if (need > size)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, buf, need);
	free(buf);
}

void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct efs_inode *i = inode_of(req, ino);
	char *buf = NULL;
	ssize_t n;

	if (reserved_xattr(name)) {
		reply_reserved_xattr(req, i, name, size);
		return;
	}
	if (size) {
		buf = malloc(size);
		if (!buf) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
	}
	{
		int fd = ifd(fs_of(req), i);

		n = fd < 0 ? fd : src_getxattr(fd, i->type, name, buf, size);
		if (fd >= 0)
			ifd_put(fs_of(req), i);
	}
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else if (size)
		fuse_reply_buf(req, buf, (size_t)n);
	else
		fuse_reply_xattr(req, (size_t)n);
	free(buf);
}

/* Remove our reserved names from a NUL-separated list; returns new length. */
static size_t filter_xattr_list(char *list, size_t len)
{
	char *in = list, *out = list, *end = list + len;

	while (in < end) {
		size_t n = strnlen(in, (size_t)(end - in)) + 1;
		if (!reserved_xattr(in)) {
			memmove(out, in, n);
			out += n;
		}
		in += n;
	}
	return (size_t)(out - list);
}

void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct efs_inode *i = inode_of(req, ino);
	ssize_t n;
	char *buf;

	int fd = ifd(fs_of(req), i);

	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	/* Filtering needs the whole list even when only its size is asked. */
	n = src_listxattr(fd, i->type, NULL, 0);
	buf = n < 0 ? NULL : malloc((size_t)n + 1);
	if (n >= 0 && !buf)
		n = -ENOMEM;
	if (n >= 0)
		n = src_listxattr(fd, i->type, buf, (size_t)n);
	ifd_put(fs_of(req), i);
	if (n < 0) {
		fuse_reply_err(req, (int)-n == ERANGE ? EAGAIN : (int)-n);
		free(buf);
		return;
	}
	n = (ssize_t)filter_xattr_list(buf, (size_t)n);
	if (!size)
		fuse_reply_xattr(req, (size_t)n);
	else if ((size_t)n > size)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, buf, (size_t)n);
	free(buf);
}

void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			size_t size, int flags)
{
	struct efs_inode *i = inode_of(req, ino);

	if (reserved_xattr(name)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	{
		int fd = ifd(fs_of(req), i), r = fd;
		struct src_cred saved;

		if (fd >= 0) {
			enter_caller(req, &saved);
			r = src_setxattr(fd, i->type, name, value, size, flags);
			src_cred_leave(&saved);
			ifd_put(fs_of(req), i);
			index_parent_changed(fs_of(req), i); /* its ctime */
		}
		fuse_reply_err(req, -r);
	}
}

void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	struct efs_inode *i = inode_of(req, ino);

	if (reserved_xattr(name)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	{
		int fd = ifd(fs_of(req), i), r = fd;
		struct src_cred saved;

		if (fd >= 0) {
			enter_caller(req, &saved);
			r = src_removexattr(fd, i->type, name);
			src_cred_leave(&saved);
			ifd_put(fs_of(req), i);
			index_parent_changed(fs_of(req), i); /* its ctime */
		}
		fuse_reply_err(req, -r);
	}
}
