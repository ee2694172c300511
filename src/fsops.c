/* fsops.c - FUSE low-level operations over the inode table and source.c.
 *
 * Thin glue: decode the request, call inode/source (and later the cache),
 * reply exactly once.  Errors travel as -errno and are replied here with
 * fuse_reply_err(req, -r).  The FUSE inode number of an inode is its
 * address, except the root which is FUSE_ROOT_ID.
 *
 * Open files carry a struct efs_file in fi->fh; directories a struct
 * efs_dir.  Blocking lock requests (F_SETLKW, flock without LOCK_NB) that
 * cannot be granted at once are handed to a dedicated thread, so waiters
 * never tie up the session's worker threads; a FUSE interrupt wakes that
 * thread with a signal and the waiter gets EINTR.
 */
#include "fsops.h"

#include <errno.h>
#include <stdio.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "control.h"
#include "ctlproto.h"
#include "log.h"
#include "source.h"

/* Our reserved xattr names (ctlproto.h) are queries only: reading them has
 * no side effect, and they cannot be set or removed.  Actions (evict,
 * verify) go through the control socket (control.c), which only root and
 * the mount's owner can reach. */
#define RESERVED_XATTR_PREFIX CTL_XATTR_PREFIX

/* Sent to a parked lock wait to make its blocking call return EINTR. */
#define LOCK_WAKE_SIGNAL SIGURG
static void lock_wake_handler(int sig);

/* Every open file and directory is on fs->handles, so that those the kernel
 * never released (unmount with files open) are freed at exit. */
struct handle {
	struct handle *prev, *next; /* protected by fs->handles_mu */
	bool is_dir;
};

struct efs_file {
	struct handle h;        /* first */
	int fd;                 /* source fd opened for I/O */
	off_t next_off;         /* atomic: where a sequential reader reads next */
};

/* Reads within this distance of the previous one's end count as sequential:
 * the kernel's readahead sends several requests at once, slightly out of
 * order. */
#define SEQ_SLACK (4 << 20)

static bool note_sequential(struct efs_file *f, off_t off, size_t size)
{
	off_t prev = __atomic_exchange_n(&f->next_off, off + (off_t)size, __ATOMIC_RELAXED);

	return off == 0 || (off >= prev - SEQ_SLACK && off <= prev + SEQ_SLACK);
}

struct efs_dir {
	struct handle h;        /* first */
	DIR *dp;
	off_t offset;           /* telldir cookie of the entry after `entry` */
	struct dirent *entry;   /* read but not yet returned, or NULL */
};

static struct efs_fs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static void handle_add(struct efs_fs *fs, struct handle *h, bool is_dir)
{
	struct handle *head = fs->handles;

	h->is_dir = is_dir;
	pthread_mutex_lock(&fs->handles_mu);
	h->prev = head;
	h->next = head->next;
	head->next->prev = h;
	head->next = h;
	pthread_mutex_unlock(&fs->handles_mu);
}

static void handle_del(struct efs_fs *fs, struct handle *h)
{
	pthread_mutex_lock(&fs->handles_mu);
	h->prev->next = h->next;
	h->next->prev = h->prev;
	pthread_mutex_unlock(&fs->handles_mu);
}

static struct efs_inode *inode_of(fuse_req_t req, fuse_ino_t ino)
{
	if (ino == FUSE_ROOT_ID)
		return itab_root(fs_of(req)->itab);
	return (struct efs_inode *)(uintptr_t)ino;
}

static fuse_ino_t ino_id(struct efs_fs *fs, struct efs_inode *i)
{
	return i == itab_root(fs->itab) ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)i;
}

static struct efs_file *file_of(struct fuse_file_info *fi)
{
	return (struct efs_file *)(uintptr_t)fi->fh;
}

static bool reserved_xattr(const char *name)
{
	return !strncmp(name, RESERVED_XATTR_PREFIX, sizeof(RESERVED_XATTR_PREFIX) - 1);
}

static bool bad_name(const char *name)
{
	return !strcmp(name, ".") || !strcmp(name, "..") || strchr(name, '/');
}

