/* cache.c - setup and teardown, eviction, the startup index and the sweep.
 *
 * cache_new opens cache_dir and wires the store, eviction, prefetch and
 * write-behind workers; cache_start starts the sweeper thread, which first
 * indexes the records on disk (two stats per record, no read: a rec each,
 * to the LRU in the order their files were last written; chunks are not
 * stored until it is done, and nothing waits for it) and then once a
 * second checks that cache_dir is still ours (recreating it if it
 * vanished) and evicts down to the limits.
 *
 * Eviction (evict.h) picks under the LRU mutex and reaps after it: pick
 * takes a whole record (one nobody uses, or a complete one, or one with no
 * chunk left) or, from a record never complete, its coldest chunks, and
 * only trylocks entries; reap unlinks and punches with no global lock.
 * Locks: c->sweep_mu guards stop and poke only (order: cache_int.h).
 */
#include "cache_int.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache_test.h"
#include "log.h"

/* Write-behind: one writer keeps the disk busy without competing with the
 * FUSE workers for the 2-4 cores of a typical host; 256 chunks queued, and
 * at most WB_MAX_BYTES of the buffers they hold (and no more than the
 * buffer budget allows, cache_read.c), before readers store their chunks
 * themselves. */
#define WB_WORKERS 1
#define WB_QUEUE 256
#define WB_MAX_BYTES (256ULL << 20)
/* Prefetch jobs queued at most, in windows (prefetch workers x 2 chunks):
 * room for that many sequential readers at once before readers fetch the
 * chunks themselves. */
#define PF_QUEUE_WINDOWS 64
/* Idle loaded entries kept (each holds its record's two fds): a share of
 * the fd limit, between these bounds. */
#define IDLE_MIN 8
#define IDLE_MAX 4096
/* Chunk buffers in use (fetches, write-behind, replies; bufpool.h): at most
 * this, or room for every prefetch worker's chunk twice and 8 more if that
 * is larger; demand reads may go beyond it, nothing else does. */
#define BUF_BUDGET_MIN (48ULL << 20)

/* ---- eviction: pick under the LRU mutex, reap after ---------------------- */

/* The record of r goes whole: its bytes leave the usage now, its files in
 * reap (or at the next use of its entry, whichever comes first). */
static int64_t condemn(struct cache *c, struct evict_batch *b, struct rec *r)
{
	int64_t got = (int64_t)r->lru.bytes;

	r->condemned = true;
	r->pins++;
	evict_del_locked(c->ev, &r->lru);
	b->item[b->n++] = (struct evict_item){.rec = r};
	stats_add(c->stats, ST_evictions, 1);
	return got;
}

/* A live entry's whole record: forget it in memory now (nothing uses it).
 * An entry validated keeps its identity, prepared for a new record, so
 * that open handles cache again what they read. */
static void detach_locked(struct cache_file *e)
{
	chunk_map_free(e);
	store_file_close(&e->sf);
	e->gen++;
	e->meta_bytes = 0;
	if (e->validated && !e->bypass) {
		e->need_create = true;
	} else {
		e->loaded = false;
		e->need_create = false;
	}
}

static int64_t pick_cb(struct lru_node *node, uint64_t need, void *bp, void *arg)
{
	struct cache *c = arg;
	struct evict_batch *b = bp;
	struct rec *r = (struct rec *)node; /* lru is the first member */
	struct cache_file *e = r->e;
	struct chunk *ch, *hotter;
	int64_t got = 0;

	if (b->n == EVICT_BATCH)
		return -ENOBUFS;
	if (!e)
		return condemn(c, b, r); /* nobody uses it */
	if (pthread_mutex_trylock(&e->mu) != 0)
		return 0;
	if (pt_holds(&e->pt) || e->creating || (e->loaded && e->need_create)) {
		/* The kernel reads it, or it is not on disk yet. */
	} else if (!e->loaded) {
		got = condemn(c, b, r);
	} else if (entry_complete(e) || e->nstored == 0) {
		/* A complete record's data file never changes in place
		 * (cache_int.h): it goes whole, once nothing uses it. */
		if (entry_quiet(e)) {
			detach_locked(e);
			got = condemn(c, b, r);
		}
	} else {
		for (ch = e->cold; ch && (uint64_t)got < need && b->n < EVICT_BATCH; ch = hotter) {
			hotter = ch->hotter;
			if (ch->pins || (ch->state != CH_PRESENT && ch->state != CH_VERIFIED))
				continue;
			chunk_unlist(e, ch);
			ch->state = CH_BUSY; /* the batch's, until reaped */
			e->busy++;
			entry_ref(e);
			evict_shrink_locked(c->ev, node, round_block(ch->len));
			got += (int64_t)round_block(ch->len);
			b->item[b->n++] = (struct evict_item){.e = e, .ch = ch};
			stats_add(c->stats, ST_evictions, 1);
		}
	}
	/* In use: to the hot end, so that the walks do not come back to it
	 * while it stays in use. */
	if (!got && node->linked)
		evict_touch_locked(c->ev, node);
	pthread_mutex_unlock(&e->mu);
	return got;
}

