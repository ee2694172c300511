/* evict.c - LRU list of records and the space limits.
 *
 *   hot                                                  cold
 *   head <-> [record] <-> [record] <-> ... <-> [record] <-> tail
 *     ^ evict_add / evict_touch / evict_grow     evict_reserve picks here ^
 *
 * State, all under ev->mu: the list, `usage` (bytes of data and metadata
 * in cache_dir, in allocated blocks, including reservations in flight),
 * `pending` (reserved, not yet stored), `freeing` (picked, not yet reaped:
 * still on disk, so still counted against the limits)
 * and `ready` (the startup index is complete; before it reservations are
 * refused, as the usage they would check is not known).  Free space comes
 * from statvfs at each check, so cache_min_free holds against other writers
 * on the same file system.
 *
 * A reservation walks from the cold end calling the cache's pick on each
 * node until the bytes fit or the batch is full, then drops the mutex for
 * the cache's reap and goes on.  A walk visits each node at most once: a
 * node whose bytes cannot go now (in use) is moved to the hot end by pick,
 * so it is not walked again and again while it stays in use.
 */
#include "evict.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

struct evict {
	pthread_mutex_t mu;
	pthread_cond_t reaped_cv; /* a reap finished: `freeing` went down */
	struct lru_node head; /* sentinel: head.next is hottest, head.prev coldest */
	struct lru_node held; /* sentinel of the held nodes (never walked) */
	uint64_t nlinked;     /* nodes on the list; protected by mu */
	uint64_t usage;       /* protected by mu */
	uint64_t pending;     /* reserved, not yet on disk; protected by mu */
	uint64_t freeing;     /* picked, not yet reaped; protected by mu */
	bool ready;           /* written under mu, read atomically */
	const struct efs_config *cfg;
	struct store *store;
	struct efs_stats *stats;
	evict_pick_fn pick;
	evict_reap_fn reap;
	void *arg;
};

int evict_new(struct evict **out, const struct efs_config *cfg, struct store *store,
	      struct efs_stats *stats, evict_pick_fn pick, evict_reap_fn reap, void *arg)
{
	struct evict *ev = calloc(1, sizeof(*ev));

	if (!ev)
		return -ENOMEM;
	pthread_mutex_init(&ev->mu, NULL);
	pthread_cond_init(&ev->reaped_cv, NULL);
	ev->head.next = ev->head.prev = &ev->head;
	ev->held.next = ev->held.prev = &ev->held;
	ev->cfg = cfg;
	ev->store = store;
	ev->stats = stats;
	ev->pick = pick;
	ev->reap = reap;
	ev->arg = arg;
	*out = ev;
	return 0;
}

void evict_free(struct evict *ev)
{
	if (!ev)
		return;
	pthread_cond_destroy(&ev->reaped_cv);
	pthread_mutex_destroy(&ev->mu);
	free(ev);
}

static void splice_after(struct lru_node *pos, struct lru_node *n)
{
	n->prev = pos;
	n->next = pos->next;
	pos->next->prev = n;
	pos->next = n;
}

static void splice_out(struct lru_node *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = NULL;
}

static void link_after(struct evict *ev, struct lru_node *pos, struct lru_node *n)
{
	splice_after(pos, n);
	n->linked = true;
	ev->nlinked++;
}

/* Off whichever list it is on (the LRU or the held nodes'). */
static void unlink_node(struct evict *ev, struct lru_node *n)
{
	if (n->linked) {
		splice_out(n);
		n->linked = false;
		ev->nlinked--;
	} else if (n->held) {
		splice_out(n);
		n->held = false;
	}
}

static void usage_sub(struct evict *ev, uint64_t bytes)
{
	ev->usage -= bytes < ev->usage ? bytes : ev->usage;
}

void evict_lock(struct evict *ev)
{
	pthread_mutex_lock(&ev->mu);
}

void evict_unlock(struct evict *ev)
{
	pthread_mutex_unlock(&ev->mu);
}

void evict_del_locked(struct evict *ev, struct lru_node *n)
{
	unlink_node(ev, n);
	usage_sub(ev, n->bytes);
	n->bytes = 0;
}

void evict_shrink_locked(struct evict *ev, struct lru_node *n, uint64_t bytes)
{
	if (bytes > n->bytes)
		bytes = n->bytes;
	n->bytes -= bytes;
	usage_sub(ev, bytes);
}

