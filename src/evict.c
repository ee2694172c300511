/* evict.c - LRU list and the space limits.
 *
 *   hot                                                cold
 *   head <-> [chunk] <-> [chunk] <-> ... <-> [chunk] <-> tail
 *     ^ evict_add / evict_touch           evict_reserve takes from here ^
 *
 * State, all under ev->mu: the list, `usage` (bytes of data and metadata
 * in cache_dir, in allocated blocks, including reservations in flight) and
 * `ready` (the startup index is complete; reservations wait for it so the
 * usage they check is real).  Free space comes from statvfs at each check,
 * so cache_min_free holds against other writers on the same file system.
 */
#include "evict.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

struct evict {
	pthread_mutex_t mu;
	pthread_cond_t ready_cv;
	struct lru_node head; /* sentinel: head.next is hottest, head.prev coldest */
	uint64_t usage;       /* protected by mu */
	uint64_t pending;     /* reserved, not yet on disk; protected by mu */
	bool ready;           /* protected by mu */
	const struct efs_config *cfg;
	struct store *store;
	struct efs_stats *stats;
	evict_drop_fn drop;
	void *arg;
};

int evict_new(struct evict **out, const struct efs_config *cfg, struct store *store,
	      struct efs_stats *stats, evict_drop_fn drop, void *arg)
{
	struct evict *ev = calloc(1, sizeof(*ev));

	if (!ev)
		return -ENOMEM;
	pthread_mutex_init(&ev->mu, NULL);
	pthread_cond_init(&ev->ready_cv, NULL);
	ev->head.next = ev->head.prev = &ev->head;
	ev->cfg = cfg;
	ev->store = store;
	ev->stats = stats;
	ev->drop = drop;
	ev->arg = arg;
	*out = ev;
	return 0;
}

void evict_free(struct evict *ev)
{
	if (!ev)
		return;
	pthread_cond_destroy(&ev->ready_cv);
	pthread_mutex_destroy(&ev->mu);
	free(ev);
}

static void link_after(struct lru_node *pos, struct lru_node *n)
{
	n->prev = pos;
	n->next = pos->next;
	pos->next->prev = n;
	pos->next = n;
	n->linked = true;
}

void evict_unlink_locked(struct evict *ev, struct lru_node *n)
{
	if (!n->linked)
		return;
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = NULL;
	n->linked = false;
	ev->usage -= n->bytes < ev->usage ? n->bytes : ev->usage;
	n->bytes = 0;
}

void evict_add(struct evict *ev, struct lru_node *n, uint64_t bytes, bool reserved)
{
	pthread_mutex_lock(&ev->mu);
	evict_unlink_locked(ev, n);
	n->bytes = bytes;
	if (!reserved)
		ev->usage += bytes;
	else
		ev->pending -= bytes < ev->pending ? bytes : ev->pending;
	link_after(&ev->head, n);
	pthread_mutex_unlock(&ev->mu);
}

void evict_add_cold(struct evict *ev, struct lru_node *n, uint64_t bytes)
{
	pthread_mutex_lock(&ev->mu);
	evict_unlink_locked(ev, n);
	n->bytes = bytes;
	ev->usage += bytes;
	link_after(ev->head.prev, n);
	pthread_mutex_unlock(&ev->mu);
}

void evict_touch(struct evict *ev, struct lru_node *n)
{
	pthread_mutex_lock(&ev->mu);
	if (n->linked && ev->head.next != n) {
		n->prev->next = n->next;
		n->next->prev = n->prev;
		link_after(&ev->head, n);
	}
	pthread_mutex_unlock(&ev->mu);
}

void evict_del(struct evict *ev, struct lru_node *n)
{
	pthread_mutex_lock(&ev->mu);
	evict_unlink_locked(ev, n);
	pthread_mutex_unlock(&ev->mu);
}

void evict_account(struct evict *ev, int64_t delta)
{
	pthread_mutex_lock(&ev->mu);
	if (delta < 0 && (uint64_t)-delta > ev->usage)
		ev->usage = 0;
	else
		ev->usage = (uint64_t)((int64_t)ev->usage + delta);
	pthread_mutex_unlock(&ev->mu);
}

static uint64_t min_free_bytes(const struct evict *ev, uint64_t total)
{
	if (ev->cfg->min_free_pct >= 0)
		return total / 100 * (uint64_t)ev->cfg->min_free_pct;
	return ev->cfg->min_free_bytes;
}

/* Caller holds ev->mu.  True if `extra` more bytes fit within both limits. */
static bool fits(struct evict *ev, uint64_t extra)
{
	uint64_t avail, total;

	if (ev->usage + extra > ev->cfg->cache_size)
		return false;
	if (store_fs_space(ev->store, &avail, &total) < 0)
		return true; /* cannot tell; the write itself will report ENOSPC */
	/* Reservations of other threads are not on disk yet: count them. */
	extra += ev->pending;
	return avail >= extra && avail - extra >= min_free_bytes(ev, total);
}

/* Caller holds ev->mu.  Evict one chunk from the cold end; false if none
 * could be evicted. */
static bool evict_one(struct evict *ev)
{
	struct lru_node *n;

	for (n = ev->head.prev; n != &ev->head; n = n->prev) {
		int64_t freed = ev->drop(n, ev->arg);

		if (freed >= 0) {
			stats_add(ev->stats, ST_evictions, 1);
			stats_add(ev->stats, ST_evicted_bytes, (uint64_t)freed);
			return true;
		}
	}
	return false;
}

int evict_reserve(struct evict *ev, uint64_t bytes)
{
	int r = 0;

	pthread_mutex_lock(&ev->mu);
	while (!ev->ready)
		pthread_cond_wait(&ev->ready_cv, &ev->mu);
	while (!fits(ev, bytes)) {
		if (!evict_one(ev)) {
			r = -ENOSPC;
			break;
		}
	}
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
	ev->usage -= bytes < ev->usage ? bytes : ev->usage;
	ev->pending -= bytes < ev->pending ? bytes : ev->pending;
	pthread_mutex_unlock(&ev->mu);
}

void evict_set_ready(struct evict *ev)
{
	pthread_mutex_lock(&ev->mu);
	ev->ready = true;
	pthread_cond_broadcast(&ev->ready_cv);
	pthread_mutex_unlock(&ev->mu);
}

void evict_sweep(struct evict *ev)
{
	pthread_mutex_lock(&ev->mu);
	if (ev->ready)
		while (!fits(ev, 0) && evict_one(ev))
			;
	pthread_mutex_unlock(&ev->mu);
}

void evict_reset(struct evict *ev)
{
	pthread_mutex_lock(&ev->mu);
	while (ev->head.next != &ev->head)
		evict_unlink_locked(ev, ev->head.next);
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
