/* inode.h - the table of inodes the kernel knows about.
 *
 * Inodes are keyed by the source's (st_dev, st_ino), so hard links share
 * one inode.  The FUSE inode number is the struct's address; the root is
 * special-cased and never freed.
 *
 * An inode does not own an fd for its whole life: the kernel may know
 * millions of inodes, RLIMIT_NOFILE allows a few thousand fds.  Each inode
 * remembers where it was last seen (its parent inode and its name there)
 * and the table keeps a bounded number of O_PATH fds, least recently used
 * first out.  inode_fd_get() returns the fd, reopening it from the parent's
 * fd and the name when it was closed, and checks that the name still leads
 * to the same (st_dev, st_ino): if not the object was removed or replaced
 * on the source and the answer is -ESTALE (the kernel then looks the name
 * up again).  A child holds a reference on its parent, so the chain to the
 * root always exists.
 */
#ifndef EFS_INODE_H
#define EFS_INODE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "meta.h"

struct cache_file;

/* The source fd through which one POSIX lock owner (a process, as the
 * kernel's lock_owner) holds its fcntl locks on a file: POSIX locks belong
 * to the process, not to one open file, so all of an owner's handles share
 * this fd's OFD locks.  A close by the owner (FLUSH) takes the entry off
 * its inode at once; its fd, the only one of its open file description,
 * is closed then (the OFD locks go with it), or by the last user still
 * holding a reference (a lock call in progress on it). */
struct efs_lock_owner {
	uint64_t owner;
	int fd;
	unsigned refs;   /* users, plus one while listed; under i->lock */
	bool listed;     /* on i->lock_owners; under i->lock */
	struct efs_lock_owner *next;
};

/* Fields ordered by size (no padding holes: one per inode the kernel
 * knows, hundreds of thousands of them in a big tree). */
struct efs_inode {
	dev_t dev;       /* immutable */
	ino_t ino;       /* immutable */
	/* Protected by the table lock: */
	uint64_t nlookup;         /* the kernel's references */
	uint64_t refs;            /* children whose parent this is, and callers
				   * inside inode_fd_get() */
	struct efs_inode *next;   /* hash chain, or the list of superseded inodes */
	struct efs_inode *parent; /* where the name was last seen; NULL for the root */
	char *name;               /* its name in parent */
	struct efs_inode *place_next; /* chain of the (parent, name) index */
	struct timespec btime;    /* birth time, if the source records it */
	struct efs_inode *lru_prev, *lru_next; /* fd LRU, while fd >= 0 */
	struct meta_attr attr;    /* attribute cache state (meta.h) */
	struct timespec list_mtime, list_ctime; /* directory as last listed */
	off_t next_off;           /* atomic: where a reader without a handle
				   * (-o immutable) reads next, for readahead */
	mode_t type;              /* S_IFMT bits; immutable */
	int fd;                   /* O_PATH, O_NOFOLLOW fd of the source object, or -1 */
	unsigned fd_users;        /* inode_fd_get() without inode_fd_put() */
	bool superseded;          /* its number now names another object: out of
				   * the hash, alive until the kernel forgets it */
	bool has_btime;
	bool listed;

	bool unindexed;           /* atomic: a pass over this directory made no
				   * index snapshot (too big, a fault), or it
				   * changed through the mount since: a lookup
				   * does not list it (fsops_index.c) */
	uint8_t list_mode;        /* atomic: how listings without a handle (-o
				   * immutable) are served for this inode's
				   * life, chosen at its first: LIST_* in
				   * fsops_dir.c (the kernel's cookies of one
				   * can never reach the other) */

	pthread_mutex_t lock;     /* protects the fields below */
	struct cache_file *cf;    /* cache state of a regular file, or NULL */
	struct efs_lock_owner *lock_owners; /* fcntl lock holders */
};

struct inode_table;

