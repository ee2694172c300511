/* fsops_push.c - chunks a sweep fetched, put in the kernel's page cache.
 *
 * A reader that maps a model file and touches it out of order makes the
 * cache sweep the file (cache_read.c); each chunk the sweep stores is also
 * handed to the kernel (FUSE_NOTIFY_STORE), so the reader's later faults
 * find their pages there instead of costing a READ each.
 *
 * A push may wait inside the kernel for a page locked by a READ in flight,
 * which only a FUSE worker answers.  So nothing a worker does may wait for
 * a push: a request whose reply must come after the pushes in flight (an
 * open, a create, a truncate: cache_fence_begin) is answered on a thread
 * of its own when it meets one, and at the end of the session the requests
 * still queued are answered here until no push is left (a push blocked on
 * a READ nobody answers would keep the daemon from ever exiting).
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fsops_int.h"
#include "log.h"

int source_push(void *arg, struct efs_inode *i, uint64_t off, const void *buf, size_t len)
{
	struct efs_fs *fs = arg;
	struct fuse_bufvec bv = FUSE_BUFVEC_INIT(len);
	int r;

	pthread_mutex_lock(&fs->push_mu);
	if (fs->push_stopped || !fs->se) {
		pthread_mutex_unlock(&fs->push_mu);
		return -ESHUTDOWN;
	}
	fs->pushes++;
	pthread_mutex_unlock(&fs->push_mu);
	bv.buf[0].mem = (void *)buf;
	/* One writev from our buffer: a splice would copy it into a pipe of
	 * the calling thread's own that libfuse frees only for its workers. */
	r = fuse_lowlevel_notify_store(fs->se, ino_id(fs, i), (off_t)off, &bv, FUSE_BUF_NO_SPLICE);
	pthread_mutex_lock(&fs->push_mu);
	fs->pushes--;
	pthread_cond_broadcast(&fs->push_cv);
	pthread_mutex_unlock(&fs->push_mu);
	return r < 0 ? r : 0;
}

/* ---- requests answered off the FUSE workers ------------------------------ */

int push_fence_begin(struct efs_fs *fs, struct efs_inode *i, bool may_wait)
{
	int fence = cache_fence_begin(fs->cache, i, may_wait);

	if (fence > 0)
		itab_hold(fs->itab, i);
	return fence;
}

void push_fence_end(struct efs_fs *fs, struct efs_inode *i, int fence)
{
	if (fence <= 0)
		return;
	cache_fence_end(fs->cache, i);
	itab_unhold(fs->itab, i);
}

enum deferred_op { DEFER_OPEN, DEFER_SETATTR, DEFER_CREATE };

struct deferred {
	struct efs_fs *fs;
	enum deferred_op op;
	fuse_req_t req;
	fuse_ino_t ino;
	struct fuse_file_info fi;
	bool has_fi;
	struct stat attr;
	int valid;
	struct fuse_entry_param entry; /* DEFER_CREATE: the created file, its fd */
	int fd;
};

static void *deferred_main(void *arg)
{
	struct deferred *d = arg;
	struct efs_fs *fs = d->fs;
	struct efs_inode *i = inode_of(d->req, d->ino);
	int fence = push_fence_begin(fs, i, true);

	if (d->op == DEFER_OPEN)
		open_fenced(d->req, d->ino, &d->fi);
	else if (d->op == DEFER_CREATE)
		create_fenced(d->req, &d->entry, &d->fi, d->fd);
	else
		setattr_fenced(d->req, d->ino, &d->attr, d->valid, d->has_fi ? &d->fi : NULL);
	push_fence_end(fs, i, fence);
	free(d);
	pthread_mutex_lock(&fs->push_mu);
	fs->deferred--;
	pthread_cond_broadcast(&fs->push_cv);
	pthread_mutex_unlock(&fs->push_mu);
	return NULL;
}