static void reap_chunk(struct cache *c, struct cache_file *e, struct chunk *ch)
{
	pthread_mutex_lock(&e->mu);
	if (e->sf.meta_fd >= 0 && e->sf.data_fd >= 0 && store_drop_chunk(&e->sf, ch->idx) < 0)
		e->disk_differs = true;
	if (ch->len)
		e->nstored--;
	if (ch->unread)
		stats_add(c->stats, ST_prefetch_unused_bytes, ch->len);
	ch->unread = false;
	ch->len = 0;
	ch->state = CH_ABSENT;
	e->busy--;
	chunk_settle(e, ch);
	pthread_cond_broadcast(&e->cv);
	entry_release_locked(c, e);
	pthread_mutex_unlock(&e->mu);
	entry_put(c, e);
}

static void reap_cb(void *bp, void *arg)
{
	struct cache *c = arg;
	struct evict_batch *b = bp;

	for (unsigned i = 0; i < b->n; i++) {
		struct rec *r = b->item[i].rec;
		struct cache_file *e;

		if (!r) {
			reap_chunk(c, b->item[i].e, b->item[i].ch);
			continue;
		}
		/* Through its entry, whose mutex orders the unlink against a
		 * new record of the key (entry_settle_condemned_locked).  Without
		 * memory for one it stays condemned: the next user removes it. */
		e = entry_get_rec(c, r);
		if (e) {
			pthread_mutex_lock(&e->mu);
			entry_settle_condemned_locked(c, e);
			pthread_mutex_unlock(&e->mu);
		}
		evict_lock(c->ev);
		r->pins--;
		evict_unlock(c->ev);
		if (e)
			entry_put(c, e);
	}
	b->n = 0;
}

/* ---- setup, background index and sweep --------------------------------- */

static unsigned idle_max_of_limit(void)
{
	struct rlimit rl;
	uint64_t n;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
		return IDLE_MAX;
	n = rl.rlim_cur / 16;
	return n < IDLE_MIN ? IDLE_MIN : n > IDLE_MAX ? IDLE_MAX : (unsigned)n;
}

/* The memory this daemon's pages may take: the machine's, or less if its
 * cgroup (v2 memory.max, v1 memory.limit_in_bytes) sets a lower limit, as
 * a container's does: the pages the daemon puts in the page cache are
 * charged to it. */
static uint64_t memory_limit(void)
{
	static const char *const files[] = {"memory.max", "memory.limit_in_bytes"};
	uint64_t lim = (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE);
	char line[4096], path[4200];
	FILE *f = fopen("/proc/self/cgroup", "re");

	while (f && fgets(line, sizeof(line), f)) {
		/* "0::/path" (v2) or "N:memory:/path" (v1) */
		char *ctl = strchr(line, ':'), *rel = ctl ? strchr(ctl + 1, ':') : NULL;
		bool v2 = ctl && rel == ctl + 1;
		unsigned long long v;
		FILE *m;

		if (!rel || (!v2 && strncmp(ctl + 1, "memory:", 7) != 0))
			continue;
		rel[strcspn(rel, "\n")] = '\0';
		snprintf(path, sizeof(path), "/sys/fs/cgroup%s%s/%s", v2 ? "" : "/memory", rel + 1,
			 files[!v2]);
		m = fopen(path, "re");
		if (m && fscanf(m, "%llu", &v) == 1 && v > 0 && v < lim)
			lim = v; /* "max" reads as no number: no limit */
		if (m)
			fclose(m);
	}
	if (f)
		fclose(f);
	return lim;
}

