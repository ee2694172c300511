/* lockwait.c - lock requests that must wait, retried by one waiter thread.
 *
 * State: the parked waits, a list in arrival order, and the waiter thread
 * (started at the first wait, joined by lockwait_stop).  A wait is never
 * blocked in the kernel: the waiter takes the first wait that is due (its
 * retry time has come, it was kicked, or it was interrupted), tries its
 * lock without waiting on the source (F_OFD_SETLK, flock with LOCK_NB) with
 * no lock held, and then answers it or moves it to the tail with a longer
 * backoff, LOCKWAIT_POLL_MIN_MS doubling up to LOCKWAIT_POLL_MAX_MS.  With
 * no wait due it sleeps on lw->cv until the earliest retry time.
 *
 * Invariants: a wait is answered exactly once, by whoever unlinks it from
 * the list (the waiter thread, lockwait_start after a stop, or
 * lockwait_stop), and always with lw->mu released: the answer is a FUSE
 * reply, which takes libfuse's request lock, which libfuse holds while it
 * calls our interrupt callback, which takes lw->mu.  A wait is tried only
 * once started (w->ready), so the interrupt callback can be registered
 * after the wait is listed and before anyone may answer it: an interrupt
 * that arrives at any moment finds the wait and sets w->interrupted under
 * lw->mu, and the waiter, which reads it under lw->mu before and after each
 * try, cannot miss it (no signal, no window between a check and a blocking
 * call).
 *
 * A wait tries its lock on a dup of the caller's fd (flock: the handle's
 * open file description, which the kernel keeps while the flock call
 * waits), or through the caller's try function (record locks: the lock
 * owner's fd may be closed by a close of the owner meanwhile, and a dup
 * would keep its locks alive).
 *
 * Locks: lw->mu guards everything here; it is a leaf (no other lock is
 * taken under it) and no source call or answer is made with it held.
 */
#include "lockwait.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "source.h"

/* Retry backoff of a parked wait that was not kicked: the first retry after
 * 1 ms (a local holder usually releases within a few), doubling up to 50 ms,
 * so that a lock released on another host is seen within 50 ms while a
 * long wait costs the source at most 20 tries a second. */
#define LOCKWAIT_POLL_MIN_MS 1
#define LOCKWAIT_POLL_MAX_MS 50

#define NS_PER_MS 1000000ull
#define NS_PER_S 1000000000ull

struct lw_wait {
	struct lw_wait *prev, *next; /* on lw->head; protected by lw->mu */
	int fd;                      /* dup of the caller's fd, owned; -1 with try */
	int (*try)(void *arg);       /* the caller's tries, or NULL: fd's */
	bool is_flock;
	int flock_op;                /* LOCK_SH or LOCK_EX */
	struct flock lk;
	const void *key;
	lockwait_done_fn done;
	void *arg;
	const void *id;              /* the request, for interrupts */
	bool ready;                  /* started; protected by lw->mu */
	bool interrupted;            /* protected by lw->mu */
	bool kicked;                 /* kicked during a try; protected by lw->mu */
	uint64_t next_try;           /* CLOCK_MONOTONIC ns; protected by lw->mu */
	unsigned backoff_ms;         /* protected by lw->mu */
};

