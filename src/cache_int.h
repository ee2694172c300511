/* cache_int.h - what the cache's files share; not for other modules.
 *
 * The cache is four files over these structures:
 *   cache_entry.c  the entry table, an entry's record in memory (load,
 *                  reset, reopen, unload), validation at open and close
 *   cache_read.c   the read path: hits, single-flight fetches, verify at
 *                  first read, write-behind and prefetch scheduling
 *   cache.c        setup and teardown, the eviction callback, the startup
 *                  index and the periodic sweep of cache_dir
 *   cache_admin.c  status, stats, evict, verify and source-gone
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
 *   - While the entry has kernel passthrough opens (pt_holds(&e->pt)) the
 *     bytes of its data file do not change: no reset (the entry goes to
 *     bypass and the open is refused), no eviction, no efscachectl evict,
 *     no punch by verify (passthrough.h).
 *
 * Lock order (a lock is only taken after those to its left)
 *
 *   ino->lock -> c->table_mu                  (entry_of_inode)
 *   e->mu -> c->table_mu                      (cache_inode_release)
 *   e->mu -> LRU mutex (evict.c)              (evict_add/touch/del/account)
 *   e->mu -> prefetch queue mutex             (schedule_prefetch_locked)
 *   e->mu -> c->sweep_mu                      (note_cache_error)
 *
 *   The LRU mutex reaches entries the other way only by trylock
 *   (drop_chunk_cb), so eviction never waits for an entry.  c->table_mu is
 *   never held while taking another lock.  No lock is held while the source
 *   is read, opened or stat'ed, nor while a chunk's bytes are read, written
 *   or hashed: the owner of a BUSY chunk drops e->mu for that.  Small
 *   cache_dir calls do run under e->mu: opening and closing a record's
 *   files, reading its metadata at load, a slot write and a hole punch when
 *   a chunk is dropped; under the LRU mutex, the drop of an evicted chunk
 *   and the statvfs of the space check (evict.c).
 */
#ifndef EFS_CACHE_INT_H
#define EFS_CACHE_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "cache.h"
#include "evict.h"
#include "meta.h"
#include "passthrough.h"
#include "prefetch.h"
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
	struct pt_entry pt;       /* kernel passthrough opens (passthrough.h) */
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

/* Space is accounted in file-system blocks: a chunk of len bytes uses
 * round_block(len), a record's metadata at least one block. */
#define BLOCK 4096ULL

static inline uint64_t round_block(uint64_t n)
{
	return (n + BLOCK - 1) & ~(BLOCK - 1);
}

static inline uint64_t cache_store_gen(struct cache *c)
{
	return __atomic_load_n(&c->store_gen, __ATOMIC_ACQUIRE);
}

/* ---- cache_entry.c ------------------------------------------------------ */

/* Find or add the entry of key; *created says which.  NULL without memory.
 * Caller holds c->table_mu. */
struct cache_file *cache_table_get_locked(struct cache *c, const struct store_key *k,
					  bool *created);
/* The entry of key if the table has one; never makes one. */
struct cache_file *cache_table_find(struct cache *c, const struct store_key *k);

/* All below: caller holds e->mu. */
/* Drop the chunks' LRU nodes and free them. */
void entry_free_chunks_locked(struct cache *c, struct cache_file *e);
/* Wait until nothing uses the entry's files or chunks (no BUSY, no pin). */
void entry_wait_quiet_locked(struct cache_file *e);
/* Give back the entry's fds if nothing uses it (reopened on demand). */
void entry_release_fds_locked(struct cache_file *e);
/* Forget the record in memory (its files stay as they are). */
void entry_unload_locked(struct cache *c, struct cache_file *e);
/* Load the on-disk record once; chunks go to the LRU's cold end if cold. */
void entry_load_locked(struct cache *c, struct cache_file *e, bool cold);
/* Drop chunk ch from the record (empty slot, blocks released; a record
 * gone from disk, its fds closed, is not touched) and from the LRU: the
 * one way a stored chunk leaves the cache (eviction, efscachectl evict, a
 * failed check).  Counts a prefetched chunk never
 * read.  The chunk becomes ABSENT unless it is BUSY (its owner refetches
 * it).  lru_locked: the caller holds the LRU mutex (the eviction
 * callback).  Returns the chunk's length. */
uint32_t entry_drop_chunk_locked(struct cache *c, struct cache_file *e, struct chunk *ch,
				 bool lru_locked);
/* Forget the record if cache_dir was recreated since it was opened. */
void entry_check_store_gen_locked(struct cache *c, struct cache_file *e);
/* Reopen the record's fds if they were given back; 0 or -errno (the
 * record is then forgotten). */
int entry_reopen_locked(struct cache *c, struct cache_file *e);

void cache_identity_of(const struct stat *st, struct store_identity *id);
/* Coherency check: stale unless every field matches. */
bool cache_identity_equal(const struct store_identity *a, const struct store_identity *b);
/* Open the source file for fetching (O_DIRECT unless it refuses): by name
 * (re-resolving it) or by its object.  Returns the fd or -errno. */
int cache_open_fetch(struct cache *c, struct efs_inode *ino, bool named);

/* ---- cache_read.c ------------------------------------------------------- */

/* Prefetch and write-behind workers' jobs, and their drop at shutdown. */
void cache_run_prefetch(const struct prefetch_job *job, void *arg);
void cache_drop_prefetch(const struct prefetch_job *job, void *arg);
void cache_run_write_behind(const struct prefetch_job *job, void *arg);
void cache_drop_write_behind(const struct prefetch_job *job, void *arg);

#endif