int fsops_init(struct efs_fs *fs, const struct efs_config *cfg, char *err, size_t errlen)
{
	int fd, r;

	memset(fs, 0, sizeof(*fs));
	fs->cfg = cfg;
	pthread_mutex_init(&fs->handles_mu, NULL);
	fs->handles = calloc(1, sizeof(struct handle));
	if (!fs->handles) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	fs->handles->next = fs->handles->prev = fs->handles;
	if (cfg->ttl == CONFIG_TTL_NEVER)
		fs->entry_timeout = fs->attr_timeout = 86400.0 * 365;
	else
		fs->entry_timeout = fs->attr_timeout = (double)cfg->ttl;
	{
		struct sigaction sa = {.sa_handler = lock_wake_handler};

		/* No SA_RESTART: a parked lock wait must see EINTR. */
		sigemptyset(&sa.sa_mask);
		sigaction(LOCK_WAKE_SIGNAL, &sa, NULL);
	}
	fd = src_open_root(cfg->source);
	if (fd < 0) {
		snprintf(err, errlen, "cannot open SOURCE '%s': %s", cfg->source, strerror(-fd));
		return fd;
	}
	r = itab_new(&fs->itab, fd);
	if (r < 0) {
		close(fd);
		snprintf(err, errlen, "cannot set up the inode table: %s", strerror(-r));
		return r;
	}
	r = cache_new(&fs->cache, cfg, &fs->stats, err, errlen);
	if (r < 0) {
		fsops_destroy(fs);
		return r;
	}
	itab_set_release_hook(fs->itab, cache_inode_release, fs->cache);
	return 0;
}

int fsops_start(struct efs_fs *fs)
{
	int r = cache_start(fs->cache);

	if (r < 0)
		return r;
	/* Actions on the cache: a socket in cache_dir, for root and the owner.
	 * Without it the mount still serves; only evict and verify are off. */
	r = control_start(&fs->ctl, fs->cache, geteuid());
	if (r < 0)
		log_warn("cannot listen on the control socket in cache_dir '%s': %s; "
			 "efscachectl evict and verify will not work",
			 cache_dir_path(fs->cache), strerror(-r));
	return 0;
}

void fsops_destroy(struct efs_fs *fs)
{
	struct handle *head = fs->handles, *h, *next;

	/* Handles the kernel never released: the mount went away with files
	 * still open. */
	for (h = head ? head->next : NULL; h && h != head; h = next) {
		next = h->next;
		if (h->is_dir) {
			closedir(((struct efs_dir *)h)->dp);
		} else {
			close(((struct efs_file *)h)->fd);
		}
		free(h);
	}
	free(head);
	fs->handles = NULL;
	control_stop(fs->ctl); /* before the cache it acts on */
	fs->ctl = NULL;
	if (fs->itab)
		itab_free(fs->itab);
	fs->itab = NULL;
	cache_free(fs->cache);
	fs->cache = NULL;
}

/* ---- lookup and attributes -------------------------------------------- */

/* Look name up in parent and take a lookup reference.  Returns 0 or -errno. */
static int do_lookup(struct efs_fs *fs, struct efs_inode *parent, const char *name,
		     struct fuse_entry_param *e)
{
	struct efs_inode *i;
	int fd, r;

	if (bad_name(name))
		return -EINVAL;
	memset(e, 0, sizeof(*e));
	r = src_lookup(parent->fd, name, &fd, &e->attr);
	if (r < 0)
		return r;
	i = itab_get(fs->itab, fd, &e->attr);
	if (!i)
		return -ENOMEM;
	e->ino = ino_id(fs, i);
	e->attr_timeout = fs->attr_timeout;
	e->entry_timeout = fs->entry_timeout;
	return 0;
}

