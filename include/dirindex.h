/* dirindex.h - the directory index: the names in a directory and their
 * attributes, kept in memory (bounded) and in cache_dir, so that lookups,
 * negative lookups, getattr and listings are answered without the source
 * while the index is valid, also after drop_caches, a remount or a daemon
 * restart (issue 17).
 *
 * A struct dix_dir is an immutable snapshot of one directory's listing
 * (sorted by name) as one pass over the source saw it, with the
 * directory's mtime and ctime at that time.  When a snapshot may be used is
 * the caller's decision (fsops_entry.c, fsops_dir.c, with meta.c's
 * windows): with ttl=never always; otherwise once checked against the
 * source within the directory's window (dix_checked), and a file's
 * attributes only within its own window from when they were seen.  This
 * module only keeps snapshots, encodes them and finds names.
 *
 * Persistence goes through struct dix_store_ops (the cache's records in
 * the daemon, cache_blob.h; a fake in the unit tests): an encoded snapshot
 * is one blob per directory, replaced whole.  The format, little-endian:
 *
 *   header, 80 bytes
 *     0  u8[8]  magic "EFSCDIRX"
 *     8  u32    format version (1)
 *    12  u32    number of entries n (at most DIX_MAX_ENTRIES)
 *    16  u64    the directory's inode number
 *    24  i64    its mtime, seconds         32  i64  its ctime, seconds
 *    40  u32    its mtime, nanoseconds     44  u32  its ctime, nanoseconds
 *    48  u64    inode number of "."        56  u64  inode number of ".."
 *    64  u32    length of the names area in bytes
 *    68  u32    low 32 bits of XXH3-64 of the body (entries and names)
 *    72  u32    0 (reserved)
 *    76  u32    low 32 bits of XXH3-64 of header bytes 0..75
 *   n entries, 112 bytes each, sorted by name (bytewise, no two alike)
 *     0  u64 inode number   8 u64 size   16 u64 blocks (512 B)  24 u64 rdev
 *    32  i64 atime s   40 i64 mtime s   48 i64 ctime s   56 i64 birth time s
 *    64  u32 atime ns  68 u32 mtime ns  72 u32 ctime ns  76 u32 birth ns
 *        (0xffffffff: the source records no birth time)
 *    80  u32 mode (type and permission bits)   84 u32 nlink
 *    88  u32 uid   92 u32 gid   96 u32 blksize
 *   100  u32 offset of the name in the names area (the names follow each
 *            other in entry order)
 *   104  u16 name length (1..255)
 *   106  u16 flags: bit 0 (DIX_F_MOUNT) another file system is mounted on
 *            the name (its attributes are the mount's root, on another
 *            device): never answered from the index; other bits 0
 *   108  u32 0 (reserved)
 *   the names area: the names, without terminators
 *
 * A blob that fails any check (magic, version, lengths, either checksum,
 * order, a name with '/' or NUL, reserved bits set) is refused whole: the
 * directory is listed from the source again.  The store's own record
 * checksum (store.h) covers the blob too.
 *
 * Locks: x->mu, a leaf, guards the table, the LRU, references and the
 * check times; store calls and encoding run without it.
 */
#ifndef EFS_DIRINDEX_H
#define EFS_DIRINDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

#include "meta.h"

#define DIX_FORMAT_VERSION 1
#define DIX_HEADER_SIZE 80
#define DIX_ENTRY_SIZE 112
/* A directory with more entries, or whose encoded snapshot would be
 * larger, is listed from the source, not indexed. */
#define DIX_MAX_ENTRIES (1u << 17)
#define DIX_MAX_BYTES (16u << 20)
#define DIX_NAME_MAX 255

/* The attributes of one name, as its lookup on the source saw them. */
struct dix_attr {
	uint64_t ino, size, blocks, rdev;
	int64_t atime_s, mtime_s, ctime_s, btime_s;
	uint32_t atime_ns, mtime_ns, ctime_ns, btime_ns; /* btime_ns ~0: none */
	uint32_t mode, nlink, uid, gid, blksize;
};

#define DIX_F_MOUNT 1u

