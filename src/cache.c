/* cache.c - cache entries, validation at open, the read path.
 *
 * State
 *   c->table: store key -> struct cache_file, under c->table_mu.  Entries
 *   live until the daemon exits; an entry's record files may be removed by
 *   eviction and recreated by a later open.
 *   Each entry: identity and record fds (e->sf), one struct chunk per chunk,
 *   under e->mu.  Chunk states:
 *
 *     ABSENT --fetch--> BUSY --stored--> VERIFIED --evict--> ABSENT
 *     PRESENT (on disk, not yet checked by this daemon) --verify--> BUSY
 *         --ok--> VERIFIED, --mismatch--> refetch as above
 *
 *   BUSY belongs to exactly one thread; other readers of that chunk wait on
 *   e->cv and then use its result (one fetch per chunk).
 *
 * Invariants
 *   - A chunk's bytes are served from the data file only in VERIFIED (or
 *     PRESENT with verify=never), and only while pinned (ch->pins, e->pins).
 *   - e->sf fds and e->chunks change only in reset/drop, which first wait
 *     until no chunk is BUSY or pinned.
 *   - Data is never served for an identity other than the one validated at
 *     the last open: a change found at open resets the record (new header,
 *     all slots empty) before any chunk of the new identity is stored.
 *
 * Locks: e->mu -> c->table_mu, and e->mu -> LRU lock (evict.c).  Eviction
 * runs with the LRU lock held and only trylocks entries.
 */
#include "cache.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "checksum.h"
#include "ctlproto.h"
#include "evict.h"
#include "io.h"
#include "log.h"
#include "prefetch.h"
#include "source.h"
#include "store.h"

enum chunk_state { CH_ABSENT, CH_PRESENT, CH_VERIFIED, CH_BUSY };

struct chunk {
	struct lru_node lru; /* first: eviction gets back here from the node */
	struct cache_file *e;
	uint64_t hash;       /* slot: XXH3 of the chunk's bytes */
	uint32_t len;        /* slot: bytes in the chunk */
	uint32_t idx;
	uint16_t pins;       /* replies in flight from the data file */
	uint8_t state;
	bool queued;         /* a prefetch job for it is pending */
	bool unread;         /* stored by prefetch, not read since */
};

struct cache_file {
	struct store_key key;
	struct cache_file *next; /* table chain; protected by c->table_mu */
	unsigned refs;           /* inodes using it; protected by c->table_mu */

	pthread_mutex_t mu;
	pthread_cond_t cv;       /* chunk left BUSY, or pins dropped */
	/* All below protected by mu. */
	bool load_tried;         /* the on-disk record was looked for */
	bool loaded;             /* sf and chunks are valid */
	bool bypass;             /* serve from the source, cache nothing */
	bool validated;          /* checked against the source by this daemon */
	struct timespec validated_at; /* CLOCK_MONOTONIC */
	time_t validated_wall;
	struct store_file sf;
	struct chunk *chunks;    /* sf.nchunks of them */
	uint64_t store_gen;      /* c->store_gen when sf was opened */
	uint64_t meta_bytes;     /* accounted for the record's metadata */
	uint64_t gen;             /* bumped whenever sf/chunks are replaced */
	int fetch_fd;             /* source fd for fetches (O_DIRECT if allowed),
				   * open while file handles use the entry; -1 */
	unsigned opens;           /* file handles (cache_open without cache_close) */
	bool need_create;         /* sf is prepared in memory, not yet on disk */
	bool creating;            /* a thread is writing it (others wait on cv) */
	unsigned pins;
	unsigned busy;
};

struct cache {
	const struct efs_config *cfg;
	struct cache_source src;
	struct meta_policy policy;
	struct efs_stats *stats;
	struct store *store;
	struct evict *ev;
	struct prefetch *pf;
	struct prefetch *wb; /* write-behind: stores chunks after the reply */
	uint64_t wb_pending; /* atomic: chunks queued or being written behind */
	unsigned window; /* chunks to keep queued ahead of a sequential reader */

	pthread_mutex_t table_mu;
	struct cache_file **buckets; /* protected by table_mu */
	size_t nbuckets;
	uint64_t nentries;           /* protected by table_mu */

	uint64_t store_gen; /* atomic: bumped when cache_dir was recreated */

	pthread_t sweeper;
	bool sweeper_running;
	pthread_mutex_t sweep_mu;
	pthread_cond_t sweep_cv;
	bool stop;   /* protected by sweep_mu */
	bool poke;   /* protected by sweep_mu: check cache_dir now */

	bool logged_nospace, logged_io, logged_dir, logged_store; /* log once each */
	bool lost_lock; /* atomic: another daemon holds the recreated cache_dir */
};

#define BLOCK 4096ULL
/* Write-behind: one writer keeps the disk busy without competing with the
 * FUSE workers for the 2-4 cores of a typical host; 256 chunks queued
 * (at most 256 MiB with 1 MiB chunks, far less for small files) before
 * readers store their chunks themselves. */
