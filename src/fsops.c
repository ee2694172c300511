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
#include "fsops_int.h"

#include <errno.h>
#include <stdio.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "control.h"
#include "ctlproto.h"
#include "lockwait.h"
#include "log.h"
#include "source.h"

void handle_add(struct efs_fs *fs, struct handle *h, bool is_dir)
{
	struct handle *head = fs->handles;

	h->is_dir = is_dir;
	pthread_mutex_lock(&fs->handles_mu);
	h->prev = head;
	h->next = head->next;
	head->next->prev = h;
	head->next = h;
	pthread_mutex_unlock(&fs->handles_mu);
	stats_add(&fs->stats, ST_open_files, 1);
}

void handle_del(struct efs_fs *fs, struct handle *h)
{
	pthread_mutex_lock(&fs->handles_mu);
	h->prev->next = h->next;
	h->next->prev = h->prev;
	pthread_mutex_unlock(&fs->handles_mu);
	stats_sub(&fs->stats, ST_open_files, 1);
}

/* ---- fds ----------------------------------------------------------------- */

/* fds kept for inodes: half of what RLIMIT_NOFILE leaves after a reserve
 * for the cache's own files, worker threads and the session.  The soft
 * limit was raised to the hard one at start (main.c). */
#define FD_RESERVE 128
#define FD_BUDGET_MIN 16

static unsigned fd_budget(const struct efs_config *cfg)
{
	struct rlimit rl;
	uint64_t n;

	(void)cfg;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
		return 1u << 16;
	n = rl.rlim_cur > 2 * FD_RESERVE ? (rl.rlim_cur - FD_RESERVE) / 2 : rl.rlim_cur / 4;
	if (n > (1u << 20))
		n = 1u << 20;
	return n < FD_BUDGET_MIN ? FD_BUDGET_MIN : (unsigned)n;
}

/* The process ran out of fds: give back idle inode fds; log it once. */
void note_no_fds(struct efs_fs *fs, int r, const char *what)
{
	struct itab_counts n;

	itab_counts(fs->itab, &n);
	itab_shrink(fs->itab, (unsigned)(n.fd_budget / 2));
	log_once(fs->logged_nofile, LOG_LVL_WARN,
		 "out of file descriptors during %s (%s) with %llu inode fds open: closed idle "
		 "ones and retried; raise the limit (LimitNOFILE=, ulimit -n) if this recurs",
		 what, strerror(-r), (unsigned long long)n.fds);
}

/* Callers of inode_fd_get hold the fd until inode_fd_put. */
int ifd(struct efs_fs *fs, struct efs_inode *i)
{
	int fd = inode_fd_get(fs->itab, i);

	if (out_of_fds(fd)) {
		note_no_fds(fs, fd, "a reopen");
		fd = inode_fd_get(fs->itab, i);
	}
	return fd;
}

void ifd_put(struct efs_fs *fs, struct efs_inode *i)
{
	inode_fd_put(fs->itab, i);
}

/* The fd of i's parent and i's name there, for a call that resolves the
 * name again.  Returns the fd or -errno (-ESTALE: the root, or a parent
 * that cannot be reached); on success release with at_parent_end(). */
static int at_parent_begin(struct efs_fs *fs, struct efs_inode *i, struct efs_inode **parent,
			   char **name)
{
	int r = itab_parent_get(fs->itab, i, parent, name);

	if (r < 0)
		return r == -ENOENT ? -ESTALE : r;
	r = ifd(fs, *parent);
	if (r < 0)
		itab_parent_put(fs->itab, *parent, *name);
	return r;
}

static void at_parent_end(struct efs_fs *fs, struct efs_inode *parent, char *name)
{
	ifd_put(fs, parent);
	itab_parent_put(fs->itab, parent, name);
}

/* The cache's view of the source (struct cache_source). */
static int source_stat_named(void *arg, struct efs_inode *i, struct stat *st)
{
	struct efs_fs *fs = arg;
	struct efs_inode *parent;
	char *name;
	int pfd = at_parent_begin(fs, i, &parent, &name), r;

	if (pfd < 0)
		return pfd;
	r = src_stat_sync_at(pfd, name, st);
	at_parent_end(fs, parent, name);
	/* No link left: the name was removed or now names another file on
	 * the server, and the client still had this one's handle (NFS answers
	 * GETATTR of a file it holds open with nlink 0). */
	if (r == 0 && !S_ISDIR(st->st_mode) && st->st_nlink == 0)
		r = -ESTALE;
	/* The server just confirmed these attributes: a getattr inside the
	 * window can take them from the source's client without asking. */
	if (r == 0 && st->st_dev == i->dev && st->st_ino == i->ino)
		itab_observe(fs->itab, i, &fs->policy, st);
	return r == -ENOENT ? -ESTALE : r;
}