struct dix_entry {
	uint32_t name_off; /* into the snapshot's names */
	uint16_t name_len;
	uint16_t flags;    /* DIX_F_* */
	struct dix_attr a;
};

struct dix_dir {
	/* Immutable once published: */
	uint64_t dev, ino; /* the directory (st_dev, st_ino) */
	struct timespec mtime, ctime;
	uint64_t dot_ino, dotdot_ino;
	uint32_t n;
	struct dix_entry *ent; /* n, sorted by name */
	char *names;
	uint32_t names_len;
	size_t bytes; /* memory it costs */
	/* When its attributes were seen (CLOCK_MONOTONIC), if by this
	 * daemon; a snapshot loaded from cache_dir has none. */
	struct timespec seen;
	bool seen_here;
	/* Under the index's mutex: */
	unsigned refs;
	bool listed;              /* in the table (else freed at its last put) */
	bool checked_here;        /* checked against the source by this daemon */
	bool unsaved;             /* its store said "not yet" (-EAGAIN): the
				   * next dix_get saves it */
	struct timespec checked;  /* CLOCK_MONOTONIC of that check */
	struct dix_dir *hnext, *lru_prev, *lru_next;
};

/* Where snapshots persist.  All may be NULL (memory only); with save NULL
 * and remove set, a published snapshot removes the stored one instead. */
struct dix_store_ops {
	/* The encoded snapshot of directory (dev, ino), malloc'd into *buf.
	 * 0, -ENOENT (none), or -errno. */
	int (*load)(void *arg, uint64_t dev, uint64_t ino, void **buf, size_t *len);
	/* Keep buf as the snapshot of (dev, ino), replacing any older one.
	 * The index works whether it succeeds or not; -EAGAIN (not yet)
	 * has the next dix_get of it try again. */
	int (*save)(void *arg, uint64_t dev, uint64_t ino, const struct dix_dir *d, const void *buf,
		    size_t len);
	void (*remove)(void *arg, uint64_t dev, uint64_t ino);
	void *arg;
};

struct dix;

/* An index keeping at most mem_max bytes of snapshots in memory (those in
 * use may exceed it until put).  ops is copied.  0 or -ENOMEM. */
int dix_new(struct dix **out, size_t mem_max, const struct dix_store_ops *ops);
/* dix_free saves what its store said "not yet" to first (dix_flush). */
void dix_free(struct dix *x);
/* Save the snapshots the store said "not yet" to (each tried once). */
void dix_flush(struct dix *x);

/* The snapshot of directory (dev, ino), from memory or the store, with a
 * reference (dix_put); NULL if there is none. */
struct dix_dir *dix_get(struct dix *x, uint64_t dev, uint64_t ino);
/* The same from memory only (never read from the store). */
struct dix_dir *dix_get_loaded(struct dix *x, uint64_t dev, uint64_t ino);
/* Is the snapshot of (dev, ino) in memory (no reference taken)? */
bool dix_loaded(struct dix *x, uint64_t dev, uint64_t ino);
/* Another reference on d, which the caller holds one on (dix_put). */
void dix_ref(struct dix *x, struct dix_dir *d);
void dix_put(struct dix *x, struct dix_dir *d);

/* The entry named name (len bytes) in d, or NULL. */
const struct dix_entry *dix_find(const struct dix_dir *d, const char *name, size_t len);
/* Its name (not terminated) and length. */
static inline const char *dix_name(const struct dix_dir *d, const struct dix_entry *e)
{
	return d->names + e->name_off;
}
/* Its attributes as a struct stat of device dev. */
void dix_stat(const struct dix_entry *e, uint64_t dev, struct stat *st);
/* Its birth time, if the source records one. */
bool dix_btime(const struct dix_entry *e, struct timespec *out);

/* The source said the directory is still as d saw it (mtime, ctime) at
 * now: names may be trusted for another window from there. */
void dix_checked(struct dix *x, struct dix_dir *d, const struct timespec *now);
/* When d was last checked by this daemon; false if never. */
bool dix_last_checked(struct dix *x, struct dix_dir *d, struct timespec *at);
/* Is st (the directory's attributes now) the directory d listed: the same
 * inode number, mtime and ctime? */