static void reply_entry_or_err(fuse_req_t req, int r, const struct fuse_entry_param *e)
{
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_entry(req, e);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	unsigned want = FUSE_CAP_FLOCK_LOCKS | FUSE_CAP_POSIX_LOCKS | FUSE_CAP_ATOMIC_O_TRUNC |
			FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE | FUSE_CAP_PARALLEL_DIROPS |
			FUSE_CAP_ASYNC_READ | FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO;
	(void)userdata;

	conn->want |= want & conn->capable;
	/* Nothing of ours to apply the umask to: the kernel did it already. */
	conn->want &= ~FUSE_CAP_DONT_MASK;
	/* With auto_inval_data and attr_timeout 0 (ttl=0) the kernel asks for
	 * the attributes before every read() to see whether to drop its page
	 * cache.  We decide that at open instead (keep_cache only when the
	 * identity is unchanged), which is what close-to-open promises, so
	 * page-cache hits need not wait for the daemon. */
	conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
	if (conn->max_write < (1u << 20))
		conn->max_write = 1u << 20;
	conn->max_readahead = 1u << 20;
	conn->max_read = EFS_MAX_READ;
	/* Let the kernel keep more readahead and async requests in flight than
	 * its default 12: a sequential reader's 1 MiB requests then overlap. */
	conn->max_background = 64;
	conn->congestion_threshold = 48;
	if (!(conn->capable & FUSE_CAP_FLOCK_LOCKS))
		log_warn("kernel lacks remote flock support: flock() is local to this host");
	if (!(conn->capable & FUSE_CAP_POSIX_LOCKS))
		log_warn("kernel lacks remote POSIX lock support: fcntl locks are local");
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;
	int r = do_lookup(fs_of(req), inode_of(req, parent), name, &e);

	reply_entry_or_err(req, r, &e);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	itab_forget(fs_of(req)->itab, inode_of(req, ino), nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	size_t k;

	for (k = 0; k < count; k++)
		itab_forget(fs_of(req)->itab, inode_of(req, forgets[k].ino), forgets[k].nlookup);
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;
	int r = src_stat(inode_of(req, ino)->fd, &st);

	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_attr(req, &st, fs_of(req)->attr_timeout);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int valid,
		       struct fuse_file_info *fi)
{
	struct efs_inode *i = inode_of(req, ino);
	int openfd = fi ? file_of(fi)->fd : -1;
	int r = 0;

	if (valid & FUSE_SET_ATTR_MODE) {
		r = src_chmod(i->fd, openfd, attr->st_mode);
		if (r < 0)
			goto out_err;
	}
	if (valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		uid_t uid = (valid & FUSE_SET_ATTR_UID) ? attr->st_uid : (uid_t)-1;
		gid_t gid = (valid & FUSE_SET_ATTR_GID) ? attr->st_gid : (gid_t)-1;

		r = src_chown(i->fd, uid, gid);
		if (r < 0)
			goto out_err;
	}
	if (valid & FUSE_SET_ATTR_SIZE) {
		r = src_truncate(i->fd, openfd, attr->st_size);
		cache_written(fs_of(req)->cache, i);
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
		r = src_utimens(i->fd, openfd, i->type, ts);
		if (r < 0)
			goto out_err;
	}
	op_getattr(req, ino, fi);
	return;
out_err:
	fuse_reply_err(req, -r);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	char buf[PATH_MAX + 1];
	ssize_t n = src_readlink(inode_of(req, ino)->fd, buf, sizeof(buf));

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

static void op_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	fuse_reply_err(req, -src_access(inode_of(req, ino)->fd, mask));
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs st;
	int r = src_statfs(inode_of(req, ino)->fd, &st);

	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_statfs(req, &st);
}

/* ---- namespace changes ------------------------------------------------- */

/* The kinds of object a request can create. */
enum mk_kind { MK_NODE, MK_DIR, MK_SYMLINK };

/* Switch to the caller's uid, gid and supplementary groups. */
static void enter_caller(fuse_req_t req, struct src_cred *saved)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	gid_t groups[SRC_MAX_GROUPS];
	int n = fuse_req_getgroups(req, SRC_MAX_GROUPS, groups);

	if (n > SRC_MAX_GROUPS)
		n = SRC_MAX_GROUPS; /* the first ones; the source decides */
	src_cred_enter(saved, ctx->uid, ctx->gid, groups, n);
}

