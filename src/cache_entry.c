/* cache_entry.c - the entry table and validation at open.
 *
 * An entry (struct cache_file) is found by its store key in c->table and
 * lives until the daemon exits.  This file loads an entry's record from
 * cache_dir once, checks it against the source at open (one round trip,
 * or none while the metadata policy trusts the last check), resets it when
 * the source changed, and gives its fds back when no handle, fetch or
 * reply uses it.  Locks: c->table_mu for the table, e->mu for everything
 * in an entry; the source is asked with no lock held (order: cache_int.h).
 */
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

/* ---- entries ---------------------------------------------------------- */

static size_t bucket_of(const struct cache *c, const struct store_key *k)
{
	size_t h = 0;

	/* The key is a hash already: half of its digits spread it enough;
	 * nbuckets is a power of two. */
	for (int i = 0; i < 16; i++)
		h = h * 31 + (unsigned char)k->hex[i];
	return h & (c->nbuckets - 1);
}

/* Find or add the entry of key (references are counted by the caller).
 * Caller holds table_mu. */
struct cache_file *cache_table_get_locked(struct cache *c, const struct store_key *k,
					   bool *created)
{
	size_t b = bucket_of(c, k);
	struct cache_file *e;

	*created = false;
	for (e = c->buckets[b]; e; e = e->next)
		if (!memcmp(e->key.hex, k->hex, sizeof(k->hex)))
			return e;
	e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->key = *k;
	e->sf.meta_fd = e->sf.data_fd = -1;
	e->fetch_fd = -1;
	pthread_mutex_init(&e->mu, NULL);
	pthread_cond_init(&e->cv, NULL);
	e->next = c->buckets[b];
	c->buckets[b] = e;
	c->nentries++;
	*created = true;
	return e;
}

void entry_free_chunks_locked(struct cache *c, struct cache_file *e)
{
	if (e->chunks)
		for (uint32_t i = 0; i < e->sf.nchunks; i++)
			evict_del(c->ev, &e->chunks[i].lru);
	free(e->chunks);
	e->chunks = NULL;
}

static int alloc_chunks_locked(struct cache_file *e)
{
	e->chunks = calloc(e->sf.nchunks ? e->sf.nchunks : 1, sizeof(*e->chunks));
	if (!e->chunks)
		return -ENOMEM;
	for (uint32_t i = 0; i < e->sf.nchunks; i++) {
		e->chunks[i].e = e;
		e->chunks[i].idx = i;
	}
	return 0;
}

/* Wait until nothing uses the entry's files or chunks. */
void entry_wait_quiet_locked(struct cache_file *e)
{
	while (e->busy || e->pins)
		pthread_cond_wait(&e->cv, &e->mu);
}

/* Nothing uses the entry: give back its fds (the record's and the fetch
 * fd), so that only files in use hold fds however many the cache knows.
 * They are opened again by the next cache_open. */
void entry_release_fds_locked(struct cache_file *e)
{
	if (e->opens || e->busy || e->pins || e->creating)
		return;
	store_file_close(&e->sf);
	if (e->fetch_fd >= 0) {
		close(e->fetch_fd);
		e->fetch_fd = -1;
	}
}

uint32_t entry_drop_chunk_locked(struct cache *c, struct cache_file *e, struct chunk *ch,
				 bool lru_locked)
{
	const uint32_t len = ch->len;

	if (e->sf.meta_fd >= 0 && e->sf.data_fd >= 0) /* else the record is gone */
		store_drop_chunk(&e->sf, ch->idx);
	if (lru_locked)
		evict_unlink_locked(c->ev, &ch->lru);
	else
		evict_del(c->ev, &ch->lru);
	if (ch->unread)
		stats_add(c->stats, ST_prefetch_unused_bytes, len);
	ch->unread = false;
	ch->len = 0;
	if (ch->state != CH_BUSY)
		ch->state = CH_ABSENT;
	return len;
}

/* Forget the record in memory (its files stay as they are). */
void entry_unload_locked(struct cache *c, struct cache_file *e)
{
	entry_wait_quiet_locked(e);
	entry_free_chunks_locked(c, e);
	store_file_close(&e->sf);
	e->gen++;
	if (e->meta_bytes)
		evict_account(c->ev, -(int64_t)e->meta_bytes);
	e->meta_bytes = 0;
	e->loaded = false;
	e->need_create = false;
}

/* Account the record's metadata file (its data is accounted per chunk). */
static void account_meta_locked(struct cache *c, struct cache_file *e)
{
	struct store_file m = e->sf;

	m.data_fd = -1;
	e->meta_bytes = store_file_usage(&m);
	if (e->meta_bytes < BLOCK)
		e->meta_bytes = BLOCK;
	evict_account(c->ev, (int64_t)e->meta_bytes);
}

