/* srcwatch.h - is SOURCE the file system it should be, and does it stay the
 * one the daemon serves?
 *
 * Started before EFS is mounted, efscache would serve the empty directory
 * under the mount point, and keep serving it after EFS is mounted on top:
 * the daemon holds the root's fd.  Two guards:
 *
 * - srcwatch_require() (-o require_source_mount[=FSTYPE]), at start: SOURCE
 *   must be a mount point, of type FSTYPE when one is given.
 * - srcwatch_new() and srcwatch_run(), while mounted: a thread compares what the SOURCE path
 *   leads to now (mount id, device, inode) with the root fd, every period
 *   and when poked (a root op failed with ESTALE or ENOTCONN).  A file system
 *   mounted over SOURCE, SOURCE unmounted (and mounted again), or another
 *   directory renamed into its place are reported once through a callback
 *   (a SOURCE that only fails, ENOTCONN or ESTALE, is not: that is the
 *   source's error, which a restart would not mend);
 *   main then unmounts and exits non-zero, so that the supervisor starts a
 *   daemon on the new root.  (Reopening the root in place would leave every
 *   inode the kernel knows pointing into the old tree.)
 *
 * Mounts are found by statx's STATX_MNT_ID (Linux 5.8) in
 * /proc/self/mountinfo.
 */
#ifndef EFS_SRCWATCH_H
#define EFS_SRCWATCH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* How often the thread looks when nothing pokes it. */
#define SRCWATCH_PERIOD_MS 2000

/* One line of /proc/self/mountinfo, split in place (the strings point into
 * the line, octal escapes such as \040 decoded). */
struct srcwatch_mnt {
	uint64_t id, parent;
	unsigned major, minor;
	char *root;	  /* the mount's root inside its file system */
	char *mountpoint; /* where it is mounted */
	char *fstype;	  /* "nfs4", "tmpfs", "fuse.efscache", ... */
	char *source;	  /* "fs-1234.efs.us-east-1.amazonaws.com:/", "none", ... */
};

/* Split one mountinfo line (its newline may be there).  Returns 0, or
 * -EINVAL for a line that is not in the format; the line is modified. */
int srcwatch_parse_line(char *line, struct srcwatch_mnt *m);

/* What a path leads to: its mount and the mount's line. */
struct srcwatch_found {
	uint64_t mnt_id;
	dev_t dev;
	ino_t ino;
	char mountpoint[4096];
	char fstype[64];
	char source[256];
};

/* statx(dirfd, name) and its mount's line in /proc/self/mountinfo (name ""
 * for dirfd itself).  Returns 0, -ENOSYS when the kernel gives no mount id,
 * -ENXIO when mountinfo has no such mount, or statx's -errno. */
int srcwatch_lookup(int dirfd, const char *name, struct srcwatch_found *f);

/* The start-time guard: SOURCE (absolute, resolved) must be a mount point,
 * of type fstype unless it is NULL.  Returns 0, or -errno with a message
 * naming SOURCE and what was found there in err. */
int srcwatch_require(const char *source, const char *fstype, char *err, size_t errlen);

/* Called once, from the watch thread, when SOURCE no longer leads to the
 * root the daemon serves; why says what changed. */
typedef void (*srcwatch_lost_fn)(void *arg, const char *why);

struct srcwatch;

/* Check SOURCE against root_fd (not owned; open until srcwatch_free) now.
 * Returns 0, or -ESTALE with the reason in err when they differ already,
 * or -errno.  No thread yet: start it with srcwatch_run (after fork). */
int srcwatch_new(struct srcwatch **out, const char *source, int root_fd, unsigned period_ms,
		 srcwatch_lost_fn lost, void *arg, char *err, size_t errlen);
/* Start the watch thread.  Returns 0 or -errno. */
int srcwatch_run(struct srcwatch *w);
/* Look again soon (a root op failed).  Any thread; NULL is fine. */
void srcwatch_poke(struct srcwatch *w);
/* Stop and join the thread if it runs, and free; NULL is fine.  A thread
 * stuck in a look at SOURCE (a hung server) is waited for 5 s, then left
 * with w: call this only on the way out of the process. */
void srcwatch_free(struct srcwatch *w);

#endif
