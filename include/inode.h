/* inode.h - the table of inodes the kernel knows about.
 *
 * Each inode holds an O_PATH fd of its source object and the kernel's lookup
 * count.  Inodes are keyed by the source's (st_dev, st_ino), so hard links
 * share one inode.  The FUSE inode number is the struct's address; the root
 * is special-cased and never freed.
 */
#ifndef EFS_INODE_H
#define EFS_INODE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

struct cache_file;

/* The source fd through which one POSIX lock owner (a process, as the
 * kernel's lock_owner) holds its fcntl locks on a file: POSIX locks belong
 * to the process, not to one open file, so all of an owner's handles share
 * this fd's OFD locks. */
struct efs_lock_owner {
	uint64_t owner;
	int fd;
	struct efs_lock_owner *next;
};

struct efs_inode {
	int fd;          /* O_PATH, O_NOFOLLOW fd of the source object; immutable */
	dev_t dev;       /* immutable */
	ino_t ino;       /* immutable */
	mode_t type;     /* S_IFMT bits; immutable */
	uint64_t nlookup;        /* protected by the table lock */
	struct efs_inode *next;  /* hash chain; protected by the table lock */
	pthread_mutex_t lock;    /* protects the fields below */
	struct cache_file *cf;   /* cache state of a regular file, or NULL */
	struct efs_lock_owner *lock_owners; /* fcntl lock holders */
};

struct inode_table;

/* Create the table with root_fd (an O_PATH fd of SOURCE) as the root inode.
 * Returns 0 or -errno. */
int itab_new(struct inode_table **out, int root_fd);
/* Free every inode and close their fds (at unmount). */
void itab_free(struct inode_table *t);
struct efs_inode *itab_root(struct inode_table *t);

/* Find the inode of (st->st_dev, st->st_ino) or insert one owning fd, and add
 * one lookup reference.  fd is consumed in every case (closed if an inode
 * already existed).  Returns NULL on ENOMEM. */
struct efs_inode *itab_get(struct inode_table *t, int fd, const struct stat *st);
/* Add n lookup references to an inode the caller already holds. */
void itab_ref(struct inode_table *t, struct efs_inode *ino, uint64_t n);
/* Drop n lookup references; frees the inode when none are left. */
void itab_forget(struct inode_table *t, struct efs_inode *ino, uint64_t n);
/* Number of live inodes, for stats and tests. */
uint64_t itab_count(struct inode_table *t);

/* The source fd (opened on first use when create) through which POSIX lock
 * owner `owner` holds its fcntl locks on i; owned by the inode.  -ENOENT if
 * the owner holds none and !create, else -errno. */
int inode_lock_owner_fd(struct efs_inode *i, uint64_t owner, bool create);
/* close(2) semantics: drop all of owner's fcntl locks on i. */
void inode_lock_owner_release(struct efs_inode *i, uint64_t owner);

/* Hook called with an inode about to be freed (the cache drops its state). */
void itab_set_release_hook(struct inode_table *t, void (*fn)(struct efs_inode *, void *),
			   void *arg);

#endif
