/* control.c - serve evict and verify on the control socket.
 *
 * Threads
 *   listener   polls the listening socket (and an eventfd for stop); checks
 *              each peer with SO_PEERCRED, refuses strangers with EPERM,
 *              hands a connection to a client thread (at most
 *              CONTROL_MAX_CLIENTS at once, else EBUSY); every POLL_MS it
 *              also notices a socket that vanished with cache_dir and binds
 *              a new one once the cache has its (recreated) cache_dir again.
 *   client     one per connection: reads requests, runs them, replies.  A
 *              verify runs here, on this thread, for as long as it takes.
 *
 * Verify runs: one at a time.  A verify requested while one runs joins it:
 * it streams the running one's progress and gets its totals.  The runner
 * publishes its counters in ctl->vrep under vmu after each chunk.
 *
 * Locks: ctl->mu (client slots) and ctl->vmu (the verify run) are never
 * held together, nor while calling the cache or writing to a socket.
 */
#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ctlproto.h"
#include "log.h"

#define CONTROL_MAX_CLIENTS 8 /* admins at once; more get EBUSY */
#define POLL_MS 500	      /* listener: how soon it notices a vanished socket */
#define PROGRESS_MS 200	      /* verify: time between two progress lines */
#define SEND_TIMEOUT_S 5      /* a client that stops reading loses its replies */

struct client {
	struct control *ctl;
	pthread_t thread;
	int fd;		/* protected by ctl->mu; -1 once closed */
	bool used;	/* protected by ctl->mu */
	bool finished;	/* protected by ctl->mu: the thread may be joined */
};

struct control {
	struct cache *cache;
	uid_t owner;
	int listen_fd;	 /* listener thread only after start; -1 if none */
	ino_t sock_ino;	 /* our socket's inode, to notice it vanished */
	int stop_fd;	 /* eventfd: wakes the listener at stop */
	pthread_t listener;
	bool stopping;	 /* atomic */

	pthread_mutex_t mu;
	struct client clients[CONTROL_MAX_CLIENTS];

	pthread_mutex_t vmu;
	pthread_cond_t vcv;		 /* vrep changed, or a run ended */
	bool vrunning;			 /* protected by vmu */
	uint64_t vrun;			 /* protected by vmu: number of the latest run */
	struct cache_verify_report vrep; /* protected by vmu: of run vrun */
	int verr;			 /* protected by vmu: result of run vrun */
};

bool control_allowed(uid_t peer, uid_t owner)
{
	return peer == 0 || peer == owner;
}