int cache_new(struct cache **out, const struct efs_config *cfg, const struct cache_source *src,
	      struct efs_stats *stats, char *err, size_t errlen)
{
	struct cache *c = calloc(1, sizeof(*c));
	struct stat st;
	int r;

	if (err && errlen)
		err[0] = '\0';
	if (!c)
		return -ENOMEM;
	c->cfg = cfg;
	c->src = *src;
	meta_policy_init(&c->policy, cfg);
	c->stats = stats;
	c->idle_max = idle_max_of_limit();
	c->wb_limit = WB_MAX_BYTES;
	/* Files on SOURCE's own file system keep the keys of earlier
	 * versions (device tag 0). */
	if (stat(cfg->source, &st) == 0) {
		c->root_dev = st.st_dev;
		c->root_dev_known = true;
	}
	pthread_mutex_init(&c->sweep_mu, NULL);
	pthread_cond_init(&c->sweep_cv, NULL);
	r = cache_table_init(c);
	if (r == 0)
		r = store_open(&c->store, cfg->cache_dir, err, errlen);
	if (r == 0)
		r = evict_new(&c->ev, cfg, c->store, stats, pick_cb, reap_cb, c);
	if (r == 0) {
		uint64_t budget = (2ULL * cfg->prefetch + 8) * cfg->chunk_size;

		r = cache_read_init(c, budget > BUF_BUDGET_MIN ? budget : BUF_BUDGET_MIN);
	}
	/* Keep twice as many chunks queued as there are workers, so none idles. */
	c->window = cfg->prefetch * 2;
	/* Swept files are pushed into the kernel's page cache whole: up to a
	 * quarter of the memory the daemon may use, beyond which they would
	 * push out what others read (cache_read.c). */
	c->push_max = memory_limit() / 4;
	if (r == 0 && cfg->prefetch)
		r = prefetch_new(&c->pf, cfg->prefetch, c->window * PF_QUEUE_WINDOWS, cache_run_prefetch, c);
	if (r == 0 && cfg->prefetch)
		r = prefetch_new(&c->pushq, 1, c->window * PF_QUEUE_WINDOWS, cache_run_prefetch, c);
	if (r == 0)
		r = prefetch_new(&c->wb, WB_WORKERS, WB_QUEUE, cache_run_write_behind, c);
	if (r < 0 && err && errlen && err[0] == '\0')
		snprintf(err, errlen, "cannot set up the cache: %s", strerror(-r));
	if (r < 0) {
		cache_free(c);
		return r;
	}
	*out = c;
	return 0;
}

struct scan_list {
	struct store_scan_rec *v;
	size_t n, cap;
};

static void scan_one(const struct store_scan_rec *sr, void *arg)
{
	struct scan_list *l = arg;

	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 1024;
		struct store_scan_rec *v = realloc(l->v, cap * sizeof(*v));

		if (!v)
			return; /* unindexed: found when a file of it is opened */
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = *sr;
}

/* Newest first: each goes to the cold end after the ones before it, so
 * the oldest ends coldest. */
static int newer_first(const void *a, const void *b)
{
	const struct store_scan_rec *x = a, *y = b;

	return x->mtime_ns < y->mtime_ns ? 1 : x->mtime_ns > y->mtime_ns ? -1 : 0;
}

static void build_index(struct cache *c)
{
	struct scan_list l = {0};
	int r = store_scan(c->store, scan_one, &l);

	if (r < 0)
		log_debug("cache: scanning cache_dir failed: %s", strerror(-r));
	if (l.n)
		qsort(l.v, l.n, sizeof(*l.v), newer_first);
	for (size_t i = 0; i < l.n; i++)
		cache_table_add_found(c, &l.v[i]);
	free(l.v);
}

