/* cache_int.h - what the cache's files share; not for other modules.
 *
 * The cache is five files over these structures:
 *   cache_table.c  records and entries: the table, entry references, the
 *                  list of idle loaded entries, the chunk map
 *   cache_entry.c  an entry's record in memory (load, unload, drop, reset),
 *                  validation at open and close, kernel passthrough
 *   cache_read.c   the read path: hits, single-flight fetches, verify at
 *                  first read, write-behind and prefetch scheduling
 *   cache.c        setup and teardown, eviction (pick and reap), the
 *                  startup index and the periodic sweep of cache_dir
 *   cache_admin.c  status, stats, evict, verify and source-gone
 *
 * State
 *   c->table: store key -> struct rec, under c->table_mu: one per record
 *   the cache knows on disk, and one per live entry.  A rec is small
 *   (~80 bytes) and is all that stays in memory of a record nobody uses;
 *   it is the unit of the LRU (evict.c), its bytes the record's usage.
 *
 *   struct cache_file, an entry, exists while someone holds a reference:
 *   an inode (ino->cf), a prefetch or write-behind job, an eviction batch,
 *   the idle list, an admin call.  The last reference frees it, and its rec
 *   too if no record is left on disk.  An entry is "loaded" when sf and the
 *   chunk map describe its record (on disk, or prepared in memory with
 *   need_create); a loaded entry holds the record's two fds, so only open
 *   files and the bounded idle list (c->idle_max) hold fds.
 *
 *   The chunk map holds a struct chunk only for chunks that are stored,
 *   busy or queued: an entry costs what it caches, not its file's size.
 *   Chunk states:
 *
 *     ABSENT (not in the map) --fetch--> BUSY --stored--> VERIFIED
 *     PRESENT (on disk, not yet checked by this daemon) --verify--> BUSY
 *         --ok--> VERIFIED, --mismatch--> refetch as above
 *     PRESENT, VERIFIED --evicted (picked: BUSY, owned by the reaper)--> ABSENT
 *
 *   BUSY belongs to exactly one thread; other readers of that chunk wait on
 *   e->cv and then use its result (one fetch per chunk).  Stored chunks
 *   (PRESENT, VERIFIED) are on the entry's recency list; ch->len != 0 says
 *   the chunk's bytes are on disk and counted in the rec's bytes.
 *
 * Invariants
 *   - A chunk's bytes are served from the data file only in VERIFIED (or
 *     PRESENT with verify=never), and only while pinned (ch->pins, e->pins).
 *   - e->sf's fds and the chunk map are replaced or freed only when nothing
 *     uses them (no BUSY chunk, no pin): unload, drop, reset and the
 *     eviction of a whole record check or wait for that; nobody waits for
 *     it while owning a BUSY chunk or holding a pin.
 *   - Data is never served for an identity other than the one validated at
 *     the last open: a change found at open drops the record (its files are
 *     unlinked) before any chunk of the new identity is stored.
 *   - A data file's bytes never change in place once its record is
 *     complete (every chunk stored): the kernel may read it through
 *     passthrough, for an open of this daemon or of one before it that
 *     outlived it.  Such a record leaves whole: its files are unlinked
 *     (eviction, a bad chunk, evict, a reset), never punched or truncated.
 *     Only records never complete lose single chunks (hole punches).
 *   - While the entry has kernel passthrough opens (pt_holds(&e->pt)) its
 *     rec is held out of the LRU and its record stays: no reset (the entry
 *     goes to bypass and the open is refused), no efscachectl evict, no
 *     drop by verify (passthrough.h).
 *   - rec->condemned: eviction took the record's bytes out of the usage and
 *     its files must go before anything else uses the key; whoever holds
 *     the entry's mutex first removes them (entry_settle_condemned_locked).
 *
 * Lock order (a lock is only taken after those to its left)
 *
 *   ino->lock -> c->table_mu -> LRU mutex        (entry_of_inode, entry_put)
 *   e->mu -> c->table_mu -> LRU mutex            (idle list, entry_put)
 *   e->mu -> LRU mutex (evict.c)                 (evict_grow/touch/del/hold)
 *   e->mu -> prefetch queue mutex                (schedule_prefetch_locked)
 *   e->mu -> c->sweep_mu                         (note_cache_error)
 *
 *   A push (cache_run_prefetch) runs with no lock held, counted in
 *   e->pushing; a fence or an inode's release waits for the count on e->cv,
 *   never on a FUSE worker (the kernel may make a push wait for a READ).
 *
 *   The LRU mutex reaches entries the other way only by trylock (pick), so
 *   eviction never waits for an entry; an entry's mutex reaches another
 *   entry's only by trylock (idle_trim).  No lock is held while the source
 *   is read, opened or stat'ed, nor while a chunk's bytes are read, written
 *   or hashed: the owner of a BUSY chunk drops e->mu for that.  Under e->mu
 *   run small cache_dir calls: opening and closing a record's files,
 *   reading its slots at load, unlinking a record, a slot write and a hole
 *   punch.  Under the LRU mutex run only memory operations, a statvfs and
 *   the close of fds of a record about to be unlinked (pick); the unlinks
 *   and punches run in reap, with no global lock held.
 *
 *   rec fields: lru and condemned under the LRU mutex; next under table_mu;
 *   e written under both (so either keeps it stable); on_disk under the
 *   entry's mutex (table_mu while the rec has no entry); pins under the
 *   LRU mutex.
 */
