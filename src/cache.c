/* cache.c - setup and teardown, the eviction callback, the startup index
 * and the sweep.
 *
 * cache_new opens cache_dir and wires the store, eviction, prefetch and
 * write-behind workers; cache_start starts the sweeper thread, which first
 * indexes the records on disk (cold end of the LRU; space checks wait until
 * it is done) and then once a second checks that cache_dir is still ours
 * (recreating it if it vanished) and evicts down to the limits.  Locks:
 * c->sweep_mu guards stop and poke only; the eviction callback runs under
 * the LRU mutex and only trylocks entries (order: cache_int.h).
 */
#include "cache_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

/* Write-behind: one writer keeps the disk busy without competing with the
 * FUSE workers for the 2-4 cores of a typical host; 256 chunks queued
 * (at most 256 MiB with 1 MiB chunks, far less for small files) before
 * readers store their chunks themselves. */
#define WB_WORKERS 1
#define WB_QUEUE 256
/* The entry table has a fixed number of buckets: it is looked up at open,
 * evict and status only (a read has its entry through the inode), so a
 * chain of ~50 entries at 200,000 cached files costs nothing that shows. */
#define TABLE_BUCKETS 4096
/* Prefetch jobs queued at most, in windows (prefetch workers x 2 chunks):
 * room for that many sequential readers at once before readers fetch the
 * chunks themselves. */
#define PF_QUEUE_WINDOWS 64

/* ---- eviction callback ------------------------------------------------ */

/* Called by evict.c with the LRU lock held: drop one chunk if it is idle.
 * Nothing here may take the LRU lock again (evict_del, evict_account: both
 * in entry_unload_locked) or wait for the entry to go quiet. */
static int64_t drop_chunk_cb(struct lru_node *node, void *arg)
{
	struct cache *c = arg;
	struct chunk *ch = (struct chunk *)node; /* lru is the first member */
	struct cache_file *e = ch->e;
	int64_t freed;

	if (pthread_mutex_trylock(&e->mu) != 0)
		return -EBUSY;
	/* A passthrough open's data file keeps its bytes (passthrough.h). */
	if (ch->pins || pt_holds(&e->pt) || (ch->state != CH_PRESENT && ch->state != CH_VERIFIED) ||
	    !e->loaded || e->need_create || e->creating) {
		pthread_mutex_unlock(&e->mu);
		return -EBUSY;
	}
	freed = (int64_t)node->bytes;
	/* Not entry_reopen_locked: when the record is gone from disk (removed
	 * by cache_source_gone while a reply held the entry, or by a cleaner
	 * of cache_dir) it unloads the entry, which takes this lock again.
	 * Such a chunk's bytes went with the record: it is only forgotten,
	 * and the entry with it at its next reopen, outside this lock. */
	(void)store_file_reopen(c->store, &e->key, &e->sf);
	entry_drop_chunk_locked(c, e, ch, true);
	entry_release_fds_locked(e);
	pthread_mutex_unlock(&e->mu);
	return freed;
}

/* ---- setup, background index and sweep --------------------------------- */

int cache_new(struct cache **out, const struct efs_config *cfg, const struct cache_source *src,
	      struct efs_stats *stats, char *err, size_t errlen)
{
	struct cache *c = calloc(1, sizeof(*c));
	int r;

	if (err && errlen)
		err[0] = '\0';
	if (!c)
		return -ENOMEM;
	c->cfg = cfg;
	c->src = *src;
	meta_policy_init(&c->policy, cfg);
	c->stats = stats;
	c->nbuckets = TABLE_BUCKETS;
	c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
	if (!c->buckets) {
		free(c);
		return -ENOMEM;
	}
	pthread_mutex_init(&c->table_mu, NULL);
	pthread_mutex_init(&c->sweep_mu, NULL);
	pthread_cond_init(&c->sweep_cv, NULL);
	r = store_open(&c->store, cfg->cache_dir, err, errlen);
	if (r == 0)
		r = evict_new(&c->ev, cfg, c->store, stats, drop_chunk_cb, c);
	/* Keep twice as many chunks queued as there are workers, so none idles. */
	c->window = cfg->prefetch * 2;
	if (r == 0 && cfg->prefetch)
		r = prefetch_new(&c->pf, cfg->prefetch, c->window * PF_QUEUE_WINDOWS, cache_run_prefetch, c);
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

static void scan_one(const struct store_key *k, void *arg)
{
	struct cache *c = arg;
	struct cache_file *e;
	bool created;

	pthread_mutex_lock(&c->table_mu);
	e = cache_table_get_locked(c, k, &created);
	pthread_mutex_unlock(&c->table_mu);
	if (!e || !created)
		return; /* an open got there first and loaded it */
	pthread_mutex_lock(&e->mu);
	entry_load_locked(c, e, true);
	entry_release_fds_locked(e);
	pthread_mutex_unlock(&e->mu);
}

static void *sweeper_main(void *arg)
{
	struct cache *c = arg;
	struct timespec until;
	int r;

	/* Index what is on disk: until done, space checks wait (hits do not). */
	r = store_scan(c->store, scan_one, c);
	if (r < 0)
		log_debug("cache: scanning cache_dir failed: %s", strerror(-r));
	evict_set_ready(c->ev);
	evict_sweep(c->ev);

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
		evict_sweep(c->ev);
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
	/* What was read before the unmount is on disk after it. */
	prefetch_drain(c->wb);
	prefetch_free(c->wb, cache_drop_write_behind);
	c->wb = NULL;
	for (size_t b = 0; c->buckets && b < c->nbuckets; b++) {
		struct cache_file *e = c->buckets[b], *next;
		for (; e; e = next) {
			next = e->next;
			entry_free_chunks_locked(c, e);
			store_file_close(&e->sf);
			pthread_mutex_destroy(&e->mu);
			pthread_cond_destroy(&e->cv);
			free(e);
		}
	}
	free(c->buckets);
	evict_free(c->ev);
	store_close(c->store);
	pthread_mutex_destroy(&c->table_mu);
	pthread_mutex_destroy(&c->sweep_mu);
	pthread_cond_destroy(&c->sweep_cv);
	free(c);
}

const char *cache_dir_path(const struct cache *c)
{
	return store_path(c->store);
}

bool cache_dir_owned(const struct cache *c)
{
	return !__atomic_load_n(&c->lost_lock, __ATOMIC_RELAXED) && store_dir_ok(c->store);
}