static int source_open_named(void *arg, struct efs_inode *i, int flags)
{
	struct efs_fs *fs = arg;
	struct efs_inode *parent;
	char *name;
	int pfd = at_parent_begin(fs, i, &parent, &name), r;

	if (pfd < 0)
		return pfd;
	r = src_open_at(pfd, name, flags);
	if (out_of_fds(r)) {
		note_no_fds(fs, r, "an open");
		r = src_open_at(pfd, name, flags);
	}
	at_parent_end(fs, parent, name);
	return r == -ENOENT ? -ESTALE : r;
}

int source_open_object(void *arg, struct efs_inode *i, int flags)
{
	struct efs_fs *fs = arg;
	struct stat st;
	int fd = ifd(fs, i), r;

	if (fd < 0)
		return fd;
	r = src_open(fd, flags);
	if (out_of_fds(r)) {
		note_no_fds(fs, r, "an open");
		r = src_open(fd, flags);
	}
	ifd_put(fs, i);
	if (r != -ESTALE)
		return r;
	/* An NFS client opens even an fd's object by the name it knows it by
	 * (OPEN with CLAIM_NULL), and that name may be gone while another
	 * link, the one we know now, still leads to the same file. */
	r = source_open_named(fs, i, flags);
	if (r >= 0 && (src_stat(r, &st) < 0 || st.st_dev != i->dev || st.st_ino != i->ino)) {
		close(r);
		r = -ESTALE;
	}
	return r;
}

static int source_stat_open(void *arg, int fd, struct stat *st)
{
	(void)arg;
	return src_stat(fd, st);
}

static ssize_t source_read(void *arg, int fd, void *buf, size_t len, off_t off)
{
	(void)arg;
	return src_read(fd, buf, len, off);
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
	meta_policy_init(&fs->policy, cfg);
	lockwait_setup();
	fd = src_open_root(cfg->source);
	if (fd < 0) {
		snprintf(err, errlen, "cannot open SOURCE '%s': %s", cfg->source, strerror(-fd));
		return fd;
	}
	r = itab_new(&fs->itab, fd, fd_budget(cfg));
	if (r < 0) {
		close(fd);
		snprintf(err, errlen, "cannot set up the inode table: %s", strerror(-r));
		return r;
	}
	{
		const struct cache_source src = {
			.stat_named = source_stat_named,
			.open_named = source_open_named,
			.open_object = source_open_object,
			.stat_open = source_stat_open,
			.read = source_read,
			.arg = fs,
		};

		r = cache_new(&fs->cache, cfg, &src, &fs->stats, err, errlen);
	}
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
			struct efs_file *f = (struct efs_file *)h;

			if (f->fd >= 0)
				close(f->fd);
			pthread_mutex_destroy(&f->mu);
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
	if (ofd < 0)
		return ofd;
	close(ofd);
	return src_lookup(pfd, name, fd, st);
}

/* Look name up in parent and take a lookup reference.  Returns 0 or -errno. */
int do_lookup(struct efs_fs *fs, struct efs_inode *parent, const char *name,
		     struct fuse_entry_param *e)
{
	struct efs_inode *i;
	int fd, r;

	int pfd;

	if (bad_name(name))
		return -EINVAL;
	memset(e, 0, sizeof(*e));
	pfd = ifd(fs, parent);
	if (pfd < 0)
		return pfd;
	r = src_lookup(pfd, name, &fd, &e->attr);
	if (out_of_fds(r)) {
		note_no_fds(fs, r, "a lookup");
		r = src_lookup(pfd, name, &fd, &e->attr);
	}
	if (r == 0 && S_ISREG(e->attr.st_mode) && e->attr.st_nlink == 0)
		r = lookup_again(pfd, name, &fd, &e->attr);
	ifd_put(fs, parent);
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

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	unsigned want = FUSE_CAP_FLOCK_LOCKS | FUSE_CAP_POSIX_LOCKS | FUSE_CAP_ATOMIC_O_TRUNC |
			FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE | FUSE_CAP_PARALLEL_DIROPS |
			FUSE_CAP_ASYNC_READ | FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO |
			FUSE_CAP_CACHE_SYMLINKS;
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

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *dir = inode_of(req, parent);
	struct fuse_entry_param e;
	int r = do_lookup(fs, dir, name, &e);