static bool stopping(struct control *ctl)
{
	return __atomic_load_n(&ctl->stopping, __ATOMIC_ACQUIRE);
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void fill_report(struct ctl_msg *m, const struct cache_verify_report *rep)
{
	ctl_set(m, CTL_F_chunks_total, rep->chunks_total);
	ctl_set(m, CTL_F_chunks_checked, rep->chunks_checked);
	ctl_set(m, CTL_F_chunks_bad, rep->chunks_bad);
	ctl_set(m, CTL_F_bytes_checked, rep->bytes_checked);
}

static int send_done(int fd, int err)
{
	struct ctl_msg m;

	ctl_msg_init(&m, CTL_DONE);
	ctl_set(&m, CTL_F_error, (uint64_t)err);
	return ctl_send(fd, &m);
}

/* ---- requests ------------------------------------------------------------ */

static void do_evict(struct control *ctl, int fd, const struct ctl_msg *req)
{
	uint64_t bytes = 0, chunks = 0;
	struct ctl_msg m;
	int r;

	if (!(req->has & (1u << CTL_F_ino))) {
		send_done(fd, EINVAL);
		return;
	}
	r = cache_evict_ino(ctl->cache, ctl_get(req, CTL_F_ino), &bytes, &chunks);
	ctl_msg_init(&m, CTL_DONE);
	ctl_set(&m, CTL_F_error, (uint64_t)-r);
	ctl_set(&m, CTL_F_bytes_dropped, bytes);
	ctl_set(&m, CTL_F_chunks_dropped, chunks);
	ctl_send(fd, &m);
}

struct verify_ctx {
	struct control *ctl;
	int fd;
	double last_sent;
};

/* After each chunk of the run: publish, and tell our client now and then. */
static int verify_progress(const struct cache_verify_report *rep, void *arg)
{
	struct verify_ctx *v = arg;
	double now = now_ms();

	pthread_mutex_lock(&v->ctl->vmu);
	v->ctl->vrep = *rep;
	pthread_cond_broadcast(&v->ctl->vcv);
	pthread_mutex_unlock(&v->ctl->vmu);
	if (v->fd >= 0 && now - v->last_sent >= PROGRESS_MS) {
		struct ctl_msg m;

		ctl_msg_init(&m, CTL_PROGRESS);
		fill_report(&m, rep);
		if (ctl_send(v->fd, &m) < 0)
			v->fd = -1; /* the client left; the run goes on */
		v->last_sent = now;
	}
	return stopping(v->ctl);
}

/* Wait for run `run` to end, telling fd its progress; returns its result
 * and copies its totals to *rep.  vmu held. */
static int watch_run_locked(struct control *ctl, int fd, uint64_t run,
			    struct cache_verify_report *rep)
{
	while (ctl->vrunning && ctl->vrun == run && !stopping(ctl)) {
		struct timespec until;
		struct ctl_msg m;

		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += PROGRESS_MS * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&ctl->vcv, &ctl->vmu, &until);
		ctl_msg_init(&m, CTL_PROGRESS);
		fill_report(&m, &ctl->vrep);
		pthread_mutex_unlock(&ctl->vmu);
		ctl_send(fd, &m);
		pthread_mutex_lock(&ctl->vmu);
	}
	*rep = ctl->vrep;
	return ctl->vrunning && ctl->vrun == run ? ECANCELED : ctl->verr;
}

static void do_verify(struct control *ctl, int fd)
{
	struct verify_ctx v = {.ctl = ctl, .fd = fd};
	struct cache_verify_report rep;
	struct ctl_msg m;
	bool joined = false;
	int err;

	pthread_mutex_lock(&ctl->vmu);
	if (ctl->vrunning) {
		joined = true;
		err = watch_run_locked(ctl, fd, ctl->vrun, &rep);
		pthread_mutex_unlock(&ctl->vmu);
	} else {
		ctl->vrunning = true;
		ctl->vrun++;
		memset(&ctl->vrep, 0, sizeof(ctl->vrep));
		pthread_mutex_unlock(&ctl->vmu);
		log_debug("control: verify started");
		err = cache_verify_all(ctl->cache, &rep, verify_progress, &v) ? ECANCELED : 0;
		pthread_mutex_lock(&ctl->vmu);
		ctl->vrunning = false;
		ctl->vrep = rep;
		ctl->verr = err;
		pthread_cond_broadcast(&ctl->vcv);
		pthread_mutex_unlock(&ctl->vmu);
	}
	ctl_msg_init(&m, CTL_DONE);
	ctl_set(&m, CTL_F_error, (uint64_t)err);
	fill_report(&m, &rep);
	ctl_set(&m, CTL_F_joined, joined);
	ctl_send(fd, &m);
}

static void *client_main(void *arg)
{
	struct client *cl = arg;
	struct control *ctl = cl->ctl;
	struct ctl_reader rd;
	struct ctl_msg req;
	int r;

	ctl_reader_init(&rd, cl->fd);
	while (!stopping(ctl) && (r = ctl_recv(&rd, &req)) != -ECONNRESET) {
		if (r == -EBADMSG) {
			/* Not our protocol: say so and hang up (the rest of an
			 * overlong line must not be read as messages). */
			send_done(cl->fd, EBADMSG);
			break;
		}
		if (r < 0)
			break;
		switch (req.kind) {
		case CTL_EVICT:
			do_evict(ctl, cl->fd, &req);
			break;
		case CTL_VERIFY:
			do_verify(ctl, cl->fd);
			break;
		default:
			send_done(cl->fd, EINVAL);
			break;
		}
	}
	pthread_mutex_lock(&ctl->mu);
	close(cl->fd);
	cl->fd = -1;
	cl->finished = true;
	pthread_mutex_unlock(&ctl->mu);
	return NULL;
}

