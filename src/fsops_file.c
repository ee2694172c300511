/* fsops_file.c - open files: open, create, read, write, flush, release,
 * fsync, fallocate, lseek, copy_file_range.
 *
 * A struct efs_file (fi->fh) has a source fd opened for I/O, or -1: a
 * reader of a cached regular file opens none unless a read must go to the
 * source (file_fd opens it on first need).  Reads go through cache_read,
 * which answers with segments of cache files (spliced to the kernel) or
 * memory; every change made through a handle is applied to SOURCE first and
 * then reported to the cache (cache_written), which forgets what it had.
 * open decides whether the kernel keeps its page cache (the identity is
 * unchanged since the last open) and otherwise drops its attributes.
 *
 * Locks: f->mu serialises the lazy open of f->fd, nothing else: the flush
 * and fsync of that fd run without it (once open, the fd stays until the
 * handle is freed); next_off and refs are atomics.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <unistd.h>

#include "fsops_int.h"
#include "lockdep.h"
#include "lockwait.h"
#include "passthrough.h"

/* Reads within this distance of the previous one's end count as sequential:
 * the kernel's readahead sends several requests at once, slightly out of
 * order. */
#define SEQ_SLACK (4 << 20)

static bool note_sequential(struct efs_file *f, off_t off, size_t size)
{
	off_t prev = __atomic_exchange_n(&f->next_off, off + (off_t)size, __ATOMIC_RELAXED);

	return off == 0 || (off >= prev - SEQ_SLACK && off <= prev + SEQ_SLACK);
}

static int file_new(struct efs_fs *fs, struct efs_inode *i, int fd, struct fuse_file_info *fi)
{
	struct efs_file *f = calloc(1, sizeof(*f));

	if (!f)
		return -ENOMEM;
	pthread_mutex_init(&f->mu, NULL);
	f->ino = i;
	f->fd = fd;
	f->flags = fi->flags;
	f->next_off = -1;
	f->refs = 1; /* the kernel's, until RELEASE */
	itab_hold(fs->itab, i);
	handle_add(fs, &f->h, false);
	fi->fh = (uint64_t)(uintptr_t)f;
	return 0;
}

void file_ref(struct efs_file *f)
{
	__atomic_add_fetch(&f->refs, 1, __ATOMIC_RELAXED);
}

/* A reference for a thread that found f on fs->handles (handles_mu held):
 * none if f is already on its way out (its last reference is gone and it
 * waits for handles_mu to leave the list). */
static bool file_ref_live(struct efs_file *f)
{
	unsigned n = __atomic_load_n(&f->refs, __ATOMIC_RELAXED);

	while (n)
		if (__atomic_compare_exchange_n(&f->refs, &n, n + 1, false, __ATOMIC_ACQUIRE,
						__ATOMIC_RELAXED))
			return true;
	return false;
}

void file_unref(struct efs_fs *fs, struct efs_file *f)
{
	struct efs_inode *i = f->ino;
	bool had_fd;

	if (__atomic_sub_fetch(&f->refs, 1, __ATOMIC_ACQ_REL))
		return;
	had_fd = f->fd >= 0;
	if (had_fd)
		close(f->fd); /* also drops flock locks held through it */
	handle_del(fs, &f->h);
	pthread_mutex_destroy(&f->mu);
	free(f->lk_owners);
	free(f);
	if (had_fd)
		lockwait_kick(fs->locks, i); /* its flock locks went with it */
	itab_unhold(fs->itab, i);
}

/* Flags for the source fd: O_DIRECT alignment is the application's business
 * with the kernel, not something the source must honour. */
static int source_flags(int flags)
{
	return flags & ~(O_DIRECT | O_TRUNC | O_CREAT | O_EXCL);
}

/* The handle's own source fd, opened on first need (read-only handles of
 * cached files never need one).  Returns it or -errno. */
int file_fd(struct efs_fs *fs, struct efs_inode *i, struct efs_file *f)
{
	int fd = file_fd_now(f);

	if (fd >= 0)
		return fd;
	pthread_mutex_lock(&f->mu);
	if (f->fd < 0) {
		fd = source_open_object(fs, i, source_flags(f->flags));
		if (fd >= 0)
			__atomic_store_n(&f->fd, fd, __ATOMIC_RELEASE);
	}
	fd = f->fd >= 0 ? f->fd : fd;
	pthread_mutex_unlock(&f->mu);
	return fd;
}