#ifndef EFS_CACHE_INT_H
#define EFS_CACHE_INT_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "bufpool.h"
#include "cache.h"
#include "evict.h"
#include "meta.h"
#include "passthrough.h"
#include "prefetch.h"
#include "store.h"

enum chunk_state { CH_ABSENT, CH_PRESENT, CH_VERIFIED, CH_BUSY };

struct chunk {
	struct chunk *hotter, *colder; /* the entry's recency list, while listed */
	uint64_t hash;                 /* slot: XXH3 of the chunk's bytes */
	uint32_t len;                  /* slot: bytes on disk; 0 = none */
	uint32_t idx;
	struct pbuf *mem;              /* BUSY while written behind: its bytes
					* (fetched, hashed), served to readers
					* meanwhile; holds a reference */
	uint16_t pins;                 /* replies in flight from the data file */
	uint8_t state;
	bool listed;                   /* on the recency list */
	bool queued;                   /* a prefetch job for it is pending */
	bool unread;                   /* stored by prefetch, not read since */
};

/* Open addressing, linear probing, by chunk index. */
struct chunk_map {
	struct chunk **slot;
	uint32_t cap; /* power of two, or 0 */
	uint32_t n;
};

struct cache_file;

struct rec {
	struct lru_node lru;     /* first: pick gets back here from the node */
	struct rec *next;        /* table chain */
	struct store_key_bin key;
	struct cache_file *e;    /* the live entry, or NULL */
	bool on_disk;            /* its files exist (as far as we know) */
	uint32_t disk_gen;       /* c->store_gen when on_disk was last found
				  * true: in an older cache_dir it means nothing */
	bool condemned;          /* its files must go (see the invariants) */
	uint16_t pins;           /* eviction batches that hold it */
	uint64_t verified_stamp; /* record_stamp() when every chunk it had on
				  * disk was VERIFIED as it was unloaded, else 0:
				  * loaded again unchanged, with verified_count
				  * slots, they need no check (verify=once is per
				  * daemon, not per load) */
	uint32_t verified_count;
};

struct cache_file {
	struct rec *rec;         /* immutable */
	struct store_key key;    /* immutable: rec->key in text */
	bool idle_linked;        /* protected by c->table_mu (here: in key's
				  * padding, one malloc size class less) */
	unsigned refs;           /* atomic; see cache_table.c */
	unsigned irefs;          /* atomic: of refs, the inodes' (ino->cf) */
	struct cache_file *idle_prev, *idle_next; /* protected by c->table_mu */

