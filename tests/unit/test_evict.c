/* test_evict.c - LRU order and the cache_size limit, with a fake drop. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "evict.h"

struct fake {
	struct lru_node node; /* first, as in the cache */
	int id;
	bool busy;
	bool dropped;
};

static struct evict *ev_for_drop;
static int drop_order[16], ndrops;

static int64_t fake_drop(struct lru_node *n, void *arg)
{
	struct fake *f = (struct fake *)n;
	int64_t bytes = (int64_t)n->bytes;

	(void)arg;
	if (f->busy)
		return -EBUSY;
	f->dropped = true;
	drop_order[ndrops++] = f->id;
	evict_unlink_locked(ev_for_drop, n);
	return bytes;
}

int main(void)
{
	struct efs_config cfg;
	struct efs_stats stats;
	struct store *store;
	struct evict *ev;
	struct fake f[6];
	char err[256], dir[64] = "/tmp/efs-test-evict-XXXXXX";

	memset(&cfg, 0, sizeof(cfg));
	memset(&stats, 0, sizeof(stats));
	memset(f, 0, sizeof(f));
	cfg.cache_size = 4 * 4096;
	cfg.min_free_pct = 0;
	CHECK(mkdtemp(dir) != NULL);
	strcat(dir, "/c");
	CHECK(store_open(&store, dir, err, sizeof(err)) == 0);
	CHECK(evict_new(&ev, &cfg, store, &stats, fake_drop, NULL) == 0);
	ev_for_drop = ev;
	evict_set_ready(ev);

	for (int i = 0; i < 4; i++) {
		f[i].id = i;
		CHECK(evict_reserve(ev, 4096) == 0);
		evict_add(ev, &f[i].node, 4096, true);
	}
	CHECK(evict_usage(ev) == 4 * 4096);
	CHECK(ndrops == 0);

	/* Touch 0: now 1 is the coldest. */
	evict_touch(ev, &f[0].node);
	f[4].id = 4;
	CHECK(evict_reserve(ev, 4096) == 0);
	evict_add(ev, &f[4].node, 4096, true);
	CHECK(ndrops == 1 && drop_order[0] == 1);
	CHECK(evict_usage(ev) <= cfg.cache_size);

	/* A busy cold node is skipped, the next one goes. */
	f[2].busy = true;
	f[5].id = 5;
	CHECK(evict_reserve(ev, 4096) == 0);
	evict_add(ev, &f[5].node, 4096, true);
	CHECK(ndrops == 2 && drop_order[1] == 3);

	/* More than the cache can ever hold: refused, nothing left dangling. */
	CHECK(evict_reserve(ev, 5 * 4096) == -ENOSPC);
	CHECK(evict_usage(ev) <= cfg.cache_size);

	/* Unreserve gives the bytes back. */
	f[2].busy = false;
	evict_del(ev, &f[5].node);
	CHECK(evict_reserve(ev, 4096) == 0);
	evict_unreserve(ev, 4096);
	CHECK(evict_usage(ev) <= 3 * 4096);
	CHECK(stats.v[ST_evictions] >= 2);

	evict_reset(ev);
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
