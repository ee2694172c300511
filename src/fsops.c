/* fsops.c - the FUSE session's setup and teardown, the ops table, and the
 * helpers every op file uses (fsops_int.h).
 *
 * fsops_init opens SOURCE, builds the inode table and the cache (giving it
 * its view of the source: struct cache_source, whose named calls resolve an
 * inode's parent and name again); fsops_destroy frees, in order, the
 * handles the kernel never released, the control socket, the inode table
 * and the cache.  op_init negotiates the kernel's capabilities and limits.
 * The ops themselves are in fsops_entry.c, fsops_file.c, fsops_lock.c,
 * fsops_dir.c and fsops_xattr.c; see fsops_int.h for their conventions.
 *
 * Locks: fs->handles_mu guards the list of open handles and is held only
 * to link or unlink one, or to collect some (files_hold_source); nothing is
 * called with it held.  The inode fds handed out by ifd are reference
 * counted in inode.c under its own lock.
 */
#include "ctlproto.h"
#include "fsops_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "control.h"
#include "lockdep.h"
#include "lockwait.h"
#include "log.h"
#include "passthrough.h"
#include "siblings.h"
#include "source.h"
#include "srcwatch.h"

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
 * limit was raised to the hard one at start (main.c).  The other half is
 * for what varies: open files' source fds, directory streams being read,
 * the cache entries' files, lock owners, control connections.  When those
 * take more, the inodes give way: a new fd numbered at the ceiling (the
 * limit less the reserve) makes the table close idle fds (inode.h). */
#define FD_RESERVE 128
#define FD_BUDGET_MIN 16
/* The budget without a limit (RLIM_INFINITY), and its ceiling: the LRU of
 * inode fds is walked on a trim, and a million O_PATH fds is already more
 * than a source's client serves well. */
#define FD_BUDGET_UNLIMITED (1u << 16)
#define FD_BUDGET_MAX (1u << 20)

/* The fd number from which the process nears its limit, or 0 (no limit). */
static unsigned fd_ceiling(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY ||
	    rl.rlim_cur > FD_BUDGET_MAX * 2)
		return 0;
	return rl.rlim_cur > 2 * FD_RESERVE ? (unsigned)(rl.rlim_cur - FD_RESERVE)
					    : (unsigned)(rl.rlim_cur * 3 / 4);
}

static unsigned fd_budget(const struct efs_config *cfg)
{
	struct rlimit rl;
	uint64_t n;

	(void)cfg;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
		return FD_BUDGET_UNLIMITED;
	n = rl.rlim_cur > 2 * FD_RESERVE ? (rl.rlim_cur - FD_RESERVE) / 2 : rl.rlim_cur / 4;
	if (n > FD_BUDGET_MAX)
		n = FD_BUDGET_MAX;
	return n < FD_BUDGET_MIN ? FD_BUDGET_MIN : (unsigned)n;
}

/* Can this process open an fd now?  An EMFILE or ENFILE may be the
 * source's (a server, or a FUSE source's daemon, out of fds), not ours. */
