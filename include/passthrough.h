/* passthrough.h - kernel passthrough of fully cached files (libfuse >= 3.17,
 * Linux >= 6.9).
 *
 * Contract
 *   A read-only open of a regular file whose every chunk is VERIFIED by this
 *   daemon, whose record is on disk and whose identity was valid at that open
 *   ("eligible", decided by cache_entry.c under the entry's mutex) is answered with
 *   FOPEN_PASSTHROUGH and a backing id of the cache's data file: the kernel
 *   then serves read() and mmap() from that file and sends no READ.
 *
 *   The kernel allows one io mode per FUSE inode at a time: either cached
 *   opens (page cache, READ requests) or passthrough opens, all with the same
 *   backing file; an open answered in the other mode fails with EIO (and so
 *   does FOPEN_KEEP_CACHE with passthrough, on Linux 6.18).  So per cache
 *   entry (one per source file):
 *     - no open in either mode: an eligible open becomes passthrough with a
 *       new backing id of the data file;
 *     - passthrough opens exist: a read-only open that found the identity
 *       unchanged shares their backing id; a reader that found the source
 *       changed is refused with EBUSY: serving it old bytes would be stale,
 *       and the kernel allows it no other mode.  A writer would be refused
 *       with ETXTBSY before the source is opened, but passthrough is used on
 *       -o ro mounts only, where the kernel answers a writer EROFS itself;
 *     - cached opens exist (readers or writers): every open stays cached.
 *   The backing id is closed when the last passthrough open is released.
 *
 *   The rule the cache (cache_entry.c, cache.c, cache_admin.c) keeps: nothing changes the bytes of a data file while
 *   passthrough opens of it exist (pt_holds()): eviction skips its chunks,
 *   a new identity does not reset the record but marks it bypass (the open
 *   that found it is refused, see above) until the last passthrough open is
 *   gone and the next open resets it, a bad chunk found by verify is
 *   not punched out (the entry goes to bypass the same way), efscachectl
 *   evict answers EBUSY.  Removing the record's names (cache_source_gone,
 *   cache_dir recreated) changes no bytes and is allowed.
 *
 *   Only on -o ro mounts: there no writer can open through the mount, so the
 *   kernel's one-mode rule can refuse no writer (POSIX lets a writer open a
 *   file that others read).  On a rw mount passthrough=auto means off and
 *   the log says so once.  A change made on the source itself while
 *   passthrough opens exist still makes the next open fail with EBUSY: the
 *   documented limitation (docs/design.md).
 *
 *   When passthrough cannot be used (read-write mount, built against
 *   libfuse < 3.17, the kernel did not negotiate it, no CAP_SYS_ADMIN,
 *   cache_dir on a stacked file system) the log says why once and every
 *   open is answered as before.
 *
 * Threads: pt_open_locked and pt_release_locked are called with the entry's
 * mutex held; the global state is atomic.
 */
#ifndef EFS_PASSTHROUGH_H
#define EFS_PASSTHROUGH_H

#include <stdbool.h>
#include <stdint.h>

#include "stats.h"

struct fuse_conn_info;

/* How an open was answered. */
enum pt_mode {
	PT_NONE = 0,	/* not counted (not a regular file, no cache entry) */
	PT_CACHED,	/* as before: page cache and READ requests */
	PT_PASSTHROUGH, /* FOPEN_PASSTHROUGH with the entry's backing id */
};

/* Per cache entry; protected by the entry's mutex. */
struct pt_entry {
	unsigned opens;	 /* PT_PASSTHROUGH opens not yet released */
	unsigned cached; /* PT_CACHED opens (readers and writers) not yet released */
	int backing_id;	 /* > 0 while opens > 0 */
};

/* Nothing may change the entry's data file (see the contract). */
static inline bool pt_holds(const struct pt_entry *pe)
{
	return pe->opens > 0;
}

/* At startup: want is -o passthrough (auto = true), ro -o ro; stats counts
 * the opens.  Logs nothing. */
void pt_configure(bool want, bool ro, struct efs_stats *stats);
/* In the FUSE init callback: ask the kernel for passthrough, or log once
 * why it is off (read-write mount, libfuse < 3.17 at build time, the kernel
 * does not offer it). */
void pt_conn_init(struct fuse_conn_info *conn);
/* Passthrough may be tried for new opens. */
bool pt_enabled(void);

/* Decide how to answer an open of the entry (req is the open's request,
 * a fuse_req_t).  ro: read-only (a writer asks before it opens the source);
 * unchanged: this open found the identity the record has; eligible: see
 * the contract; data_fd/data_size: the data file and the size it must
 * have.  Returns PT_CACHED or PT_PASSTHROUGH (then *backing_id is set), or
 * -ETXTBSY / -EBUSY beside passthrough opens. */
int pt_open_locked(struct pt_entry *pe, void *req, bool ro, bool unchanged, bool eligible,
		   int data_fd, uint64_t data_size, int *backing_id);
/* An open answered with mode was released (req may be NULL when the open's
 * reply failed: the backing id is then closed later). */
void pt_release_locked(struct pt_entry *pe, void *req, enum pt_mode mode);

#endif