	if (r == -ENOENT) {
		/* A negative entry: the kernel remembers the name is absent. */
		memset(&e, 0, sizeof(e));
		e.entry_timeout = itab_entry_timeout(fs->itab, dir, &fs->policy, true);
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
	int fd = ifd(fs, i), r;

	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	itab_attr(fs->itab, i, &a);
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (a.seen)
		age = meta_elapsed(&a.at, &now);
	/* Confirmed by the server inside the window (an open's forced stat):
	 * what its client cached is that answer, no need to ask again. */
	if (age >= 0 && age < a.timeo && src_stat_cached(fd, &st) == 0) {
		ifd_put(fs, i);
		fuse_reply_attr(req, &st, a.timeo - age);
		return;
	}
	r = src_stat(fd, &st);
	ifd_put(fs, i);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_attr(req, &st, itab_observe(fs->itab, i, &fs->policy, &st));
}

void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int valid,
		       struct fuse_file_info *fi)
{
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *i = inode_of(req, ino);
	int openfd = fi ? file_of(fi)->fd : -1;
	int r = 0, fd = ifd(fs, i);

	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	if (valid & FUSE_SET_ATTR_MODE) {
		r = src_chmod(fd, openfd, attr->st_mode);
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
	ifd_put(fs, i);
	op_getattr(req, ino, fi);
	return;
out_err:
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
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *i = inode_of(req, ino);
	int fd = ifd(fs, i), r = fd < 0 ? fd : src_access(fd, mask);

	if (fd >= 0)
		ifd_put(fs, i);
	fuse_reply_err(req, -r);
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

		r = fd < 0 ? fd : nfd < 0 ? nfd : src_link(fd, nfd, newname);
		if (nfd >= 0)
			ifd_put(fs, np);
		if (fd >= 0)
			ifd_put(fs, i);
	}
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

void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *dir = inode_of(req, parent);
	uint64_t ino = 0;
	int fd = ifd(fs, dir), victim = -1, r;

	if (fd >= 0) {
		victim = victim_open(fd, name, &ino);
		r = src_unlink(fd, name);
		victim_done(fs, victim, ino, r);
		ifd_put(fs, dir);
	} else {
		r = fd;
	}
	fuse_reply_err(req, -r);
}

void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *dir = inode_of(req, parent);
	int fd = ifd(fs, dir), r = fd < 0 ? fd : src_rmdir(fd, name);

	if (fd >= 0)
		ifd_put(fs, dir);
	fuse_reply_err(req, -r);
}

/* The inode (if the kernel knows it) of name in the directory behind dfd. */
static struct efs_inode *known_child(struct efs_fs *fs, int dfd, const char *name)
{
	struct stat st;

	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return NULL;
	return itab_find(fs->itab, st.st_dev, st.st_ino);
}

void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *dir = inode_of(req, parent), *ndir = inode_of(req, newparent);
	struct efs_inode *moved = NULL, *swapped = NULL;
	int fd, nfd, r, victim = -1;
	uint64_t ino = 0;

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
		victim = victim_open(nfd, newname, &ino);
	r = src_rename(fd, name, nfd, newname, flags);
	victim_done(fs, victim, ino, r);
	if (r == 0 && moved)
		itab_moved(fs->itab, moved, ndir, newname);
	if (r == 0 && swapped)
		itab_moved(fs->itab, swapped, dir, name);
	ifd_put(fs, ndir);
	ifd_put(fs, dir);
	fuse_reply_err(req, -r);
}

/* ---- counters ------------------------------------------------------------- */

size_t fsops_stats_text(struct efs_fs *fs, char *buf, size_t cap)
{
	size_t n = cache_stats_text(fs->cache, buf, cap);
	struct itab_counts ic;
	int m;

	itab_counts(fs->itab, &ic);
	m = snprintf(buf + (n < cap ? n : cap), n < cap ? cap - n : 0,
		     "inodes %llu\ninode_fds %llu\ninode_fd_budget %llu\ninode_reopens %llu\n",
		     (unsigned long long)ic.inodes, (unsigned long long)ic.fds,
		     (unsigned long long)ic.fd_budget, (unsigned long long)ic.reopens);
	return n + (m > 0 ? (size_t)m : 0);
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