void evict_touch_locked(struct evict *ev, struct lru_node *n)
{
	if (n->linked && ev->head.next != n) {
		unlink_node(ev, n);
		link_after(ev, &ev->head, n);
	}
}

static void add_locked(struct evict *ev, struct lru_node *pos, struct lru_node *n,
		       uint64_t bytes)
{
	bool held = n->held;

	evict_del_locked(ev, n);
	n->bytes = bytes;
	ev->usage += bytes;
	if (held) {
		splice_after(&ev->held, n);
		n->held = true;
	} else {
		link_after(ev, pos, n);
	}
}

void evict_add(struct evict *ev, struct lru_node *n, uint64_t bytes)
{
	pthread_mutex_lock(&ev->mu);
	add_locked(ev, &ev->head, n, bytes);
	pthread_mutex_unlock(&ev->mu);
}

void evict_add_cold(struct evict *ev, struct lru_node *n, uint64_t bytes)
{
	pthread_mutex_lock(&ev->mu);
	add_locked(ev, ev->head.prev, n, bytes);
	pthread_mutex_unlock(&ev->mu);
}

void evict_grow(struct evict *ev, struct lru_node *n, uint64_t bytes, bool reserved)
{
	pthread_mutex_lock(&ev->mu);
	n->bytes += bytes;
	if (reserved)
		ev->pending -= bytes < ev->pending ? bytes : ev->pending;
	else
		ev->usage += bytes;
	if (!n->linked && !n->held)
		link_after(ev, &ev->head, n);
	else
		evict_touch_locked(ev, n);
	pthread_mutex_unlock(&ev->mu);
}

void evict_shrink(struct evict *ev, struct lru_node *n, uint64_t bytes)
{
	pthread_mutex_lock(&ev->mu);
	evict_shrink_locked(ev, n, bytes);
	pthread_mutex_unlock(&ev->mu);
}

void evict_touch(struct evict *ev, struct lru_node *n)
{
	pthread_mutex_lock(&ev->mu);
	evict_touch_locked(ev, n);
	pthread_mutex_unlock(&ev->mu);
}

void evict_del(struct evict *ev, struct lru_node *n)
{
	pthread_mutex_lock(&ev->mu);
	evict_del_locked(ev, n);
	pthread_mutex_unlock(&ev->mu);
}

void evict_hold(struct evict *ev, struct lru_node *n)
{
	pthread_mutex_lock(&ev->mu);
	if (!n->held) {
		unlink_node(ev, n);
		splice_after(&ev->held, n);
		n->held = true;
	}
	pthread_mutex_unlock(&ev->mu);
}

void evict_unhold(struct evict *ev, struct lru_node *n)
{
	pthread_mutex_lock(&ev->mu);
	if (n->held) {
		unlink_node(ev, n);
		link_after(ev, &ev->head, n);
	}
	pthread_mutex_unlock(&ev->mu);
}

static uint64_t min_free_bytes(const struct evict *ev, uint64_t total)
{
	if (ev->cfg->min_free_pct >= 0)
		return total / 100 * (uint64_t)ev->cfg->min_free_pct;
	return ev->cfg->min_free_bytes;
}

/* Caller holds ev->mu.  How many bytes must go before `extra` more fit
 * within both limits (0: they fit).  Bytes picked and not yet reaped are
 * still on disk: they count as used until their reaper is done, so no
 * other reservation writes into room that is not free yet. */
static uint64_t shortfall(struct evict *ev, uint64_t extra)
{
	uint64_t avail, total, want, used = ev->usage + ev->freeing, over = 0;

	if (used + extra > ev->cfg->cache_size)
		over = used + extra - ev->cfg->cache_size;
	if (store_fs_space(ev->store, &avail, &total) < 0)
		return over; /* cannot tell; the write itself will report ENOSPC */
	/* Reservations of other threads are not on disk yet. */
	want = extra + ev->pending + min_free_bytes(ev, total);
	if (avail < want && want - avail > over)
		over = want - avail;
	return over;
}

/* Caller holds ev->mu.  One walk from the cold end picking up to `need`
 * bytes into batch.  Returns the bytes picked; *full says the batch filled
 * up before the walk ended. */