#define WB_WORKERS 1
#define WB_QUEUE 256

static uint64_t round_block(uint64_t n)
{
	return (n + BLOCK - 1) & ~(BLOCK - 1);
}

static uint64_t gen_now(struct cache *c)
{
	return __atomic_load_n(&c->store_gen, __ATOMIC_ACQUIRE);
}

/* ---- entries ---------------------------------------------------------- */

static size_t bucket_of(const struct cache *c, const struct store_key *k)
{
	size_t h = 0;

	for (int i = 0; i < 16; i++)
		h = h * 31 + (unsigned char)k->hex[i];
	return h & (c->nbuckets - 1);
}

/* Find or add the entry of key; with take_ref, count a reference.  Caller
 * holds table_mu. */
static struct cache_file *table_get_locked(struct cache *c, const struct store_key *k,
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

static void free_chunks_locked(struct cache *c, struct cache_file *e)
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
static void wait_quiet_locked(struct cache_file *e)
{
	while (e->busy || e->pins)
		pthread_cond_wait(&e->cv, &e->mu);
}

/* Nothing uses the entry: give back its fds (the record's and the fetch
 * fd), so that only files in use hold fds however many the cache knows.
 * They are opened again by the next cache_open. */
static void release_fds_if_idle_locked(struct cache_file *e)
{
	if (e->opens || e->busy || e->pins || e->creating)
		return;
	store_file_close(&e->sf);
	if (e->fetch_fd >= 0) {
		close(e->fetch_fd);
		e->fetch_fd = -1;
	}
}

/* Forget the record in memory (its files stay as they are). */
static void unload_locked(struct cache *c, struct cache_file *e)
{
	wait_quiet_locked(e);
	free_chunks_locked(c, e);
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
static void load_locked(struct cache *c, struct cache_file *e, bool cold)
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
	e->store_gen = gen_now(c);
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

static void identity_of(const struct stat *st, struct store_identity *id)
{
	id->ino = st->st_ino;
	id->size = (uint64_t)st->st_size;
	id->mtime_sec = st->st_mtim.tv_sec;
	id->mtime_nsec = (uint32_t)st->st_mtim.tv_nsec;
	id->ctime_sec = st->st_ctim.tv_sec;
	id->ctime_nsec = (uint32_t)st->st_ctim.tv_nsec;
}

/* Coherency check: stale unless every field matches. */
static bool identity_equal(const struct store_identity *a, const struct store_identity *b)
{
	return a->ino == b->ino && a->size == b->size && a->mtime_sec == b->mtime_sec &&
	       a->mtime_nsec == b->mtime_nsec && a->ctime_sec == b->ctime_sec &&
	       a->ctime_nsec == b->ctime_nsec;
}

/* Replace the record with an empty one for id. */
static void reset_locked(struct cache *c, struct cache_file *e, const struct store_identity *id)
{
	int r;

	if (e->loaded) {
		unload_locked(c, e);
		stats_add(c->stats, ST_stale_dropped, 1);
	}
	e->bypass = false;
	e->store_gen = gen_now(c);
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
			e = table_get_locked(c, &k, &created);
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
	wait_quiet_locked(e);
	pthread_mutex_lock(&c->table_mu);
	last = e->refs == 0;
	pthread_mutex_unlock(&c->table_mu);
	if (last)
		release_fds_if_idle_locked(e);
	pthread_mutex_unlock(&e->mu);
}

/* Caller holds e->mu.  Forget files of a cache_dir that was recreated. */
static void check_store_gen_locked(struct cache *c, struct cache_file *e)
{
	if (e->loaded && e->store_gen != gen_now(c))
		unload_locked(c, e);
}

/* The record's fds, reopened if they were given back.  A record that is
 * gone from disk is forgotten (the next open creates a new one). */
static int reopen_locked(struct cache *c, struct cache_file *e)
{
	int r;

	if (!e->loaded || e->need_create || e->creating ||
	    (e->sf.meta_fd >= 0 && e->sf.data_fd >= 0))
		return 0;
	r = store_file_reopen(c->store, &e->key, &e->sf);
	if (r < 0) {
		unload_locked(c, e);
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

/* Fetches read the source with O_DIRECT where it allows it: the bytes go
 * into our chunk buffer without a copy in the source's page cache, which
 * would only hold a third copy of data we cache ourselves (and on NFS a
 * direct read of a chunk is sent as parallel RPCs).  Small files are read
 * buffered: one request either way. */
static int open_fetch(struct cache *c, struct efs_inode *ino, bool named, uint64_t size_hint)
{
	int (*op)(void *, struct efs_inode *, int) = named ? c->src.open_named : c->src.open_object;
	int fd = -EINVAL;

	if (size_hint > c->cfg->chunk_size)
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
	uint64_t size_hint;
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
	load_locked(c, e, false);
	check_store_gen_locked(c, e);
	reopen_locked(c, e);
	trusted = e->loaded && !e->bypass &&
		  meta_open_trusts(&c->policy, attr,
				   e->validated ? meta_elapsed(&e->validated_at, &now) : -1.0, &now);
	if (trusted)
		e->opens++;
	full = fully_cached_locked(e);
	size_hint = e->loaded ? e->sf.id.size : (uint64_t)(attr->seen ? attr->size : 0);
	pthread_mutex_unlock(&e->mu);
	if (trusted) {
		*keep_cache = true;
		return 0;
	}

	/* One round trip, without holding the entry: the source may be slow. */
	if (open_fd >= 0) {
		r = src_stat(open_fd, &st);
	} else if (full) {
		r = c->src.stat_named(c->src.arg, ino, &st);
	} else {
		fd = open_fetch(c, ino, true, size_hint);
		r = fd < 0 ? fd : src_stat(fd, &st);
	}
	if (r == 0 && (st.st_ino != ino->ino || st.st_dev != ino->dev))
		r = -ESTALE;
	if (r < 0) {
		if (fd >= 0)
			close(fd);
		return r; /* EIO etc. delete nothing */
	}
	identity_of(&st, &id);

	pthread_mutex_lock(&e->mu);
	stats_add(c->stats, ST_validations, 1);
	check_store_gen_locked(c, e);
	reopen_locked(c, e);
	if (e->loaded && !e->bypass && identity_equal(&e->sf.id, &id)) {
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
	release_fds_if_idle_locked(e);
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

/* ---- the read path ------------------------------------------------------ */

/* Append a memory segment; buf (if not NULL) is freed by cache_read_done.
 * Callers keep nseg below CACHE_MAX_SEGS (a request spans at most
 * 1 MiB / 64 KiB + 1 chunks). */
static void add_mem(struct cache_read *rd, void *buf, const void *mem, size_t len)
{
	if (buf)
		rd->bufs[rd->nbufs++] = buf;
	if (len)
		rd->seg[rd->nseg++] = (struct cache_seg){.fd = -1, .mem = mem, .len = len};
}

/* Read straight from the source, caching nothing. */
static ssize_t read_direct(struct cache *c, int src_fd, off_t off, size_t size,
			   struct cache_read *rd)
{
	void *buf;
	ssize_t n;

	if (src_fd < 0)
		return -EBADFD; /* the caller opens the handle's own fd */
	buf = malloc(size ? size : 1);
	if (!buf)
		return -ENOMEM;
	n = io_pread_full(src_fd, buf, size, off);
	if (n < 0) {
		free(buf);
		stats_add(c->stats, ST_source_errors, 1);
		return n;
	}
	stats_add(c->stats, ST_bytes_bypassed, (uint64_t)n);
	add_mem(rd, buf, buf, (size_t)n);
	return n;
}

static void note_cache_error(struct cache *c, int r)
{
	if (r == -ENOSPC || r == -EDQUOT) {
		stats_add(c->stats, ST_cache_enospc, 1);
		log_once(c->logged_nospace, LOG_LVL_WARN,
			 "cache: cache_dir '%s' is full (%s); reading from the source",
			 store_path(c->store), strerror(-r));
	} else {
		stats_add(c->stats, ST_cache_io_errors, 1);
		log_once(c->logged_io, LOG_LVL_WARN,
			 "cache: I/O on cache_dir '%s' failed (%s); reading from the source",
			 store_path(c->store), strerror(-r));
		pthread_mutex_lock(&c->sweep_mu);
		c->poke = true;
		pthread_cond_signal(&c->sweep_cv);
		pthread_mutex_unlock(&c->sweep_mu);
	}
}

/* Store a fetched chunk.  Called without e->mu; the chunk is BUSY (ours).
 * Returns true if it is now on disk with its slot. */
/* Make sure the record exists on disk with its fds open before a chunk is
 * written: create it if it was only prepared (one thread creates, others
 * wait), reopen it if its fds were given back.  Called without e->mu by
 * the owner of a BUSY chunk, so the entry cannot be reset meanwhile. */
static int ensure_record(struct cache *c, struct cache_file *e)
{
	struct store_identity id;
	struct store_file nf;
	int r;

	pthread_mutex_lock(&e->mu);
	while (e->creating)
		pthread_cond_wait(&e->cv, &e->mu);
	if (!e->need_create) {
		r = reopen_locked(c, e);
		if (r == 0 && (e->sf.meta_fd < 0 || e->sf.data_fd < 0))
			r = -EBADF;
		pthread_mutex_unlock(&e->mu);
		return r;
	}
	e->creating = true;
	id = e->sf.id;
	pthread_mutex_unlock(&e->mu);
	r = store_create(c->store, &e->key, &id, e->sf.chunk_size, &nf);
	pthread_mutex_lock(&e->mu);
	e->creating = false;
	if (r == 0) {
		e->sf.meta_fd = nf.meta_fd;
		e->sf.data_fd = nf.data_fd;
		e->need_create = false;
	}
	pthread_cond_broadcast(&e->cv);
	pthread_mutex_unlock(&e->mu);
	return r;
}

static bool store_chunk(struct cache *c, struct cache_file *e, uint32_t idx, const void *buf,
			uint32_t len, uint64_t hash)
{
	struct store_slot slot = {.hash = hash, .len = len};
	uint64_t bytes = round_block(len);
	int r;

	r = ensure_record(c, e);
	if (r < 0) {
		stats_add(c->stats, ST_fallbacks, 1);
		note_cache_error(c, r);
		return false;
	}
	r = evict_reserve(c->ev, bytes);
	if (r < 0) {
		stats_add(c->stats, ST_fallbacks, 1);
		note_cache_error(c, r);
		return false;
	}
	r = store_write_chunk(&e->sf, idx, buf, len, c->cfg->verify == VERIFY_NEVER);
	if (r == 0)
		r = store_set_slot(&e->sf, idx, &slot);
	if (r < 0) {
		store_drop_chunk(&e->sf, idx);
		evict_unreserve(c->ev, bytes);
		stats_add(c->stats, ST_fallbacks, 1);
		note_cache_error(c, r);
		return false;
	}
	return true;
}

#define ALIGN 4096ULL

/* Chunk buffers are aligned for O_DIRECT and sized to whole blocks. */
static void *chunk_buf(uint64_t len)
{
	void *p = NULL;

	return posix_memalign(&p, ALIGN, (len + ALIGN - 1) & ~(ALIGN - 1)) ? NULL : p;
}

/* Read `want` bytes at start (aligned) into buf (a chunk_buf).  With an
 * O_DIRECT fd, lengths are rounded up to blocks; the source returns short at
 * its end.  If the source refuses a direct read, O_DIRECT is turned off on
 * the fd and the read goes on buffered. */
static ssize_t fetch_read(int fd, void *buf, uint32_t want, uint64_t start)
{
	int fl = fcntl(fd, F_GETFL);
	bool direct = fl >= 0 && (fl & O_DIRECT);
	size_t done = 0, len = direct ? (size_t)((want + ALIGN - 1) & ~(ALIGN - 1)) : want;

	while (done < want) {
		ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(start + done));

		if (n < 0 && errno == EINTR)
			continue;
		if ((n < 0 && errno == EINVAL && direct) ||
		    (n > 0 && direct && ((done + (size_t)n) % ALIGN) && done + (size_t)n < want)) {
			/* Unaligned leftovers, a source without O_DIRECT, or a
			 * short direct read mid-file: go buffered. */
			if (fcntl(fd, F_SETFL, fl & ~O_DIRECT) < 0)
				return -errno;
			direct = false;
			len = want;
			if (n > 0)
				done += (size_t)n;
			continue;
		}
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)(done < want ? done : want);
}

/* The fetch fd of the entry, opened (by the object, not the name: the
 * handles that read it opened this very file) if it has none.  The caller
 * owns a BUSY chunk, so the entry cannot be reset meanwhile; e->mu held on
 * entry and exit, dropped while opening. */
static int fetch_fd_locked(struct cache *c, struct cache_file *e, struct efs_inode *ino)
{
	uint64_t size = e->sf.id.size;
	int fd;

	if (e->fetch_fd >= 0)
		return e->fetch_fd;
	pthread_mutex_unlock(&e->mu);
	fd = open_fetch(c, ino, false, size);
	pthread_mutex_lock(&e->mu);
	if (fd < 0)
		return fd;
	if (e->fetch_fd >= 0)
		close(fd);
	else
		e->fetch_fd = fd;
	return e->fetch_fd;
}

/* The owner of a BUSY chunk is done with it: VERIFIED if stored, else
 * ABSENT; waiters are woken.  e->mu held. */
static void finish_store_locked(struct cache *c, struct cache_file *e, struct chunk *ch,
				bool stored, uint64_t hash, uint32_t len, bool prefetched)
{
	e->busy--;
	if (stored) {
		ch->hash = hash;
		ch->len = len;
		ch->state = c->cfg->verify == VERIFY_ALWAYS ? CH_PRESENT : CH_VERIFIED;
		ch->unread = prefetched;
		evict_add(c->ev, &ch->lru, round_block(len), true);
		stats_add(c->stats, ST_chunks_stored, 1);
		if (prefetched)
			stats_add(c->stats, ST_prefetched_chunks, 1);
	} else {
		ch->state = CH_ABSENT;
	}
	pthread_cond_broadcast(&e->cv);
}

/* Hand a fetched chunk (BUSY, ours) to the write-behind worker with a copy
 * of its bytes; the chunk stays BUSY (and counted in e->busy) until the
 * worker stored it, so readers of it wait and nothing resets the entry
 * under the write.  False if the queue is full: the caller stores it. */
static bool write_behind(struct cache *c, struct cache_file *e, struct chunk *ch,
			 const void *buf, uint32_t len, uint64_t hash)
{
	struct prefetch_job job = {.entry = e, .idx = ch->idx, .fd = -1, .len = len, .hash = hash};

	if (!c->wb)
		return false;
	job.buf = malloc(len ? len : 1);
	if (!job.buf)
		return false;
	memcpy(job.buf, buf, len);
	__atomic_fetch_add(&c->wb_pending, 1, __ATOMIC_RELAXED);
	if (!prefetch_submit(c->wb, &job)) {
		__atomic_fetch_sub(&c->wb_pending, 1, __ATOMIC_RELAXED);
		free(job.buf);
		return false;
	}
	return true;
}

static void run_write_behind(const struct prefetch_job *job, void *arg)
{
	struct cache *c = arg;
	struct cache_file *e = job->entry;
	struct chunk *ch = &e->chunks[job->idx]; /* BUSY: chunks stay put */
	bool stored = store_chunk(c, e, job->idx, job->buf, job->len, job->hash);

	pthread_mutex_lock(&e->mu);
	finish_store_locked(c, e, ch, stored, job->hash, job->len, false);
	release_fds_if_idle_locked(e);
	pthread_mutex_unlock(&e->mu);
	free(job->buf);
	__atomic_fetch_sub(&c->wb_pending, 1, __ATOMIC_RELEASE);
}

static void drop_write_behind(const struct prefetch_job *job, void *arg)
{
	struct cache *c = arg;
	struct cache_file *e = job->entry;

	pthread_mutex_lock(&e->mu);
	finish_store_locked(c, e, &e->chunks[job->idx], false, 0, 0, false);
	pthread_mutex_unlock(&e->mu);
	free(job->buf);
	__atomic_fetch_sub(&c->wb_pending, 1, __ATOMIC_RELEASE);
}

/* The chunk is BUSY and ours (counted in e->busy); e->mu held on entry and
 * exit, dropped while fetching.  Fetch the whole chunk from the source into
 * buf, store it, leave the chunk VERIFIED (stored) or ABSENT, and wake the
 * waiters.  Returns the bytes fetched (short only if the source shrank) or
 * -errno from the source. */
static ssize_t fetch_owned_locked(struct cache *c, struct cache_file *e, struct chunk *ch,
				  int fd, void *buf, bool prefetched)
{
	const uint64_t start = (uint64_t)ch->idx * e->sf.chunk_size;
	const uint32_t want = (uint32_t)(e->sf.id.size - start < e->sf.chunk_size
						 ? e->sf.id.size - start
						 : e->sf.chunk_size);
	bool stored = false, changed = false;
	struct store_identity now_id;
	uint64_t hash = 0;
	struct stat st;
	ssize_t n;

	pthread_mutex_unlock(&e->mu);
	const uint64_t t0 = stats_now_us();
	n = fetch_read(fd, buf, want, start);
	stats_fetch_done(c->stats, t0);
	if (n >= 0) {
		stats_add(c->stats, ST_misses, 1);
		stats_add(c->stats, ST_bytes_from_source, (uint64_t)n);
		/* Short, or the identity moved while we read: the bytes are what
		 * the source holds now, so serve them, but store nothing. */
		if ((uint32_t)n != want) {
			changed = true;
		} else if (src_stat(fd, &st) == 0) {
			identity_of(&st, &now_id);
			changed = !identity_equal(&now_id, &e->sf.id);
		}
		if (!changed && (uint32_t)n == want) {
			hash = csum64(buf, want);
			/* A reader's own fetch is written behind its reply; a
			 * prefetch worker has no reply to wait for. */
			if (!prefetched && write_behind(c, e, ch, buf, want, hash)) {
				pthread_mutex_lock(&e->mu);
				return n; /* the chunk stays BUSY until written */
			}
			stored = store_chunk(c, e, ch->idx, buf, want, hash);
		}
	}
	pthread_mutex_lock(&e->mu);
	if (changed)
		e->bypass = true;
	finish_store_locked(c, e, ch, stored, hash, want, prefetched);
	if (n < 0)
		stats_add(c->stats, ST_source_errors, 1);
	return n;
}

/* The chunk is PRESENT on disk, BUSY and ours; e->mu held on entry and
 * exit, dropped while reading.  Read it into buf and check its checksum: on
 * success it becomes VERIFIED (PRESENT again with verify=always) and true
 * is returned; on a mismatch it is dropped (slot, blocks, LRU) and stays
 * BUSY and ours, for the caller to fetch. */
static bool verify_owned_locked(struct cache *c, struct cache_file *e, struct chunk *ch,
				void *buf, uint32_t want)
{
	bool ok;
	int r;

	pthread_mutex_unlock(&e->mu);
	r = ch->len == want ? store_read_chunk(&e->sf, ch->idx, buf, want) : -EBADMSG;
	ok = r == 0 && csum64(buf, want) == ch->hash;
	pthread_mutex_lock(&e->mu);
	stats_add(c->stats, ST_chunks_verified, 1);
	if (ok) {
		ch->state = c->cfg->verify == VERIFY_ALWAYS ? CH_PRESENT : CH_VERIFIED;
		evict_touch(c->ev, &ch->lru);
		return true;
	}
	if (r == 0 || r == -EBADMSG) {
		stats_add(c->stats, ST_checksum_mismatches, 1);
		log_debug("cache: chunk %u of %s failed its checksum; refetching", ch->idx,
			  e->key.hex);
	} else {
		note_cache_error(c, r);
	}
	store_drop_chunk(&e->sf, ch->idx);
	evict_del(c->ev, &ch->lru);
	ch->len = 0;
	return false;
}

/* Serve bytes [from, to) of chunk idx; e->mu held on entry and exit.
 * Returns the bytes added to rd, -EAGAIN if it had to wait (the caller must
 * look at the entry again: it may have been reset meanwhile), or -errno. */
static ssize_t read_chunk_locked(struct cache *c, struct cache_file *e, uint32_t idx,
				 struct efs_inode *ino, size_t from, size_t to,
				 struct cache_read *rd)
{
	const uint64_t cs = e->sf.chunk_size;
	const uint64_t start = (uint64_t)idx * cs;
	struct chunk *ch = &e->chunks[idx];
	const uint32_t want =
		(uint32_t)(e->sf.id.size - start < cs ? e->sf.id.size - start : cs);
	ssize_t n;
	void *buf;

	if (ch->state == CH_BUSY) {
		stats_add(c->stats, ST_fetch_waits, 1);
		pthread_cond_wait(&e->cv, &e->mu);
		return -EAGAIN;
	}
	if (rd->nseg + 1 >= CACHE_MAX_SEGS)
		return -E2BIG;

	if (ch->state == CH_VERIFIED ||
	    (ch->state == CH_PRESENT && c->cfg->verify == VERIFY_NEVER)) {
		ch->pins++;
		e->pins++;
		rd->pinned = e;
		rd->pins++;
		rd->seg[rd->nseg++] = (struct cache_seg){
			.fd = e->sf.data_fd, .pos = (off_t)(start + from), .len = to - from};
		ch->unread = false;
		stats_add(c->stats, ST_hits, 1);
		stats_add(c->stats, ST_bytes_from_cache, to - from);
		evict_touch(c->ev, &ch->lru);
		return (ssize_t)(to - from);
	}

	buf = chunk_buf(want ? want : 1);
	if (!buf)
		return -ENOMEM;
	ch->state = CH_BUSY;
	e->busy++;

	if (ch->len) {
		/* PRESENT: check the bytes on disk before their first use. */
		if (verify_owned_locked(c, e, ch, buf, want)) {
			e->busy--;
			pthread_cond_broadcast(&e->cv);
			stats_add(c->stats, ST_hits, 1);
			stats_add(c->stats, ST_bytes_from_cache, to - from);
			add_mem(rd, buf, (char *)buf + from, to - from);
			return (ssize_t)(to - from);
		}
	}

	/* ABSENT: fetch the whole chunk from the source, once. */
	n = fetch_fd_locked(c, e, ino);
	if (n >= 0)
		n = fetch_owned_locked(c, e, ch, (int)n, buf, false);
	else {
		e->busy--;
		ch->state = CH_ABSENT;
		pthread_cond_broadcast(&e->cv);
	}
	if (n < 0) {
		free(buf);
		return n;
	}
	if ((size_t)n <= from) {
		free(buf);
		return 0;
	}
	if ((size_t)n < to)
		to = (size_t)n;
	add_mem(rd, buf, (char *)buf + from, to - from);
	return (ssize_t)(to - from);
}

/* Queue fetches of the chunks after idx for a sequential reader; e->mu held. */
static void schedule_prefetch_locked(struct cache *c, struct cache_file *e, uint32_t idx)
{
	uint32_t last = idx + c->window;

	if (!c->pf || e->bypass || !e->loaded || e->fetch_fd < 0)
		return;
	if (last >= e->sf.nchunks)
		last = e->sf.nchunks ? e->sf.nchunks - 1 : 0;
	for (uint32_t i = idx + 1; i <= last && i < e->sf.nchunks; i++) {
		struct chunk *ch = &e->chunks[i];
		struct prefetch_job job = {.entry = e, .idx = i, .tag = e->gen};

		/* Fetch what is missing; verify ahead what a new daemon found on
		 * disk, so a reader after a restart does not hash each chunk in
		 * its own time. */
		if (ch->queued ||
		    !(ch->state == CH_ABSENT ||
		      (ch->state == CH_PRESENT && c->cfg->verify == VERIFY_ONCE)))
			continue;
		job.fd = fcntl(e->fetch_fd, F_DUPFD_CLOEXEC, 0);
		if (job.fd < 0)
			return;
		if (!prefetch_submit(c->pf, &job)) {
			close(job.fd);
			return; /* queue full: the reader fetches what it needs */
		}
		ch->queued = true;
	}
}

/* A prefetch worker's job: fetch one chunk unless someone else did. */
static void run_prefetch(const struct prefetch_job *job, void *arg)
{
	struct cache *c = arg;
	struct cache_file *e = job->entry;
	struct chunk *ch;
	void *buf;

	pthread_mutex_lock(&e->mu);
	if (!e->loaded || e->bypass || e->gen != job->tag || job->idx >= e->sf.nchunks) {
		pthread_mutex_unlock(&e->mu);
		return;
	}
	ch = &e->chunks[job->idx];
	ch->queued = false;
	if (ch->state != CH_ABSENT &&
	    !(ch->state == CH_PRESENT && c->cfg->verify == VERIFY_ONCE)) {
		pthread_mutex_unlock(&e->mu);
		return;
	}
	buf = chunk_buf(e->sf.chunk_size);
	if (buf) {
		const uint64_t start = (uint64_t)ch->idx * e->sf.chunk_size;
		const uint32_t want = (uint32_t)(e->sf.id.size - start < e->sf.chunk_size
							 ? e->sf.id.size - start
							 : e->sf.chunk_size);
		bool was_present = ch->state == CH_PRESENT;

		ch->state = CH_BUSY;
		e->busy++;
		if (was_present && verify_owned_locked(c, e, ch, buf, want)) {
			e->busy--;
			pthread_cond_broadcast(&e->cv);
		} else {
			fetch_owned_locked(c, e, ch, job->fd, buf, true);
		}
	}
	release_fds_if_idle_locked(e);
	pthread_mutex_unlock(&e->mu);
	free(buf);
}

static void drop_prefetch(const struct prefetch_job *job, void *arg)
{
	struct cache_file *e = job->entry;

	(void)arg;
	pthread_mutex_lock(&e->mu);
	if (e->loaded && e->gen == job->tag && job->idx < e->sf.nchunks)
		e->chunks[job->idx].queued = false;
	pthread_mutex_unlock(&e->mu);
}

ssize_t cache_read(struct cache *c, struct efs_inode *ino, int src_fd, off_t off, size_t size,
		   bool sequential, struct cache_read *rd)
{
	struct cache_file *e = ino->cf;
	uint64_t end, pos, cs, fsize, gen;
	ssize_t total = 0;

	memset(rd, 0, sizeof(*rd));
	stats_add(c->stats, ST_reads, 1);
	if (!e)
		return read_direct(c, src_fd, off, size, rd);

	pthread_mutex_lock(&e->mu);
	check_store_gen_locked(c, e);
	reopen_locked(c, e);
	fsize = e->sf.id.size;
	if (!e->loaded || e->bypass || (uint64_t)off >= fsize) {
		/* Uncached, or past the size we validated (the file grew). */
		pthread_mutex_unlock(&e->mu);
		return read_direct(c, src_fd, off, size, rd);
	}
	gen = e->gen;
	cs = e->sf.chunk_size;
	end = (uint64_t)off + size < fsize ? (uint64_t)off + size : fsize;
	for (pos = (uint64_t)off; pos < end;) {
		uint32_t idx = (uint32_t)(pos / cs);
		uint64_t cstart = (uint64_t)idx * cs;
		size_t from = (size_t)(pos - cstart);
		size_t to = (size_t)(end - cstart < cs ? end - cstart : cs);
		ssize_t n;

		if (!e->loaded || e->bypass || e->gen != gen) {
			/* Reset or found changed meanwhile: finish from the source. */
			if (src_fd < 0) {
				total = -EBADFD; /* start over with the handle's fd */
				break;
			}
			pthread_mutex_unlock(&e->mu);
			n = read_direct(c, src_fd, (off_t)pos, (size_t)(end - pos), rd);
			pthread_mutex_lock(&e->mu);
			total = n < 0 ? (total ? total : n) : total + n;
			break;
		}
		n = read_chunk_locked(c, e, idx, ino, from, to, rd);
		if (n == -EAGAIN)
			continue;
		if (n < 0) {
			total = n;
			break;
		}
		total += n;
		if ((size_t)n < to - from)
			break; /* EOF: the source is shorter than we knew */
		pos += (uint64_t)n;
	}
	if (sequential && total > 0 && e->gen == gen && e->loaded)
		schedule_prefetch_locked(c, e, (uint32_t)((end - 1) / cs));
	pthread_mutex_unlock(&e->mu);
	if (total < 0)
		cache_read_done(c, rd);
	return total;
}

void cache_read_done(struct cache *c, struct cache_read *rd)
{
	struct cache_file *e = rd->pinned;

	if (e) {
		pthread_mutex_lock(&e->mu);
		for (unsigned i = 0; i < rd->nseg; i++) {
			struct cache_seg *s = &rd->seg[i];
			if (s->fd < 0)
				continue;
			e->chunks[s->pos / e->sf.chunk_size].pins--;
		}
		e->pins -= rd->pins;
		if (!e->pins)
			pthread_cond_broadcast(&e->cv);
		release_fds_if_idle_locked(e);
		pthread_mutex_unlock(&e->mu);
	}
	for (unsigned i = 0; i < rd->nbufs; i++)
		free(rd->bufs[i]);
	memset(rd, 0, sizeof(*rd));
}
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
	    reopen_locked(c, e) < 0 || !e->loaded) {
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
	release_fds_if_idle_locked(e);
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
		r = prefetch_new(&c->pf, cfg->prefetch, c->window * 64, run_prefetch, c);
	if (r == 0)
		r = prefetch_new(&c->wb, WB_WORKERS, WB_QUEUE, run_write_behind, c);
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
	e = table_get_locked(c, k, &created);
	pthread_mutex_unlock(&c->table_mu);
	if (!e || !created)
		return; /* an open got there first and loaded it */
	pthread_mutex_lock(&e->mu);
	load_locked(c, e, true);
	release_fds_if_idle_locked(e);
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
	prefetch_free(c->pf, drop_prefetch);
	c->pf = NULL;
	/* What was read before the unmount is on disk after it. */
	prefetch_drain(c->wb);
	prefetch_free(c->wb, drop_write_behind);
	c->wb = NULL;
	for (size_t b = 0; c->buckets && b < c->nbuckets; b++) {
		struct cache_file *e = c->buckets[b], *next;
		for (; e; e = next) {
			next = e->next;
			free_chunks_locked(c, e);
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

/* The entry of key if the table has one; never makes one. */
static struct cache_file *table_find(struct cache *c, const struct store_key *k)
{
	struct cache_file *e;

	pthread_mutex_lock(&c->table_mu);
	for (e = c->buckets[bucket_of(c, k)]; e; e = e->next)
		if (!memcmp(e->key.hex, k->hex, sizeof(k->hex)))
			break;
	pthread_mutex_unlock(&c->table_mu);
	return e;
}

struct file_status {
	enum ctl_file_state state;
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
		fs->state = CTL_STATE_UNVALIDATED;
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
	struct file_status fs = {.state = CTL_STATE_UNCACHED, .cs = (uint32_t)c->cfg->chunk_size};
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
		e = table_find(c, &k);
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
			if (e->bypass)
				fs.state = CTL_STATE_STALE;
			else
				fs.state = e->validated ? CTL_STATE_VALID : CTL_STATE_UNVALIDATED;
		}
		fs.when = e->validated_wall;
		tried = e->load_tried;
		pthread_mutex_unlock(&e->mu);
	}
	if (have_key && fs.state == CTL_STATE_UNCACHED && !tried)
		status_from_disk(c, &k, &fs);
	struct ctl_file_status out = {.state = fs.state,
				      .size = fs.size,
				      .cached_bytes = fs.cached,
				      .chunk_size = fs.cs,
				      .chunks = fs.total,
				      .chunks_cached = fs.present,
				      .chunks_verified = fs.verified,
				      .last_validated = fs.when > 0 ? (uint64_t)fs.when : 0};

	return ctl_status_format(&out, buf, len);
}

void cache_stats(struct cache *c, struct ctl_stats *out)
{
	stats_snapshot(c->stats, out);
	pthread_mutex_lock(&c->table_mu);
	out->cache_entries = c->nentries;
	pthread_mutex_unlock(&c->table_mu);
	out->cache_usage_bytes = evict_usage(c->ev);
	out->cache_size_bytes = evict_limit(c->ev);
	out->write_behind_pending = __atomic_load_n(&c->wb_pending, __ATOMIC_ACQUIRE);
	snprintf(out->cache_dir, sizeof(out->cache_dir), "%s", store_path(c->store));
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
	pthread_mutex_lock(&c->table_mu);
	for (e = c->buckets[bucket_of(c, &k)]; e; e = e->next)
		if (!memcmp(e->key.hex, k.hex, sizeof(k.hex)))
			break;
	pthread_mutex_unlock(&c->table_mu);
	if (e)
		return e;
	if (store_load(c->store, &k, &sf, &slots) == -ENOENT)
		return NULL;
	free(slots);
	store_file_close(&sf);
	pthread_mutex_lock(&c->table_mu);
	e = table_get_locked(c, &k, &created);
	pthread_mutex_unlock(&c->table_mu);
	return e;
}

int cache_evict_ino(struct cache *c, uint64_t src_ino, uint64_t *bytes, uint64_t *chunks)
{
	struct cache_file *e = entry_of_src_ino(c, src_ino);

	if (!e)
		return 0; /* nothing cached */
	pthread_mutex_lock(&e->mu);
	load_locked(c, e, false);
	check_store_gen_locked(c, e);
	wait_quiet_locked(e);
	reopen_locked(c, e);
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
	release_fds_if_idle_locked(e);
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
		unload_locked(c, e);
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

	check_store_gen_locked(c, e);
	if (reopen_locked(c, e) < 0 || !e->loaded)
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
	release_fds_if_idle_locked(e);
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
		load_locked(c, e, false);
		check_store_gen_locked(c, e);
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