/* ---- the listener ---------------------------------------------------------- */

static void reap_clients(struct control *ctl)
{
	for (int i = 0; i < CONTROL_MAX_CLIENTS; i++) {
		struct client *cl = &ctl->clients[i];
		bool join;

		pthread_mutex_lock(&ctl->mu);
		join = cl->used && cl->finished;
		pthread_mutex_unlock(&ctl->mu);
		if (!join)
			continue;
		pthread_join(cl->thread, NULL);
		pthread_mutex_lock(&ctl->mu);
		cl->used = cl->finished = false;
		pthread_mutex_unlock(&ctl->mu);
	}
}

static void accept_one(struct control *ctl)
{
	struct timeval tv = {.tv_sec = SEND_TIMEOUT_S};
	struct ucred cred = {.uid = (uid_t)-1};
	socklen_t len = sizeof(cred);
	struct client *cl = NULL;
	int fd = accept4(ctl->listen_fd, NULL, NULL, SOCK_CLOEXEC);

	if (fd < 0)
		return;
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	/* The socket's directory already keeps strangers out; this holds even
	 * if someone loosened its permissions. */
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 ||
	    !control_allowed(cred.uid, ctl->owner)) {
		log_debug("control: refused a request from uid %ld", (long)cred.uid);
		send_done(fd, EPERM);
		goto out_close;
	}
	reap_clients(ctl);
	pthread_mutex_lock(&ctl->mu);
	for (int i = 0; i < CONTROL_MAX_CLIENTS && !cl; i++) {
		if (!ctl->clients[i].used) {
			cl = &ctl->clients[i];
			cl->used = true;
			cl->finished = false;
			cl->fd = fd;
			cl->ctl = ctl;
		}
	}
	pthread_mutex_unlock(&ctl->mu);
	if (!cl) {
		send_done(fd, EBUSY);
		goto out_close;
	}
	if (pthread_create(&cl->thread, NULL, client_main, cl) != 0) {
		pthread_mutex_lock(&ctl->mu);
		cl->used = false;
		cl->fd = -1;
		pthread_mutex_unlock(&ctl->mu);
		send_done(fd, EAGAIN);
		goto out_close;
	}
	return;

out_close:
	close(fd);
}