	pthread_mutex_t mu;
	pthread_cond_t cv;       /* chunk left BUSY, pins dropped, record created */
	/* All below protected by mu. */
	bool loaded;             /* sf and the map describe the record */
	bool bypass;             /* serve from the source, cache nothing */
	bool validated;          /* checked against the source by this daemon */
	bool need_create;        /* sf is prepared in memory, not yet on disk */
	bool disk_differs;       /* a slot or punch failed: the record on disk
				  * may say more than the map (no stamp) */
	bool creating;           /* a thread is writing it (others wait on cv) */
	bool filled;             /* the record was made by cache_fill, ahead of
				  * any open: the next open must drop the
				  * kernel's pages of the file (it may hold an
				  * older version's, read before the record
				  * it had then was evicted) */
	struct timespec validated_at; /* CLOCK_MONOTONIC */
	time_t validated_wall;
	struct store_file sf;
	struct chunk_map map;
	struct chunk *hot, *cold; /* recency list of stored chunks (PRESENT, VERIFIED) */
	uint32_t nstored;         /* chunks whose bytes are on disk (len != 0) */
	uint64_t meta_bytes;      /* the metadata file's share of the rec's bytes */
	uint64_t store_gen;       /* c->store_gen when sf was opened */
	uint64_t gen;             /* bumped whenever sf/the map are replaced */
	uint64_t touched_ms;      /* when a hit last moved the rec to the hot end */
	int fetch_fd;             /* source fd for fetches (O_DIRECT if allowed),
				   * open while handles or jobs use the entry; -1 */
	unsigned opens;           /* file handles (cache_open without cache_close) */
	unsigned victims;         /* unlinks, renames over it in progress (cache_victim_begin) */
	unsigned pins;
	unsigned busy;
	unsigned jobs;            /* prefetch jobs queued for it */
	/* A scattered reader (cache_read.c): */
	uint32_t last_miss;       /* chunk of the last demand fetch + 1; 0 none */
	uint16_t scattered;       /* demand fetches not next to the one before */
	bool loader;              /* chunk 0 begins like a model file */
	bool sweep;               /* the rest of the file is fetched ahead */
	uint32_t sweep_next;      /* the next chunk the sweep looks at */
	uint64_t sweep_gen;       /* e->gen when the sweep began */
	/* Swept chunks put in the kernel's page cache (cache_run_prefetch): */
	struct efs_inode *push_ino; /* the inode they go to, while it lives */
	unsigned pushing;         /* pushes in flight (e->mu dropped) */
	unsigned fences;          /* cache_fence_begin without its end */
	unsigned writers;         /* cache_open with the caller's source fd */
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
	/* Pushes of the chunks readers fetched themselves (cache_read.c), on a
	 * thread of their own: a queued push holds its chunk's buffer, which
	 * a prefetch worker waiting for the buffer budget must see come back. */
	struct prefetch *pushq;
	struct prefetch *wb; /* write-behind: stores chunks after the reply */
	struct bufpool *pool; /* every chunk buffer, under one budget */
	struct ahead *ahead;  /* prefetched chunks kept for their reader */
	uint64_t wb_pending; /* atomic: chunks queued or being written behind */
	uint64_t wb_bytes;   /* atomic: their bytes */
	uint64_t wb_limit;   /* bound of wb_bytes: WB_MAX_BYTES (tests lower it) */
	unsigned window;     /* chunks to keep queued ahead of a sequential reader */
	uint64_t push_max;   /* largest file whose swept chunks are pushed */
	dev_t root_dev;      /* SOURCE's file system: device tag 0 in keys */
	bool root_dev_known;

	pthread_mutex_t table_mu;
	struct rec **buckets;       /* protected by table_mu */
	size_t nbuckets;            /* power of two; grows */
	uint64_t nrecs;             /* protected by table_mu */
	struct cache_file *idle_hot, *idle_cold; /* idle loaded entries; table_mu */
	unsigned nidle;             /* protected by table_mu */
	unsigned idle_max;
	dev_t other_devs[16];       /* devices below SOURCE seen; table_mu */
	unsigned nother_devs;

