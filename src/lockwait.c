/* lockwait.c - blocking lock requests that cannot be granted at once.
 *
 * Each such request (F_SETLKW, flock without LOCK_NB) is parked on its own
 * thread, which makes the blocking call on a dup of the owner's source fd
 * and replies to the request when it returns, so waiters never occupy the
 * session's worker threads.  A FUSE interrupt (the waiting process got a
 * signal) sends LOCK_WAKE_SIGNAL to that thread, whose blocking call then
 * fails with EINTR, which is the reply.
 *
 * Locks: waits_mu guards the list of live waits and their started and
 * interrupted flags; the interrupt callback only touches a wait it finds
 * on that list, so a wait that finished and was freed is never used.  No
 * call is made with waits_mu held but pthread_create and pthread_kill.
 */
#include "lockwait.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/file.h>
#include <unistd.h>

#include "source.h"

/* Sent to a parked lock wait to make its blocking call return EINTR. */
#define LOCK_WAKE_SIGNAL SIGURG

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
void park_lock_wait(fuse_req_t req, struct lock_wait *w)
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

struct lock_wait *lock_wait_new(int fd)
{
	struct lock_wait *w = calloc(1, sizeof(*w));

	if (!w)
		return NULL;
	w->fd = src_dup(fd);
	if (w->fd < 0) {
		free(w);
		return NULL;
	}
	return w;
}

void lockwait_setup(void)
{
	struct sigaction sa = {.sa_handler = lock_wake_handler};

	/* No SA_RESTART: a parked lock wait must see EINTR. */
	sigemptyset(&sa.sa_mask);
	sigaction(LOCK_WAKE_SIGNAL, &sa, NULL);
}
