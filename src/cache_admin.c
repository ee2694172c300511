/* cache_admin.c - what efscachectl asks of the cache.
 *
 * The status of one file (from its entry if loaded, else read from disk
 * without loading it or creating anything, so a query neither grows memory
 * nor moves the LRU), the cache's usage, eviction of one file, the removal
 * of a record whose source file lost its last name, and a verify of every
 * cached chunk.  Runs on FUSE and control threads.  Locks: e->mu per entry
 * and c->table_mu only to find entries; verify owns each chunk it checks
 * (BUSY) while it reads it without e->mu, and looks at the entry again
 * (its generation) whenever it took the lock back (order: cache_int.h).
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

/* ---- introspection ------------------------------------------------------ */

static int count_slot(uint32_t idx, const struct store_slot *slot, void *arg)
{
	struct cache_file_status *fs = arg;

	(void)idx;
	fs->chunks_cached++;
	fs->cached_bytes += slot->len;
	return 0;
}

/* A record on disk that no entry has loaded: read, not loaded. */
static void status_from_disk(struct cache *c, const struct store_key *k,
			     struct cache_file_status *fs)
{
	struct store_file sf;

	if (store_open_record(c->store, k, &sf) < 0)
		return;
	if (sf.chunk_size == c->cfg->chunk_size) {
		struct cache_file_status tmp = *fs;

		tmp.state = CACHE_FILE_UNVALIDATED;
		tmp.size = sf.id.size;
		tmp.chunks = sf.nchunks;
		tmp.chunk_size = sf.chunk_size;
		if (store_each_slot(&sf, count_slot, &tmp) == 0)
			*fs = tmp;
	}
	store_file_close(&sf);
}

void cache_status(struct cache *c, struct efs_inode *ino, struct cache_file_status *fs)
{
	struct cache_file *e = NULL;
	struct store_key k;
	bool have_key = false, from_disk = true;
	struct stat st;

	*fs = (struct cache_file_status){.state = CACHE_FILE_UNCACHED,
					 .chunk_size = (uint32_t)c->cfg->chunk_size};
	/* The record's size wins if there is one. */
	if (S_ISREG(ino->type) && c->src.stat_named(c->src.arg, ino, &st) == 0)
		fs->size = (uint64_t)st.st_size;
	if (S_ISREG(ino->type) && cache_key_of(c, ino->dev, (uint64_t)ino->ino, &k) == 0) {
		have_key = true;
		e = entry_get(c, &k, true);
	}
	if (e) {
		pthread_mutex_lock(&e->mu);
		entry_check_store_gen_locked(c, e);
		if (e->loaded) {
			fs->size = e->sf.id.size;
			fs->chunks = e->sf.nchunks;
			fs->chunk_size = e->sf.chunk_size;
			for (uint32_t i = 0; i < e->map.cap; i++) {
				struct chunk *ch = e->map.slot[i];

				if (!ch || !ch->len)
					continue;
				fs->chunks_cached++;
				fs->cached_bytes += ch->len;
				if (ch->state == CH_VERIFIED)
					fs->chunks_verified++;
			}
			fs->state = e->bypass	   ? CACHE_FILE_STALE
				    : e->validated ? CACHE_FILE_VALID
						   : CACHE_FILE_UNVALIDATED;
			from_disk = false;
		} else {
			from_disk = e->rec->on_disk || !evict_ready(c->ev);
		}
		fs->last_validated = e->validated_wall;
		pthread_mutex_unlock(&e->mu);
		entry_put(c, e);
	}
	if (have_key && from_disk)
		status_from_disk(c, &k, fs);
}

void cache_usage(struct cache *c, struct cache_usage *u)
{
	u->entries = cache_table_count(c);
	u->usage_bytes = evict_usage(c->ev);
	u->size_bytes = evict_limit(c->ev);
	u->write_behind_pending = __atomic_load_n(&c->wb_pending, __ATOMIC_ACQUIRE);
	u->index_ready = evict_ready(c->ev);
	u->cache_dir = store_path(c->store);
}

/* The entry of key with a reference, if the table knows the key or (before
 * the index is complete) its record is on disk: asking about files never
 * cached (every unlink, an evict of a big tree) must not grow the table. */
static struct cache_file *entry_of_key(struct cache *c, const struct store_key *k)
{
	struct cache_file *e = entry_get(c, k, true);

	if (e || evict_ready(c->ev) || !store_has_record(c->store, k))
		return e;
	return entry_get(c, k, false);
}

