/* lockdep.h - deadlock detection among the mount's POSIX lock owners.
 *
 * Record locks reach the source as OFD locks (source.h), and the kernel
 * detects deadlocks only between POSIX locks of processes, so two processes
 * that each wait for a range the other holds would wait for each other
 * forever through the mount, where the source answers EDEADLK.  This module
 * keeps what the source granted to each lock owner of this mount (an
 * owner's ranges on a file, split and replaced as POSIX says) and what each
 * waits for, and refuses a wait that would close a cycle of owners waiting
 * for each other (followed up to LOCKDEP_MAX_DEPTH owners deep, as the
 * kernel does).  Holders on other hosts are unknown here, as they are to
 * an NFS client.
 *
 * Files and owners are opaque keys.  Ranges are as FUSE passes them:
 * l_whence SEEK_SET, l_len 0 meaning to the end of the file.
 */
#ifndef EFS_LOCKDEP_H
#define EFS_LOCKDEP_H

#include <fcntl.h>
#include <stdint.h>

struct lockdep;

/* Returns 0 or -ENOMEM. */
int lockdep_new(struct lockdep **out);
void lockdep_free(struct lockdep *ld);

/* The source granted lk (F_RDLCK, F_WRLCK or F_UNLCK) to owner on file. */
void lockdep_granted(struct lockdep *ld, const void *file, uint64_t owner, const struct flock *lk);
/* owner is about to wait for lk on file.  -EDEADLK if owners of this mount
 * that hold conflicting ranges wait, directly or through others, for
 * owner's ranges (nothing recorded then); else the wait is recorded and 0
 * returned.  Also -ENOMEM. */
int lockdep_wait_begin(struct lockdep *ld, const void *file, uint64_t owner,
		       const struct flock *lk);
/* That wait ended; granted: lk is now held (as lockdep_granted). */
void lockdep_wait_end(struct lockdep *ld, const void *file, uint64_t owner,
		      const struct flock *lk, bool granted);
/* owner holds nothing on file any more (its fd there was closed). */
void lockdep_forget(struct lockdep *ld, const void *file, uint64_t owner);

#endif
