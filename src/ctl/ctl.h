/* ctl.h - what efscachectl's files share: output, queries, the control
 * connection, tree walking, and the commands' entry points.
 *
 * Contract.  efscachectl inspects and steers a running efscache through
 * its mount, or checks a cache_dir offline.  Queries (stats, status) are
 * getxattr of the mount's reserved names, decoded with ctlproto.h; a path
 * whose file system does not know them answers ENODATA or ENOTSUP, which is
 * how a path that is not on an efscache mount is recognised.  Actions
 * (evict, verify) go to the daemon's control socket in its cache_dir, whose
 * path the stats query gives; only root and the mount's owner can reach it
 * (control.c).  Every error is reported here, once, on stderr as
 * "efscachectl: PATH: why"; a command returns its exit status (0,
 * EXIT_FAIL, EXIT_USAGE).
 *
 * Files: main.c (dispatch, usage), client.c (this header's output, query
 * and connection helpers), walk.c (trees), and one file per command:
 * stats.c, status.c, evict.c, warm.c, verify.c.
 *
 * Locks: stderr is shared by error messages and a progress line (warm,
 * verify on a TTY).  client.c keeps one mutex for it: report() and
 * progress_printf()/progress_clear() take it, and report() erases a shown
 * progress line first.  Nothing else is shared between threads here; warm.c
 * has its own lock for its queue.
 */
#ifndef EFS_CTL_CTL_H
#define EFS_CTL_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "ctlproto.h"

#define PROG "efscachectl"

#define EXIT_FAIL 1
#define EXIT_USAGE 2

#define REPLY_MAX (64 * 1024) /* stats and verify replies are a few hundred bytes */

extern const char usage_text[];

/* ---- commands (argv[0] is the command's name) ---- */
int cmd_stats(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_warm(int argc, char **argv);
int cmd_evict(int argc, char **argv);
int cmd_verify(int argc, char **argv);

/* ---- output (client.c) ---- */

/* "efscachectl: " and the message on stderr, erasing a progress line. */
void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The same, then a hint to run --help. */
void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* getopt returned '?' or ':' for the command cmd: say why. */
void bad_option(const char *cmd, int c, char **argv);
/* "efscachectl: PATH: strerror(err)"; err is a positive errno. */
void path_error(const char *path, int err);
void not_on_mount(const char *path);
/* err (positive) is what a file system that is not efscache answers for
 * our reserved names. */
bool not_ours(int err);
/* Report a failed xattr call on path in the words the user needs. */
void xattr_error(const char *path, int err);
/* Print the help text on stdout; returns the exit status (0). */
int print_usage(void);
/* getopt for a command whose one option is -h/--help: -1 when the options
 * are done and the command goes on, else the exit status to return (after
 * printing the help or the usage error). */
int only_help_option(const char *cmd, int argc, char **argv);

/* A progress line on stderr: fmt is printed as is (it starts with '\r'),
 * and the line is marked shown so the next report() erases it first. */
void progress_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Erase the progress line if one is shown. */
void progress_clear(void);

/* "512 B", "3.8 KiB", "1.5 GiB". */
const char *human(uint64_t v, char *buf, size_t len);
double mib(uint64_t v);
double now_mono(void);
/* dir + "/" + name, malloc'd; NULL when out of memory. */
char *path_join(const char *dir, const char *name);

/* ---- queries (client.c) ---- */

/* getxattr of a reserved name into buf (NUL-terminated); length or -errno. */
ssize_t get_reserved(const char *path, const char *name, char *buf, size_t len);
/* The stats query of path: *text the raw lines, *st decoded (both
 * malloc'd).  0 or -errno; -EBADMSG when the reply is not ours. */
int get_stats(const char *path, char **text, struct ctl_stats **st);
/* Status of a path (fd < 0) or an open file.  0 or -errno; -EBADMSG when
 * the reply is not ours. */
int get_status(const char *path, int fd, struct ctl_file_status *st);
/* Check that path is on an efscache mount; reports and returns false if not. */
bool probe_mount(const char *path);

/* ---- the control socket (client.c) ---- */

struct ctl_conn {
	int fd; /* -1: not connected */
	struct ctl_reader rd;
	char *cache_dir;
};

/* Connect to the daemon serving path (any path on its mount) for the
 * action `what`.  path must be on a fuse.efscache mount, and the control
 * socket and its directory owned by root or that mount's owner, the
 * directory writable by no one else: efscachectl often runs as root on a
 * path a user named.  Reports and returns -errno on failure; -EPERM when
 * the caller may not act or the socket is not to be trusted. */
int ctl_open(const char *what, const char *path, struct ctl_conn *cc);
void ctl_close(struct ctl_conn *cc);
/* Send req and read replies until `done`; progress messages go to fn.
 * 0 or -errno. */
int ctl_request(struct ctl_conn *cc, const struct ctl_msg *req, struct ctl_msg *done,
		void (*fn)(const struct ctl_msg *m, void *arg), void *arg);
/* The daemon's answer to a request: 0 or -errno (reported). */
int ctl_result(const char *what, const char *path, struct ctl_conn *cc, int r,
	       const struct ctl_msg *done);

/* ---- walking trees (walk.c) ---- */

/* Called for each regular file; returns 0, or -1 once it reported an error. */
typedef int (*walk_fn)(const char *path, const struct stat *st, void *arg);

/* Visit path itself if it is a regular file (symlinks followed), or the
 * regular files under it if it is a directory (sorted by name, symlinks not
 * followed, other file systems skipped).  *is_dir tells which.  Returns the
 * number of errors reported. */
unsigned walk(const char *path, walk_fn fn, void *arg, bool *is_dir);

/* Each command path argument of argv[from..argc): probe it is on a mount,
 * then walk it.  Returns the number of errors; stops early when *stop
 * becomes true (stop may be NULL). */
unsigned walk_args(int argc, char **argv, int from, walk_fn fn, void *arg, const bool *stop);

#endif