/* Remove the record of key (efscachectl evict). */
static int evict_key(struct cache *c, const struct store_key *k, uint64_t *bytes,
		     uint64_t *chunks)
{
	struct cache_file *e = entry_of_key(c, k);
	int r = 0;

	if (!e)
		return 0; /* nothing cached */
	pthread_mutex_lock(&e->mu);
	entry_check_store_gen_locked(c, e);
	entry_wait_quiet_locked(e);
	/* After the wait: a passthrough open may have come meanwhile. */
	if (pt_holds(&e->pt)) {
		r = -EBUSY; /* the kernel reads its data file (passthrough) */
		goto out;
	}
	if (entry_load_locked(c, e) == 0 && e->loaded) {
		for (uint32_t i = 0; i < e->map.cap; i++) {
			struct chunk *ch = e->map.slot[i];

			if (ch && ch->len) {
				*bytes += ch->len;
				(*chunks)++;
			}
		}
	}
	/* Whole: its data file may back a passthrough open of a daemon
	 * before this one (cache_int.h).  Open handles cache again. */
	if (e->loaded || e->rec->on_disk) {
		bool keep = e->loaded && e->validated && !e->bypass;
		struct store_identity id = e->sf.id;

		entry_remove_record_locked(c, e);
		if (keep && store_prepare(&id, (uint32_t)c->cfg->chunk_size, &e->sf) == 0) {
			e->loaded = true;
			e->need_create = true;
		}
	}
	entry_release_locked(c, e);
out:
	pthread_mutex_unlock(&e->mu);
	entry_put(c, e);
	return r;
}

int cache_evict_ino(struct cache *c, uint64_t src_ino, uint64_t *bytes, uint64_t *chunks)
{
	dev_t devs[16];
	unsigned n = cache_other_devs(c, devs, 16);
	struct store_key k;
	int r = 0, rr;

	if (store_key_of(c->cfg->source, 0, src_ino, &k) == 0)
		r = evict_key(c, &k, bytes, chunks);
	for (unsigned i = 0; i < n; i++)
		if (store_key_of(c->cfg->source, (uint64_t)devs[i], src_ino, &k) == 0 &&
		    (rr = evict_key(c, &k, bytes, chunks)) < 0)
			r = rr;
	return r;
}

void cache_source_gone(struct cache *c, dev_t src_dev, uint64_t src_ino)
{
	struct store_key k;
	struct cache_file *e;

	if (cache_key_of(c, src_dev, src_ino, &k) < 0 || !(e = entry_of_key(c, &k)))
		return;
	pthread_mutex_lock(&e->mu);
	entry_settle_condemned_locked(c, e);
	/* Give back its chunks' and metadata's space now, even if a fetch or
	 * a reply uses the record (an unlink must not wait for a slow
	 * source): unlinking changes no bytes, and open fds keep them. */
	if (e->loaded && entry_quiet(e)) {
		if (entry_remove_record_locked(c, e))
			stats_add(c->stats, ST_records_gone, 1);
	} else if (e->rec->on_disk || !evict_ready(c->ev)) {
		if (store_remove(c->store, &e->key) > 0)
			stats_add(c->stats, ST_records_gone, 1);
		e->rec->on_disk = false;
		evict_del(c->ev, &e->rec->lru);
	}
	/* Fds still open on the deleted file read it from the source; an open
	 * of a new file that gets the inode number validates and starts over. */
	e->bypass = true;
	e->validated = false;
	pthread_mutex_unlock(&e->mu);
	entry_put(c, e);
}

/* ---- verify ------------------------------------------------------------------ */

struct idx_list {
	uint32_t *v;
	uint32_t n;
};

/* The chunks of e on disk, by index (e->mu held). */
static int stored_chunks_locked(struct cache_file *e, struct idx_list *l)
{
	l->n = 0;
	l->v = malloc((e->nstored ? e->nstored : 1) * sizeof(*l->v));
	if (!l->v)
		return -ENOMEM;
	for (uint32_t i = 0; i < e->map.cap && l->n < e->nstored; i++)
		if (e->map.slot[i] && e->map.slot[i]->len)
			l->v[l->n++] = e->map.slot[i]->idx;
	return 0;
}

/* A bad chunk: dropped from a record never complete.  A complete record's
 * data file never loses bytes (it may back a passthrough open, of this
 * daemon or one before it): while the kernel reads it through passthrough
 * the entry goes to bypass (new opens are refused, and the record is reset
 * after the last passthrough open); else the chunk is left unverified, and
 * the next reader of it, failing the check, writes the right bytes over
 * the bad ones. */
static void verify_bad_locked(struct cache *c, struct cache_file *e, struct chunk *ch,
			      uint8_t was)
{
	e->busy--;
	if (pt_holds(&e->pt)) {
		ch->state = was;
		entry_chunk_stored_locked(e, ch);
		e->bypass = true;
	} else if (entry_complete(e)) {
		ch->state = CH_PRESENT;
		entry_chunk_stored_locked(e, ch);
	} else {
		ch->state = was;
		entry_drop_chunk_locked(c, e, ch);
	}
}