static void *sweeper_main(void *arg)
{
	struct cache *c = arg;
	struct evict_batch batch = {0};
	struct timespec until;
	int r;

	/* Index what is on disk: until done, chunks are not stored (hits and
	 * misses do not wait). */
	build_index(c);
	evict_set_ready(c->ev);
	evict_sweep(c->ev, &batch);

	pthread_mutex_lock(&c->sweep_mu);
	while (!c->stop) {
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += 1;
		if (!c->poke)
			pthread_cond_timedwait(&c->sweep_cv, &c->sweep_mu, &until);
		c->poke = false;
		if (c->stop)
			break;
		pthread_mutex_unlock(&c->sweep_mu);

		r = store_check_dir(c->store);
		if (r >= 0 && __atomic_exchange_n(&c->lost_lock, false, __ATOMIC_RELAXED))
			log_warn("cache: got the lock of cache_dir '%s' back; caching again",
				 store_path(c->store));
		if (r == 1) {
			/* Everything we knew lives in deleted files: start over. */
			__atomic_fetch_add(&c->store_gen, 1, __ATOMIC_RELEASE);
			evict_reset(c->ev);
			cache_table_forget_idle(c);
			stats_add(c->stats, ST_cache_dir_recreated, 1);
			log_warn("cache: cache_dir '%s' vanished; recreated it empty",
				 store_path(c->store));
		} else if (r == -EBUSY) {
			/* Another daemon took the recreated cache_dir: sharing it
			 * would corrupt both caches.  Forget everything and read
			 * from the source (every record call fails) until the
			 * lock comes back. */
			if (!__atomic_exchange_n(&c->lost_lock, true, __ATOMIC_RELAXED)) {
				__atomic_fetch_add(&c->store_gen, 1, __ATOMIC_RELEASE);
				evict_reset(c->ev);
				cache_table_forget_idle(c);
				log_err("cache: cache_dir '%s' was recreated and another efscache "
					"holds its lock now; caching stops, files are read from "
					"the source until that daemon exits",
					store_path(c->store));
			}
		} else if (r < 0) {
			log_once(c->logged_dir, LOG_LVL_WARN,
				 "cache: cache_dir '%s' is gone and cannot be recreated: %s",
				 store_path(c->store), strerror(-r));
		}
		evict_sweep(c->ev, &batch);
		/* Buffers of a burst of reads go back to the system at rest. */
		if (!__atomic_load_n(&c->wb_pending, __ATOMIC_RELAXED)) {
			cache_read_idle(c);
			malloc_trim(0);
		}
		pthread_mutex_lock(&c->sweep_mu);
	}
	pthread_mutex_unlock(&c->sweep_mu);
	return NULL;
}

int cache_start(struct cache *c)
{
	int r;

	store_note_pid(c->store);
	r = pthread_create(&c->sweeper, NULL, sweeper_main, c);

	if (r != 0)
		return -r;
	c->sweeper_running = true;
	r = prefetch_start(c->wb);
	if (r == 0 && c->pf)
		r = prefetch_start(c->pf);
	if (r == 0 && c->pushq)
		r = prefetch_start(c->pushq);
	return r;
}

void cache_free(struct cache *c)
{
	if (!c)
		return;
	if (c->sweeper_running) {
		pthread_mutex_lock(&c->sweep_mu);
		c->stop = true;
		pthread_cond_signal(&c->sweep_cv);
		pthread_mutex_unlock(&c->sweep_mu);
		pthread_join(c->sweeper, NULL);
	}
	prefetch_free(c->pf, cache_drop_prefetch);
	c->pf = NULL;
	prefetch_free(c->pushq, cache_drop_prefetch);
	c->pushq = NULL;
	/* What was read before the unmount is on disk after it. */
	prefetch_drain(c->wb);
	prefetch_free(c->wb, cache_drop_write_behind);
	c->wb = NULL;
	cache_read_free(c); /* kept buffers hold entries */
	if (c->buckets)
		cache_table_free(c);
	evict_free(c->ev);
	store_close(c->store);
	pthread_mutex_destroy(&c->sweep_mu);
	pthread_cond_destroy(&c->sweep_cv);
	free(c);
}

void cache_test_set_wb_limit(struct cache *c, uint64_t max)
{
	c->wb_limit = max;
}

uint64_t cache_test_wb_bytes(struct cache *c)
{
	return __atomic_load_n(&c->wb_bytes, __ATOMIC_ACQUIRE);
}

const char *cache_dir_path(const struct cache *c)
{
	return store_path(c->store);
}

bool cache_dir_owned(const struct cache *c)
{
	return !__atomic_load_n(&c->lost_lock, __ATOMIC_RELAXED) && store_dir_ok(c->store);
}