/* Load the on-disk record once.  Chunks found go to the cold end of the LRU
 * when `cold` (startup index), else the hot end. */
void entry_load_locked(struct cache *c, struct cache_file *e, bool cold)
{
	struct store_slot *slots = NULL;
	int r;

	if (e->load_tried)
		return;
	e->load_tried = true;
	r = store_load(c->store, &e->key, &e->sf, &slots);
	if (r == -EBADMSG) {
		log_debug("cache: record %s is corrupt, removing it", e->key.hex);
		store_remove(c->store, &e->key);
	}
	if (r < 0)
		return;
	if (e->sf.chunk_size != c->cfg->chunk_size || alloc_chunks_locked(e) < 0) {
		/* Another chunk_size: the next open replaces the record. */
		free(slots);
		store_file_close(&e->sf);
		return;
	}
	e->store_gen = cache_store_gen(c);
	e->loaded = true;
	account_meta_locked(c, e);
	for (uint32_t i = 0; i < e->sf.nchunks; i++) {
		struct chunk *ch = &e->chunks[i];

		if (!slots[i].len)
			continue;
		ch->hash = slots[i].hash;
		ch->len = slots[i].len;
		ch->state = CH_PRESENT;
		if (cold)
			evict_add_cold(c->ev, &ch->lru, round_block(ch->len));
		else
			evict_add(c->ev, &ch->lru, round_block(ch->len), false);
	}
	free(slots);
}

void cache_identity_of(const struct stat *st, struct store_identity *id)
{
	id->ino = st->st_ino;
	id->size = (uint64_t)st->st_size;
	id->mtime_sec = st->st_mtim.tv_sec;
	id->mtime_nsec = (uint32_t)st->st_mtim.tv_nsec;
	id->ctime_sec = st->st_ctim.tv_sec;
	id->ctime_nsec = (uint32_t)st->st_ctim.tv_nsec;
}

/* Coherency check: stale unless every field matches. */
bool cache_identity_equal(const struct store_identity *a, const struct store_identity *b)
{
	return a->ino == b->ino && a->size == b->size && a->mtime_sec == b->mtime_sec &&
	       a->mtime_nsec == b->mtime_nsec && a->ctime_sec == b->ctime_sec &&
	       a->ctime_nsec == b->ctime_nsec;
}

/* Replace the record with an empty one for id. */
static void reset_locked(struct cache *c, struct cache_file *e, const struct store_identity *id)
{
	int r;

	if (pt_holds(&e->pt)) {
		/* The kernel reads the data file (passthrough): its bytes may
		 * not change.  Nothing is served from it meanwhile; the first
		 * open after the last passthrough open resets it. */
		e->bypass = true;
		return;
	}
	if (e->loaded) {
		entry_unload_locked(c, e);
		stats_add(c->stats, ST_stale_dropped, 1);
	}
	e->bypass = false;
	e->store_gen = cache_store_gen(c);
	/* The record is written with its first chunk (ensure_record), off the
	 * open's reply path: a file opened and never read costs no disk. */
	r = store_prepare(id, (uint32_t)c->cfg->chunk_size, &e->sf);
	if (r == 0)
		r = alloc_chunks_locked(e);
	if (r < 0) {
		/* Cache trouble: this file is read from the source for now. */
		log_once(c->logged_store, LOG_LVL_WARN,
			 "cache: cannot create a record in cache_dir '%s': %s; reading from the "
			 "source until it works again",
			 store_path(c->store), strerror(-r));
		stats_add(c->stats, r == -ENOSPC ? ST_cache_enospc : ST_cache_io_errors, 1);
		e->bypass = true;
		return;
	}
	e->loaded = true;
	e->need_create = true;
	e->meta_bytes = BLOCK;
	evict_account(c->ev, (int64_t)e->meta_bytes);
}

static struct cache_file *entry_of_inode(struct cache *c, struct efs_inode *ino)
{
	struct cache_file *e;
	bool created;

	pthread_mutex_lock(&ino->lock);
	e = ino->cf;
	if (!e) {
		struct store_key k;

		if (store_key_of(c->cfg->source, (uint64_t)ino->ino, &k) == 0) {
			pthread_mutex_lock(&c->table_mu);
			e = cache_table_get_locked(c, &k, &created);
			if (e)
				e->refs++;
			pthread_mutex_unlock(&c->table_mu);
			ino->cf = e;
		}
	}
	pthread_mutex_unlock(&ino->lock);
	return e;
}

