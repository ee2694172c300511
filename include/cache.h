/* cache.h - per-file cache entries and the read path.
 *
 * A cache entry belongs to one source file (one store key) and holds its
 * identity, its record's fds and one state per chunk.  Readers of a chunk
 * that is not cached share one fetch (single flight).  Data served from the
 * cache's data file is pinned until the reply is sent, so eviction or a reset
 * never changes bytes under a reply.
 */
#ifndef EFS_CACHE_H
#define EFS_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "inode.h"
#include "meta.h"
#include "stats.h"

struct stat;

struct cache;
struct cache_file;

/* Alignment of the buffers the cache reads the source into (O_DIRECT). */
#define CACHE_BUF_ALIGN 4096

/* How the cache reaches a file on the source.  Supplied by the layer that
 * knows names and fds (fsops.c over inode.c and source.c); unit tests give
 * a fake.  All return -errno on failure. */
struct cache_source {
	/* The file's attributes from the server itself (not a client-side
	 * cache), found by its name: -ESTALE if the name now leads to another
	 * object, -ENOENT if it is gone.  One round trip. */
	int (*stat_named)(void *arg, struct efs_inode *ino, struct stat *st);
	/* Open the file by its name, re-resolving the name (flags as open(2));
	 * -ESTALE as above.  Returns the fd. */
	int (*open_named)(void *arg, struct efs_inode *ino, int flags);
	/* Open the very object of ino, without resolving a name. */
	int (*open_object)(void *arg, struct efs_inode *ino, int flags);
	/* The attributes of the object behind fd (an fd these ops returned),
	 * as current as the last round trip on it (fstat). */
	int (*stat_open)(void *arg, int fd, struct stat *st);
	/* Read len bytes at off from fd (an fd these ops returned) into buf;
	 * short only at the end of the file.  buf is aligned to
	 * CACHE_BUF_ALIGN and len may be rounded up to it, so an O_DIRECT fd
	 * can be read; a source that refuses O_DIRECT is read buffered.
	 * Returns the byte count or -errno. */
	ssize_t (*read)(void *arg, int fd, void *buf, size_t len, off_t off);
	/* The name of ino no longer leads to it (-ESTALE above): is the
	 * object itself gone from the source (deleted, or replaced by a
	 * rename over its name, on another host)?  True only when the server
	 * says so about the object (its handle is stale, or no link is left);
	 * false when that cannot be asked or it may live on under another
	 * name.  May be NULL (never gone). */
	bool (*object_gone)(void *arg, struct efs_inode *ino);
	/* An open just validated ino against st (stat_open of an fd it
	 * opened: the attributes its OPEN brought from the server).  Lets
	 * the layer above answer attributes consistent with what the cache
	 * now serves.  May be NULL. */
	void (*validated)(void *arg, struct efs_inode *ino, const struct stat *st);
	/* The process ran out of fds opening a cache file: give back idle
	 * fds of the layer above (the inode table's).  May be NULL. */
	void (*out_of_fds)(void *arg);
	/* An open found no record of ino (a cold file) and validated it as
	 * st: the layer above may fetch the file's siblings ahead
	 * (siblings.h).  Called with no lock held, before the open is
	 * answered: it must not wait for the source.  May be NULL. */
	void (*cold_open)(void *arg, struct efs_inode *ino, const struct stat *st);
	/* Put len bytes at off of ino (a chunk a sweep fetched, of the
	 * identity validated at the last open) in the kernel's page cache of
	 * the file, so that its reader finds them there.  Called from a
	 * prefetch worker with no lock held; may wait for the kernel (a page
	 * locked by a read in flight).  0 or -errno.  May be NULL (no pushes;
	 * see cache_fence_begin). */
	int (*push)(void *arg, struct efs_inode *ino, uint64_t off, const void *buf, size_t len);
	void *arg;
};

/* Open cache_dir (checks, lock) and prepare; no threads yet.  src is
 * copied.  0 or -errno with a message in err. */