/* Verify the chunks of one entry; e->mu held.  Returns fn's non-zero
 * result if it asked to stop. */
static int verify_entry_locked(struct cache *c, struct cache_file *e,
			       struct cache_verify_report *rep, cache_progress_fn fn, void *arg)
{
	struct idx_list l = {0};
	void *buf = NULL;
	uint64_t gen;
	int stop = 0;

	entry_check_store_gen_locked(c, e);
	if (!e->loaded || e->need_create || stored_chunks_locked(e, &l) < 0)
		return 0;
	buf = malloc(e->sf.chunk_size);
	gen = e->gen;
	for (uint32_t k = 0; buf && k < l.n && !stop; k++) {
		struct chunk *ch;
		struct store_slot slot;
		uint8_t was;
		int r;

		while ((ch = chunk_get(e, l.v[k])) && (ch->state == CH_BUSY || ch->pins) &&
		       e->gen == gen)
			pthread_cond_wait(&e->cv, &e->mu);
		if (e->gen != gen)
			break; /* unloaded, reset or removed meanwhile */
		if (!ch || (ch->state != CH_PRESENT && ch->state != CH_VERIFIED))
			continue;
		was = ch->state;
		ch->state = CH_BUSY; /* ours: nothing frees or changes it meanwhile */
		chunk_unlist(e, ch);
		e->busy++;
		slot = (struct store_slot){.hash = ch->hash, .len = ch->len};
		pthread_mutex_unlock(&e->mu);
		r = store_verify_chunk(&e->sf, ch->idx, &slot, buf, NULL);
		pthread_mutex_lock(&e->mu);
		rep->chunks_checked++;
		rep->bytes_checked += slot.len;
		stats_add(c->stats, ST_chunks_verified, 1);
		if (r == 0) {
			ch->state = was == CH_PRESENT && c->cfg->verify != VERIFY_ALWAYS ? CH_VERIFIED
											 : was;
			entry_chunk_stored_locked(e, ch);
			e->busy--;
		} else {
			/* A read error counts as bad too: the chunk is fetched
			 * again rather than trusted. */
			rep->chunks_bad++;
			stats_add(c->stats, ST_checksum_mismatches, 1);
			verify_bad_locked(c, e, ch, was);
		}
		pthread_cond_broadcast(&e->cv);
		if (fn) {
			/* Without the entry's lock: fn may write to a socket. */
			pthread_mutex_unlock(&e->mu);
			stop = fn(rep, arg);
			pthread_mutex_lock(&e->mu);
		}
		if (e->gen != gen)
			break;
	}
	free(l.v);
	free(buf);
	return stop;
}

int cache_verify_all(struct cache *c, struct cache_verify_report *rep, cache_progress_fn fn,
		     void *arg)
{
	size_t n;
	struct store_key_bin *keys = cache_table_keys(c, &n);
	int stop = 0;

	memset(rep, 0, sizeof(*rep));
	if (!keys)
		return 0;
	/* The total from what is on disk, without loading anything. */
	for (size_t i = 0; i < n; i++) {
		struct cache_file_status fs = {0};
		struct store_key k;
		struct cache_file *e;

		store_key_unpack(&keys[i], &k);
		e = entry_get(c, &k, true);
		if (!e)
			continue;
		pthread_mutex_lock(&e->mu);
		if (e->loaded) {
			rep->chunks_total += e->nstored;
			pthread_mutex_unlock(&e->mu);
		} else {
			pthread_mutex_unlock(&e->mu);
			status_from_disk(c, &k, &fs);
			rep->chunks_total += fs.chunks_cached;
		}
		entry_put(c, e);
	}
	if (fn)
		stop = fn(rep, arg);
	for (size_t i = 0; i < n && !stop; i++) {
		struct store_key k;
		struct cache_file *e;
		bool was_loaded;

		store_key_unpack(&keys[i], &k);
		e = entry_get(c, &k, true);
		if (!e)
			continue;
		pthread_mutex_lock(&e->mu);
		entry_check_store_gen_locked(c, e);
		was_loaded = e->loaded;
		if (entry_quiet(e) && entry_load_locked(c, e) == 0)
			stop = verify_entry_locked(c, e, rep, fn, arg);
		/* Memory follows use: what verify loaded goes again. */
		if (!was_loaded && e->loaded && !e->opens && !e->jobs && entry_quiet(e))
			entry_unload_locked(c, e);
		pthread_mutex_unlock(&e->mu);
		entry_put(c, e);
	}
	free(keys);
	return stop;
}