void files_hold_source(struct efs_fs *fs, struct efs_inode *i)
{
	struct efs_file **list = NULL, **bigger;
	size_t n = 0, cap = 0;
	struct handle *h;

	/* Collect under the mutex, open after: the source may take its time
	 * (an NFS open), and every open and close of the mount takes
	 * handles_mu. */
	pthread_mutex_lock(&fs->handles_mu);
	for (h = fs->handles->next; h != fs->handles; h = h->next) {
		struct efs_file *f = (struct efs_file *)h;

		if (h->is_dir || f->ino != i || file_fd_now(f) >= 0)
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 8;
			bigger = realloc(list, cap * sizeof(*list));
			if (!bigger)
				break; /* those found so far; the others read on until
					* their source object is gone */
			list = bigger;
		}
		if (file_ref_live(f))
			list[n++] = f;
	}
	pthread_mutex_unlock(&fs->handles_mu);
	for (size_t k = 0; k < n; k++) {
		file_fd(fs, i, list[k]);
		file_unref(fs, list[k]);
	}
	free(list);
}

/* The file changed on the source: make the kernel ask for its attributes
 * (size above all) again instead of trusting its cache.  Attributes only,
 * so it is safe from inside a request. */
static void inval_attrs(struct efs_fs *fs, fuse_ino_t ino)
{
	if (fs->se)
		fuse_lowlevel_notify_inval_inode(fs->se, ino, -1, 0);
}

/* Answer the open as cache_pt_open decided (passthrough.h): a passthrough
 * open may not keep the page cache (the kernel refuses the pair). */
static void pt_answer(struct efs_file *f, struct fuse_file_info *fi, int mode, int backing_id)
{
	f->pt_mode = mode > 0 ? mode : PT_NONE;
#ifdef EFS_HAVE_PASSTHROUGH
	if (mode == PT_PASSTHROUGH) {
		fi->backing_id = backing_id;
		fi->keep_cache = 0;
	}
#else
	(void)fi, (void)backing_id;
#endif
}

void file_note_lock_owner(struct efs_file *f, uint64_t owner)
{
	uint64_t *more;

	if (!f || !f->noflush)
		return;
	pthread_mutex_lock(&f->mu);
	for (unsigned k = 0; k < f->n_lk_owners; k++)
		if (f->lk_owners[k] == owner)
			goto out;
	more = realloc(f->lk_owners, (f->n_lk_owners + 1) * sizeof(*more));
	if (more) {
		more[f->n_lk_owners++] = owner;
		f->lk_owners = more;
	}
	/* Without memory the owner's locks go at its next close of a file
	 * handle that flushes, or at its exit (each of its fds flushes). */
out:
	pthread_mutex_unlock(&f->mu);
}

/* A change goes through a handle of i (a write, fallocate, copy): the
 * snapshot of its directory goes, at every change (one made since the last
 * would hold the size and times before this one). */
static void file_changed(struct efs_fs *fs, struct efs_inode *i)
{
	index_parent_changed(fs, i);
}

void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *i = inode_of(req, ino);
	int fence = fs->no_open ? 0 : push_fence_begin(fs, i, false);

	/* Its reply must follow every push of the file's chunks in flight
	 * (cache.h): a push may wait for a read only a worker answers. */
	if (fence == -EWOULDBLOCK) {
		if (push_defer_open(fs, req, ino, fi) == 0)
			return;
		fence = push_fence_begin(fs, i, true);
	}
	open_fenced(req, ino, fi);
	push_fence_end(fs, i, fence);
}