static uint64_t walk(struct evict *ev, uint64_t need, void *batch, bool *full)
{
	struct lru_node *n = ev->head.prev, *prev;
	uint64_t got = 0, steps = ev->nlinked;

	*full = false;
	for (; n != &ev->head && got < need && steps--; n = prev) {
		int64_t r;

		prev = n->prev;
		r = ev->pick(n, need - got, batch, ev->arg);
		if (r == -ENOBUFS) {
			*full = true;
			break;
		}
		if (r > 0) {
			got += (uint64_t)r;
			stats_add(ev->stats, ST_evicted_bytes, (uint64_t)r);
		}
	}
	return got;
}

/* Caller holds ev->mu; drops it while reaping.  Evict until `extra` fits;
 * false if that is impossible.  What other reservations are freeing now
 * (picked, being reaped) is waited for, not evicted again: concurrent
 * reservations would otherwise each take the same shortfall from the LRU,
 * and the later ones reach hot data. */
static bool make_room(struct evict *ev, uint64_t extra, void *batch)
{
	uint64_t need;

	while ((need = shortfall(ev, extra)) > 0) {
		bool full;
		uint64_t got;

		if (need <= ev->freeing) {
			pthread_cond_wait(&ev->reaped_cv, &ev->mu);
			continue;
		}
		got = walk(ev, need - ev->freeing, batch, &full);
		if (got == 0 && !full)
			return false;
		ev->freeing += got;
		pthread_mutex_unlock(&ev->mu);
		ev->reap(batch, ev->arg);
		pthread_mutex_lock(&ev->mu);
		ev->freeing -= got < ev->freeing ? got : ev->freeing;
		pthread_cond_broadcast(&ev->reaped_cv);
	}
	return true;
}

int evict_reserve(struct evict *ev, uint64_t bytes, void *batch)
{
	int r = 0;

	pthread_mutex_lock(&ev->mu);
	if (!ev->ready)
		r = -EAGAIN;
	else if (!make_room(ev, bytes, batch))
		r = -ENOSPC;
	if (r == 0) {
		ev->usage += bytes;
		ev->pending += bytes;
	}
	pthread_mutex_unlock(&ev->mu);
	return r;
}

void evict_unreserve(struct evict *ev, uint64_t bytes)
{
	pthread_mutex_lock(&ev->mu);
	usage_sub(ev, bytes);
	ev->pending -= bytes < ev->pending ? bytes : ev->pending;
	pthread_mutex_unlock(&ev->mu);
}

void evict_set_ready(struct evict *ev)
{
	pthread_mutex_lock(&ev->mu);
	__atomic_store_n(&ev->ready, true, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&ev->mu);
}

/* Read at every open of a file not loaded: no mutex (it only ever turns
 * true). */
bool evict_ready(struct evict *ev)
{
	return __atomic_load_n(&ev->ready, __ATOMIC_ACQUIRE);
}

void evict_sweep(struct evict *ev, void *batch)
{
	pthread_mutex_lock(&ev->mu);
	if (ev->ready)
		make_room(ev, 0, batch);
	pthread_mutex_unlock(&ev->mu);
}

void evict_reset(struct evict *ev)
{
	pthread_mutex_lock(&ev->mu);
	while (ev->head.next != &ev->head)
		evict_del_locked(ev, ev->head.next);
	while (ev->held.next != &ev->held)
		evict_del_locked(ev, ev->held.next);
	ev->usage = 0;
	ev->pending = 0;
	pthread_mutex_unlock(&ev->mu);
}

uint64_t evict_usage(struct evict *ev)
{
	uint64_t u;

	pthread_mutex_lock(&ev->mu);
	u = ev->usage;
	pthread_mutex_unlock(&ev->mu);
	return u;
}

uint64_t evict_limit(const struct evict *ev)
{
	return ev->cfg->cache_size;
}

bool evict_fs_room(struct evict *ev, uint64_t bytes)
{
	uint64_t avail, total;
	bool ok;

	if (store_fs_space(ev->store, &avail, &total) < 0)
		return false;
	pthread_mutex_lock(&ev->mu);
	ok = avail >= bytes + ev->pending + min_free_bytes(ev, total);
	pthread_mutex_unlock(&ev->mu);
	return ok;
}