void cache_inode_release(struct efs_inode *ino, void *arg)
{
	struct cache *c = arg;
	struct cache_file *e = ino->cf;
	bool last;

	if (!e)
		return;
	ino->cf = NULL;
	pthread_mutex_lock(&c->table_mu);
	last = --e->refs == 0;
	pthread_mutex_unlock(&c->table_mu);
	if (!last)
		return;
	/* No inode uses the entry: give back its fetch fd once no fetch runs. */
	pthread_mutex_lock(&e->mu);
	entry_wait_quiet_locked(e);
	pthread_mutex_lock(&c->table_mu);
	last = e->refs == 0;
	pthread_mutex_unlock(&c->table_mu);
	if (last)
		entry_release_fds_locked(e);
	pthread_mutex_unlock(&e->mu);
}

/* Caller holds e->mu.  Forget files of a cache_dir that was recreated. */
void entry_check_store_gen_locked(struct cache *c, struct cache_file *e)
{
	if (e->loaded && e->store_gen != cache_store_gen(c))
		entry_unload_locked(c, e);
}

/* The record's fds, reopened if they were given back.  A record that is
 * gone from disk is forgotten (the next open creates a new one). */
int entry_reopen_locked(struct cache *c, struct cache_file *e)
{
	int r;

	if (!e->loaded || e->need_create || e->creating ||
	    (e->sf.meta_fd >= 0 && e->sf.data_fd >= 0))
		return 0;
	r = store_file_reopen(c->store, &e->key, &e->sf);
	if (r < 0) {
		entry_unload_locked(c, e);
		e->load_tried = false;
	}
	return r;
}

static bool fully_cached_locked(const struct cache_file *e)
{
	if (!e->loaded || e->bypass)
		return false;
	for (uint32_t i = 0; i < e->sf.nchunks; i++)
		if (e->chunks[i].state == CH_ABSENT || e->chunks[i].state == CH_BUSY)
			return false;
	return true;
}

/* Fetches read the source with O_DIRECT where it allows it, small files
 * too.  The bytes then come from the server, not from the source client's
 * page cache: a fetch fd lives as long as some open of the inode does, and
 * nothing revalidates that page cache meanwhile, so a buffered fd could
 * hand a later version's fetch pages read while another host rewrote the
 * file, and the cache would store them under the new identity.  (It would
 * also only hold a third copy of data we cache ourselves, and on NFS a
 * direct read of a chunk is sent as parallel RPCs.)  A source that refuses
 * O_DIRECT is read buffered. */
int cache_open_fetch(struct cache *c, struct efs_inode *ino, bool named)
{
	int (*op)(void *, struct efs_inode *, int) = named ? c->src.open_named : c->src.open_object;
	int fd;

	fd = op(c->src.arg, ino, O_RDONLY | O_DIRECT);
	if (fd == -EINVAL)
		fd = op(c->src.arg, ino, O_RDONLY);
	return fd;
}