static bool have_free_fd(void)
{
	int fd = open("/", O_PATH | O_CLOEXEC);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

/* The process ran out of fds: give back idle inode fds; log it once.  If it
 * did not (it can open one now), the source answered EMFILE/ENFILE: said
 * once too, as the source's, and nothing is closed. */
void note_no_fds(struct efs_fs *fs, int r, const char *what)
{
	struct itab_counts n;

	itab_counts(fs->itab, &n);
	if (have_free_fd()) {
		log_once(fs->logged_source_nofile, LOG_LVL_WARN,
			 "the source answered %s during %s while this process has fds to spare "
			 "(%llu inode fds open): the source's server is out of file descriptors; "
			 "retried once, then its error is passed on",
			 strerror(-r), what, (unsigned long long)n.fds);
		return;
	}
	itab_shrink(fs->itab, (unsigned)(n.fd_budget / 2));
	log_once(fs->logged_nofile, LOG_LVL_WARN,
		 "out of file descriptors during %s (%s) with %llu inode fds open: closed idle "
		 "ones and retried; raise the limit (LimitNOFILE=, ulimit -n) if this recurs",
		 what, strerror(-r), (unsigned long long)n.fds);
}

/* The cache ran out of fds opening its files: give back idle inode fds. */
static void source_out_of_fds(void *arg)
{
	struct efs_fs *fs = arg;
	struct itab_counts n;

	itab_counts(fs->itab, &n);
	itab_shrink(fs->itab, (unsigned)(n.fd_budget / 2));
}

void note_root_fault(struct efs_fs *fs, struct efs_inode *i, int r)
{
	if ((r == -ESTALE || r == -ENOTCONN) && i == itab_root(fs->itab))
		srcwatch_poke(fs->watch);
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
	stats_add(&fs->stats, ST_source_getattrs, 1);
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

/* The caller's credentials around a source call, when req is not NULL. */
static void as_caller(fuse_req_t req, struct src_cred *saved)
{
	if (req)
		enter_caller(req, saved);
}

static void as_daemon(fuse_req_t req, const struct src_cred *saved)
{
	if (req)
		src_cred_leave(saved);
}

static int open_named_as(struct efs_fs *fs, struct efs_inode *i, int flags, fuse_req_t req)
{
	struct efs_inode *parent;
	struct src_cred saved;
	char *name;
	int pfd = at_parent_begin(fs, i, &parent, &name), r;

	if (pfd < 0)
		return pfd;
	as_caller(req, &saved);
	r = src_open_at(pfd, name, flags);
	if (out_of_fds(r)) {
		note_no_fds(fs, r, "an open");
		r = src_open_at(pfd, name, flags);
	}
	stats_add(&fs->stats, ST_source_opens, 1);
	as_daemon(req, &saved);
	at_parent_end(fs, parent, name);
	return r == -ENOENT ? -ESTALE : r;
}

static int source_open_named(void *arg, struct efs_inode *i, int flags)
{
	return open_named_as(arg, i, flags, NULL);
}

/* fd, just opened for i, if it is i's object (same device and inode
 * number); else it is closed and the answer is -ESTALE.  Errors pass. */
static int keep_if_object(int fd, struct efs_inode *i)
{
	struct stat st;

	if (fd >= 0 && (src_stat(fd, &st) < 0 || st.st_dev != i->dev || st.st_ino != i->ino)) {
		close(fd);
		return -ESTALE;
	}
	return fd;
}

/* i's name leads to another object now (renamed over or unlinked since
 * the kernel's lookup): a reader whose open the cache checked against i's
 * object reads that object on through the fd the cache opened it by (a
 * handle opens its own fd only at its first read the source must serve).
 * The reopen is made as the caller, as any open. */
static int reopen_checked(struct efs_fs *fs, struct efs_inode *i, int flags, fuse_req_t req)
{
	struct src_cred saved;
	int dup, r;

	if ((flags & (O_ACCMODE | O_TRUNC)) != O_RDONLY ||
	    (dup = cache_dup_checked(fs->cache, i)) < 0)
		return -ESTALE;
	as_caller(req, &saved);
	r = src_open(dup, flags & ~O_DIRECT);
	as_daemon(req, &saved);
	close(dup);
	r = keep_if_object(r, i);
	if (r >= 0)
		stats_add(&fs->stats, ST_source_opens, 1);
	return r < 0 ? -ESTALE : r;
}

int open_object_as(struct efs_fs *fs, struct efs_inode *i, int flags, fuse_req_t req)
{
	struct src_cred saved;
	int fd = ifd(fs, i), r;

	if (fd == -ESTALE)
		return reopen_checked(fs, i, flags, req);
	if (fd < 0)
		return fd;
	as_caller(req, &saved);
	r = src_open(fd, flags);
	if (out_of_fds(r)) {
		note_no_fds(fs, r, "an open");
		r = src_open(fd, flags);
	}
	stats_add(&fs->stats, ST_source_opens, 1);
	as_daemon(req, &saved);
	ifd_put(fs, i);
	if (r != -ESTALE)
		return r;
	/* An NFS client opens even an fd's object by the name it knows it by
	 * (OPEN with CLAIM_NULL), and that name may be gone while another
	 * link, the one we know now, still leads to the same file. */
	r = keep_if_object(open_named_as(fs, i, flags, req), i);
	return r == -ESTALE ? reopen_checked(fs, i, flags, req) : r;
}

int source_open_object(void *arg, struct efs_inode *i, int flags)
{
	return open_object_as(arg, i, flags, NULL);
}

static int source_stat_open(void *arg, int fd, struct stat *st)
{
	struct efs_fs *fs = arg;

	stats_add(&fs->stats, ST_source_getattrs, 1);
	return src_stat(fd, st);
}

/* What an open's fstat found is what the server answered that OPEN: a
 * getattr inside the window then answers the same (op_getattr). */
static void source_validated(void *arg, struct efs_inode *i, const struct stat *st)
{
	struct efs_fs *fs = arg;

	itab_observe(fs->itab, i, &fs->policy, st);
}

static ssize_t source_read(void *arg, int fd, void *buf, size_t len, off_t off)
{
	(void)arg;
	return src_read(fd, buf, len, off);
}

/* Asked of the object's own O_PATH fd, if one is still open (reopening it
 * would go by the name, which is what failed): NFS answers GETATTR of a
 * deleted file's handle with ESTALE, or with nlink 0 while some client
 * holds it open.  With no fd left there is no way to ask: not gone, the
 * record goes with the LRU. */
bool source_object_gone(void *arg, struct efs_inode *i)
{
	struct efs_fs *fs = arg;
	struct stat st;
	int fd = inode_fd_peek(fs->itab, i), r;

	if (fd < 0)
		return false;
	r = src_stat_sync_at(fd, "", &st);
	stats_add(&fs->stats, ST_source_getattrs, 1);
	inode_fd_put(fs->itab, i);
	return r == -ESTALE || r == -ENOENT || (r == 0 && st.st_nlink == 0);
}

/* A small file was opened cold: its directory's other small files may be
 * fetched ahead (siblings.c).  Only with the directory's O_PATH fd open
 * already: reopening it would cost the open a round trip. */
static void source_cold_open(void *arg, struct efs_inode *i, const struct stat *st)
{
	struct efs_fs *fs = arg;
	struct efs_inode *parent;
	char *name;
	int pfd;

	if (!fs->sib || (uint64_t)st->st_size > SIB_MAX_FILE ||
	    itab_parent_get(fs->itab, i, &parent, &name) < 0)
		return;
	pfd = inode_fd_peek(fs->itab, parent);
	if (pfd >= 0) {
		sib_cold_open(fs->sib, pfd, parent->dev, (uint64_t)parent->ino, name,
			      (uint64_t)st->st_size);
		inode_fd_put(fs->itab, parent);
	}
	itab_parent_put(fs->itab, parent, name);
}

int fsops_init(struct efs_fs *fs, const struct efs_config *cfg, char *err, size_t errlen)
{
	int fd, r;

	memset(fs, 0, sizeof(*fs));
	fs->cfg = cfg;
	pthread_mutex_init(&fs->handles_mu, NULL);
	pthread_mutex_init(&fs->push_mu, NULL);
	pthread_cond_init(&fs->push_cv, NULL);
	fs->handles = calloc(1, sizeof(struct handle));
	if (!fs->handles) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	fs->handles->next = fs->handles->prev = fs->handles;
	meta_policy_init(&fs->policy, cfg);
	fd = src_open_root(cfg->source);
	if (fd < 0) {
		snprintf(err, errlen, "cannot open SOURCE '%s': %s", cfg->source, strerror(-fd));
		return fd;
	}
	r = lockwait_new(&fs->locks);
	if (r == 0)
		r = lockdep_new(&fs->lockdep);
	if (r < 0) {
		close(fd);
		snprintf(err, errlen, "cannot set up lock waits: %s", strerror(-r));
		return r;
	}
	r = itab_new(&fs->itab, fd, fd_budget(cfg));
	if (r < 0) {
		close(fd);
		snprintf(err, errlen, "cannot set up the inode table: %s", strerror(-r));
		return r;
	}
	itab_set_fd_ceiling(fs->itab, fd_ceiling());
	itab_set_new_node_on_change(fs->itab, fs->policy.immutable);
	{
		const struct cache_source src = {
			.stat_named = source_stat_named,
			.open_named = source_open_named,
			.open_object = source_open_object,
			.stat_open = source_stat_open,
			.validated = source_validated,
			.read = source_read,
			.object_gone = source_object_gone,
			.out_of_fds = source_out_of_fds,
			.cold_open = source_cold_open,
			.push = source_push,
			.arg = fs,
		};

		r = cache_new(&fs->cache, cfg, &src, &fs->stats, err, errlen);
	}
	if (r == 0) {
		r = sib_new(&fs->sib, cfg, fs->cache, &fs->stats);
		if (r < 0)
			snprintf(err, errlen, "cannot set up the sibling fetches: %s",
				 strerror(-r));
		else
			sib_set_lister(fs->sib, index_small_files, fs);
	}
	if (r < 0) {
		fsops_destroy(fs);
		return r;
	}
	itab_set_release_hook(fs->itab, cache_inode_release, fs->cache);
	r = index_init(fs);
	if (r < 0) {
		snprintf(err, errlen, "cannot set up the directory index: %s", strerror(-r));
		fsops_destroy(fs);
		return r;
	}
	index_set_loader(fs);
	/* Close-to-open: every open asks the source, and a reader's open also
	 * asks whether the caller may read (docs/design.md, "Permissions").
	 * Only root can act as another user; with nocto or a ttl an open
	 * inside its window trusts the kernel's check, as it trusts the data. */
	fs->check_readers = geteuid() == 0 && fs->policy.cto && fs->policy.ttl <= 0 &&
			    !fs->policy.immutable;
	/* Passthrough needs an OPEN to answer with a backing file: none
	 * reaches us on an immutable mount. */
	pt_configure(cfg->passthrough && !cfg->immutable, cfg->ro, &fs->stats);
	return 0;
}

int fsops_start(struct efs_fs *fs)
{
	int r = cache_start(fs->cache);

	if (r == 0)
		r = sib_start(fs->sib);
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

void fsops_stop(struct efs_fs *fs)
{
	if (fs->locks)
		lockwait_stop(fs->locks);
	push_stop(fs);
}

void fsops_destroy(struct efs_fs *fs)
{
	struct handle *head = fs->handles, *h, *next;

	/* Waits hold dups of source fds: answered and closed first. */
	lockwait_free(fs->locks);
	fs->locks = NULL;
	lockdep_free(fs->lockdep);
	fs->lockdep = NULL;

	/* Handles the kernel never released: the mount went away with files
	 * still open. */
	for (h = head ? head->next : NULL; h && h != head; h = next) {
		next = h->next;
		if (h->is_dir) {
			if (((struct efs_dir *)h)->dp)
				src_closedir(((struct efs_dir *)h)->dp);
			if (((struct efs_dir *)h)->snap)
				index_put(fs, ((struct efs_dir *)h)->snap);
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
	sib_free(fs->sib); /* its jobs fill the cache */
	fs->sib = NULL;
	index_free(fs); /* its snapshots persist through the cache: first */
	if (fs->itab)
		itab_free(fs->itab);
	fs->itab = NULL;
	cache_free(fs->cache);
	fs->cache = NULL;
}

/* ---- session -------------------------------------------------------------- */

/* Largest write request and kernel readahead window: 1 MiB, the rsize and
 * wsize an EFS client uses, so one request is at most one source call of
 * the size the source prefers. */
#define EFS_MAX_WRITE (1u << 20)
#define EFS_MAX_READAHEAD (1u << 20)
/* Background requests (readahead, async reads) the kernel keeps in flight,
 * against its default of 12: a sequential reader's 1 MiB requests then
 * overlap with the source's round trips.  Above the congestion threshold
 * (three quarters, as the kernel's own default ratio) the kernel marks the
 * mount congested and readahead backs off. */
#define EFS_MAX_BACKGROUND 64
#define EFS_CONGESTION_THRESHOLD (EFS_MAX_BACKGROUND * 3 / 4)

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct efs_fs *fs = userdata;
	unsigned want = FUSE_CAP_FLOCK_LOCKS | FUSE_CAP_POSIX_LOCKS | FUSE_CAP_ATOMIC_O_TRUNC |
			FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE | FUSE_CAP_PARALLEL_DIROPS |
			FUSE_CAP_ASYNC_READ | FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO |
			FUSE_CAP_CACHE_SYMLINKS;
	const unsigned no_open = FUSE_CAP_NO_OPEN_SUPPORT | FUSE_CAP_NO_OPENDIR_SUPPORT;

	/* -o immutable: the kernel opens files and directories itself (the
	 * first OPEN and OPENDIR are answered ENOSYS), keeping their pages
	 * and listings; no OPEN, FLUSH, RELEASE, OPENDIR or RELEASEDIR
	 * reaches us after that.  Locks then stay with the kernel: without a
	 * handle there is no source fd to lock, and nobody writes the tree. */
	if (fs && fs->cfg->immutable) {
		if ((conn->capable & no_open) == no_open) {
			want = (want & ~(FUSE_CAP_FLOCK_LOCKS | FUSE_CAP_POSIX_LOCKS)) | no_open;
			fs->no_open = true;
		} else {
			log_warn("immutable: the kernel cannot open files without asking the "
				 "daemon; every open and close still makes a request");
		}
	}
	conn->want |= want & conn->capable;
	if (fs && fs->no_open) /* libfuse asks for them by default */
		conn->want &= ~(FUSE_CAP_FLOCK_LOCKS | FUSE_CAP_POSIX_LOCKS);
	/* Nothing of ours to apply the umask to: the kernel did it already. */
	conn->want &= ~FUSE_CAP_DONT_MASK;
	/* With auto_inval_data and attr_timeout 0 (ttl=0) the kernel asks for
	 * the attributes before every read() to see whether to drop its page
	 * cache.  We decide that at open instead (keep_cache only when the
	 * identity is unchanged), which is what close-to-open promises, so
	 * page-cache hits need not wait for the daemon. */
	conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
	/* With async_dio the kernel sends an O_DIRECT read as background
	 * requests and waits for them uninterruptibly: a reader blocked on a
	 * hung source could not even be killed.  Without it the request is the
	 * reader's own, a signal sends FUSE_INTERRUPT and op_read answers
	 * EINTR.  (Reads up to max_read, 1 MiB, are one request either way.) */
	conn->want &= ~FUSE_CAP_ASYNC_DIO;
	pt_conn_init(conn);
	if (conn->max_write < EFS_MAX_WRITE)
		conn->max_write = EFS_MAX_WRITE;
	conn->max_readahead = EFS_MAX_READAHEAD;
	conn->max_read = EFS_MAX_READ;
	conn->max_background = EFS_MAX_BACKGROUND;
	conn->congestion_threshold = EFS_CONGESTION_THRESHOLD;
	if (fs && fs->no_open)
		return; /* locks are the kernel's (local) on purpose */
	if (!(conn->capable & FUSE_CAP_FLOCK_LOCKS))
		log_warn("kernel lacks remote flock support: flock() is local to this host");
	if (!(conn->capable & FUSE_CAP_POSIX_LOCKS))
		log_warn("kernel lacks remote POSIX lock support: fcntl locks are local");
}

/* ---- counters ------------------------------------------------------------- */

/* The stats query's text (ctlproto.h): the counters, the cache's usage
 * and the inode table's figures. */
size_t fsops_stats_text(struct efs_fs *fs, char *buf, size_t cap)
{
	struct ctl_stats st; /* a few KiB, most of it cache_dir's room */
	struct cache_usage u;
	struct itab_counts ic;

	memset(&st, 0, sizeof(st));
	stats_snapshot(&fs->stats, &st);
	cache_usage(fs->cache, &u);
	st.cache_entries = u.entries;
	st.cache_usage_bytes = u.usage_bytes;
	st.cache_size_bytes = u.size_bytes;
	st.write_behind_pending = u.write_behind_pending;
	st.cache_index_ready = u.index_ready;
	snprintf(st.cache_dir, sizeof(st.cache_dir), "%s", u.cache_dir);
	snprintf(st.mountpoint, sizeof(st.mountpoint), "%s", fs->cfg->mountpoint);
	itab_counts(fs->itab, &ic);
	st.inodes = ic.inodes;
	st.inode_fds = ic.fds;
	st.inode_fd_budget = ic.fd_budget;
	st.inode_reopens = ic.reopens;
	if (fs->dix) {
		struct dix_counts dc;

		dix_counts(fs->dix, &dc);
		st.index_snapshots = dc.dirs;
		st.index_memory_bytes = dc.bytes;
		st.index_loads = dc.loads;
		st.index_saves = dc.saves;
		st.index_memory_budget = fs->cfg->index_mem;
	}
	return ctl_stats_format(&st, buf, cap);
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