/* Bind the socket in cache_dir.  0 or -errno. */
static int bind_socket(struct control *ctl)
{
	int dir_fd = open(cache_dir_path(ctl->cache), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	int fd;

	if (dir_fd < 0)
		return -errno;
	fd = ctl_listen(dir_fd);
	if (fd >= 0 && fstatat(dir_fd, CTL_SOCKET_NAME, &st, AT_SYMLINK_NOFOLLOW) == 0)
		ctl->sock_ino = st.st_ino;
	close(dir_fd);
	if (fd < 0)
		return fd;
	ctl->listen_fd = fd;
	return 0;
}

/* cache_dir was removed (and recreated by the cache's sweep): our socket
 * went with it.  Bind a new one, but never over a socket that is not ours
 * (another daemon may own the new cache_dir). */
static void check_socket(struct control *ctl)
{
	char path[4096];
	struct stat st;
	int r;

	snprintf(path, sizeof(path), "%s/%s", cache_dir_path(ctl->cache), CTL_SOCKET_NAME);
	r = lstat(path, &st);
	if (r == 0 && ctl->listen_fd >= 0 && st.st_ino == ctl->sock_ino)
		return;
	if (ctl->listen_fd >= 0) {
		close(ctl->listen_fd);
		ctl->listen_fd = -1;
	}
	if (r < 0 && errno == ENOENT && cache_dir_owned(ctl->cache) && bind_socket(ctl) == 0)
		log_debug("control: socket bound again in the recreated cache_dir");
}

static void *listener_main(void *arg)
{
	struct control *ctl = arg;

	while (!stopping(ctl)) {
		struct pollfd p[2] = {
		    {.fd = ctl->stop_fd, .events = POLLIN},
		    {.fd = ctl->listen_fd, .events = POLLIN},
		};
		int n = poll(p, ctl->listen_fd >= 0 ? 2 : 1, POLL_MS);

		if (stopping(ctl))
			break;
		if (n > 0 && ctl->listen_fd >= 0 && (p[1].revents & POLLIN))
			accept_one(ctl);
		else if (n == 0)
			check_socket(ctl);
		reap_clients(ctl);
	}
	return NULL;
}

int control_start(struct control **out, struct cache *c, uid_t owner)
{
	struct control *ctl = calloc(1, sizeof(*ctl));
	int r;

	*out = NULL;
	if (!ctl)
		return -ENOMEM;
	ctl->cache = c;
	ctl->owner = owner;
	ctl->listen_fd = -1;
	pthread_mutex_init(&ctl->mu, NULL);
	pthread_mutex_init(&ctl->vmu, NULL);
	pthread_cond_init(&ctl->vcv, NULL);
	ctl->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (ctl->stop_fd < 0) {
		r = -errno;
		goto err_free;
	}
	r = bind_socket(ctl);
	if (r < 0)
		goto err_close_stop;
	r = -pthread_create(&ctl->listener, NULL, listener_main, ctl);
	if (r < 0)
		goto err_close_listen;
	*out = ctl;
	return 0;

err_close_listen:
	close(ctl->listen_fd);
err_close_stop:
	close(ctl->stop_fd);
err_free:
	pthread_mutex_destroy(&ctl->mu);
	pthread_mutex_destroy(&ctl->vmu);
	pthread_cond_destroy(&ctl->vcv);
	free(ctl);
	return r;
}

void control_stop(struct control *ctl)
{
	char path[4096];
	uint64_t one = 1;
	struct stat st;

	if (!ctl)
		return;
	__atomic_store_n(&ctl->stopping, true, __ATOMIC_RELEASE);
	if (write(ctl->stop_fd, &one, sizeof(one)) < 0)
		log_debug("control: cannot wake the listener: %s", strerror(errno));
	pthread_join(ctl->listener, NULL);
	/* Cut clients off: a blocked recv or send returns, a verify stops at
	 * its next chunk, a watcher at its next wake-up. */
	pthread_mutex_lock(&ctl->mu);
	for (int i = 0; i < CONTROL_MAX_CLIENTS; i++)
		if (ctl->clients[i].used && ctl->clients[i].fd >= 0)
			shutdown(ctl->clients[i].fd, SHUT_RDWR);
	pthread_mutex_unlock(&ctl->mu);
	pthread_mutex_lock(&ctl->vmu);
	pthread_cond_broadcast(&ctl->vcv);
	pthread_mutex_unlock(&ctl->vmu);
	for (int i = 0; i < CONTROL_MAX_CLIENTS; i++)
		if (ctl->clients[i].used)
			pthread_join(ctl->clients[i].thread, NULL);
	if (ctl->listen_fd >= 0) {
		snprintf(path, sizeof(path), "%s/%s", cache_dir_path(ctl->cache), CTL_SOCKET_NAME);
		if (lstat(path, &st) == 0 && st.st_ino == ctl->sock_ino)
			unlink(path);
		close(ctl->listen_fd);
	}
	close(ctl->stop_fd);
	pthread_mutex_destroy(&ctl->mu);
	pthread_mutex_destroy(&ctl->vmu);
	pthread_cond_destroy(&ctl->vcv);
	free(ctl);
}
