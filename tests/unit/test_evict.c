/* test_evict.c - LRU order, the cache_size limit and the two phases of
 * eviction, with a fake pick and reap.
 *
 * pick runs with the LRU mutex held and notes its victims in the batch;
 * reap runs after the mutex is dropped (it calls evict_usage, which takes
 * the mutex: a reap under the mutex would hang the test).  A busy node is
 * moved to the hot end and not walked again in the same reservation; a
 * held node is never walked and keeps its bytes counted; before the
 * startup index is ready a reservation is refused at once.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "evict.h"

struct fake {
	struct lru_node node; /* first, as in the cache */
	int id;
	bool busy;
	unsigned picked;  /* times pick was called on it */
	uint64_t part;    /* > 0: give only this many bytes per pick */
};

struct batch {
	int ids[8];
	unsigned n;
};

static struct evict *ev_of_test;
static int reaped[32], nreaped;
static unsigned reaps;
static uint64_t usage_seen_in_reap;

static int64_t fake_pick(struct lru_node *n, uint64_t need, void *bp, void *arg)
{
	struct fake *f = (struct fake *)n;
	struct batch *b = bp;
	uint64_t take;

	(void)arg;
	f->picked++;
	if (b->n == 8)
		return -ENOBUFS;
	if (f->busy) {
		evict_touch_locked(ev_of_test, n);
		return 0;
	}
	take = f->part && f->part < n->bytes ? f->part : n->bytes;
	(void)need;
	b->ids[b->n++] = f->id;
	if (take == n->bytes)
		evict_del_locked(ev_of_test, n);
	else
		evict_shrink_locked(ev_of_test, n, take);
	return (int64_t)take;
}

static void fake_reap(void *bp, void *arg)
{
	struct batch *b = bp;

	(void)arg;
	reaps++;
	usage_seen_in_reap = evict_usage(ev_of_test); /* the mutex is not held */
	for (unsigned i = 0; i < b->n; i++)
		reaped[nreaped++] = b->ids[i];
	b->n = 0;
}

int main(void)
{
	struct efs_config cfg;
	struct efs_stats stats;
	struct store *store;
	struct evict *ev;
	struct fake f[8];
	struct batch b = {0};
	char err[256], dir[64] = "/tmp/efs-test-evict-XXXXXX";

	memset(&cfg, 0, sizeof(cfg));
	memset(&stats, 0, sizeof(stats));
	memset(f, 0, sizeof(f));
	cfg.cache_size = 4 * 4096;
	cfg.min_free_pct = 0;
	CHECK(mkdtemp(dir) != NULL);
	strcat(dir, "/c");
	CHECK(store_open(&store, dir, err, sizeof(err)) == 0);
	CHECK(evict_new(&ev, &cfg, store, &stats, fake_pick, fake_reap, NULL) == 0);
	ev_of_test = ev;

	/* Before the startup index: refused at once, nothing reserved. */
	CHECK(evict_reserve(ev, 4096, &b) == -EAGAIN);
	CHECK(evict_usage(ev) == 0);
	evict_set_ready(ev);

	for (int i = 0; i < 4; i++) {
		f[i].id = i;
		CHECK(evict_reserve(ev, 4096, &b) == 0);
		evict_grow(ev, &f[i].node, 4096, true);
	}
	CHECK(evict_usage(ev) == 4 * 4096);
	CHECK(nreaped == 0);

	/* Touch 0: now 1 is the coldest; reap runs after pick, unlocked,
	 * and sees the usage already lowered. */
	evict_touch(ev, &f[0].node);
	f[4].id = 4;
	CHECK(evict_reserve(ev, 4096, &b) == 0);
	evict_grow(ev, &f[4].node, 4096, true);
	CHECK(nreaped == 1 && reaped[0] == 1);
	CHECK(reaps == 1 && usage_seen_in_reap == 3 * 4096);
	CHECK(evict_usage(ev) <= cfg.cache_size);

	/* A busy cold node is skipped and moved to the hot end: picked once,
	 * the next one goes. */
	f[2].busy = true;
	f[5].id = 5;
	CHECK(evict_reserve(ev, 4096, &b) == 0);
	evict_grow(ev, &f[5].node, 4096, true);
	CHECK(nreaped == 2 && reaped[1] == 3);
	CHECK(f[2].picked == 1);

	/* More than the cache can ever hold: refused, nothing left dangling,
	 * and the busy node was not walked again and again. */
	CHECK(evict_reserve(ev, 5 * 4096, &b) == -ENOSPC);
	CHECK(evict_usage(ev) <= cfg.cache_size);
	CHECK(f[2].picked <= 3);

	/* A held node is never walked; its bytes still count. */
	f[2].busy = false;
	evict_hold(ev, &f[2].node);
	{
		uint64_t before = evict_usage(ev);
		unsigned picked = f[2].picked;

		CHECK(before > 0);
		CHECK(evict_reserve(ev, 4 * 4096, &b) == -ENOSPC);
		CHECK(f[2].picked == picked);
		CHECK(evict_usage(ev) == 4096); /* only the held one is left */
	}
	evict_unhold(ev, &f[2].node);

	/* Part of a node at a time (chunks of a record): it stays listed. */
	f[6].id = 6;
	f[6].part = 4096;
	evict_add(ev, &f[6].node, 3 * 4096);
	CHECK(evict_usage(ev) == 4 * 4096);
	nreaped = 0;
	CHECK(evict_reserve(ev, 2 * 4096, &b) == 0);
	CHECK(f[6].node.linked && f[6].node.bytes >= 4096);
	CHECK(evict_usage(ev) <= cfg.cache_size);

	/* Unreserve gives the bytes back. */
	evict_unreserve(ev, 2 * 4096);
	CHECK(evict_usage(ev) <= 2 * 4096);
	CHECK(stats.v[ST_evicted_bytes] >= 2 * 4096);

	/* A reset forgets held nodes too: their bytes never come back. */
	evict_hold(ev, &f[6].node);
	evict_reset(ev);
	CHECK(evict_usage(ev) == 0);
	CHECK(!f[6].node.held && f[6].node.bytes == 0);
	evict_unhold(ev, &f[6].node);
	CHECK(evict_usage(ev) == 0);

	evict_free(ev);
	store_close(store);
	{
		char cmd[128];
		dir[strlen(dir) - 2] = '\0';
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		CHECK(system(cmd) == 0);
	}
	return check_done("test_evict");
}