void open_fenced(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *i = inode_of(req, ino);
	bool ro = (fi->flags & O_ACCMODE) == O_RDONLY && !(fi->flags & O_TRUNC);
	struct meta_attr attr;
	bool keep = false;
	int fd = -1, r, mode = PT_NONE, id = 0;

	stats_add(&fs->stats, ST_kernel_opens, 1);
	if (fs->no_open) {
		/* -o immutable: the kernel opens this mount's files itself
		 * from now on (no OPEN, FLUSH or RELEASE; reads come without a
		 * handle, see read_no_handle). */
		fuse_reply_err(req, ENOSYS);
		return;
	}

	if (!ro || !S_ISREG(i->type)) {
		/* Writers (and O_TRUNC) need the source file now.  After the
		 * open, O_TRUNC has already changed the identity.  Beside
		 * passthrough opens a writer is refused before that (only on
		 * -o ro mounts, where the kernel refuses writers first). */
		mode = cache_pt_open(fs->cache, i, req, false, false, &id);
		fd = mode < 0 ? mode
			      : open_object_as(fs, i, (fi->flags & ~O_DIRECT) & ~(O_CREAT | O_EXCL),
					       req);
		if (fd < 0) {
			cache_pt_close(fs->cache, i, req, mode);
			index_gone(fs, i, fd);
			fuse_reply_err(req, -fd);
			return;
		}
		if (fi->flags & O_TRUNC)
			file_changed(fs, i); /* its size and times */
	}
	/* A reader of a cached file costs one round trip here, and none more
	 * unless a chunk must be fetched (cache.h). */
	itab_attr(fs->itab, i, &attr);
	r = cache_open(fs->cache, i, fd, &attr, &keep);
	if (r == 0 && ro && S_ISREG(i->type) && fs->check_readers &&
	    fuse_req_ctx(req)->uid != 0) {
		/* A reader's open reached the source as the daemon (a stat or an
		 * open by name shared by every reader): the source says whether
		 * this caller may read, with its ACLs and a mode or owner
		 * changed on another host since the kernel cached it. */
		r = access_as_caller(req, i, R_OK);
		if (r < 0)
			cache_close(fs->cache, i, fd >= 0);
	}
	if (r == 0) {
		r = file_new(fs, i, fd, fi);
		if (r < 0) {
			cache_close(fs->cache, i, fd >= 0);
		} else {
			file_of(fi)->cached = true;
			file_of(fi)->writer = fd >= 0;
		}
	}
	if (r == 0 && ro && S_ISREG(i->type)) {
		mode = cache_pt_open(fs->cache, i, req, true, keep, &id);
		if (mode < 0) {
			r = mode;
			cache_close(fs->cache, i, false);
			file_unref(fs, file_of(fi)); /* a reader's fd is -1 here */
		}
	}
	if (r < 0) {
		cache_pt_close(fs->cache, i, req, mode);
		if (fd >= 0)
			close(fd);
		index_gone(fs, i, r);
		fuse_reply_err(req, -r);
		return;
	}
	fi->keep_cache = keep;
	/* A reader's close need not wait for us: nothing to flush.  Its
	 * close must still drop the closer's POSIX locks on the file, which
	 * FLUSH tells: granted only while nobody holds locks on the file, and
	 * an owner that locks through this handle loses its locks at its
	 * RELEASE instead (file_note_lock_owner). */
	if (ro && S_ISREG(i->type) && !inode_has_lock_owners(i)) {
		fi->noflush = 1;
		file_of(fi)->noflush = true;
	}
	pt_answer(file_of(fi), fi, mode, id);
	if (!keep && S_ISREG(i->type))
		inval_attrs(fs, ino);
	if (fuse_reply_open(req, fi) == -ENOENT) {
		/* The opener was interrupted and is gone; no release will come. */
		cache_pt_close(fs->cache, i, NULL, file_of(fi)->pt_mode);
		cache_close(fs->cache, i, file_of(fi)->writer);
		file_unref(fs, file_of(fi));
	}
}

void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *dir = inode_of(req, parent), *i;
	struct fuse_entry_param e;
	struct src_cred saved;
	int fd, r, fence;

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
		for (int tries = 0;; tries++) {
			enter_caller(req, &saved);
			fd = src_create(dfd, name, fi->flags & ~O_DIRECT, mode);
			src_cred_leave(&saved);
			if (!out_of_fds(fd) || tries)
				break;
			note_no_fds(fs, fd, "a create");
		}
		ifd_put(fs, dir);
	}
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	index_dir_changed(fs, dir);
	r = do_lookup(fs, dir, name, &e);
	if (r < 0) {
		close(fd);
		fuse_reply_err(req, -r);
		return;
	}
	/* The name may be another of a file the cache is pushing, whose
	 * source file O_TRUNC has just cut: as an open's, the reply follows
	 * every push in flight (op_open), or one landing after it would give
	 * the kernel the old version's bytes and size. */
	i = inode_of(req, e.ino);
	fence = push_fence_begin(fs, i, false);
	if (fence == -EWOULDBLOCK) {
		if (push_defer_create(fs, req, &e, fi, fd) == 0)
			return;
		fence = push_fence_begin(fs, i, true);
	}
	create_fenced(req, &e, fi, fd);
	push_fence_end(fs, i, fence);
}