struct lockwait {
	pthread_mutex_t mu;
	pthread_cond_t cv;           /* a wait became due, or stop */
	struct lw_wait head;         /* list head; protected by mu */
	unsigned nwaits;             /* written under mu; read atomically */
	bool started;                /* the waiter thread runs; protected by mu */
	bool stop;                   /* protected by mu */
	pthread_t thread;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

int lockwait_new(struct lockwait **out)
{
	struct lockwait *lw = calloc(1, sizeof(*lw));
	pthread_condattr_t ca;

	if (!lw)
		return -ENOMEM;
	pthread_mutex_init(&lw->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&lw->cv, &ca);
	pthread_condattr_destroy(&ca);
	lw->head.next = lw->head.prev = &lw->head;
	*out = lw;
	return 0;
}

/* Caller holds lw->mu. */
static void link_tail(struct lockwait *lw, struct lw_wait *w)
{
	w->prev = lw->head.prev;
	w->next = &lw->head;
	lw->head.prev->next = w;
	lw->head.prev = w;
}

/* Caller holds lw->mu. */
static void unlink_wait(struct lockwait *lw, struct lw_wait *w)
{
	w->prev->next = w->next;
	w->next->prev = w->prev;
	w->prev = w->next = NULL;
	__atomic_sub_fetch(&lw->nwaits, 1, __ATOMIC_RELAXED);
}

/* Answer an unlinked wait and free it; no lock held. */
static void finish(struct lw_wait *w, int r)
{
	w->done(w->arg, r);
	if (w->fd >= 0)
		close(w->fd);
	free(w);
}

/* One try without waiting: 0, -EAGAIN (still held by someone), or -errno. */
static int try_once(struct lw_wait *w)
{
	int r;

	if (w->try)
		return w->try(w->arg);
	if (w->is_flock) {
		r = src_flock(w->fd, w->flock_op | LOCK_NB);
		return r == -EWOULDBLOCK ? -EAGAIN : r;
	}
	r = src_setlk(w->fd, &w->lk, false);
	return r == -EACCES ? -EAGAIN : r;
}

static void *waiter(void *arg)
{
	struct lockwait *lw = arg;
	struct lw_wait *w;
	int r;

	pthread_mutex_lock(&lw->mu);
	while (!lw->stop) {
		uint64_t now = now_ns(), earliest = UINT64_MAX;
		struct lw_wait *due = NULL;

		for (w = lw->head.next; w != &lw->head; w = w->next) {
			if (!w->ready)
				continue;
			if (w->interrupted || w->next_try <= now) {
				due = w;
				break;
			}
			if (w->next_try < earliest)
				earliest = w->next_try;
		}
		if (!due) {
			if (earliest == UINT64_MAX) {
				pthread_cond_wait(&lw->cv, &lw->mu);
			} else {
				struct timespec ts = {.tv_sec = (time_t)(earliest / NS_PER_S),
						      .tv_nsec = (long)(earliest % NS_PER_S)};

				pthread_cond_timedwait(&lw->cv, &lw->mu, &ts);
			}
			continue;
		}
		r = -EINTR;
		if (!due->interrupted) {
			due->kicked = false;
			pthread_mutex_unlock(&lw->mu);
			r = try_once(due);
			pthread_mutex_lock(&lw->mu);
			/* Granted wins over an interrupt that came during the try:
			 * the lock is held, and the locker is told so. */
			if (r == -EAGAIN && due->interrupted)
				r = -EINTR;
		}
		if (r == -EAGAIN) {
			/* Still held: to the tail, so every wait gets its turn.
			 * A kick during the try may have come after the holder
			 * let go: then at once. */
			if (due->kicked) {
				due->next_try = now_ns();
			} else {
				due->next_try = now_ns() + due->backoff_ms * NS_PER_MS;
				due->backoff_ms *= 2;
				if (due->backoff_ms > LOCKWAIT_POLL_MAX_MS)
					due->backoff_ms = LOCKWAIT_POLL_MAX_MS;
			}
			due->prev->next = due->next;
			due->next->prev = due->prev;
			link_tail(lw, due);
			continue;
		}
		unlink_wait(lw, due);
		pthread_mutex_unlock(&lw->mu);
		finish(due, r);
		pthread_mutex_lock(&lw->mu);
	}
	pthread_mutex_unlock(&lw->mu);
	return NULL;
}

/* List w (filled but for the common fields), not ready yet. */
static struct lw_wait *park_wait(struct lockwait *lw, struct lw_wait *w, const void *key,
				 lockwait_done_fn done, void *arg, const void *id)
{
	w->key = key;
	w->done = done;
	w->arg = arg;
	w->id = id;
	w->backoff_ms = LOCKWAIT_POLL_MIN_MS;
	pthread_mutex_lock(&lw->mu);
	link_tail(lw, w);
	__atomic_add_fetch(&lw->nwaits, 1, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&lw->mu);
	return w;
}

struct lw_wait *lockwait_prepare(struct lockwait *lw, int fd, const struct flock *lk,
				 int flock_op, const void *key, lockwait_done_fn done, void *arg,
				 const void *id, int *err)
{
	struct lw_wait *w = calloc(1, sizeof(*w));

	if (!w) {
		*err = -ENOMEM;
		return NULL;
	}
	w->fd = src_dup(fd);
	if (w->fd < 0) {
		*err = w->fd;
		free(w);
		return NULL;
	}
	if (lk) {
		w->lk = *lk;
	} else {
		w->is_flock = true;
		w->flock_op = flock_op & ~LOCK_NB;
	}
	return park_wait(lw, w, key, done, arg, id);
}

struct lw_wait *lockwait_prepare_try(struct lockwait *lw, int (*try)(void *arg),
				     const void *key, lockwait_done_fn done, void *arg,
				     const void *id, int *err)
{
	struct lw_wait *w = calloc(1, sizeof(*w));

	if (!w) {
		*err = -ENOMEM;
		return NULL;
	}
	w->fd = -1;
	w->try = try;
	return park_wait(lw, w, key, done, arg, id);
}

void lockwait_start(struct lockwait *lw, struct lw_wait *w)
{
	int r = 0;

	pthread_mutex_lock(&lw->mu);
	if (!lw->stop && !lw->started) {
		r = -pthread_create(&lw->thread, NULL, waiter, lw);
		lw->started = (r == 0);
		if (r == 0)
			pthread_setname_np(lw->thread, "efs-lockwait");
	}
	if (lw->stop || r < 0) {
		unlink_wait(lw, w);
		pthread_mutex_unlock(&lw->mu);
		finish(w, lw->stop ? -EINTR : r);
		return;
	}
	/* The first retry after the backoff: the caller just tried. */
	w->next_try = now_ns() + w->backoff_ms * NS_PER_MS;
	w->ready = true;
	pthread_cond_signal(&lw->cv);
	pthread_mutex_unlock(&lw->mu);
}

void lockwait_interrupt(struct lockwait *lw, const struct lw_wait *w, const void *id)
{
	struct lw_wait *x;

	pthread_mutex_lock(&lw->mu);
	for (x = lw->head.next; x != &lw->head; x = x->next) {
		if (x == w && x->id == id) {
			x->interrupted = true;
			pthread_cond_signal(&lw->cv);
			break;
		}
	}
	pthread_mutex_unlock(&lw->mu);
}

void lockwait_kick(struct lockwait *lw, const void *key)
{
	struct lw_wait *w;
	bool any = false;

	/* Every release kicks: most find nothing parked, and take no lock. */
	if (!__atomic_load_n(&lw->nwaits, __ATOMIC_RELAXED))
		return;
	pthread_mutex_lock(&lw->mu);
	{
		uint64_t now = now_ns();

		for (w = lw->head.next; w != &lw->head; w = w->next) {
			if (w->key != key)
				continue;
			w->next_try = now;
			w->backoff_ms = LOCKWAIT_POLL_MIN_MS;
			w->kicked = true;
			any = true;
		}
		if (any)
			pthread_cond_signal(&lw->cv);
	}
	pthread_mutex_unlock(&lw->mu);
}

void lockwait_stop(struct lockwait *lw)
{
	struct lw_wait *w, *next, *done = NULL;
	bool join;

	pthread_mutex_lock(&lw->mu);
	lw->stop = true;
	join = lw->started;
	lw->started = false;
	pthread_cond_signal(&lw->cv);
	pthread_mutex_unlock(&lw->mu);
	if (join)
		pthread_join(lw->thread, NULL);
	/* Started waits are answered here; one not started yet belongs to its
	 * lockwait_start, which answers it since stop is set. */
	pthread_mutex_lock(&lw->mu);
	for (w = lw->head.next; w != &lw->head; w = next) {
		next = w->next;
		if (!w->ready)
			continue;
		unlink_wait(lw, w);
		w->next = done;
		done = w;
	}
	pthread_mutex_unlock(&lw->mu);
	for (w = done; w; w = next) {
		next = w->next;
		finish(w, -EINTR);
	}
}

void lockwait_free(struct lockwait *lw)
{
	if (!lw)
		return;
	lockwait_stop(lw);
	pthread_cond_destroy(&lw->cv);
	pthread_mutex_destroy(&lw->mu);
	free(lw);
}

void lockwait_counts(struct lockwait *lw, unsigned *threads, unsigned *waits)
{
	pthread_mutex_lock(&lw->mu);
	*threads = lw->started ? 1 : 0;
	*waits = lw->nwaits;
	pthread_mutex_unlock(&lw->mu);
}