int cache_open(struct cache *c, struct efs_inode *ino, int open_fd, const struct meta_attr *attr,
	       bool *keep_cache)
{
	struct store_identity id;
	struct cache_file *e;
	struct timespec now;
	struct stat st;
	bool trusted, full;
	int r, fd = -1;

	*keep_cache = false;
	if (!S_ISREG(ino->type))
		return 0;
	e = entry_of_inode(c, ino);
	if (!e)
		return 0; /* no memory for an entry: the file is read uncached */

	clock_gettime(CLOCK_MONOTONIC, &now);
	pthread_mutex_lock(&e->mu);
	entry_load_locked(c, e, false);
	entry_check_store_gen_locked(c, e);
	entry_reopen_locked(c, e);
	trusted = e->loaded && !e->bypass &&
		  meta_open_trusts(&c->policy, attr,
				   e->validated ? meta_elapsed(&e->validated_at, &now) : -1.0, &now);
	if (trusted)
		e->opens++;
	full = fully_cached_locked(e);
	pthread_mutex_unlock(&e->mu);
	if (trusted) {
		*keep_cache = true;
		return 0;
	}

	/* One round trip, without holding the entry: the source may be slow. */
	if (open_fd >= 0) {
		r = c->src.stat_open(c->src.arg, open_fd, &st);
	} else if (full) {
		r = c->src.stat_named(c->src.arg, ino, &st);
	} else {
		fd = cache_open_fetch(c, ino, true);
		r = fd < 0 ? fd : c->src.stat_open(c->src.arg, fd, &st);
	}
	if (r == 0 && (st.st_ino != ino->ino || st.st_dev != ino->dev))
		r = -ESTALE;
	if (r < 0) {
		if (fd >= 0)
			close(fd);
		/* Deleted or replaced on another host: give its space back now
		 * (the kernel may never open this inode again to tell us). */
		if (r == -ESTALE && c->src.object_gone && c->src.object_gone(c->src.arg, ino)) {
			log_debug("cache: source file of inode %llu is gone: record removed",
				  (unsigned long long)ino->ino);
			cache_source_gone(c, (uint64_t)ino->ino);
		}
		/* The record's fds, opened above, are not kept for a failed open. */
		pthread_mutex_lock(&e->mu);
		entry_release_fds_locked(e);
		pthread_mutex_unlock(&e->mu);
		return r; /* EIO etc. delete nothing */
	}
	cache_identity_of(&st, &id);
	/* (stat_named told the layer above itself.) */
	if ((open_fd >= 0 || !full) && c->src.validated)
		c->src.validated(c->src.arg, ino, &st);

	pthread_mutex_lock(&e->mu);
	stats_add(c->stats, ST_validations, 1);
	entry_check_store_gen_locked(c, e);
	entry_reopen_locked(c, e);
	if (e->loaded && !e->bypass && cache_identity_equal(&e->sf.id, &id)) {
		*keep_cache = true;
	} else {
		reset_locked(c, e, &id);
		*keep_cache = false;
	}
	e->validated = true;
	e->validated_at = now;
	e->validated_wall = time(NULL);
	if (fd >= 0 && e->fetch_fd < 0) {
		e->fetch_fd = fd;
		fd = -1;
	}
	e->opens++;
	pthread_mutex_unlock(&e->mu);
	if (fd >= 0)
		close(fd);
	return 0;
}

void cache_close(struct cache *c, struct efs_inode *ino)
{
	struct cache_file *e = ino->cf;

	(void)c;
	if (!e || !S_ISREG(ino->type))
		return;
	pthread_mutex_lock(&e->mu);
	if (e->opens)
		e->opens--;
	entry_release_fds_locked(e);
	pthread_mutex_unlock(&e->mu);
}

void cache_written(struct cache *c, struct efs_inode *ino)
{
	struct cache_file *e = ino->cf;

	if (!e)
		return;
	pthread_mutex_lock(&e->mu);
	e->bypass = true;
	pthread_mutex_unlock(&e->mu);
}

/* ---- kernel passthrough (passthrough.h) ------------------------------- */

int cache_pt_open(struct cache *c, struct efs_inode *ino, void *req, bool ro, bool unchanged,
		  int *backing_id)
{
	struct cache_file *e;
	bool eligible;
	int mode;

	*backing_id = 0;
	if (!S_ISREG(ino->type) || !(e = entry_of_inode(c, ino)))
		return PT_NONE;
	pthread_mutex_lock(&e->mu);
	/* Every chunk VERIFIED by this daemon (verify=always checks at every
	 * read, which the kernel would skip), the record on disk and of the
	 * current cache_dir. */
	eligible = ro && unchanged && c->cfg->verify != VERIFY_ALWAYS && e->loaded &&
		   e->validated && !e->need_create && !e->creating &&
		   e->store_gen == cache_store_gen(c) && fully_cached_locked(e) &&
		   entry_reopen_locked(c, e) == 0 && e->loaded;
	for (uint32_t i = 0; eligible && i < e->sf.nchunks; i++)
		eligible = e->chunks[i].state == CH_VERIFIED;
	mode = pt_open_locked(&e->pt, req, ro, unchanged, eligible, e->loaded ? e->sf.data_fd : -1,
			      e->sf.id.size, backing_id);
	pthread_mutex_unlock(&e->mu);
	return mode;
}

void cache_pt_close(struct cache *c, struct efs_inode *ino, void *req, int mode)
{
	struct cache_file *e = ino->cf;

	(void)c;
	if (!e || mode <= PT_NONE)
		return;
	pthread_mutex_lock(&e->mu);
	pt_release_locked(&e->pt, req, (enum pt_mode)mode);
	pthread_mutex_unlock(&e->mu);
}

/* The entry of key if the table has one; never makes one. */
struct cache_file *cache_table_find(struct cache *c, const struct store_key *k)
{
	struct cache_file *e;

	pthread_mutex_lock(&c->table_mu);
	for (e = c->buckets[bucket_of(c, k)]; e; e = e->next)
		if (!memcmp(e->key.hex, k->hex, sizeof(k->hex)))
			break;
	pthread_mutex_unlock(&c->table_mu);
	return e;
}