void create_fenced(fuse_req_t req, const struct fuse_entry_param *entry,
		   struct fuse_file_info *fi, int fd)
{
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *i = inode_of(req, entry->ino);
	struct meta_attr attr;
	bool keep;
	int r;

	itab_attr(fs->itab, i, &attr);
	r = file_new(fs, i, fd, fi);
	if (r < 0) {
		itab_forget(fs->itab, i, 1);
		close(fd);
		fuse_reply_err(req, -r);
		return;
	}
	if (cache_open(fs->cache, i, fd, &attr, &keep) == 0) {
		file_of(fi)->cached = true;
		file_of(fi)->writer = true;
	}
	if (fuse_reply_create(req, entry, fi) == -ENOENT) {
		if (file_of(fi)->cached)
			cache_close(fs->cache, i, true);
		file_unref(fs, file_of(fi));
		itab_forget(fs->itab, i, 1);
	}
}

/*
 * A read may wait for the source, which can hang for as long as a `hard` NFS
 * mount's server is away.  A FUSE interrupt (the reader got a signal) is
 * answered EINTR at once by the interrupt callback, on libfuse's thread;
 * the worker keeps waiting for the source (the kernel gives it no way out),
 * then drops its answer (a chunk it fetched is still stored).  Whoever
 * claims the request first answers it.
 *
 * Once the interrupt answered, the kernel may release the handle and forget
 * the inode while the worker still uses both: the worker holds a reference
 * on the handle for the whole read (taken before the interrupt callback is
 * registered), and the handle holds the inode.  So the worker touches
 * nothing that can go, releases what its read pinned (cache_read_done), and
 * only then lets go of the handle, whose last reference may free the inode:
 * the inode's release waits for the pins of its cache entry, which must not
 * be this thread's own.
 */
struct read_claim {
	pthread_t worker;
	int owner; /* atomic: 0 nobody yet, 1 the worker, 2 the interrupt */
};

static void read_interrupt(fuse_req_t req, void *data)
{
	struct read_claim *rc = data;
	int none = 0;

	/* Called by fuse_req_interrupt_func itself (the interrupt came first):
	 * a reply here would free req under libfuse's lock, so the worker
	 * answers, having seen fuse_req_interrupted(). */
	if (pthread_equal(rc->worker, pthread_self()))
		return;
	/* rc lives on the worker's stack until the worker claimed the request
	 * or saw that we did: it is not read after the exchange. */
	if (__atomic_compare_exchange_n(&rc->owner, &none, 2, false, __ATOMIC_ACQ_REL,
					__ATOMIC_ACQUIRE))
		fuse_reply_err(req, EINTR);
}

/* May the worker answer req?  If so, no callback runs or will run.  If not,
 * req was answered EINTR and is gone. */
static bool read_claim(fuse_req_t req, struct read_claim *rc)
{
	int none = 0;

	if (!__atomic_compare_exchange_n(&rc->owner, &none, 1, false, __ATOMIC_ACQ_REL,
					 __ATOMIC_ACQUIRE))
		return false;
	/* Takes req's lock: waits for a callback running now (it lost). */
	fuse_req_interrupt_func(req, NULL, NULL);
	return true;
}

/* The largest size the kernel may believe the file has: the one last
 * given it (cache_read reads past the size validated at open from the
 * source only then). */
static uint64_t kernel_size(struct efs_fs *fs, struct efs_inode *i)
{
	struct meta_attr attr;

	itab_attr(fs->itab, i, &attr);
	return attr.seen && attr.size >= 0 ? (uint64_t)attr.size : UINT64_MAX;
}

/* Answer a read with what cache_read gathered, in one writev, and release
 * it.  Every segment is memory: the cache copies hits out of its files and
 * checks the copy (a splice from a cache file could not be checked). */
static void reply_read(fuse_req_t req, struct efs_fs *fs, struct cache_read *rd, ssize_t n)
{
	struct iovec iov[CACHE_MAX_SEGS];

	stats_add(&fs->stats, ST_bytes_served, (uint64_t)n);
	for (unsigned k = 0; k < rd->nseg; k++)
		iov[k] = (struct iovec){.iov_base = (void *)rd->seg[k].mem, .iov_len = rd->seg[k].len};
	fuse_reply_iov(req, iov, (int)rd->nseg);
	cache_read_done(fs->cache, rd);
}