	uint64_t store_gen; /* atomic: bumped when cache_dir was recreated */

	pthread_t sweeper;
	bool sweeper_running;
	pthread_mutex_t sweep_mu;
	pthread_cond_t sweep_cv;
	bool stop;   /* protected by sweep_mu */
	bool poke;   /* protected by sweep_mu: check cache_dir now */

	bool logged_nospace, logged_io, logged_dir, logged_store, logged_fds; /* log once each */
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

/* ---- cache_table.c -------------------------------------------------------- */

int cache_table_init(struct cache *c);
/* Free every entry and rec (teardown: no other thread runs). */
void cache_table_free(struct cache *c);
/* The key of the source file (dev, ino): dev is the raw st_dev. */
int cache_key_of(struct cache *c, dev_t dev, uint64_t ino, struct store_key *k);
/* Does the table hold a rec for key (a record on disk, or an entry)?  A
 * look under table_mu, nothing made. */
bool cache_table_knows(struct cache *c, const struct store_key *k);
/* The entry of key with a reference (entry_put), made if needed; with
 * only_known, NULL when the table has no rec for key.  NULL without memory. */
struct cache_file *entry_get(struct cache *c, const struct store_key *k, bool only_known);
/* The entry of rec with a reference; rec must be in the table (pinned). */
struct cache_file *entry_get_rec(struct cache *c, struct rec *r);
/* Another reference to e; the caller holds one, or the LRU mutex with
 * e->rec->e == e. */
void entry_ref(struct cache_file *e);
/* Drop a reference; the last frees the entry (and its rec if no record is
 * left).  No lock of e held. */
void entry_put(struct cache *c, struct cache_file *e);
/* Add a rec for a record found on disk by the startup scan unless the
 * table has one; it goes to the LRU's cold end. */
void cache_table_add_found(struct cache *c, const struct store_scan_rec *r);
/* Forget every rec no entry uses (cache_dir was recreated). */
void cache_table_forget_idle(struct cache *c);
/* Keys of every rec, for verify (caller frees). */
struct store_key_bin *cache_table_keys(struct cache *c, size_t *count);
uint64_t cache_table_count(struct cache *c);
/* Keys of the devices below SOURCE seen so far (for evict by inode number). */
unsigned cache_other_devs(struct cache *c, dev_t *out, unsigned max);

/* The idle list: e->mu held.  An entry that became idle (loaded, no
 * handle) joins it, one that is opened again leaves it.  idle_trim unloads
 * the coldest idle entries beyond c->idle_max (all of them with
 * `everything`), trylocking them; e (may be NULL) is the caller's own. */
void idle_join_locked(struct cache *c, struct cache_file *e);
void idle_leave_locked(struct cache *c, struct cache_file *e);
unsigned idle_trim(struct cache *c, struct cache_file *self, bool everything);

/* The chunk map (e->mu held). */
struct chunk *chunk_get(struct cache_file *e, uint32_t idx);
/* The chunk of idx, made ABSENT if missing; NULL without memory. */
struct chunk *chunk_make(struct cache_file *e, uint32_t idx);
/* Free the chunk if nothing keeps it (ABSENT, not queued, not pinned). */
void chunk_settle(struct cache_file *e, struct chunk *ch);
/* Free every chunk and the map. */
void chunk_map_free(struct cache_file *e);
/* On the recency list: at the hot end, or off it. */
void chunk_list_hot(struct cache_file *e, struct chunk *ch);
void chunk_unlist(struct cache_file *e, struct chunk *ch);

/* ---- cache_entry.c -------------------------------------------------------- */

/* All below: caller holds e->mu. */
/* Wait until nothing uses the entry's files or chunks (no BUSY, no pin).
 * Never by an owner of a BUSY chunk or a pin of this entry. */
void entry_wait_quiet_locked(struct cache_file *e);
static inline bool entry_quiet(const struct cache_file *e)
{
	return !e->busy && !e->pins && !e->creating;
}
/* Handles, jobs and replies are gone: give back the fetch fd; a loaded
 * entry joins the idle list. */
void entry_release_locked(struct cache *c, struct cache_file *e);
/* If eviction condemned the record, remove its files now. */
void entry_settle_condemned_locked(struct cache *c, struct cache_file *e);
/* Load the on-disk record if the entry is not loaded.  0 (loaded, or there
 * is no record), or -errno of cache trouble (the caller reads from the
 * source).  Entry quiet. */
int entry_load_locked(struct cache *c, struct cache_file *e);
/* Forget the record in memory (its files stay).  Entry quiet. */
void entry_unload_locked(struct cache *c, struct cache_file *e);
/* Remove the record: unload it and unlink its files.  Entry quiet.
 * Returns true if a record was on disk. */
bool entry_remove_record_locked(struct cache *c, struct cache_file *e);
/* Drop stored chunk ch (empty slot, hole punched) from an incomplete
 * record; not for a record whose every chunk is stored (remove it whole).
 * The chunk becomes ABSENT unless BUSY (its owner refetches it).  Counts a
 * prefetched chunk never read.  Returns the chunk's accounted bytes. */
uint64_t entry_drop_chunk_locked(struct cache *c, struct cache_file *e, struct chunk *ch);
/* A stored chunk (PRESENT, VERIFIED) goes to the hot end of the recency
 * list (the caller counts a newly stored one in nstored). */
void entry_chunk_stored_locked(struct cache_file *e, struct chunk *ch);
/* Forget the record if cache_dir was recreated since it was opened. */
void entry_check_store_gen_locked(struct cache *c, struct cache_file *e);
/* Every chunk on disk (the record may back a passthrough open). */
static inline bool entry_complete(const struct cache_file *e)
{
	return e->loaded && !e->need_create && e->nstored == e->sf.nchunks;
}

void cache_identity_of(const struct stat *st, struct store_identity *id);
/* Coherency check: stale unless every field matches. */
bool cache_identity_equal(const struct store_identity *a, const struct store_identity *b);
/* Open the source file for fetching (O_DIRECT unless it refuses): by name
 * (re-resolving it) or by its object.  Returns the fd or -errno. */
int cache_open_fetch(struct cache *c, struct efs_inode *ino, bool named);
/* The cache ran out of fds: unload idle entries and ask the layer above to
 * give back idle fds; logs once.  e (may be NULL) is the caller's own
 * locked entry. */
void cache_out_of_fds(struct cache *c, struct cache_file *e, int err);
static inline bool cache_no_fds(int r)
{
	return r == -EMFILE || r == -ENFILE;
}

/* ---- cache_read.c --------------------------------------------------------- */

/* The buffer pool (budget: bytes of chunk buffers in use) and the
 * prefetched chunks kept in memory; idle (the sweep, each second) gives
 * both back to the system once nothing was fetched since the last call. */
int cache_read_init(struct cache *c, uint64_t budget);
void cache_read_idle(struct cache *c);
void cache_read_free(struct cache *c);
void note_cache_error(struct cache *c, int r);
/* Prefetch and write-behind workers' jobs, and their drop at shutdown. */
void cache_run_prefetch(const struct prefetch_job *job, void *arg);
void cache_drop_prefetch(const struct prefetch_job *job, void *arg);
void cache_run_write_behind(const struct prefetch_job *job, void *arg);
void cache_drop_write_behind(const struct prefetch_job *job, void *arg);

/* ---- cache.c -------------------------------------------------------------- */

/* The work eviction picked, done after the LRU mutex is dropped. */
#define EVICT_BATCH 32
struct evict_item {
	struct rec *rec;      /* a whole record (rec pinned) */
	struct cache_file *e; /* or a chunk of this entry (referenced) */
	struct chunk *ch;     /* BUSY, owned by the batch */
};
struct evict_batch {
	unsigned n;
	struct evict_item item[EVICT_BATCH];
};

#endif