static int defer(struct deferred *d)
{
	struct efs_fs *fs = d->fs;
	pthread_attr_t at;
	pthread_t t;
	int r;

	pthread_mutex_lock(&fs->push_mu);
	fs->deferred++;
	pthread_mutex_unlock(&fs->push_mu);
	r = pthread_attr_init(&at);
	if (r == 0) {
		pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
		r = pthread_create(&t, &at, deferred_main, d);
		pthread_attr_destroy(&at);
	}
	if (r == 0)
		return 0;
	log_errno(LOG_LVL_WARN, r, "cannot start a thread to answer a request after a push");
	pthread_mutex_lock(&fs->push_mu);
	fs->deferred--;
	pthread_cond_broadcast(&fs->push_cv);
	pthread_mutex_unlock(&fs->push_mu);
	free(d);
	return -r;
}

int push_defer_open(struct efs_fs *fs, fuse_req_t req, fuse_ino_t ino,
		    const struct fuse_file_info *fi)
{
	struct deferred *d = calloc(1, sizeof(*d));

	if (!d)
		return -ENOMEM;
	*d = (struct deferred){.fs = fs, .op = DEFER_OPEN, .req = req, .ino = ino, .fi = *fi,
			       .has_fi = true};
	return defer(d);
}

int push_defer_setattr(struct efs_fs *fs, fuse_req_t req, fuse_ino_t ino, const struct stat *attr,
		       int valid, const struct fuse_file_info *fi)
{
	struct deferred *d = calloc(1, sizeof(*d));

	if (!d)
		return -ENOMEM;
	*d = (struct deferred){
		.fs = fs, .op = DEFER_SETATTR, .req = req, .ino = ino, .attr = *attr, .valid = valid};
	if (fi) {
		d->fi = *fi;
		d->has_fi = true;
	}
	return defer(d);
}

int push_defer_create(struct efs_fs *fs, fuse_req_t req, const struct fuse_entry_param *entry,
		      const struct fuse_file_info *fi, int fd)
{
	struct deferred *d = calloc(1, sizeof(*d));

	if (!d)
		return -ENOMEM;
	*d = (struct deferred){.fs = fs, .op = DEFER_CREATE, .req = req, .ino = entry->ino,
			       .fi = *fi, .has_fi = true, .entry = *entry, .fd = fd};
	return defer(d);
}

/* ---- the end of the session ---------------------------------------------- */

/* Answer one request the kernel queued, if one comes within 50 ms.  False
 * when the connection is gone (its requests ended, so no push waits). */
static bool serve_one(struct efs_fs *fs, struct fuse_buf *buf)
{
	struct pollfd p = {.fd = fuse_session_fd(fs->se), .events = POLLIN};
	int n = poll(&p, 1, 50);

	if (n <= 0)
		return n == 0 || errno == EINTR;
	if (p.revents & (POLLERR | POLLHUP | POLLNVAL))
		return false;
	n = fuse_session_receive_buf(fs->se, buf);
	if (n > 0)
		fuse_session_process_buf(fs->se, buf);
	return n > 0 || n == -EINTR || n == -EAGAIN;
}

void push_stop(struct efs_fs *fs)
{
	struct fuse_buf buf;
	bool served = false, live = fs->se != NULL;

	memset(&buf, 0, sizeof(buf));
	pthread_mutex_lock(&fs->push_mu);
	fs->push_stopped = true;
	while (fs->pushes || fs->deferred) {
		struct timespec until;

		pthread_mutex_unlock(&fs->push_mu);
		if (live && !served) {
			/* The loop ended on a signal: libfuse drops what it
			 * reads from an ended session. */
			fuse_session_reset(fs->se);
			served = true;
		}
		if (live)
			live = serve_one(fs, &buf);
		pthread_mutex_lock(&fs->push_mu);
		if (!live && (fs->pushes || fs->deferred)) {
			clock_gettime(CLOCK_REALTIME, &until);
			until.tv_nsec += 50 * 1000 * 1000;
			if (until.tv_nsec >= 1000000000L) {
				until.tv_sec++;
				until.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&fs->push_cv, &fs->push_mu, &until);
		}
	}
	pthread_mutex_unlock(&fs->push_mu);
	if (served)
		fuse_session_exit(fs->se);
	free(buf.mem);
}
