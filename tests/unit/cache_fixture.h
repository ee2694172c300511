/* cache_fixture.h - the fixture of the cache core's unit tests
 * (test_cache_fetch.c, test_cache_space.c, test_cache_model.c): a fake
 * cache_source over a temporary directory, the environment (source dir,
 * cache_dir, inode table, cache), the file, handle and read helpers, and
 * (core_*) the cache core's calls as the FUSE ops make them.  See
 * cache_fixture.c.
 *
 * The fixture CHECKs too: including this header shares check.h's counters
 * with cache_fixture.c (CHECK_SHARED_COUNTERS), so that a program's summary
 * counts every check it ran.  Include it instead of check.h.
 */
#ifndef EFS_CACHE_FIXTURE_H
#define EFS_CACHE_FIXTURE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "cache.h"
#include "inode.h"

#define CHECK_SHARED_COUNTERS
#include "check.h"

#define CS (64u << 10) /* chunk size of every test: the smallest allowed */
#define BLK 4096u      /* the cache accounts in 4 KiB blocks */

/* ---- the fake source ----------------------------------------------------- */

/* How a read changes the file's identity.  An fd cannot move to another
 * inode on a local file system, so CHG_INODE is told by the fake itself:
 * the next stat of an open fd reports another inode number, as a server
 * would whose file handle now leads elsewhere. */
enum change { CHG_NONE, CHG_MTIME, CHG_SIZE, CHG_INODE };

struct fake {
	int root;	       /* O_PATH fd of the source directory */
	struct inode_table *t; /* for open_object */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	/* All below protected by mu. */
	unsigned reads;	      /* read calls */
	unsigned stat_opens;  /* stat_open calls */
	unsigned validated;   /* validated calls */
	off_t validated_size; /* the size the last one was told */
	int fail;	      /* errno every call fails with; 0 = none */
	bool other_ino;	      /* the next stat_open reports another inode */
	bool hold;	      /* reads wait at the gate until it opens */
	bool hold_others;     /* reads of threads but `free` wait at the gate */
	pthread_t free_thread;
	unsigned held;	      /* reads waiting at the gate now */
	enum change change;   /* done once, after the next read's bytes */
	char change_name[64]; /* the file it is done to */
	/* Pushes into the "kernel's page cache" (cache_source.push): */
	bool push_on;	      /* accepted (else refused with ENOSYS) */
	bool push_hold;	      /* pushes wait at their gate until it opens */
	unsigned pushes;      /* accepted */
	unsigned push_bad;    /* whose bytes differ from the source file's */
	unsigned pushing;     /* in the callback now */
	uint64_t pushed;      /* bytes accepted */
};

/* ---- the environment: source dir, cache_dir, inode table, cache ------- */

struct env {
	char src[64], cdir[64];
	struct efs_config cfg;
	struct efs_stats stats;
	struct fake f;
	struct inode_table *t;
	struct cache *c;
	/* The size the "kernel" believes the files have (cache_read's
	 * kernel_size); 0 by default: no read goes past what was validated. */
	uint64_t kernel_size;
};

/* A file handle: cache_open plus the handle's own source fd. */
struct handle {
	struct efs_inode *ino;
	int fd;
};

/* The fake: the read calls it got, and what it does to the next ones. */
unsigned fake_reads(struct fake *f);
void fake_set_fail(struct fake *f, int err); /* every call fails with -err; 0 = none */
void fake_set_hold(struct fake *f, bool hold); /* reads wait at the gate while hold */
/* Reads of every thread but the caller wait at the gate while hold (the
 * caller's own reads, the demand's, pass); fake_held counts the waiting. */
void fake_hold_others(struct fake *f, bool hold);
unsigned fake_held(struct fake *f);
void fake_set_push(struct fake *f, bool on, bool hold);
unsigned fake_pushes(struct fake *f);
unsigned fake_pushing(struct fake *f); /* pushes in the callback now */
void fake_arm_change(struct fake *f, enum change how, const char *name); /* after next read */

/* The environment: env_init makes the directories and starts a cache of
 * cache_size bytes (no prefetch, verify=once); env_fini stops it and
 * removes them.  env_down and env_up stop and start the cache only, as a
 * daemon's exit and restart over the same cache_dir. */
void env_init_full(struct env *v, uint64_t cache_size, unsigned prefetch, enum verify_mode verify);
/* Where env_init makes its two directories ("/tmp"; at most 24 characters). */
extern const char *env_tmp_parent;
void env_init(struct env *v, uint64_t cache_size);
void env_fini(struct env *v);
void env_up(struct env *v);
void env_up_nowait(struct env *v); /* env_up without waiting for the startup index */
void env_down(struct env *v);