int cache_new(struct cache **out, const struct efs_config *cfg, const struct cache_source *src,
	      struct efs_stats *stats, char *err, size_t errlen);
/* Start the background index of what is on disk and the periodic sweep.
 * Call after daemonizing (fork would lose the threads). */
int cache_start(struct cache *c);
void cache_free(struct cache *c);

/* At open of a regular file: validate the cached data against the source
 * unless the metadata policy trusts the last validation (attr: a snapshot
 * of the inode's attribute state).  open_fd is the caller's own source fd
 * if it opened one (its fstat is current: the open reached the server),
 * else -1: then one round trip is made, a stat by name if every chunk is
 * cached, an open by name (kept for fetching) if not.  *keep_cache says
 * whether the kernel's page cache of the file may be kept.  Returns 0,
 * -ESTALE if the name now leads to another object (the kernel looks it up
 * again; if the source's object_gone says the old object is gone, its
 * record is removed as by cache_source_gone), or the source's -errno (EIO
 * etc.: nothing is deleted).  Every
 * successful cache_open of a regular file is paired with cache_close. */
int cache_open(struct cache *c, struct efs_inode *ino, int open_fd,
	       const struct meta_attr *attr, bool *keep_cache);
/* May bytes be fetched ahead of any open now?  Not into a cache smaller
 * than 16 times that, nor when cache_dir's file system is short of room
 * (cache_min_free): speculative work evicts nothing but the LRU's own. */
bool cache_room_ahead(struct cache *c, uint64_t bytes);
/* Fetching ahead of any open (siblings.c): the source file (dev, ino) has
 * no record and nobody uses its entry, so cache_fill would store it. */
bool cache_fill_wanted(struct cache *c, dev_t dev, uint64_t ino);
/* Does the cache know a record (or an entry) of the source file (dev,
 * ino)?  A table look-up: no cache_dir access. */
bool cache_knows(struct cache *c, dev_t dev, uint64_t ino);
/* The kernel's page cache lost the cache_dir files of the source file
 * (dev, ino) (drop_caches, memory pressure, a restart after either): start
 * reading its record back, if the cache knows one, without waiting for
 * it (store_readahead).  True if the reads were started.  Changes no
 * state; the record is checked as ever when it is used. */
bool cache_read_ahead(struct cache *c, dev_t dev, uint64_t ino);
/* Store the whole file open on fd (an fd of the source file, O_DIRECT if
 * the source allows it; st is its fstat after the open that reached the
 * server), chunk by chunk, each read with no lock held and nothing of the
 * entry claimed meanwhile: a demand open or read of the file never waits
 * for this source read.  A chunk is stored only if, after its read, the
 * source still has st's identity and the entry then has no record, or a
 * record of that identity lacking the chunk; a record this call makes
 * makes the next open drop the kernel's pages of the file.  Takes chunk
 * buffers only while the pool is under its budget; never delays the
 * cache's own work.  Returns the bytes stored, 0 if nothing was, or the
 * source's -errno. */
ssize_t cache_fill(struct cache *c, int fd, const struct stat *st);

/* A file handle of ino was released; writer: its cache_open was given the
 * caller's source fd (open_fd >= 0). */
void cache_close(struct cache *c, struct efs_inode *ino, bool writer);

/* A duplicate of the source fd that cache_open opened ino's object by (by
 * name, and found it to be ino's) and keeps for fetching while a handle
 * has ino open, or -ESTALE if the cache holds none: what a reader's handle
 * reads by when ino's name came to lead to another object after its open
 * (renamed over, unlinked), as an open file on NFS stays readable. */
int cache_dup_checked(struct cache *c, struct efs_inode *ino);

