/* cache.c - the read path, setup and sweep, admin (being split:
 * see cache_int.h). */
#include "cache_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checksum.h"
#include "log.h"
#include "source.h"

/* Write-behind: one writer keeps the disk busy without competing with the
 * FUSE workers for the 2-4 cores of a typical host; 256 chunks queued
 * (at most 256 MiB with 1 MiB chunks, far less for small files) before
 * readers store their chunks themselves. */
#define WB_WORKERS 1
#define WB_QUEUE 256

/* ---- eviction callback ------------------------------------------------ */

/* Called by evict.c with the LRU lock held: drop one chunk if it is idle. */
static int64_t drop_chunk_cb(struct lru_node *node, void *arg)
{
	struct cache *c = arg;
	struct chunk *ch = (struct chunk *)node; /* lru is the first member */
	struct cache_file *e = ch->e;
	int64_t freed;

	if (pthread_mutex_trylock(&e->mu) != 0)
		return -EBUSY;
	if (ch->pins || (ch->state != CH_PRESENT && ch->state != CH_VERIFIED) ||
	    entry_reopen_locked(c, e) < 0 || !e->loaded) {
		pthread_mutex_unlock(&e->mu);
		return -EBUSY;
	}
	store_drop_chunk(&e->sf, ch->idx);
	if (ch->unread)
		stats_add(c->stats, ST_prefetch_unused_bytes, ch->len);
	ch->unread = false;
	ch->state = CH_ABSENT;
	ch->len = 0;
	freed = (int64_t)node->bytes;
	evict_unlink_locked(c->ev, node);
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
	c->nbuckets = 4096;
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
		r = prefetch_new(&c->pf, cfg->prefetch, c->window * 64, cache_run_prefetch, c);
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

/* ---- introspection ------------------------------------------------------ */

struct file_status {
	const char *state;
	uint64_t size, cached;
	uint32_t present, verified, total, cs;
	time_t when;
};

/* A record on disk that no entry has loaded: read, not loaded, so that a
 * query neither grows the table nor moves chunks in the LRU. */
static void status_from_disk(struct cache *c, const struct store_key *k, struct file_status *fs)
{
	struct store_slot *slots = NULL;
	struct store_file sf;

	if (store_load(c->store, k, &sf, &slots) < 0)
		return;
	if (sf.chunk_size == c->cfg->chunk_size) {
		fs->state = "unvalidated";
		fs->size = sf.id.size;
		fs->total = sf.nchunks;
		fs->cs = sf.chunk_size;
		for (uint32_t i = 0; i < sf.nchunks; i++) {
			if (!slots[i].len)
				continue;
			fs->present++;
			fs->cached += slots[i].len;
		}
	}
	free(slots);
	store_file_close(&sf);
}

size_t cache_status(struct cache *c, struct efs_inode *ino, char *buf, size_t len)
{
	struct file_status fs = {.state = "uncached", .cs = (uint32_t)c->cfg->chunk_size};
	struct cache_file *e = NULL;
	struct store_key k;
	bool have_key = false;
	bool tried = false;
	struct stat st;

	/* The record's size wins if there is one. */
	if (S_ISREG(ino->type) && c->src.stat_named(c->src.arg, ino, &st) == 0)
		fs.size = (uint64_t)st.st_size;
	if (S_ISREG(ino->type) && store_key_of(c->cfg->source, (uint64_t)ino->ino, &k) == 0) {
		have_key = true;
		e = cache_table_find(c, &k);
	}
	if (e) {
		pthread_mutex_lock(&e->mu);
		if (e->loaded) {
			fs.size = e->sf.id.size;
			fs.total = e->sf.nchunks;
			fs.cs = e->sf.chunk_size;
			for (uint32_t i = 0; i < fs.total; i++) {
				if (e->chunks[i].state == CH_ABSENT || !e->chunks[i].len)
					continue;
				fs.present++;
				fs.cached += e->chunks[i].len;
				if (e->chunks[i].state == CH_VERIFIED)
					fs.verified++;
			}
			fs.state = e->bypass ? "stale" : e->validated ? "valid" : "unvalidated";
		}
		fs.when = e->validated_wall;
		tried = e->load_tried;
		pthread_mutex_unlock(&e->mu);
	}
	if (have_key && !strcmp(fs.state, "uncached") && !tried)
		status_from_disk(c, &k, &fs);
	return (size_t)snprintf(buf, len,
				"state %s\nsize %llu\ncached_bytes %llu\nchunk_size %u\n"
				"chunks %u\nchunks_cached %u\nchunks_verified %u\n"
				"last_validated %lld\n",
				fs.state, (unsigned long long)fs.size, (unsigned long long)fs.cached,
				fs.cs, fs.total, fs.present, fs.verified, (long long)fs.when);
}

size_t cache_stats_text(struct cache *c, char *buf, size_t len)
{
	size_t n = stats_format(c->stats, buf, len);
	uint64_t entries;
	int m;

	pthread_mutex_lock(&c->table_mu);
	entries = c->nentries;
	pthread_mutex_unlock(&c->table_mu);
	m = snprintf(buf ? buf + (n < len ? n : len) : NULL, n < len ? len - n : 0,
		     "cache_entries %llu\ncache_usage_bytes %llu\ncache_size_bytes %llu\n"
		     "write_behind_pending %llu\ncache_dir %s\n",
		     (unsigned long long)entries, (unsigned long long)evict_usage(c->ev),
		     (unsigned long long)evict_limit(c->ev),
		     (unsigned long long)__atomic_load_n(&c->wb_pending, __ATOMIC_ACQUIRE),
		     store_path(c->store));
	return n + (m > 0 ? (size_t)m : 0);
}

const char *cache_dir_path(const struct cache *c)
{
	return store_path(c->store);
}

bool cache_dir_owned(const struct cache *c)
{
	return !__atomic_load_n(&c->lost_lock, __ATOMIC_RELAXED) && store_dir_ok(c->store);
}

/* The entry of the source file with inode number src_ino, or NULL.  If
 * the table has none, one is made only when the file has a record on disk
 * (not yet indexed): asking about files we never cached (every unlink, an
 * evict of a big tree) must not grow the table, whose entries live until
 * the daemon exits. */
static struct cache_file *entry_of_src_ino(struct cache *c, uint64_t src_ino)
{
	struct store_slot *slots = NULL;
	struct cache_file *e = NULL;
	struct store_file sf;
	struct store_key k;
	bool created;

	if (store_key_of(c->cfg->source, src_ino, &k) < 0)
		return NULL;
	e = cache_table_find(c, &k);
	if (e)
		return e;
	if (store_load(c->store, &k, &sf, &slots) == -ENOENT)
		return NULL;
	free(slots);
	store_file_close(&sf);
	pthread_mutex_lock(&c->table_mu);
	e = cache_table_get_locked(c, &k, &created);
	pthread_mutex_unlock(&c->table_mu);
	return e;
}

int cache_evict_ino(struct cache *c, uint64_t src_ino, uint64_t *bytes, uint64_t *chunks)
{
	struct cache_file *e = entry_of_src_ino(c, src_ino);

	if (!e)
		return 0; /* nothing cached */
	pthread_mutex_lock(&e->mu);
	entry_load_locked(c, e, false);
	entry_check_store_gen_locked(c, e);
	entry_wait_quiet_locked(e);
	entry_reopen_locked(c, e);
	for (uint32_t i = 0; e->loaded && i < e->sf.nchunks; i++) {
		struct chunk *ch = &e->chunks[i];

		if (ch->state != CH_PRESENT && ch->state != CH_VERIFIED)
			continue;
		store_drop_chunk(&e->sf, i);
		evict_del(c->ev, &ch->lru);
		*bytes += ch->len;
		(*chunks)++;
		ch->state = CH_ABSENT;
		ch->len = 0;
	}
	entry_release_fds_locked(e);
	pthread_mutex_unlock(&e->mu);
	return 0;
}

void cache_source_gone(struct cache *c, uint64_t src_ino)
{
	struct cache_file *e = entry_of_src_ino(c, src_ino);
	int r;

	if (!e)
		return;
	pthread_mutex_lock(&e->mu);
	e->load_tried = true; /* the startup index must not load it back */
	/* Give back its chunks' and metadata's space now, unless a fetch or a
	 * reply uses the record: an unlink must not wait for a slow source.
	 * Then the files lose their names below, and their chunks go with
	 * the LRU (or the next reset of the entry). */
	if (e->loaded && !e->busy && !e->pins)
		entry_unload_locked(c, e);
	r = store_remove(c->store, &e->key);
	if (r < 0 && r != -EBUSY)
		log_debug("cache: removing record %s failed: %s", e->key.hex, strerror(-r));
	/* Fds still open on the deleted file read it from the source; an open
	 * of a new file that gets the inode number validates and starts over. */
	e->bypass = true;
	e->validated = false;
	pthread_mutex_unlock(&e->mu);
}

/* Verify the chunks of one entry; e->mu held.  Returns fn's non-zero
 * result if it asked to stop. */
static int verify_entry_locked(struct cache *c, struct cache_file *e,
			       struct cache_verify_report *rep, cache_progress_fn fn, void *arg)
{
	void *buf = NULL;
	int stop = 0;

	entry_check_store_gen_locked(c, e);
	if (entry_reopen_locked(c, e) < 0 || !e->loaded)
		return 0;
	buf = malloc(e->sf.chunk_size);
	if (!buf)
		return 0;
	for (uint32_t i = 0; i < e->sf.nchunks && !stop; i++) {
		struct chunk *ch = &e->chunks[i];
		uint8_t was;
		bool ok;
		int r;

		while (ch->state == CH_BUSY || ch->pins)
			pthread_cond_wait(&e->cv, &e->mu);
		if (!e->loaded || (ch->state != CH_PRESENT && ch->state != CH_VERIFIED))
			continue;
		was = ch->state;
		ch->state = CH_BUSY;
		e->busy++;
		pthread_mutex_unlock(&e->mu);
		r = store_read_chunk(&e->sf, i, buf, ch->len);
		ok = r == 0 && csum64(buf, ch->len) == ch->hash;
		pthread_mutex_lock(&e->mu);
		rep->chunks_checked++;
		rep->bytes_checked += ch->len;
		stats_add(c->stats, ST_chunks_verified, 1);
		if (ok) {
			ch->state = was == CH_PRESENT && c->cfg->verify != VERIFY_ALWAYS ? CH_VERIFIED
										    : was;
		} else {
			rep->chunks_bad++;
			stats_add(c->stats, ST_checksum_mismatches, 1);
			store_drop_chunk(&e->sf, i);
			evict_del(c->ev, &ch->lru);
			ch->state = CH_ABSENT;
			ch->len = 0;
		}
		e->busy--;
		pthread_cond_broadcast(&e->cv);
		if (fn) {
			/* Without the entry's lock: fn may write to a socket. */
			pthread_mutex_unlock(&e->mu);
			stop = fn(rep, arg);
			pthread_mutex_lock(&e->mu);
		}
	}
	entry_release_fds_locked(e);
	free(buf);
	return stop;
}

/* The entries now in the table (never freed while the daemon runs). */
static struct cache_file **snapshot_entries(struct cache *c, size_t *count)
{
	struct cache_file **list = NULL;
	size_t n = 0, cap = 0;

	pthread_mutex_lock(&c->table_mu);
	for (size_t b = 0; b < c->nbuckets; b++) {
		for (struct cache_file *e = c->buckets[b]; e; e = e->next) {
			if (n == cap) {
				size_t ncap = cap ? cap * 2 : 256;
				struct cache_file **nl = realloc(list, ncap * sizeof(*nl));
				if (!nl)
					goto out_unlock;
				list = nl;
				cap = ncap;
			}
			list[n++] = e;
		}
	}
out_unlock:
	pthread_mutex_unlock(&c->table_mu);
	*count = n;
	return list;
}

int cache_verify_all(struct cache *c, struct cache_verify_report *rep, cache_progress_fn fn,
		     void *arg)
{
	size_t n;
	struct cache_file **list = snapshot_entries(c, &n);
	int stop = 0;

	memset(rep, 0, sizeof(*rep));
	if (!list)
		return 0;
	for (size_t i = 0; i < n; i++) {
		struct cache_file *e = list[i];

		pthread_mutex_lock(&e->mu);
		entry_load_locked(c, e, false);
		entry_check_store_gen_locked(c, e);
		for (uint32_t k = 0; e->loaded && k < e->sf.nchunks; k++)
			if (e->chunks[k].state == CH_PRESENT || e->chunks[k].state == CH_VERIFIED)
				rep->chunks_total++;
		pthread_mutex_unlock(&e->mu);
	}
	if (fn)
		stop = fn(rep, arg);
	for (size_t i = 0; i < n && !stop; i++) {
		pthread_mutex_lock(&list[i]->mu);
		stop = verify_entry_locked(c, list[i], rep, fn, arg);
		pthread_mutex_unlock(&list[i]->mu);
	}
	free(list);
	return stop;
}
