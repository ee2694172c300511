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
#include "stats.h"

/* Everything the ops need; passed as the session's userdata. */
struct handle;
struct control;

/* Largest read request we accept: just under 1 MiB, so that a reply (data,
 * header and libfuse's slack of a page per segment) fits in a 1 MiB pipe
 * and is spliced.  Pipes cannot grow past /proc/sys/fs/pipe-max-size (1 MiB)
 * without CAP_SYS_RESOURCE, and a reply that does not fit is copied through
 * a malloc'd buffer instead. */
#define EFS_MAX_READ ((1u << 20) - 5 * 4096)

struct efs_fs {
	const struct efs_config *cfg;
	struct inode_table *itab;
	double entry_timeout; /* seconds the kernel may cache names */
	double attr_timeout;  /* seconds the kernel may cache attributes */
	struct cache *cache;
	struct control *ctl; /* the control socket (control.c) */
	struct efs_stats stats;
	pthread_mutex_t handles_mu;
	struct handle *handles; /* open files and dirs; protected by handles_mu */
};

/* Fill fs from cfg, open SOURCE and cache_dir.  Returns 0 or -errno with a
 * message in err. */
int fsops_init(struct efs_fs *fs, const struct efs_config *cfg, char *err, size_t errlen);
/* Start background work; after daemonizing. */
int fsops_start(struct efs_fs *fs);
void fsops_destroy(struct efs_fs *fs);

extern const struct fuse_lowlevel_ops efs_fsops;

#endif