/* -o immutable: the kernel opened the file without asking (no handle,
 * no RELEASE to come).  Each read is an open and a close of the cache
 * entry: validated once per file (ttl=never; a lookup that saw the
 * record's identity counts), loaded from the idle list or cache_dir, and
 * left to the idle list after.  A read that must reach the source opens
 * the file for that read only.  The inode is held for the read: an
 * interrupt answered early may let the kernel forget it meanwhile. */
static void read_no_handle(fuse_req_t req, struct efs_fs *fs, struct efs_inode *i, size_t size,
			   off_t off)
{
	struct read_claim rc = {.worker = pthread_self()};
	off_t prev = __atomic_exchange_n(&i->next_off, off + (off_t)size, __ATOMIC_RELAXED);
	bool seq = off == 0 || (off >= prev - SEQ_SLACK && off <= prev + SEQ_SLACK);
	struct meta_attr attr;
	struct cache_read rd;
	bool keep, opened;
	int fd = -1;
	ssize_t n;

	itab_hold(fs->itab, i);
	fuse_req_interrupt_func(req, read_interrupt, &rc);
	if (fuse_req_interrupted(req)) {
		if (read_claim(req, &rc))
			fuse_reply_err(req, EINTR);
		goto out;
	}
	itab_attr(fs->itab, i, &attr);
	n = cache_open(fs->cache, i, -1, &attr, &keep);
	opened = n == 0;
	if (n == 0) {
		const uint64_t ksize = kernel_size(fs, i);

		n = cache_read(fs->cache, i, -1, off, size, seq, ksize, &rd);
		if (n == -EBADFD) {
			fd = source_open_object(fs, i, O_RDONLY);
			n = fd < 0 ? fd : cache_read(fs->cache, i, fd, off, size, seq, ksize, &rd);
		}
	}
	if (!read_claim(req, &rc)) {
		if (n >= 0)
			cache_read_done(fs->cache, &rd);
	} else if (n < 0) {
		fuse_reply_err(req, (int)-n);
	} else {
		reply_read(req, fs, &rd, n);
	}
	if (fd >= 0)
		close(fd);
	if (opened)
		cache_close(fs->cache, i, false);
out:
	itab_unhold(fs->itab, i);
}

void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *i = inode_of(req, ino);
	struct efs_file *f = file_of(fi);
	struct read_claim rc = {.worker = pthread_self()};
	unsigned how;
	struct cache_read rd;
	ssize_t n;

	if (no_handle(fi)) {
		read_no_handle(req, fs, i, size, off);
		return;
	}
	/* An O_DIRECT reader (efscachectl warm) keeps no pages: chunks pushed
	 * into the kernel for it would only be dropped. */
	how = (note_sequential(f, off, size) ? CACHE_READ_SEQUENTIAL : 0) |
	      ((f->flags & O_DIRECT) ? CACHE_READ_NO_PAGES : 0);

	/* Ours until the interrupt callback is registered: nobody else can
	 * answer req yet, so the kernel cannot release f before this. */
	file_ref(f);
	fuse_req_interrupt_func(req, read_interrupt, &rc);
	if (fuse_req_interrupted(req)) {
		if (read_claim(req, &rc))
			fuse_reply_err(req, EINTR);
		goto out;
	}
	const uint64_t ksize = kernel_size(fs, i);

	n = cache_read(fs->cache, i, file_fd_now(f), off, size, how, ksize, &rd);
	if (n == -EBADFD) {
		/* The read must go to the source: give the handle its fd. */
		int fd = file_fd(fs, i, f);

		n = fd < 0 ? fd : cache_read(fs->cache, i, fd, off, size, how, ksize, &rd);
	}
	if (!read_claim(req, &rc)) {
		/* Answered EINTR already: drop the result, pins first. */
		if (n >= 0)
			cache_read_done(fs->cache, &rd);
		goto out;
	}
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else
		reply_read(req, fs, &rd, n);
out:
	file_unref(fs, f); /* last: may let the inode go */
}

void op_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in, off_t off,
			 struct fuse_file_info *fi)
{
	struct fuse_bufvec out = FUSE_BUFVEC_INIT(fuse_buf_size(in));
	struct efs_inode *i = inode_of(req, ino);
	int fd = no_handle(fi) ? -EBADF : file_fd(fs_of(req), i, file_of(fi));
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
	file_changed(fs_of(req), i);
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else
		fuse_reply_write(req, (size_t)n);
}