/* Create the table with root_fd (an O_PATH fd of SOURCE) as the root inode.
 * fd_budget bounds the O_PATH fds kept open (the root's is not counted).
 * Returns 0 or -errno. */
int itab_new(struct inode_table **out, int root_fd, unsigned fd_budget);
/* The process's other fds (open files and directories, the cache's files,
 * the session) vary; fd_budget is what the inodes may hold when they are
 * few.  An fd numbered ceiling or more means every number below it is taken:
 * the process nears its limit, and idle inode fds are closed to make room
 * (a batch at each such fd, towards three quarters of those open),
 * whatever the budget.  0: no ceiling. */
void itab_set_fd_ceiling(struct inode_table *t, unsigned ceiling);
/* ttl=never: the kernel keeps a file's pages as long as it knows the inode
 * (no open asks), so a lookup that finds a regular file's size, mtime or
 * ctime changed gives it a new inode (FUSE node id) instead, as for a
 * reused inode number: the kernel's pages of the old version stay with
 * the old one.  Set before use. */
void itab_set_new_node_on_change(struct inode_table *t, bool on);
/* Free every inode and close their fds (at unmount). */
void itab_free(struct inode_table *t);
struct efs_inode *itab_root(struct inode_table *t);

/* The object named `name` in parent was found: fd (O_PATH, consumed in
 * every case) and its stat st.  Find the inode of (st_dev, st_ino) or
 * insert one, record (parent, name) as where it was seen, and add one
 * lookup reference.  Returns NULL on ENOMEM. */
struct efs_inode *itab_get(struct inode_table *t, struct efs_inode *parent, const char *name,
			   int fd, const struct stat *st);
/* The same for an object the source was not asked about now: what a
 * directory index says of name in parent (st, and its birth time if the
 * source records one, else NULL).  The inode holds no fd until one is
 * needed (inode_fd_get opens it from the parent and name, and checks it
 * is still the same object).  Returns NULL on ENOMEM. */
struct efs_inode *itab_get_known(struct inode_table *t, struct efs_inode *parent,
				 const char *name, const struct stat *st,
				 const struct timespec *btime);
/* Drop n lookup references; frees the inode when none are left. */
void itab_forget(struct inode_table *t, struct efs_inode *ino, uint64_t n);
/* The inode of (dev, ino) if the kernel knows it, else NULL; no reference
 * is taken, so only for callers that hold one another way. */
struct efs_inode *itab_find(struct inode_table *t, dev_t dev, ino_t ino);
/* itab_find taking a hold (give it back with itab_unhold), for a thread
 * that has no reference of its own. */
struct efs_inode *itab_find_hold(struct inode_table *t, dev_t dev, ino_t ino);
/* Keep i in the table without a lookup reference (a worker that goes on
 * using it after its request was answered); itab_unhold gives it back. */
void itab_hold(struct inode_table *t, struct efs_inode *i);
void itab_unhold(struct inode_table *t, struct efs_inode *i);
/* Inodes other than `except` whose name was last seen as `name` in dir
 * (the object there was deleted, replaced or renamed since): up to max of
 * them into out, each held (itab_unhold each).  Returns how many. */
unsigned itab_others_at(struct inode_table *t, struct efs_inode *dir, const char *name,
			const struct efs_inode *except, struct efs_inode **out, unsigned max);
/* The object was renamed through the mount: it now lives in newparent. */
void itab_moved(struct inode_table *t, struct efs_inode *ino, struct efs_inode *newparent,
		const char *newname);

/* The inode's O_PATH fd, reopened from its parent and name if it was
 * closed.  Returns the fd (valid until inode_fd_put) or -errno: -ESTALE if
 * the name now leads to another object, the source's errno otherwise. */
int inode_fd_get(struct inode_table *t, struct efs_inode *ino);
void inode_fd_put(struct inode_table *t, struct efs_inode *ino);
/* The inode's O_PATH fd if one is open now, without reopening it (that
 * would resolve the name); -1 if none.  Release with inode_fd_put. */