static void make_node(fuse_req_t req, fuse_ino_t parent, const char *name, enum mk_kind kind,
		      mode_t mode, dev_t rdev, const char *target)
{
	struct efs_inode *dir = inode_of(req, parent);
	struct fuse_entry_param e;
	struct src_cred saved;
	int r;

	if (bad_name(name)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	enter_caller(req, &saved);
	switch (kind) {
	case MK_DIR:
		r = src_mkdir(dir->fd, name, mode);
		break;
	case MK_SYMLINK:
		r = src_symlink(target, dir->fd, name);
		break;
	default:
		r = src_mknod(dir->fd, name, mode, rdev);
		break;
	}
	src_cred_leave(&saved);
	if (r == 0)
		r = do_lookup(fs_of(req), dir, name, &e);
	reply_entry_or_err(req, r, &e);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		     dev_t rdev)
{
	make_node(req, parent, name, MK_NODE, mode, rdev, NULL);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	make_node(req, parent, name, MK_DIR, S_IFDIR | mode, 0, NULL);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	make_node(req, parent, name, MK_SYMLINK, 0, 0, link);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *i = inode_of(req, ino);
	struct fuse_entry_param e;
	int r;

	if (bad_name(newname)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	r = src_link(i->fd, inode_of(req, newparent)->fd, newname);
	if (r == 0)
		r = do_lookup(fs, inode_of(req, newparent), newname, &e);
	reply_entry_or_err(req, r, &e);
}

/* Space comes back: before an unlink or a rename over name, an O_PATH fd
 * of the regular file that may lose its last name there (and its inode
 * number in *ino), or -1. */
static int victim_open(int dirfd, const char *name, uint64_t *ino)
{
	struct stat st;
	int fd;

	if (src_lookup(dirfd, name, &fd, &st) < 0)
		return -1;
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return -1;
	}
	*ino = (uint64_t)st.st_ino;
	return fd;
}

/* After the call: a file left with no name loses its cache record now.  Its
 * fd tells (so a hard link made meanwhile keeps the record): a link count
 * of 0, or, on NFS, a handle the server no longer knows. */
static void victim_done(struct efs_fs *fs, int fd, uint64_t ino, int r)
{
	struct stat st;
	int sr;

	if (fd < 0)
		return;
	if (r == 0) {
		sr = src_stat(fd, &st);
		if ((sr == 0 && st.st_nlink == 0) || sr == -ESTALE || sr == -ENOENT)
			cache_source_gone(fs->cache, ino);
	}
	close(fd);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	int dirfd = inode_of(req, parent)->fd;
	uint64_t ino = 0;
	int victim = victim_open(dirfd, name, &ino);
	int r = src_unlink(dirfd, name);

	victim_done(fs_of(req), victim, ino, r);
	fuse_reply_err(req, -r);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, -src_rmdir(inode_of(req, parent)->fd, name));
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	int newdir = inode_of(req, newparent)->fd, victim = -1, r;
	uint64_t ino = 0;

	if (bad_name(name) || bad_name(newname)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (!(flags & (RENAME_EXCHANGE | RENAME_NOREPLACE)))
		victim = victim_open(newdir, newname, &ino);
	r = src_rename(inode_of(req, parent)->fd, name, newdir, newname, flags);
	victim_done(fs_of(req), victim, ino, r);
	fuse_reply_err(req, -r);
}

/* ---- files -------------------------------------------------------------- */

static int file_new(struct efs_fs *fs, int fd, struct fuse_file_info *fi)
{
	struct efs_file *f = calloc(1, sizeof(*f));

	if (!f)
		return -ENOMEM;
	handle_add(fs, &f->h, false);
	f->fd = fd;
	f->next_off = -1;
	fi->fh = (uint64_t)(uintptr_t)f;
	return 0;
}

/* Flags for the source fd: O_DIRECT alignment is the application's business
 * with the kernel, not something the source must honour. */
static int source_flags(int flags)
{
	return flags & ~O_DIRECT;
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct efs_inode *i = inode_of(req, ino);
	int fd = src_open(i->fd, source_flags(fi->flags));
	bool keep = false;
	int r;

	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	/* After the open: O_TRUNC has already changed the identity. */
	r = cache_open(fs_of(req)->cache, i, &keep);
	if (r == 0)
		r = file_new(fs_of(req), fd, fi);
	fi->keep_cache = keep;
	if (r < 0) {
		close(fd);
		fuse_reply_err(req, -r);
		return;
	}
	if (fuse_reply_open(req, fi) == -ENOENT) {
		/* The opener was interrupted and is gone; no release will come. */
		close(fd);
		handle_del(fs_of(req), &file_of(fi)->h);
		free(file_of(fi));
	}
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *dir = inode_of(req, parent);
	struct fuse_entry_param e;
	struct src_cred saved;
	int fd, r;

	if (bad_name(name)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	enter_caller(req, &saved);
	fd = src_create(dir->fd, name, source_flags(fi->flags), mode);
	src_cred_leave(&saved);
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	r = do_lookup(fs, dir, name, &e);
	if (r == 0) {
		bool keep;

		cache_open(fs->cache, inode_of(req, e.ino), &keep);
		r = file_new(fs_of(req), fd, fi);
		if (r < 0)
			itab_forget(fs->itab, inode_of(req, e.ino), 1);
	}
	if (r < 0) {
		close(fd);
		fuse_reply_err(req, -r);
		return;
	}
	if (fuse_reply_create(req, &e, fi) == -ENOENT) {
		itab_forget(fs->itab, inode_of(req, e.ino), 1);
		close(fd);
		handle_del(fs, &file_of(fi)->h);
		free(file_of(fi));
	}
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct efs_fs *fs = fs_of(req);
	struct cache_read rd;
	struct fuse_bufvec *bv;
	ssize_t n;

	n = cache_read(fs->cache, inode_of(req, ino), file_of(fi)->fd, off, size,
		       note_sequential(file_of(fi), off, size), &rd);
	if (n < 0) {
		fuse_reply_err(req, (int)-n);
		return;
	}
	bv = calloc(1, sizeof(*bv) + (rd.nseg ? rd.nseg : 1) * sizeof(struct fuse_buf));
	if (!bv) {
		cache_read_done(fs->cache, &rd);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	bv->count = rd.nseg;
	for (unsigned k = 0; k < rd.nseg; k++) {
		struct fuse_buf *b = &bv->buf[k];

		b->size = rd.seg[k].len;
		if (rd.seg[k].fd >= 0) {
			b->flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
			b->fd = rd.seg[k].fd;
			b->pos = rd.seg[k].pos;
		} else {
			b->mem = (void *)rd.seg[k].mem;
		}
	}
	fuse_reply_data(req, bv, FUSE_BUF_SPLICE_MOVE);
	free(bv);
	cache_read_done(fs->cache, &rd);
}

static void op_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in, off_t off,
			 struct fuse_file_info *fi)
{
	struct fuse_bufvec out = FUSE_BUFVEC_INIT(fuse_buf_size(in));
	ssize_t n;

	out.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	out.buf[0].fd = file_of(fi)->fd;
	out.buf[0].pos = off;
	n = fuse_buf_copy(&out, in, 0);
	cache_written(fs_of(req)->cache, inode_of(req, ino));
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else
		fuse_reply_write(req, (size_t)n);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct efs_file *f = file_of(fi);
	int fd, r = 0;

	inode_lock_owner_release(inode_of(req, ino), fi->lock_owner);
	/* Closing a duplicate makes NFS-like sources report deferred write
	 * errors now, where close(2) returns them, not at release. */
	fd = dup(f->fd);
	if (fd < 0 || close(fd) < 0)
		r = -errno;
	fuse_reply_err(req, -r);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct efs_file *f = file_of(fi);

	close(f->fd); /* also drops flock locks held through it */
	handle_del(fs_of(req), &f->h);
	free(f);
	fuse_reply_err(req, 0);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	int fd = file_of(fi)->fd;
	int r = datasync ? fdatasync(fd) : fsync(fd);

	fuse_reply_err(req, r < 0 ? errno : 0);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
			 struct fuse_file_info *fi)
{
	int r = fallocate(file_of(fi)->fd, mode, off, len) < 0 ? errno : 0;

	/* errno first: cache_written takes locks and may change it. */
	cache_written(fs_of(req)->cache, inode_of(req, ino));
	fuse_reply_err(req, r);
}

static void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		     struct fuse_file_info *fi)
{
	off_t r = lseek(file_of(fi)->fd, off, whence);

	if (r < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_lseek(req, r);
}

static void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
			       struct fuse_file_info *fi_in, fuse_ino_t ino_out, off_t off_out,
			       struct fuse_file_info *fi_out, size_t len, int flags)
{
	ssize_t n = copy_file_range(file_of(fi_in)->fd, &off_in, file_of(fi_out)->fd, &off_out,
				    len, (unsigned)flags);
	int err = n < 0 ? errno : 0; /* before cache_written, which may change it */

	cache_written(fs_of(req)->cache, inode_of(req, ino_out));
	if (n < 0)
		fuse_reply_err(req, err);
	else
		fuse_reply_write(req, (size_t)n);
}

/* ---- locks ---------------------------------------------------------------- */

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

static pthread_mutex_t waits_mu = PTHREAD_MUTEX_INITIALIZER;
static struct lock_wait *waits; /* protected by waits_mu */

static void lock_wake_handler(int sig)
{
	(void)sig; /* only there to make the blocking call return EINTR */
}

static void lock_wait_interrupt(fuse_req_t req, void *data)
{
	struct lock_wait *w;

	pthread_mutex_lock(&waits_mu);
	for (w = waits; w; w = w->next) {
		if (w != data)
			continue;
		w->interrupted = true;
		if (w->started)
			pthread_kill(w->thread, LOCK_WAKE_SIGNAL);
		break;
	}
	pthread_mutex_unlock(&waits_mu);
}

static void lock_wait_unlist(struct lock_wait *w)
{
	struct lock_wait **pp;

	pthread_mutex_lock(&waits_mu);
	for (pp = &waits; *pp; pp = &(*pp)->next) {
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	}
	pthread_mutex_unlock(&waits_mu);
}

static void *lock_wait_thread(void *arg)
{
	struct lock_wait *w = arg;
	bool stop;
	int r;

	pthread_mutex_lock(&waits_mu);
	stop = w->interrupted;
	pthread_mutex_unlock(&waits_mu);
	if (stop)
		r = -EINTR;
	else if (w->is_flock)
		r = src_flock(w->fd, w->flock_op);
	else
		r = src_setlk(w->fd, &w->lk, true);
	lock_wait_unlist(w);
	fuse_reply_err(w->req, -r);
	close(w->fd);
	free(w);
	return NULL;
}

/* Reply to req from a new thread once the lock is granted or interrupted. */
static void park_lock_wait(fuse_req_t req, struct lock_wait *w)
{
	pthread_attr_t attr;
	int r;

	w->req = req;
	pthread_mutex_lock(&waits_mu);
	w->next = waits;
	waits = w;
	pthread_mutex_unlock(&waits_mu);
	fuse_req_interrupt_func(req, lock_wait_interrupt, w);

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_mutex_lock(&waits_mu);
	r = pthread_create(&w->thread, &attr, lock_wait_thread, w);
	w->started = (r == 0);
	pthread_mutex_unlock(&waits_mu);
	pthread_attr_destroy(&attr);
	if (r != 0) {
		lock_wait_unlist(w);
		close(w->fd);
		free(w);
		fuse_reply_err(req, r);
	}
}

static struct lock_wait *lock_wait_new(int fd)
{
	struct lock_wait *w = calloc(1, sizeof(*w));

	if (!w)
		return NULL;
	w->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (w->fd < 0) {
		free(w);
		return NULL;
	}
	return w;
}

static void op_getlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		     struct flock *lock)
{
	/* Through the owner's fd, so the owner's own locks are no conflict. */
	int fd = inode_lock_owner_fd(inode_of(req, ino), fi->lock_owner, false);
	int r = src_getlk(fd >= 0 ? fd : file_of(fi)->fd, lock);

	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_lock(req, lock);
}

