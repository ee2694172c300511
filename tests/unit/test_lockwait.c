/* test_lockwait.c - parked lock waits on real files, no mount.
 *
 * A holder takes an OFD lock (or flock) on one open file description; the
 * waits are made on another, so they conflict exactly as two lock owners
 * of the daemon do.  Waits are observed through their done callbacks; a
 * bounded wait (WAIT_S) only catches a hang, it measures nothing.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "lockwait.h"

#define WAIT_S 20
#define NWAITS 40

struct result {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int calls;
	int r;
};

static void result_init(struct result *res)
{
	pthread_mutex_init(&res->mu, NULL);
	pthread_cond_init(&res->cv, NULL);
	res->calls = 0;
	res->r = 1;
}

static void done(void *arg, int r)
{
	struct result *res = arg;

	pthread_mutex_lock(&res->mu);
	res->calls++;
	res->r = r;
	pthread_cond_broadcast(&res->cv);
	pthread_mutex_unlock(&res->mu);
}

/* Wait until res was answered (or WAIT_S passed); returns the call count. */
static int await(struct result *res)
{
	struct timespec ts;
	int n;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += WAIT_S;
	pthread_mutex_lock(&res->mu);
	while (!res->calls && pthread_cond_timedwait(&res->cv, &res->mu, &ts) == 0)
		;
	n = res->calls;
	pthread_mutex_unlock(&res->mu);
	return n;
}

static int calls_of(struct result *res)
{
	int n;

	pthread_mutex_lock(&res->mu);
	n = res->calls;
	pthread_mutex_unlock(&res->mu);
	return n;
}

static int ofd_lock(int fd, short type)
{
	struct flock lk = {.l_type = type, .l_whence = SEEK_SET, .l_start = 0, .l_len = 100};

	return fcntl(fd, F_OFD_SETLK, &lk) < 0 ? -errno : 0;
}

static const struct flock want_wr = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_len = 100};

static char path[] = "/tmp/test_lockwait.XXXXXX";

static int open_file(void)
{
	return open(path, O_RDWR | O_CLOEXEC);
}

static void test_kick_grants(void)
{
	struct lockwait *lw;
	struct result res;
	struct lw_wait *w;
	int holder = open_file(), waiter = open_file(), err = 0;
	unsigned threads, waits;
	const int key = 0;

	result_init(&res);
	CHECK(lockwait_new(&lw) == 0);
	lockwait_counts(lw, &threads, &waits);
	CHECK(threads == 0); /* no thread before the first wait */
	CHECK(ofd_lock(holder, F_WRLCK) == 0);
	w = lockwait_prepare(lw, waiter, &want_wr, 0, &key, done, &res, &res, &err);
	CHECK(w != NULL);
	lockwait_start(lw, w);
	usleep(20000); /* a few retries, all refused */
	CHECK(calls_of(&res) == 0);
	CHECK(ofd_lock(waiter, F_WRLCK) == -EAGAIN); /* not granted behind our back */
	CHECK(ofd_lock(holder, F_UNLCK) == 0);
	lockwait_kick(lw, &key);
	CHECK(await(&res) == 1);
	CHECK(res.r == 0);
	/* The wait's lock is on the waiter's description: the holder is refused. */
	CHECK(ofd_lock(holder, F_WRLCK) == -EAGAIN);
	lockwait_counts(lw, &threads, &waits);
	CHECK(threads == 1 && waits == 0);
	lockwait_free(lw);
	close(holder);
	close(waiter);
}