int inode_fd_peek(struct inode_table *t, struct efs_inode *ino);
/* Close idle fds until at most `keep` are open (called when the process
 * ran out of fds); returns how many were closed. */
unsigned itab_shrink(struct inode_table *t, unsigned keep);

/* Copy of the name and a reference on the parent, for a caller that wants
 * to resolve the name again (the open path).  Returns 0, -ENOENT for the
 * root, -ENOMEM.  Release with itab_parent_put(). */
int itab_parent_get(struct inode_table *t, struct efs_inode *ino, struct efs_inode **parent,
		    char **name);
void itab_parent_put(struct inode_table *t, struct efs_inode *parent, char *name);

/* Metadata state (meta.h) under the table lock.  itab_observe: the source
 * answered st for i; returns the attribute timeout to give the kernel.
 * itab_observe_at: a directory index says st of i, as the source answered
 * at `at` (CLOCK_MONOTONIC; NULL: at an unknown time, by an earlier
 * daemon): recorded unless i holds a newer answer, and returns what is left
 * of the window (0 if nothing), or -1 if i's newer answer differs (the
 * index is out of date for i: ask the source). */
double itab_observe(struct inode_table *t, struct efs_inode *i, const struct meta_policy *p,
		    const struct stat *st);
double itab_observe_at(struct inode_table *t, struct efs_inode *i, const struct meta_policy *p,
		       const struct stat *st, const struct timespec *at);
void itab_attr(struct inode_table *t, struct efs_inode *i, struct meta_attr *out);
double itab_entry_timeout(struct inode_table *t, struct efs_inode *dir,
			  const struct meta_policy *p, bool negative);
/* A directory was opened and is now st: may the kernel keep the listing it
 * cached at the last open (mtime and ctime unchanged)?  Records st. */
bool itab_listing_unchanged(struct inode_table *t, struct efs_inode *dir, const struct stat *st);

/* Counters for stats and tests. */
struct itab_counts {
	uint64_t inodes;    /* known to the kernel or held as parents */
	uint64_t fds;       /* O_PATH fds open now */
	uint64_t reopens;   /* fds reopened from parent + name */
	uint64_t fd_budget;
};
void itab_counts(struct inode_table *t, struct itab_counts *out);

/* The entry (its source fd opened on first use when create) through which
 * POSIX lock owner `owner` holds its fcntl locks on i, with a reference:
 * its fd stays open until inode_lock_owner_put.  NULL with *err = -ENOENT
 * if the owner holds none and !create, else -errno. */
struct efs_lock_owner *inode_lock_owner_get(struct inode_table *t, struct efs_inode *i,
					    uint64_t owner, bool create, int *err);
void inode_lock_owner_put(struct efs_inode *i, struct efs_lock_owner *o);
/* Is o still i's entry of its owner (no close took it off since it was
 * got)?  If so, fn(arg) is called under the same lock as
 * inode_lock_owner_release's, so what fn records cannot come after the
 * release's own fn.  A lock applied through an entry that was taken off
 * went with its fd: apply it again through a new entry. */
bool inode_lock_owner_if_listed(struct efs_inode *i, struct efs_lock_owner *o,
				void (*fn)(void *), void *arg);
/* close(2) semantics: drop all of owner's fcntl locks on i.  The entry
 * leaves i at once and fn(arg) (may be NULL) is called under i->lock; its
 * fd is closed now or by the last inode_lock_owner_put.  Returns whether
 * owner held any (had an entry here). */
bool inode_lock_owner_release(struct efs_inode *i, uint64_t owner, void (*fn)(void *),
			      void *arg);

/* Does some POSIX lock owner hold an fd (and maybe locks) on i now? */
bool inode_has_lock_owners(struct efs_inode *i);

/* Hook called with an inode about to be freed (the cache drops its state). */
void itab_set_release_hook(struct inode_table *t, void (*fn)(struct efs_inode *, void *),
			   void *arg);

#endif
