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
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/xattr.h>
#include <time.h>
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
	pthread_mutex_t mu;     /* serialises the lazy open of fd */
	int fd;                 /* source fd opened for I/O, or -1: read-only
				 * handles get one only when they need it */
	int flags;              /* open(2) flags, for that lazy open */
	bool cached;            /* cache_open succeeded: cache_close at release */
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
	bool eof;               /* readdir(3) returned the end at offset: another
				 * call would only ask the source again */
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
	stats_add(&fs->stats, ST_open_files, 1);
}

static void handle_del(struct efs_fs *fs, struct handle *h)
{
	pthread_mutex_lock(&fs->handles_mu);
	h->prev->next = h->next;
	h->next->prev = h->prev;
	pthread_mutex_unlock(&fs->handles_mu);
	stats_sub(&fs->stats, ST_open_files, 1);
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
static void note_no_fds(struct efs_fs *fs, int r, const char *what)
{
	struct itab_counts n;

	itab_counts(fs->itab, &n);
	itab_shrink(fs->itab, (unsigned)(n.fd_budget / 2));
	log_once(fs->logged_nofile, LOG_LVL_WARN,
		 "out of file descriptors during %s (%s) with %llu inode fds open: closed idle "
		 "ones and retried; raise the limit (LimitNOFILE=, ulimit -n) if this recurs",
		 what, strerror(-r), (unsigned long long)n.fds);
}

static bool out_of_fds(int r)
{
	return r == -EMFILE || r == -ENFILE;
}

/* Callers of inode_fd_get hold the fd until inode_fd_put. */
static int ifd(struct efs_fs *fs, struct efs_inode *i)
{
	int fd = inode_fd_get(fs->itab, i);

	if (out_of_fds(fd)) {
		note_no_fds(fs, fd, "a reopen");
		fd = inode_fd_get(fs->itab, i);
	}
	return fd;
}

static void ifd_put(struct efs_fs *fs, struct efs_inode *i)
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

static int source_open_object(void *arg, struct efs_inode *i, int flags)
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
static int do_lookup(struct efs_fs *fs, struct efs_inode *parent, const char *name,
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

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
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

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int valid,
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

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
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

static void op_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *i = inode_of(req, ino);
	int fd = ifd(fs, i), r = fd < 0 ? fd : src_access(fd, mask);

	if (fd >= 0)
		ifd_put(fs, i);
	fuse_reply_err(req, -r);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
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

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
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

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
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

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
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

/* ---- files -------------------------------------------------------------- */

static int file_new(struct efs_fs *fs, int fd, struct fuse_file_info *fi)
{
	struct efs_file *f = calloc(1, sizeof(*f));

	if (!f)
		return -ENOMEM;
	pthread_mutex_init(&f->mu, NULL);
	handle_add(fs, &f->h, false);
	f->fd = fd;
	f->flags = fi->flags;
	f->next_off = -1;
	fi->fh = (uint64_t)(uintptr_t)f;
	return 0;
}

static void file_free(struct efs_fs *fs, struct efs_file *f)
{
	if (f->fd >= 0)
		close(f->fd); /* also drops flock locks held through it */
	handle_del(fs, &f->h);
	pthread_mutex_destroy(&f->mu);
	free(f);
}

/* Flags for the source fd: O_DIRECT alignment is the application's business
 * with the kernel, not something the source must honour. */
static int source_flags(int flags)
{
	return flags & ~(O_DIRECT | O_TRUNC | O_CREAT | O_EXCL);
}

/* The handle's own source fd, opened on first need (read-only handles of
 * cached files never need one).  Returns it or -errno. */
static int file_fd(struct efs_fs *fs, struct efs_inode *i, struct efs_file *f)
{
	int fd;

	pthread_mutex_lock(&f->mu);
	if (f->fd < 0) {
		fd = source_open_object(fs, i, source_flags(f->flags));
		if (fd >= 0)
			f->fd = fd;
	}
	fd = f->fd >= 0 ? f->fd : fd;
	pthread_mutex_unlock(&f->mu);
	return fd;
}

/* The file changed on the source: make the kernel ask for its attributes
 * (size above all) again instead of trusting its cache.  Attributes only,
 * so it is safe from inside a request. */
static void inval_attrs(struct efs_fs *fs, fuse_ino_t ino)
{
	if (fs->se)
		fuse_lowlevel_notify_inval_inode(fs->se, ino, -1, 0);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *i = inode_of(req, ino);
	bool ro = (fi->flags & O_ACCMODE) == O_RDONLY && !(fi->flags & O_TRUNC);
	struct meta_attr attr;
	bool keep = false;
	int fd = -1, r;

	if (!ro || !S_ISREG(i->type)) {
		/* Writers (and O_TRUNC) need the source file now.  After the
		 * open, O_TRUNC has already changed the identity. */
		fd = source_open_object(fs, i, (fi->flags & ~O_DIRECT) & ~(O_CREAT | O_EXCL));
		if (fd < 0) {
			fuse_reply_err(req, -fd);
			return;
		}
	}
	/* A reader of a cached file costs one round trip here, and none more
	 * unless a chunk must be fetched (cache.h). */
	itab_attr(fs->itab, i, &attr);
	r = cache_open(fs->cache, i, fd, &attr, &keep);
	if (r == 0) {
		r = file_new(fs, fd, fi);
		if (r < 0)
			cache_close(fs->cache, i);
		else
			file_of(fi)->cached = true;
	}
	if (r < 0) {
		if (fd >= 0)
			close(fd);
		fuse_reply_err(req, -r);
		return;
	}
	fi->keep_cache = keep;
	if (!keep && S_ISREG(i->type))
		inval_attrs(fs, ino);
	if (fuse_reply_open(req, fi) == -ENOENT) {
		/* The opener was interrupted and is gone; no release will come. */
		cache_close(fs->cache, i);
		file_free(fs, file_of(fi));
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
	{
		int dfd = ifd(fs, dir);

		if (dfd < 0) {
			fuse_reply_err(req, -dfd);
			return;
		}
		enter_caller(req, &saved);
		fd = src_create(dfd, name, fi->flags & ~O_DIRECT, mode);
		src_cred_leave(&saved);
		ifd_put(fs, dir);
	}
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	r = do_lookup(fs, dir, name, &e);
	if (r == 0) {
		struct efs_inode *i = inode_of(req, e.ino);
		struct meta_attr attr;
		bool keep;

		itab_attr(fs->itab, i, &attr);
		r = file_new(fs, fd, fi);
		if (r == 0 && cache_open(fs->cache, i, fd, &attr, &keep) == 0)
			file_of(fi)->cached = true;
		if (r < 0)
			itab_forget(fs->itab, i, 1);
	}
	if (r < 0) {
		close(fd);
		fuse_reply_err(req, -r);
		return;
	}
	if (fuse_reply_create(req, &e, fi) == -ENOENT) {
		struct efs_inode *i = inode_of(req, e.ino);

		if (file_of(fi)->cached)
			cache_close(fs->cache, i);
		file_free(fs, file_of(fi));
		itab_forget(fs->itab, i, 1);
	}
}

/* A reply whose bytes are all in our memory (a chunk this read fetched or
 * verified, a read from the source) is written with one writev, which copies
 * them into the request once.  libfuse's splice path would first write them
 * into a pipe, a second copy (perf: _copy_from_iter in anon_pipe_write).
 * Segments of the data file are still spliced.  False if rd has any. */
static bool reply_mem_only(fuse_req_t req, const struct cache_read *rd)
{
	struct iovec iov[CACHE_MAX_SEGS];

	if (!rd->nseg)
		return false;
	for (unsigned k = 0; k < rd->nseg; k++) {
		if (rd->seg[k].fd >= 0)
			return false;
		iov[k] = (struct iovec){.iov_base = (void *)rd->seg[k].mem, .iov_len = rd->seg[k].len};
	}
	fuse_reply_iov(req, iov, (int)rd->nseg);
	return true;
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct efs_fs *fs = fs_of(req);
	struct cache_read rd;
	struct fuse_bufvec *bv;
	ssize_t n;

	struct efs_inode *i = inode_of(req, ino);
	bool seq = note_sequential(file_of(fi), off, size);

	n = cache_read(fs->cache, i, file_of(fi)->fd, off, size, seq, &rd);
	if (n == -EBADFD) {
		/* The read must go to the source: give the handle its fd. */
		int fd = file_fd(fs, i, file_of(fi));

		n = fd < 0 ? fd : cache_read(fs->cache, i, fd, off, size, seq, &rd);
	}
	if (n < 0) {
		fuse_reply_err(req, (int)-n);
		return;
	}
	stats_add(&fs->stats, ST_bytes_served, (uint64_t)n);
	if (reply_mem_only(req, &rd)) {
		cache_read_done(fs->cache, &rd);
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
	struct efs_inode *i = inode_of(req, ino);
	int fd = file_fd(fs_of(req), i, file_of(fi));
	ssize_t n;

	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	out.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	out.buf[0].fd = fd;
	out.buf[0].pos = off;
	n = fuse_buf_copy(&out, in, 0);
	cache_written(fs_of(req)->cache, i);
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
	 * errors now, where close(2) returns them, not at release.  A handle
	 * that never opened the source has nothing to report. */
	pthread_mutex_lock(&f->mu);
	if (f->fd >= 0) {
		fd = dup(f->fd);
		if (fd < 0 || close(fd) < 0)
			r = -errno;
	}
	pthread_mutex_unlock(&f->mu);
	fuse_reply_err(req, -r);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct efs_file *f = file_of(fi);

	if (f->cached)
		cache_close(fs_of(req)->cache, inode_of(req, ino));
	file_free(fs_of(req), f);
	fuse_reply_err(req, 0);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct efs_file *f = file_of(fi);
	int r = 0;

	/* A handle that never opened the source wrote nothing through it. */
	pthread_mutex_lock(&f->mu);
	if (f->fd >= 0)
		r = src_fsync(f->fd, datasync);
	pthread_mutex_unlock(&f->mu);
	fuse_reply_err(req, -r);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
			 struct fuse_file_info *fi)
{
	struct efs_inode *i = inode_of(req, ino);
	int fd = file_fd(fs_of(req), i, file_of(fi));
	/* -errno in r before cache_written, which takes locks. */
	int r = fd < 0 ? fd : src_fallocate(fd, mode, off, len);

	cache_written(fs_of(req)->cache, i);
	fuse_reply_err(req, -r);
}

static void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		     struct fuse_file_info *fi)
{
	int fd = file_fd(fs_of(req), inode_of(req, ino), file_of(fi));
	off_t r = fd < 0 ? fd : src_lseek(fd, off, whence);

	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else
		fuse_reply_lseek(req, r);
}

static void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
			       struct fuse_file_info *fi_in, fuse_ino_t ino_out, off_t off_out,
			       struct fuse_file_info *fi_out, size_t len, int flags)
{
	struct efs_fs *fs = fs_of(req);
	int in = file_fd(fs, inode_of(req, ino_in), file_of(fi_in));
	int out = in < 0 ? in : file_fd(fs, inode_of(req, ino_out), file_of(fi_out));
	ssize_t n = in < 0 ? in : out < 0 ? out
					  : src_copy_file_range(in, &off_in, out, &off_out, len,
								(unsigned)flags);

	cache_written(fs->cache, inode_of(req, ino_out));
	if (n < 0)
		fuse_reply_err(req, (int)-n);
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

static void op_setlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
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

static void op_flock(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, int op)
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

/* ---- directories ---------------------------------------------------------- */

static struct efs_dir *dir_of(struct fuse_file_info *fi)
{
	return (struct efs_dir *)(uintptr_t)fi->fh;
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
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
	if (fd >= 0)
		ifd_put(fs, i);
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
		d->eof = false;
	}
	for (;;) {
		struct fuse_entry_param e;
		size_t n;

		if (!d->entry) {
			if (d->eof)
				break;
			errno = 0;
			d->entry = readdir(d->dp);
			if (!d->entry) {
				err = errno; /* 0 at the end of the directory */
				d->eof = !err;
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
			need = fsops_stats_text(fs, buf, cap);
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

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
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

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			size_t size, int flags)
{
	struct efs_inode *i = inode_of(req, ino);

	if (reserved_xattr(name)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	{
		int fd = ifd(fs_of(req), i), r = fd < 0 ? fd
						 : src_setxattr(fd, i->type, name, value, size, flags);

		if (fd >= 0)
			ifd_put(fs_of(req), i);
		fuse_reply_err(req, -r);
	}
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	struct efs_inode *i = inode_of(req, ino);

	if (reserved_xattr(name)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	{
		int fd = ifd(fs_of(req), i), r = fd < 0 ? fd : src_removexattr(fd, i->type, name);

		if (fd >= 0)
			ifd_put(fs_of(req), i);
		fuse_reply_err(req, -r);
	}
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
