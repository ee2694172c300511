/*
 * emu-data.c: time, the read link, and efs-emu's operations on open files (efs-emu.c has
 * the overview and the read-delay formula).
 *
 * The link: link_free (when the shared link is next free) and the per-thread read streams
 * of serial_reads, both under link_lock. Open files: open (with the close-to-open
 * revalidation of an NFS OPEN compound), create, read (spliced from SOURCE, or from a
 * mapping when the reply is too large to splice), write, flush, release, fsync, fallocate,
 * flock, POSIX locks as open-file-description locks, copy_file_range, lseek. An open file is
 * a struct emu_handle in fi->fh; in->nopen counts them and in->open_at marks the OPEN whose
 * GETATTR comes next. Locks: link_lock only.
 */

#include "emu.h"

/* ---- time ---- */

uint64_t emu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NSEC + (uint64_t)ts.tv_nsec;
}

void emu_sleep_until(uint64_t t)
{
	struct timespec ts = {.tv_sec = (time_t)(t / NSEC), .tv_nsec = (long)(t % NSEC)};

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

/*
 * Slot of thread 'tid' in e->streams: its own, else one whose last read is over, else NULL
 * (the read is then not serialized). Caller holds link_lock.
 */
static struct emu_stream *emu_stream(struct emu *e, pid_t tid, uint64_t now)
{
	size_t i = ((size_t)(unsigned)tid * 2654435761u) & (EMU_STREAMS - 1);
	struct emu_stream *spare = NULL;

	for (int n = 0; n < EMU_STREAM_PROBES; n++, i = (i + 1) & (EMU_STREAMS - 1)) {
		struct emu_stream *st = &e->streams[i];

		if (st->tid == tid)
			return st;
		if (!spare && st->done <= now)
			spare = st;
	}
	if (spare) {
		spare->tid = tid;
		spare->done = 0;
	}
	return spare;
}

/*
 * When a read of n bytes by thread 'tid' that arrived at 'now' completes: its transfer takes
 * the next n / bw of the shared link; with serial_reads it also starts no earlier than the
 * thread's previous read completed; then the latency. The link is reserved at arrival, so
 * a queued request never holds it idle. Takes link_lock.
 */
static uint64_t emu_read_done(struct emu *e, uint64_t n, pid_t tid, uint64_t now)
{
	uint64_t bw = atomic_load(&e->bw_bps);
	uint64_t lat = atomic_load(&e->latency_ns);
	bool serial = atomic_load(&e->serial_reads);
	uint64_t xfer = 0, done;
	struct emu_stream *st;

	pthread_mutex_lock(&e->link_lock);
	done = now;
	if (bw && n) {
		xfer = (uint64_t)((double)n * (double)NSEC / (double)bw);
		e->link_free = (e->link_free > now ? e->link_free : now) + xfer;
		done = e->link_free;
	}
	st = serial ? emu_stream(e, tid, now) : NULL;
	if (st && st->done + xfer > done)
		done = st->done + xfer;
	done += lat;
	if (st)
		st->done = done;
	pthread_mutex_unlock(&e->link_lock);
	return done;
}

/* ---- open files ---- */

struct emu_handle *emu_handle_new(int fd)
{
	struct emu_handle *h = calloc(1, sizeof(*h));

	if (h) {
		h->fd = fd;
		pthread_rwlock_init(&h->io, NULL);
	}
	return h;
}

/* Flags for opening the source: O_DIRECT is the mount's business, not the source's. */
static int emu_open_flags(int flags)
{
	return (flags & ~(O_NOFOLLOW | O_DIRECT | O_CREAT | O_EXCL | O_NOCTTY)) | O_CLOEXEC;
}

/*
 * Close-to-open, as the GETATTR in an NFS OPEN compound: a file with a dead handle is
 * ESTALE (the kernel then looks the name up again), and if the source's attributes differ
 * from what the kernel was last told, its cached attributes are invalidated (off < 0: the
 * page cache is left alone, so this is safe inside a request) and the next stat asks again.
 * Returns 0 or a positive errno.
 */
static int emu_open_revalidate(struct emu *e, fuse_ino_t ino, struct emu_inode *in)
{
	struct stat st;

	if (fstatat(in->fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
		return errno;
	if (emu_is_stale(e, in, &st, true))
		return ESTALE;
	if (S_ISREG(st.st_mode) && !(atomic_load(&in->silly) && atomic_load(&in->nopen) > 0) &&
	    emu_name_moved(e, in)) {
		ctr_add(e, C_ESTALE, 1);
		return ESTALE;
	}
	/*
	 * NFS's OPEN compound carries a GETATTR whose answer the client always takes. A FUSE
	 * open reply carries no attributes, so the kernel's are dropped at every OPEN and the
	 * next GETATTR stands in for the compound's: no latency, counted in open_getattrs, not
	 * getattrs. Dropping them only when they differ from what efs-emu last told the kernel
	 * is not enough: the kernel discards an attribute reply that raced with another change
	 * of the inode (its attr_version), and may still hold older attributes than those.
	 * attr_invals counts the OPENs that found a change.
	 */
	if (emu_attrs_changed(in, &st))
		ctr_add(e, C_ATTR_INVALS, 1);
	if (S_ISREG(st.st_mode) && e->se && fuse_lowlevel_notify_inval_inode(e->se, ino, -1, 0) == 0)
		atomic_store(&in->open_at, emu_now());
	return 0;
}

void emu_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct emu *e = emu_of(req);
	struct emu_inode *in = emu_inode(e, ino);
	struct emu_handle *h;
	char proc[64];
	int fd, err;

	emu_meta(e, C_OPENS);
	fctr_add(in, F_OPENS, 1);
	err = emu_inode_fault(e, in);
	if (!err)
		err = emu_extra_fault(req, e, in);
	if (err) {
		fuse_reply_err(req, err);
		return;
	}
	pthread_rwlock_rdlock(&e->name_lock);
	err = emu_open_revalidate(e, ino, in);
	if (err) {
		pthread_rwlock_unlock(&e->name_lock);
		fuse_reply_err(req, err);
		return;
	}
	emu_procname(proc, sizeof(proc), in->fd);
	fd = open(proc, emu_open_flags(fi->flags));
	if (fd < 0) {
		err = errno;
		pthread_rwlock_unlock(&e->name_lock);
		fuse_reply_err(req, err);
		return;
	}
	h = emu_handle_new(fd);
	if (!h) {
		pthread_rwlock_unlock(&e->name_lock);
		close(fd);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	/* No keep_cache: every open drops the kernel's page cache for the file, as NFS does
	 * close-to-open, so a read after open is served (and counted) here. */
	fi->fh = (uintptr_t)h;
	atomic_fetch_add(&in->nopen, 1);
	pthread_rwlock_unlock(&e->name_lock);
	if (fuse_reply_open(req, fi) == -ENOENT) {
		atomic_fetch_sub(&in->nopen, 1);
		close(fd);
		free(h);
	}
}

void emu_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		struct fuse_file_info *fi)
{
	struct emu *e = emu_of(req);
	struct fuse_entry_param ent;
	struct emu_handle *h;
	struct emu_cred cred;
	int fd, err;

	emu_meta(e, C_OPENS);
	emu_cred_enter(req, e, &cred);
	fd = openat(emu_inode(e, parent)->fd, name, emu_open_flags(fi->flags) | O_CREAT, mode);
	err = fd < 0 ? errno : 0;
	emu_cred_leave(&cred);
	if (err) {
		fuse_reply_err(req, err);
		return;
	}
	err = -emu_do_lookup(e, parent, name, &ent);
	if (err)
		goto out_close;
	fctr_add(emu_inode(e, ent.ino), F_OPENS, 1);
	h = emu_handle_new(fd);
	if (!h) {
		emu_forget_one(e, ent.ino, 1);
		err = ENOMEM;
		goto out_close;
	}
	fi->fh = (uintptr_t)h;
	atomic_fetch_add(&emu_inode(e, ent.ino)->nopen, 1);
	if (fuse_reply_create(req, &ent, fi) == -ENOENT) {
		atomic_fetch_sub(&emu_inode(e, ent.ino)->nopen, 1);
		emu_forget_one(e, ent.ino, 1);
		close(fd);
		free(h);
	}
	return;

out_close:
	close(fd);
	fuse_reply_err(req, err);
}

/*
 * Reads are answered from SOURCE's page cache without a copy in user space. libfuse splices a
 * reply whose buffer is the backing fd (page references into a pipe, one kernel copy into the
 * request), but only if header and data fit in its pipe: with 4 KiB pipe slots a 1 MiB read
 * needs 257 of them, more than a pipe holds without CAP_SYS_RESOURCE (pipe-max-size is 1 MiB),
 * and libfuse would pread it into a buffer and write that (two copies). Such a reply is written
 * from a shared mapping of the file instead, so the kernel copies the page-cache pages into
 * the request once. Returns the largest reply libfuse can splice here.
 */
uint64_t emu_splice_max(void)
{
	const uint64_t slack = 3 * 4096 + 16; /* libfuse's estimate: 3 pages + the out header */
	uint64_t max = 0;
	FILE *f;
	int p[2];

	if (pipe(p) == 0) {
		/* Can pipes grow past pipe-max-size here? Then libfuse splices every reply. */
		bool grows = fcntl(p[0], F_SETPIPE_SZ, (int)(4 * EMU_MAX_REQ)) >= 0;

		close(p[0]);
		close(p[1]);
		if (grows)
			return UINT64_MAX;
	}
	f = fopen("/proc/sys/fs/pipe-max-size", "re");
	if (f) {
		if (fscanf(f, "%" SCNu64, &max) != 1)
			max = 0;
		fclose(f);
	}
	return max > slack ? max - slack : 0;
}

/* Reply n bytes at off of fd from a mapping of it; false (nothing sent) if it cannot be
 * mapped. A concurrent truncation of the file below off + n makes this reply fail (EIO to
 * the reader) where a pread would have been short. */
static bool emu_reply_mapped(fuse_req_t req, int fd, off_t off, uint64_t n)
{
	const off_t pg = (off_t)sysconf(_SC_PAGESIZE);
	const off_t moff = off - off % pg;
	const size_t mlen = (size_t)(off - moff) + n;
	struct fuse_bufvec buf = FUSE_BUFVEC_INIT(n);
	void *m = mmap(NULL, mlen, PROT_READ, MAP_SHARED, fd, moff);

	if (m == MAP_FAILED)
		return false;
	buf.buf[0].mem = (char *)m + (off - moff);
	fuse_reply_data(req, &buf, FUSE_BUF_NO_SPLICE);
	munmap(m, mlen);
	return true;
}

static void read_handle(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			struct fuse_file_info *fi);

void emu_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct emu_handle *h = emu_handle(fi);

	pthread_rwlock_rdlock(&h->io);
	read_handle(req, ino, size, off, fi);
	pthread_rwlock_unlock(&h->io);
}

static void read_handle(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			struct fuse_file_info *fi)
{
	struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
	struct emu *e = emu_of(req);
	struct emu_inode *in = emu_inode(e, ino);
	struct emu_handle *h = emu_handle(fi);
	uint64_t t0 = emu_now();
	uint64_t lat = atomic_load(&e->latency_ns);
	uint64_t limit, n = 0;
	struct stat st;
	int err;

	ctr_add(e, C_OPS, 1);
	ctr_add(e, C_READ_OPS, 1);
	fctr_add(in, F_READ_OPS, 1);
	err = emu_inode_fault(e, in);
	if (!err)
		err = emu_extra_fault(req, e, in);
	if (!err)
		buf.buf[0].size = size = emu_read_shape(e, in, size);
	limit = atomic_load(&e->fail_after_bytes);
	if (!err && limit && atomic_load(&e->fault_bytes) >= limit) {
		ctr_add(e, C_FAULTS, 1);
		err = EIO;
	}
	if (!err && fstat(h->fd, &st) < 0)
		err = errno;
	if (err) {
		emu_sleep_until(t0 + lat);
		fuse_reply_err(req, err);
		return;
	}
	if (S_ISREG(st.st_mode) && off < st.st_size)
		n = (uint64_t)(st.st_size - off) < size ? (uint64_t)(st.st_size - off) : size;
	ctr_add(e, C_READ_BYTES, n);
	fctr_add(in, F_READ_BYTES, n);
	atomic_fetch_add(&e->fault_bytes, n);
	emu_sleep_until(emu_read_done(e, n, fuse_req_ctx(req)->pid, t0));

	if (n > e->splice_max && emu_reply_mapped(req, h->fd, off, n))
		return;
	buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	buf.buf[0].fd = h->fd;
	buf.buf[0].pos = off;
	fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

void emu_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in_buf, off_t off,
		   struct fuse_file_info *fi)
{
	struct fuse_bufvec out = FUSE_BUFVEC_INIT(fuse_buf_size(in_buf));
	struct emu *e = emu_of(req);
	struct emu_inode *in = emu_inode(e, ino);
	uint64_t t0 = emu_now();
	ssize_t r;

	ctr_add(e, C_OPS, 1);
	ctr_add(e, C_WRITE_OPS, 1);
	fctr_add(in, F_WRITE_OPS, 1);
	out.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	out.buf[0].fd = emu_handle(fi)->fd;
	out.buf[0].pos = off;
	r = fuse_buf_copy(&out, in_buf, 0);
	if (r > 0) {
		ctr_add(e, C_WRITE_BYTES, (uint64_t)r);
		fctr_add(in, F_WRITE_BYTES, (uint64_t)r);
	}
	emu_sleep_until(t0 + atomic_load(&e->latency_ns));
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else
		fuse_reply_write(req, (size_t)r);
}

/* Drop the POSIX locks 'owner' holds through h (close of one of its descriptors). */
static void emu_unlock_owner(struct emu_handle *h, uint64_t owner)
{
	struct flock fl = {.l_type = F_UNLCK, .l_whence = SEEK_SET};

	if (atomic_load(&h->has_locks) && atomic_load(&h->lock_owner) == owner)
		fcntl(h->fd, F_OFD_SETLK, &fl);
}

void emu_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct emu *e = emu_of(req);
	struct emu_handle *h = emu_handle(fi);
	int fd;

	(void)ino;
	emu_meta(e, C_OPS);
	emu_unlock_owner(h, fi->lock_owner);
	fd = dup(h->fd);
	if (fd < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	fuse_reply_err(req, close(fd) < 0 ? errno : 0);
}

void emu_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct emu *e = emu_of(req);
	struct emu_handle *h = emu_handle(fi);

	/* Not delayed: the kernel sends RELEASE after close() has returned, and flock
	 * locks held through this handle stay visible to others until it is served. */
	ctr_add(e, C_OPS, 1);
	atomic_fetch_sub(&emu_inode(e, ino)->nopen, 1);
	if (fi->flock_release)
		flock(h->fd, LOCK_UN);
	pthread_rwlock_wrlock(&h->io);
	close(h->fd);
	pthread_rwlock_unlock(&h->io);
	pthread_rwlock_destroy(&h->io);
	free(h);
	fuse_reply_err(req, 0);
}