bool dix_dir_same(const struct dix_dir *d, const struct stat *st);

/* When a snapshot may answer for the source (docs/design.md, "Directory
 * index").  The rules, in order:
 *   1. if this daemon saw the directory (dir: its meta_attr, under the
 *      caller's lock; NULL or !seen: nothing) after d was made or last
 *      checked here (any time, for a snapshot of an earlier daemon) and
 *      saw another mtime or ctime: STALE (dix_forget it, ask the source);
 *   2. with ttl=never (never): ANSWER, never checked on a timer;
 *   3. checked here less than window seconds ago (the window the kernel
 *      gets for the directory's names): ANSWER;
 *   4. else CHECK: one stat of the directory on the source, then
 *      dix_recheck.  A snapshot read from cache_dir is checked at its
 *      first use. */
enum dix_verdict { DIX_ANSWER, DIX_CHECK, DIX_STALE };
enum dix_verdict dix_judge(struct dix *x, struct dix_dir *d, bool never, double window,
			   const struct meta_attr *dir, const struct timespec *now);
/* After DIX_CHECK: st is what the source answered for the directory at
 * now.  True: d is checked for another window.  False: the directory
 * changed, d is forgotten (memory and store). */
bool dix_recheck(struct dix *x, struct dix_dir *d, const struct stat *st,
		 const struct timespec *now);
/* Seconds an entry's attributes in d may be given to the kernel as its
 * attribute timeout at now, window being the file's attribute window:
 * with ttl=never the window; else what is left of it since d's pass saw
 * them, and 0 for a snapshot of an earlier daemon (when it saw them is
 * not known). */
double dix_attr_left(const struct dix_dir *d, bool never, double window,
		     const struct timespec *now);

/* Building a snapshot from one pass over the source directory, whose
 * attributes at the start of the pass are dir. */
struct dix_build;
struct dix_build *dix_build_begin(const struct stat *dir);
/* One name (not "." or ".."), with its attributes and birth time (NULL:
 * none).  0, -EINVAL (a bad name), -E2BIG (more than DIX_MAX_ENTRIES
 * names or DIX_MAX_BYTES encoded: abandon the build), -ENOMEM. */
int dix_build_add(struct dix_build *b, const char *name, const struct stat *st,
		  const struct timespec *btime);
void dix_build_dots(struct dix_build *b, uint64_t dot_ino, uint64_t dotdot_ino);
/* Publish the snapshot (in memory, then to the store, replacing older
 * ones), as seen and checked at now.  Returns it with a reference, or NULL
 * (ENOMEM, or two entries of one name: the pass saw the directory change).
 * b is consumed either way. */
struct dix_dir *dix_build_commit(struct dix *x, struct dix_build *b, const struct timespec *now);
void dix_build_abort(struct dix_build *b);

/* The directory changed (through the mount) or its snapshot is wrong:
 * drop it from memory and from the store.  A dix_get reading the store
 * meanwhile (on any thread) returns NULL rather than what it read. */
void dix_forget(struct dix *x, uint64_t dev, uint64_t ino);

/* Encoding (the format above), for the store and the fuzzer.  dix_decode
 * makes a snapshot of directory (dev, ino) that has no check time; it
 * refuses (-EBADMSG) anything dix_encode would not have written for that
 * inode number. */
int dix_encode(const struct dix_dir *d, void **buf, size_t *len);
int dix_decode(const void *buf, size_t len, uint64_t dev, uint64_t ino, struct dix_dir **out);
/* Free a snapshot that was never published (dix_decode's). */
void dix_dir_free(struct dix_dir *d);

struct dix_counts {
	uint64_t dirs;    /* snapshots in memory */
	uint64_t bytes;   /* their memory */
	uint64_t loads;   /* snapshots read from the store */
	uint64_t saves;   /* written to it */
	uint64_t bad;     /* refused by dix_decode */
};
void dix_counts(struct dix *x, struct dix_counts *out);

#endif