/* An unlink or a rename through the mount may take the last name of ino's
 * object, between cache_victim_begin and cache_victim_end.  A reader open
 * meanwhile (cache_open) opens the object by name and keeps that fd
 * instead of trusting its attributes or asking for them only, and begin
 * returns true if a handle has ino open or its open is being checked:
 * the caller then opens the object for reading and gives the fd to
 * cache_adopt_source.  Either way a reader whose open was checked before
 * the name went has a source fd of the object, which the source keeps for
 * it (NFS's silly rename) and its handle reads by (cache_dup_checked). */
bool cache_victim_begin(struct cache *c, struct efs_inode *ino);
void cache_victim_end(struct cache *c, struct efs_inode *ino);
/* Takes fd, opened for reading on ino's object: kept as the fd the cache
 * fetches by while ino is open, else closed. */
void cache_adopt_source(struct cache *c, struct efs_inode *ino, int fd);

/* Pushes (cache_source.push) must not land after a reply that makes the
 * kernel's view of the file newer than theirs: an open (its reply drops
 * the kernel's pages when the file changed), a truncate.  Such a request
 * calls cache_fence_begin first: no push starts until cache_fence_end, and
 * those in flight are waited for.  A push may wait for a read in flight,
 * which only a FUSE worker answers: with may_wait false (on a FUSE
 * worker), -EWOULDBLOCK says pushes are in flight (nothing taken: run the
 * request on a thread of its own and call again with may_wait true).
 * 1: fenced, call cache_fence_end after the reply; 0: nothing to fence
 * (no entry, not a regular file, a source without push). */
int cache_fence_begin(struct cache *c, struct efs_inode *ino, bool may_wait);
void cache_fence_end(struct cache *c, struct efs_inode *ino);

/* Drop the inode's reference (inode release hook). */
void cache_inode_release(struct efs_inode *ino, void *cache);

/* One piece of a read reply: `len` bytes at mem (fd is -1: the cache copies
 * hits out of its data files, checked, rather than splicing them). */
struct cache_seg {
	int fd;
	off_t pos;
	const void *mem;
	size_t len;
};

#define CACHE_MAX_SEGS 64

struct cache_read {
	struct cache_seg seg[CACHE_MAX_SEGS];
	unsigned nseg;
	void *bufs[CACHE_MAX_SEGS]; /* to free once the reply is sent */
	unsigned buf_gen[CACHE_MAX_SEGS]; /* each one's gen when taken (bufpool.h) */
	unsigned nbufs;
	struct cache *cache;
	struct cache_file *entry;   /* held until cache_read_done */
};

/* Read [off, off+size) of the file of ino.  src_fd is the file handle's
 * own source fd, or -1 if it has none: reads that must bypass the cache
 * then return -EBADFD before adding anything, and the caller opens one and
 * calls again.  A sequential reader (how: CACHE_READ_SEQUENTIAL) gets the
 * following chunks fetched ahead in parallel.  kernel_size: the largest size the kernel may believe
 * the file has (the attributes last given it; UINT64_MAX if unknown): a
 * read past the size validated at open is finished from the source when
 * the kernel may think the file longer, as only the source decides where
 * a file ends.  Returns the byte count (short only at EOF) or the source's
 * -errno.  The caller calls cache_read_done after replying (also when the
 * reply failed). */
ssize_t cache_read(struct cache *c, struct efs_inode *ino, int src_fd, off_t off, size_t size,
		   unsigned how, uint64_t kernel_size, struct cache_read *out);
/* How a reader reads (cache_read's how). */
#define CACHE_READ_SEQUENTIAL 1u /* on from where it stopped: read ahead for it */
#define CACHE_READ_NO_PAGES 2u	 /* it keeps no pages (O_DIRECT): a sweep it starts
				  * pushes nothing into the kernel's page cache */
/* Release what cache_read() pinned and allocated. */
void cache_read_done(struct cache *c, struct cache_read *rd);