/* Files: pat is the byte at offset o of a file made with seed; make_file
 * writes one on the source and looks it up, lookup only looks it up. */
unsigned char pat(uint64_t o, unsigned seed);
void write_file(struct env *v, const char *name, uint64_t size, unsigned seed);
struct efs_inode *make_file(struct env *v, const char *name, uint64_t size, unsigned seed);
struct efs_inode *lookup(struct env *v, const char *name);

/* Handles and reads: h_open returns cache_open's result; read_check reads
 * through the cache, CHECKs the bytes against seed and returns the byte
 * count or -errno.  gather copies a reply's bytes out of its segments. */
int h_open(struct env *v, struct efs_inode *ino, struct handle *h, bool *keep);
void h_close(struct env *v, struct handle *h);
void gather(const struct cache_read *rd, unsigned char *out);
bool bytes_are(const unsigned char *b, uint64_t off, size_t len, unsigned seed);
ssize_t read_check_seq(struct env *v, struct handle *h, uint64_t off, size_t len, unsigned seed,
		       bool sequential);
ssize_t read_check(struct env *v, struct handle *h, uint64_t off, size_t len, unsigned seed);

/* Witnesses: a stats counter, a cache_usage figure by its stats name,
 * waits (bounded) for write-behind or a counter, the record's files. */
uint64_t st(struct env *v, enum stat_id id);
uint64_t stat_line(struct env *v, const char *name);
void wait_stored(struct env *v);
bool wait_stat(struct env *v, enum stat_id id, uint64_t n);
void record_path(struct env *v, uint64_t src_ino, const char *ext, char *p, size_t len);
uint32_t disk_slot_len(struct env *v, struct efs_inode *ino, uint32_t idx);
uint64_t disk_data_bytes(struct env *v, struct efs_inode *ino);

/* ---- the cache core as the FUSE ops call it (test_cache_model.c) -------
 * The one place that calls cache.h for the model test: when the core's API
 * changes (a device beside the inode number, say), only these change.
 * Every call returns 0 / a count or -errno. */

/* LOOKUP of name in the source root: an inode with one more lookup
 * reference (core_forget gives it back), or -ENOENT etc. */
int core_lookup(struct env *v, const char *name, struct efs_inode **out);
void core_forget(struct env *v, struct efs_inode *ino);
/* OPEN of a regular file for reading (cache_open, no source fd of its own);
 * RELEASE (cache_close). */
int core_open(struct env *v, struct efs_inode *ino, bool *keep_cache);
void core_close(struct env *v, struct efs_inode *ino);
/* The handle's own source fd, opened by the inode's object as file_fd()
 * does when a read must bypass the cache (-EBADFD from core_read). */
int core_source_fd(struct env *v, struct efs_inode *ino);
/* How a reply was made: its segments (bytes of a cache file, or memory:
 * fetched or checked by this read, or read from the source). */
struct core_reply {
	bool cut; /* a segment came back short: the reply ends there */
	unsigned nseg;
	struct {
		bool file;   /* a cache file's bytes (spliced by the real daemon) */
		uint64_t pos; /* where in that file */
		size_t len;
	} seg[CACHE_MAX_SEGS];
};
/* READ of [off, off+len) into out: cache_read, then the reply's bytes as the
 * kernel gets them (segments of cache files read with fault injection paused,
 * as a splice is not a call of ours), then cache_read_done.  Returns the
 * byte count, or -errno (-EBADFD: open core_source_fd and call again).  A
 * segment that comes back short ends the reply there (a short reply is EOF
 * to FUSE): rep->cut is then true.  rep may be NULL. */
ssize_t core_read(struct env *v, struct efs_inode *ino, int src_fd, uint64_t off, size_t len,
		  bool sequential, unsigned char *out, struct core_reply *rep);
/* efscachectl evict of the file (dev, ino) and verify of the whole cache
 * (fn may be NULL); the unlink or rename-over of its last name through the
 * mount (fsops calls cache_source_gone then). */
int core_evict(struct env *v, dev_t dev, ino_t ino);
int core_verify_all(struct env *v, cache_progress_fn fn, void *arg,
		    struct cache_verify_report *rep);
void core_source_gone(struct env *v, dev_t dev, ino_t ino);
/* The store key (32 hex digits and a NUL) of the record of (dev, ino). */
void core_record_key(struct env *v, dev_t dev, ino_t ino, char key[33]);
/* Entries the cache holds (cache_usage) and write-behind in flight. */
uint64_t core_entries(struct env *v);
uint64_t core_write_behind(struct env *v);

#endif