void emu_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct emu *e = emu_of(req);
	int fd = emu_handle(fi)->fd;

	(void)ino;
	emu_meta(e, C_OPS);
	fuse_reply_err(req, (datasync ? fdatasync(fd) : fsync(fd)) < 0 ? errno : 0);
}

void emu_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
		   struct fuse_file_info *fi)
{
	struct emu *e = emu_of(req);

	(void)ino;
	emu_meta(e, C_OPS);
	fuse_reply_err(req, fallocate(emu_handle(fi)->fd, mode, offset, length) < 0 ? errno : 0);
}

void emu_flock(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, int op)
{
	struct emu *e = emu_of(req);

	(void)ino;
	emu_meta(e, C_OPS);
	fuse_reply_err(req, flock(emu_handle(fi)->fd, op) < 0 ? errno : 0);
}

/*
 * POSIX locks become open-file-description locks on the handle's source fd: two opens
 * conflict with each other even within one process, and a handle shared by fork is one owner.
 */
void emu_getlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct flock *lock)
{
	struct emu *e = emu_of(req);

	(void)ino;
	emu_meta(e, C_OPS);
	lock->l_pid = 0;
	if (fcntl(emu_handle(fi)->fd, F_OFD_GETLK, lock) < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	lock->l_pid = 0; /* the holder is not a process the kernel could name */
	fuse_reply_lock(req, lock);
}

void emu_setlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct flock *lock,
	       int sleep)
{
	struct emu *e = emu_of(req);
	struct emu_handle *h = emu_handle(fi);

	(void)ino;
	emu_meta(e, C_OPS);
	lock->l_pid = 0;
	if (fcntl(h->fd, sleep ? F_OFD_SETLKW : F_OFD_SETLK, lock) < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	if (lock->l_type != F_UNLCK) {
		atomic_store(&h->lock_owner, fi->lock_owner);
		atomic_store(&h->has_locks, true);
	}
	fuse_reply_err(req, 0);
}

void emu_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
			 struct fuse_file_info *fi_in, fuse_ino_t ino_out, off_t off_out,
			 struct fuse_file_info *fi_out, size_t len, int flags)
{
	struct emu *e = emu_of(req);
	uint64_t t0 = emu_now();
	ssize_t r;

	(void)ino_in;
	(void)ino_out;
	ctr_add(e, C_OPS, 1);
	r = copy_file_range(emu_handle(fi_in)->fd, &off_in, emu_handle(fi_out)->fd, &off_out, len,
			    (unsigned int)flags);
	emu_sleep_until(t0 + atomic_load(&e->latency_ns));
	if (r < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_write(req, (size_t)r);
}

void emu_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi)
{
	struct emu *e = emu_of(req);
	off_t r;

	(void)ino;
	emu_meta(e, C_OPS);
	r = lseek(emu_handle(fi)->fd, off, whence);
	if (r < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	fuse_reply_lseek(req, r);
}