/* Kernel passthrough (passthrough.h): how to answer an open of a file
 * handle.  A writer (ro false: not read-only, or O_TRUNC) asks before it
 * opens the source; a reader right after a successful cache_open, with
 * unchanged = its keep_cache.  req is the open's fuse_req_t.  Returns an
 * enum pt_mode (*backing_id set for PT_PASSTHROUGH) or -ETXTBSY / -EBUSY:
 * refuse the open.  At release (or when the open fails later), before
 * cache_close: cache_pt_close with that mode (req NULL if the open's reply
 * failed). */
int cache_pt_open(struct cache *c, struct efs_inode *ino, void *req, bool ro, bool unchanged,
		  int *backing_id);
void cache_pt_close(struct cache *c, struct efs_inode *ino, void *req, int mode);

/* The file was written through the mount: stop using cached data for it
 * until the next open revalidates it. */
void cache_written(struct cache *c, struct efs_inode *ino);

enum cache_file_state {
	CACHE_FILE_UNCACHED,    /* no record */
	CACHE_FILE_UNVALIDATED, /* a record not checked by this daemon yet */
	CACHE_FILE_VALID,       /* checked at an open by this daemon */
	CACHE_FILE_STALE,       /* changed or written: read from the source */
};

/* One file's cache state (`efscachectl status`). */
struct cache_file_status {
	enum cache_file_state state;
	uint64_t size;         /* bytes: the record's, else the source's */
	uint64_t cached_bytes;
	uint32_t chunk_size;
	uint32_t chunks;
	uint32_t chunks_cached;
	uint32_t chunks_verified;
	int64_t last_validated; /* wall-clock seconds, 0 if never */
};

/* The cache's own figures (`efscachectl stats`, beside the counters). */
struct cache_usage {
	uint64_t entries;
	uint64_t usage_bytes;
	uint64_t size_bytes; /* cache_size */
	uint64_t write_behind_pending;
	bool index_ready;      /* the startup index is complete (chunks are stored) */
	const char *cache_dir; /* lives as long as the cache */
};

/* Fill *st for the file of ino; never adds an entry or loads a record. */
void cache_status(struct cache *c, struct efs_inode *ino, struct cache_file_status *st);
void cache_usage(struct cache *c, struct cache_usage *u);
/* cache_dir's path (where the control socket lives). */
const char *cache_dir_path(const struct cache *c);
/* True while cache_dir's path names the directory whose lock we hold; false
 * while it is gone, not yet recreated, or taken by another daemon (the
 * cache is then off, and nothing of ours may be put in that directory). */
bool cache_dir_owned(const struct cache *c);

/* Remove the record of the source file with inode number src_ino
 * (efscachectl evict: the control protocol names files by the inode
 * number stat shows through the mount, so the records of that number on
 * SOURCE's file system and on each file system below it are removed);
 * adds what was dropped to *bytes and *chunks.  0 or -errno: -EBUSY while
 * the file has kernel passthrough opens. */
int cache_evict_ino(struct cache *c, uint64_t src_ino, uint64_t *bytes, uint64_t *chunks);

/* The source file (src_dev, src_ino) lost its last name through the mount
 * (unlink, rename over it): remove its record now and give its space back.
 * Readers still holding it open read from the source. */
void cache_source_gone(struct cache *c, dev_t src_dev, uint64_t src_ino);

struct cache_verify_report {
	uint64_t chunks_total;   /* cached when the run started */
	uint64_t chunks_checked;
	uint64_t chunks_bad;     /* dropped; they will be fetched again */
	uint64_t bytes_checked;
};

/* Called by cache_verify_all after each chunk, with no lock held; a
 * non-zero return stops the run. */
typedef int (*cache_progress_fn)(const struct cache_verify_report *rep, void *arg);

/* Re-hash every cached chunk now; drop (and count) the bad ones.  Runs on
 * the caller's thread for as long as it takes (the control thread, never a
 * FUSE worker).  Returns 0, or fn's non-zero value if it stopped the run. */
int cache_verify_all(struct cache *c, struct cache_verify_report *rep, cache_progress_fn fn,
		     void *arg);

#endif