void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct efs_file *f = file_of(fi);
	int r = 0;

	stats_add(&fs_of(req)->stats, ST_kernel_flushes, 1);
	if (no_handle(fi)) {
		/* A file the kernel opened itself (-o immutable): nothing was
		 * written, and locks are the kernel's; ENOSYS tells it to send
		 * no more FLUSH on this mount. */
		fuse_reply_err(req, ENOSYS);
		return;
	}

	/* The owner's fcntl locks go with any close of the file: parked
	 * waits for them may go on. */
	release_lock_owner(fs_of(req), inode_of(req, ino), fi->lock_owner);
	/* Closing a duplicate makes NFS-like sources report deferred write
	 * errors now, where close(2) returns them, not at release.  A handle
	 * that never opened the source has nothing to report.  No lock: an
	 * fd once open stays until the handle is freed, and a slow flush must
	 * not hold up a lazy open of this handle on another thread. */
	if (file_fd_now(f) >= 0)
		r = src_flush(file_fd_now(f));
	fuse_reply_err(req, -r);
}

void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct efs_file *f = file_of(fi);

	stats_add(&fs_of(req)->stats, ST_kernel_releases, 1);
	if (!f) {
		fuse_reply_err(req, 0);
		return;
	}
	/* Its close sent no FLUSH: the owners that locked through it lose
	 * their locks now, as their close would have dropped them. */
	for (unsigned k = 0; k < f->n_lk_owners; k++)
		release_lock_owner(fs_of(req), inode_of(req, ino), f->lk_owners[k]);
	cache_pt_close(fs_of(req)->cache, inode_of(req, ino), req, f->pt_mode);
	if (f->cached)
		cache_close(fs_of(req)->cache, inode_of(req, ino), f->writer);
	/* The kernel's reference; the handle's fd (and flock locks held through
	 * it) goes with the last one, which is usually this. */
	file_unref(fs_of(req), f);
	fuse_reply_err(req, 0);
}

void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct efs_file *f = file_of(fi);
	int r = 0;

	if (!f) {
		fuse_reply_err(req, 0); /* nothing written (-o immutable) */
		return;
	}
	/* A handle that never opened the source wrote nothing through it.  No
	 * lock held across the source's fsync (see op_flush). */
	if (file_fd_now(f) >= 0)
		r = src_fsync(file_fd_now(f), datasync);
	fuse_reply_err(req, -r);
}

void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
			 struct fuse_file_info *fi)
{
	struct efs_inode *i = inode_of(req, ino);
	int fd = no_handle(fi) ? -EBADF : file_fd(fs_of(req), i, file_of(fi));
	/* -errno in r before cache_written, which takes locks. */
	int r = fd < 0 ? fd : src_fallocate(fd, mode, off, len);

	cache_written(fs_of(req)->cache, i);
	if (fd >= 0)
		file_changed(fs_of(req), i);
	fuse_reply_err(req, -r);
}

void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		     struct fuse_file_info *fi)
{
	struct efs_fs *fs = fs_of(req);
	struct efs_inode *i = inode_of(req, ino);
	/* Without a handle (-o immutable), a source fd for this call. */
	int own = no_handle(fi) ? source_open_object(fs, i, O_RDONLY) : -1;
	int fd = no_handle(fi) ? own : file_fd(fs, i, file_of(fi));
	off_t r = fd < 0 ? fd : src_lseek(fd, off, whence);

	if (own >= 0)
		close(own);

	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else
		fuse_reply_lseek(req, r);
}

void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
			       struct fuse_file_info *fi_in, fuse_ino_t ino_out, off_t off_out,
			       struct fuse_file_info *fi_out, size_t len, int flags)
{
	struct efs_fs *fs = fs_of(req);
	/* A file the kernel opened itself (-o immutable): copy by reading. */
	int in = no_handle(fi_in) || no_handle(fi_out)
			 ? -EOPNOTSUPP
			 : file_fd(fs, inode_of(req, ino_in), file_of(fi_in));
	int out = in < 0 ? in : file_fd(fs, inode_of(req, ino_out), file_of(fi_out));
	ssize_t n = in < 0 ? in : out < 0 ? out
					  : src_copy_file_range(in, &off_in, out, &off_out, len,
								(unsigned)flags);

	cache_written(fs->cache, inode_of(req, ino_out));
	if (out >= 0)
		file_changed(fs, inode_of(req, ino_out));
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else
		fuse_reply_write(req, (size_t)n);
}