/* A holder that is not this mount's (no kick): the backoff retries find it. */
static void test_release_without_kick(void)
{
	struct lockwait *lw;
	struct result res;
	struct lw_wait *w;
	int holder = open_file(), waiter = open_file(), err = 0;

	result_init(&res);
	CHECK(lockwait_new(&lw) == 0);
	CHECK(flock(holder, LOCK_EX | LOCK_NB) == 0);
	w = lockwait_prepare(lw, waiter, NULL, LOCK_EX, &lw, done, &res, &res, &err);
	CHECK(w != NULL);
	lockwait_start(lw, w);
	CHECK(flock(holder, LOCK_UN) == 0);
	CHECK(await(&res) == 1);
	CHECK(res.r == 0);
	CHECK(flock(holder, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK);
	lockwait_free(lw);
	close(holder);
	close(waiter);
}

static void test_interrupt(void)
{
	struct lockwait *lw;
	struct result res, other;
	struct lw_wait *w, *w2;
	int holder = open_file(), waiter = open_file(), err = 0;

	result_init(&res);
	result_init(&other);
	CHECK(lockwait_new(&lw) == 0);
	CHECK(ofd_lock(holder, F_WRLCK) == 0);
	w = lockwait_prepare(lw, waiter, &want_wr, 0, lw, done, &res, &res, &err);
	w2 = lockwait_prepare(lw, waiter, &want_wr, 0, lw, done, &other, &other, &err);
	CHECK(w && w2);
	/* Interrupted before it started (FUSE delivers an early interrupt
	 * from inside fuse_req_interrupt_func): not lost. */
	lockwait_interrupt(lw, w, &res);
	lockwait_start(lw, w);
	lockwait_start(lw, w2);
	CHECK(await(&res) == 1);
	CHECK(res.r == -EINTR);
	/* w is freed now: an interrupt naming it again, or naming the other
	 * wait with the wrong request, touches nothing. */
	lockwait_interrupt(lw, w, &res);
	lockwait_interrupt(lw, w2, &res);
	usleep(20000);
	CHECK(calls_of(&other) == 0);
	lockwait_interrupt(lw, w2, &other);
	CHECK(await(&other) == 1);
	CHECK(other.r == -EINTR);
	CHECK(ofd_lock(holder, F_UNLCK) == 0);
	CHECK(ofd_lock(waiter, F_WRLCK) == 0); /* no wait took it meanwhile */
	lockwait_free(lw);
	close(holder);
	close(waiter);
}

/* Many parked waits: one thread; stop answers each with EINTR, once. */
static void test_many_then_stop(void)
{
	struct lockwait *lw;
	struct result res[NWAITS], late;
	struct lw_wait *w;
	int holder = open_file(), waiter = open_file(), err = 0, k, ok = 0;
	unsigned threads, waits;

	CHECK(lockwait_new(&lw) == 0);
	CHECK(ofd_lock(holder, F_WRLCK) == 0);
	for (k = 0; k < NWAITS; k++) {
		result_init(&res[k]);
		w = lockwait_prepare(lw, waiter, &want_wr, 0, lw, done, &res[k], &res[k], &err);
		CHECK(w != NULL);
		if (w)
			lockwait_start(lw, w);
	}
	lockwait_counts(lw, &threads, &waits);
	CHECK(threads == 1);
	CHECK(waits == NWAITS);
	lockwait_stop(lw);
	for (k = 0; k < NWAITS; k++)
		ok += res[k].calls == 1 && res[k].r == -EINTR;
	CHECK(ok == NWAITS);
	lockwait_counts(lw, &threads, &waits);
	CHECK(threads == 0 && waits == 0);
	/* After the stop a new wait is answered at once. */
	result_init(&late);
	w = lockwait_prepare(lw, waiter, &want_wr, 0, lw, done, &late, &late, &err);
	CHECK(w != NULL);
	if (w)
		lockwait_start(lw, w);
	CHECK(late.calls == 1 && late.r == -EINTR);
	lockwait_free(lw);
	close(holder);
	close(waiter);
}

static void test_bad_fd(void)
{
	struct lockwait *lw;
	struct result res;
	int err = 0;

	result_init(&res);
	CHECK(lockwait_new(&lw) == 0);
	CHECK(lockwait_prepare(lw, -1, &want_wr, 0, lw, done, &res, &res, &err) == NULL);
	CHECK(err == -EBADF);
	CHECK(res.calls == 0);
	lockwait_free(lw);
}

/* A wait whose tries the caller makes (record locks: lockwait_prepare_try)
 * on the lock owner's fd as it is at each try.  The wait keeps no fd: when
 * the owner closes its fd while the wait is parked, the owner's other
 * locks go at once (a dup kept by the wait held them, issue 15), and the
 * grant lands on the owner's new fd. */
struct owner_ctx {
	struct result res;   /* first: done() takes it */
	pthread_mutex_t mu;
	int fd;              /* the owner's fd now; protected by mu */
	int tries;           /* protected by mu */
};

static int owner_try(void *arg)
{
	struct owner_ctx *o = arg;
	int r;

	pthread_mutex_lock(&o->mu);
	o->tries++;
	r = ofd_lock(o->fd, F_WRLCK);
	pthread_mutex_unlock(&o->mu);
	return r == -EACCES ? -EAGAIN : r;
}

static void test_try_function(void)
{
	struct flock other = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 200, .l_len = 10};
	struct owner_ctx o = {.fd = open_file()};
	int holder = open_file(), probe = open_file(), err = 0;
	struct lockwait *lw;
	struct lw_wait *w;

	result_init(&o.res);
	pthread_mutex_init(&o.mu, NULL);
	CHECK(lockwait_new(&lw) == 0);
	CHECK(fcntl(o.fd, F_OFD_SETLK, &other) == 0); /* the owner's other lock */
	CHECK(ofd_lock(holder, F_WRLCK) == 0);
	w = lockwait_prepare_try(lw, owner_try, &o, done, &o, &o, &err);
	CHECK(w != NULL);
	lockwait_start(lw, w);
	usleep(20000);
	CHECK(calls_of(&o.res) == 0);
	/* The owner closes its fd: its other lock is gone at once. */
	pthread_mutex_lock(&o.mu);
	close(o.fd);
	o.fd = open_file();
	pthread_mutex_unlock(&o.mu);
	other.l_type = F_WRLCK;
	CHECK(fcntl(probe, F_OFD_GETLK, &other) == 0 && other.l_type == F_UNLCK);
	CHECK(ofd_lock(holder, F_UNLCK) == 0);
	lockwait_kick(lw, &o);
	CHECK(await(&o.res) == 1);
	CHECK(o.res.r == 0);
	CHECK(ofd_lock(holder, F_WRLCK) == -EAGAIN); /* held on the owner's new fd */
	CHECK(o.tries >= 2);
	lockwait_free(lw);
	close(o.fd);
	close(holder);
	close(probe);
}

int main(void)
{
	int fd = mkstemp(path);

	if (fd < 0) {
		perror("mkstemp");
		return 1;
	}
	close(fd);
	test_kick_grants();
	test_release_without_kick();
	test_interrupt();
	test_many_then_stop();
	test_bad_fd();
	test_try_function();
	unlink(path);
	return check_done("lockwait");
}