static void op_setlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		     struct flock *lock, int sleep)
{
	struct efs_inode *i = inode_of(req, ino);
	struct lock_wait *w;
	int fd, r;

	fd = inode_lock_owner_fd(i, fi->lock_owner, lock->l_type != F_UNLCK);
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

static void op_flock(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, int op)
{
	struct efs_file *f = file_of(fi);
	struct lock_wait *w;
	int r;

	r = src_flock(f->fd, op | LOCK_NB);
	if (r != -EWOULDBLOCK || (op & LOCK_NB)) {
		fuse_reply_err(req, -r);
		return;
	}
	w = lock_wait_new(f->fd);
	if (!w) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	w->is_flock = true;
	w->flock_op = op;
	park_lock_wait(req, w);
}

/* ---- directories ---------------------------------------------------------- */

static struct efs_dir *dir_of(struct fuse_file_info *fi)
{
	return (struct efs_dir *)(uintptr_t)fi->fh;
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct efs_dir *d = calloc(1, sizeof(*d));
	int r;

	if (!d) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	r = src_opendir(inode_of(req, ino)->fd, &d->dp);
	if (r < 0) {
		free(d);
		fuse_reply_err(req, -r);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)d;
	handle_add(fs_of(req), &d->h, true);
	if (fuse_reply_open(req, fi) == -ENOENT) {
		handle_del(fs_of(req), &d->h);
		closedir(d->dp);
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
		seekdir(d->dp, offset);
		d->entry = NULL;
		d->offset = offset;
	}
	for (;;) {
		struct fuse_entry_param e;
		size_t n;

		if (!d->entry) {
			errno = 0;
			d->entry = readdir(d->dp);
			if (!d->entry) {
				err = errno; /* 0 at the end of the directory */
				break;
			}
		}
		memset(&e, 0, sizeof(e));
		e.attr.st_ino = d->entry->d_ino;
		e.attr.st_mode = (mode_t)d->entry->d_type << 12;
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

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
		       struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, offset, fi, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
			   struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, offset, fi, true);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct efs_dir *d = dir_of(fi);

	handle_del(fs_of(req), &d->h);
	closedir(d->dp);
	free(d);
	fuse_reply_err(req, 0);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	int fd = dirfd(dir_of(fi)->dp);
	int r = datasync ? fdatasync(fd) : fsync(fd);

	fuse_reply_err(req, r < 0 ? errno : 0);
}

/* ---- extended attributes ----------------------------------------------- */

/* Our own attributes: queries only (efscachectl stats and status). */
static void reply_reserved_xattr(fuse_req_t req, struct efs_inode *i, const char *name,
				 size_t size)
{
	struct efs_fs *fs = fs_of(req);
	size_t need, cap = 8192;
	char *buf;

	for (;;) {
		buf = malloc(cap);
		if (!buf) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
		if (!strcmp(name, CTL_XATTR_STATS))
			need = cache_stats_text(fs->cache, buf, cap);
		else if (!strcmp(name, CTL_XATTR_STATUS))
			need = cache_status(fs->cache, i, buf, cap);
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

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
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
	n = src_getxattr(i->fd, i->type, name, buf, size);
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

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct efs_inode *i = inode_of(req, ino);
	ssize_t n;
	char *buf;

	/* Filtering needs the whole list even when only its size is asked. */
	n = src_listxattr(i->fd, i->type, NULL, 0);
	if (n < 0) {
		fuse_reply_err(req, (int)-n);
		return;
	}
	buf = malloc((size_t)n + 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n = src_listxattr(i->fd, i->type, buf, (size_t)n);
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

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			size_t size, int flags)
{
	struct efs_inode *i = inode_of(req, ino);

	if (reserved_xattr(name)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	fuse_reply_err(req, -src_setxattr(i->fd, i->type, name, value, size, flags));
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	struct efs_inode *i = inode_of(req, ino);

	if (reserved_xattr(name)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	fuse_reply_err(req, -src_removexattr(i->fd, i->type, name));
}

const struct fuse_lowlevel_ops efs_fsops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.readlink = op_readlink,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
	.symlink = op_symlink,
	.rename = op_rename,
	.link = op_link,
	.open = op_open,
	.create = op_create,
	.read = op_read,
	.write_buf = op_write_buf,
	.flush = op_flush,
	.release = op_release,
	.fsync = op_fsync,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.releasedir = op_releasedir,
	.fsyncdir = op_fsyncdir,
	.statfs = op_statfs,
	.setxattr = op_setxattr,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.removexattr = op_removexattr,
	.access = op_access,
	.getlk = op_getlk,
	.setlk = op_setlk,
	.flock = op_flock,
	.fallocate = op_fallocate,
	.copy_file_range = op_copy_file_range,
	.lseek = op_lseek,
};
