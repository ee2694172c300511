/* cache_admin.c - what efscachectl asks of the cache.
 *
 * The status of one file (from its entry, or read from disk without loading
 * it, so a query neither grows the table nor moves the LRU), the cache's
 * usage, eviction of one file, the removal of a record whose source file
 * lost its last name, and a verify of every cached chunk.  Runs on FUSE and
 * control threads.  Locks: e->mu per entry and c->table_mu only to find
 * entries; verify drops e->mu while it reads a chunk and while it reports
 * progress (order: cache_int.h).
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

/* A record on disk that no entry has loaded: read, not loaded, so that a
 * query neither grows the table nor moves chunks in the LRU. */
static void status_from_disk(struct cache *c, const struct store_key *k,
			     struct cache_file_status *fs)
{
	struct store_slot *slots = NULL;
	struct store_file sf;

	if (store_load(c->store, k, &sf, &slots) < 0)
		return;
	if (sf.chunk_size == c->cfg->chunk_size) {
		fs->state = CACHE_FILE_UNVALIDATED;
		fs->size = sf.id.size;
		fs->chunks = sf.nchunks;
		fs->chunk_size = sf.chunk_size;
		for (uint32_t i = 0; i < sf.nchunks; i++) {
			if (!slots[i].len)
				continue;
			fs->chunks_cached++;
			fs->cached_bytes += slots[i].len;
		}
	}
	free(slots);
	store_file_close(&sf);
}

void cache_status(struct cache *c, struct efs_inode *ino, struct cache_file_status *fs)
{
	struct cache_file *e = NULL;
	struct store_key k;
	bool have_key = false;
	bool tried = false;
	struct stat st;

	*fs = (struct cache_file_status){.state = CACHE_FILE_UNCACHED,
					 .chunk_size = (uint32_t)c->cfg->chunk_size};
	/* The record's size wins if there is one. */
	if (S_ISREG(ino->type) && c->src.stat_named(c->src.arg, ino, &st) == 0)
		fs->size = (uint64_t)st.st_size;
	if (S_ISREG(ino->type) && store_key_of(c->cfg->source, (uint64_t)ino->ino, &k) == 0) {
		have_key = true;
		e = cache_table_find(c, &k);
	}
	if (e) {
		pthread_mutex_lock(&e->mu);
		if (e->loaded) {
			fs->size = e->sf.id.size;
			fs->chunks = e->sf.nchunks;
			fs->chunk_size = e->sf.chunk_size;
			for (uint32_t i = 0; i < fs->chunks; i++) {
				if (e->chunks[i].state == CH_ABSENT || !e->chunks[i].len)
					continue;
				fs->chunks_cached++;
				fs->cached_bytes += e->chunks[i].len;
				if (e->chunks[i].state == CH_VERIFIED)
					fs->chunks_verified++;
			}
			fs->state = e->bypass	   ? CACHE_FILE_STALE
				    : e->validated ? CACHE_FILE_VALID
						   : CACHE_FILE_UNVALIDATED;
		}
		fs->last_validated = e->validated_wall;
		tried = e->load_tried;
		pthread_mutex_unlock(&e->mu);
	}
	if (have_key && fs->state == CACHE_FILE_UNCACHED && !tried)
		status_from_disk(c, &k, fs);
}

void cache_usage(struct cache *c, struct cache_usage *u)
{
	pthread_mutex_lock(&c->table_mu);
	u->entries = c->nentries;
	pthread_mutex_unlock(&c->table_mu);
	u->usage_bytes = evict_usage(c->ev);
	u->size_bytes = evict_limit(c->ev);
	u->write_behind_pending = __atomic_load_n(&c->wb_pending, __ATOMIC_ACQUIRE);
	u->cache_dir = store_path(c->store);
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
	if (pt_holds(&e->pt)) {
		pthread_mutex_unlock(&e->mu);
		return -EBUSY; /* the kernel reads its data file (passthrough) */
	}
	entry_load_locked(c, e, false);
	entry_check_store_gen_locked(c, e);
	entry_wait_quiet_locked(e);
	entry_reopen_locked(c, e);
	for (uint32_t i = 0; e->loaded && i < e->sf.nchunks; i++) {
		struct chunk *ch = &e->chunks[i];

		if (ch->state != CH_PRESENT && ch->state != CH_VERIFIED)
			continue;
		*bytes += entry_drop_chunk_locked(c, e, ch, false);
		(*chunks)++;
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
	if (r > 0)
		stats_add(c->stats, ST_records_gone, 1);
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
		struct store_slot slot;
		uint8_t was;
		int r;

		while (ch->state == CH_BUSY || ch->pins)
			pthread_cond_wait(&e->cv, &e->mu);
		if (!e->loaded || (ch->state != CH_PRESENT && ch->state != CH_VERIFIED))
			continue;
		was = ch->state;
		ch->state = CH_BUSY;
		e->busy++;
		slot = (struct store_slot){.hash = ch->hash, .len = ch->len};
		pthread_mutex_unlock(&e->mu);
		r = store_verify_chunk(&e->sf, i, &slot, buf, NULL);
		pthread_mutex_lock(&e->mu);
		rep->chunks_checked++;
		rep->bytes_checked += slot.len;
		stats_add(c->stats, ST_chunks_verified, 1);
		ch->state = was;
		if (r == 0) {
			if (was == CH_PRESENT && c->cfg->verify != VERIFY_ALWAYS)
				ch->state = CH_VERIFIED;
		} else {
			/* A read error counts as bad too: the chunk is fetched
			 * again rather than trusted. */
			rep->chunks_bad++;
			stats_add(c->stats, ST_checksum_mismatches, 1);
			if (pt_holds(&e->pt))
				/* Passthrough reads the data file: it stays as
				 * it is; new opens are refused (bypass) until
				 * the record is reset after the last one. */
				e->bypass = true;
			else
				entry_drop_chunk_locked(c, e, ch, false);
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
