/* fsops.h - the FUSE low-level operations: the only user of libfuse's
 * request API.  Each op decodes the request, calls a module, replies once.
 */
#ifndef EFS_FSOPS_H
#define EFS_FSOPS_H

#include <fuse_lowlevel.h>
#include <pthread.h>

#include "cache.h"
#include "config.h"
#include "inode.h"
#include "meta.h"
#include "stats.h"

/* Everything the ops need; passed as the session's userdata. */
struct handle;
struct control;
struct lockwait;
struct lockdep;
struct srcwatch;
struct dix;

/* Largest read request we accept: just under 1 MiB, so that a reply (data,
 * header and libfuse's slack of a page per segment) fits in a 1 MiB pipe
 * and is spliced.  Pipes cannot grow past /proc/sys/fs/pipe-max-size (1 MiB)
 * without CAP_SYS_RESOURCE, and a reply that does not fit is copied through
 * a malloc'd buffer instead. */
#define EFS_MAX_READ ((1u << 20) - 5 * 4096)

struct efs_fs {
	const struct efs_config *cfg;
	struct inode_table *itab;
	struct meta_policy policy; /* how long the kernel may cache metadata */
	struct fuse_session *se;   /* for attribute invalidations; set by main */
	struct cache *cache;
	struct sib *sib;           /* siblings fetched ahead (siblings.c); may be NULL */
	struct dix *dix;           /* the directory index (fsops_index.c); NULL: off */
	uint64_t index_gen;        /* atomic: changes made through the mount, for
				    * the index's passes (fsops_index.c) */
	bool logged_nofile;        /* fd exhaustion was logged */
	bool logged_source_nofile; /* the source's EMFILE/ENFILE was logged */
	bool logged_nomem;         /* an inode allocation failure was logged */
	bool check_readers;        /* a reader's open asks the source whether the
				    * caller may read (close-to-open, daemon root) */
	bool no_open;              /* -o immutable and the kernel agreed: OPEN and
				    * OPENDIR are answered ENOSYS, after which the
				    * kernel opens without asking (set by op_init) */
	struct control *ctl; /* the control socket (control.c) */
	struct lockwait *locks; /* lock requests that must wait (lockwait.c) */
	struct lockdep *lockdep; /* who holds and waits for which ranges */
	struct srcwatch *watch;  /* poked when the root fails; set by main, may be NULL */
	struct efs_stats stats;
	/* Pushes into the kernel's page cache and the requests answered on
	 * threads of their own meanwhile (fsops_push.c): */
	pthread_mutex_t push_mu;
	pthread_cond_t push_cv;
	unsigned pushes;           /* in the kernel now; protected by push_mu */
	unsigned deferred;         /* requests on their own threads; push_mu */
	bool push_stopped;         /* the session is ending: no more; push_mu */
	pthread_mutex_t handles_mu;
	struct handle *handles; /* open files and dirs; protected by handles_mu */
};

/* Fill fs from cfg, open SOURCE and cache_dir.  Returns 0 or -errno with a
 * message in err. */
int fsops_init(struct efs_fs *fs, const struct efs_config *cfg, char *err, size_t errlen);
/* Start background work; after daemonizing. */
int fsops_start(struct efs_fs *fs);
/* The session loop ended: answer the requests still parked (lock waits,
 * with EINTR) and those pushes wait for, until no push is in flight, while
 * the session can still carry the replies.  Before fuse_session_unmount
 * and fuse_session_destroy; idempotent. */
void fsops_stop(struct efs_fs *fs);
void fsops_destroy(struct efs_fs *fs);

/* The counters as "name value" lines: the cache's, then the inode
 * table's (what user.efscache.stats and the metrics endpoint show).
 * Returns the length needed, like snprintf. */
size_t fsops_stats_text(struct efs_fs *fs, char *buf, size_t cap);

extern const struct fuse_lowlevel_ops efs_fsops;

#endif
