/* client.c - efscachectl's shared helpers: error and progress output on
 * stderr, human-readable numbers, the two queries (getxattr decoded with
 * ctlproto.h) and the connection to the daemon's control socket.
 *
 * Contract: see ctl.h.  Every helper that fails has already reported why,
 * with the path and the errno, when it returns.
 *
 * Locks: out_mu serialises stderr between report() and the progress line
 * (progress_printf/progress_clear), so a message never lands in the middle
 * of a half-drawn line; out_line_shown is under out_mu.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"

#define CONNECT_TRIES 30 /* 100 ms apart: while the daemon binds its socket */

/* ---- output -------------------------------------------------------------- */

static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;
static bool out_line_shown; /* protected by out_mu */

static void clear_line_locked(void)
{
	if (out_line_shown) {
		fputs("\r\033[K", stderr);
		out_line_shown = false;
	}
}

void report(const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&out_mu);
	clear_line_locked();
	fputs(PROG ": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	pthread_mutex_unlock(&out_mu);
}

void progress_printf(const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&out_mu);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fflush(stderr);
	out_line_shown = true;
	pthread_mutex_unlock(&out_mu);
}

void progress_clear(void)
{
	pthread_mutex_lock(&out_mu);
	clear_line_locked();
	pthread_mutex_unlock(&out_mu);
}

void usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs(PROG ": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry '" PROG " --help' for more information.\n", stderr);
}

void bad_option(const char *cmd, int c, char **argv)
{
	if (c == ':')
		usage_error("%s: option '%s' needs a value", cmd, argv[optind - 1]);
	else if (optopt)
		usage_error("%s: unknown option '-%c'", cmd, optopt);
	else
		usage_error("%s: unknown option '%s'", cmd, argv[optind - 1]);
}

int print_usage(void)
{
	fputs(usage_text, stdout);
	return 0;
}

int only_help_option(const char *cmd, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int c = getopt_long(argc, argv, ":h", opts, NULL);

	if (c == -1)
		return -1;
	if (c == 'h')
		return print_usage();
	bad_option(cmd, c, argv);
	return EXIT_USAGE;
}

void path_error(const char *path, int err)
{
	report("%s: %s", path, strerror(err));
}

void not_on_mount(const char *path)
{
	report("%s is not on an efscache mount", path);
}

bool not_ours(int err)
{
	return err == ENODATA || err == ENOTSUP || err == EOPNOTSUPP;
}

void xattr_error(const char *path, int err)
{
	if (not_ours(err))
		not_on_mount(path);
	else
		path_error(path, err);
}

const char *human(uint64_t v, char *buf, size_t len)
{
	static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
	double d = (double)v;
	unsigned i = 0;

	if (v < 1024) {
		snprintf(buf, len, "%" PRIu64 " B", v);
		return buf;
	}
	d /= 1024;
	while (d >= 1024 && i < 5) {
		d /= 1024;
		i++;
	}
	snprintf(buf, len, "%.1f %s", d, units[i]);
	return buf;
}

double mib(uint64_t v)
{
	return (double)v / (1024.0 * 1024.0);
}

double now_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

char *path_join(const char *dir, const char *name)
{
	size_t a = strlen(dir), b = strlen(name);
	bool slash = a && dir[a - 1] != '/';
	char *p = malloc(a + slash + b + 1);

	if (!p)
		return NULL;
	memcpy(p, dir, a);
	if (slash)
		p[a] = '/';
	memcpy(p + a + slash, name, b + 1);
	return p;
}

/* ---- queries ------------------------------------------------------------- */

ssize_t get_reserved(const char *path, const char *name, char *buf, size_t len)
{
	ssize_t n = getxattr(path, name, buf, len - 1);

	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return n;
}

int get_stats(const char *path, char **text, struct ctl_stats **st)
{
	char *buf = malloc(REPLY_MAX);
	struct ctl_stats *s = malloc(sizeof(*s));
	ssize_t n;
	int r;

	if (!buf || !s) {
		r = -ENOMEM;
		goto err;
	}
	n = get_reserved(path, CTL_XATTR_STATS, buf, REPLY_MAX);
	r = n < 0 ? (int)n : ctl_stats_parse(buf, s);
	if (r < 0)
		goto err;
	*text = buf;
	*st = s;
	return 0;
err:
	free(buf);
	free(s);
	return r;
}

int get_status(const char *path, int fd, struct ctl_file_status *st)
{
	char buf[4096];
	ssize_t n = fd >= 0 ? fgetxattr(fd, CTL_XATTR_STATUS, buf, sizeof(buf) - 1)
			    : getxattr(path, CTL_XATTR_STATUS, buf, sizeof(buf) - 1);

	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return ctl_status_parse(buf, st);
}

bool probe_mount(const char *path)
{
	struct ctl_file_status st;
	int r = get_status(path, -1, &st);

	if (r == -EBADMSG)
		not_on_mount(path);
	else if (r < 0)
		xattr_error(path, -r);
	return r == 0;
}

/* ---- the control socket (evict, verify) ----------------------------------- */

/* Say why `what` on path is refused, and what to do. */
static void denied(const char *what, const char *path, const char *cache_dir)
{
	struct stat st;
	char owner[48] = "the mount's owner";

	if (cache_dir && stat(cache_dir, &st) == 0)
		snprintf(owner, sizeof(owner), "the mount's owner (uid %ld)", (long)st.st_uid);
	report("%s %s: %s: only root and %s may %s; queries (stats, status) are open to "
	       "all. Run it as one of them, e.g. with sudo",
	       what, path, strerror(EPERM), owner, what);
}

/* The whole of /proc/self/mountinfo, NUL-terminated (free it), or NULL. */
static char *read_mountinfo(void)
{
	size_t cap = 16384, len = 0;
	char *buf = malloc(cap), *bigger;
	int fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0 || !buf)
		goto err;
	for (;;) {
		if (cap - len < 4096) {
			bigger = realloc(buf, cap *= 2);
			if (!bigger)
				goto err;
			buf = bigger;
		}
		n = read(fd, buf + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			goto err;
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	buf[len] = '\0';
	return buf;
err:
	if (fd >= 0)
		close(fd);
	free(buf);
	return NULL;
}

/* efscachectl is often run by root (sudo) on a path a user gave it: the
 * daemon it talks to is found through an xattr of that path, which any
 * file system (a user's own FUSE mount, tmpfs) can serve.  So the path must
 * be on a mount of type fuse.efscache; *owner is that mount's owner (its
 * user_id=).  pfd is an O_PATH fd of the path.  Reports and returns -errno
 * if not. */
static int check_mount(const char *path, int pfd, long *owner)
{
	char fstype[64] = "";
	struct statfs sfs;
	struct stat st;
	char *info;
	int r;

	if (fstatfs(pfd, &sfs) < 0 || fstat(pfd, &st) < 0) {
		r = -errno;
		path_error(path, -r);
		return r;
	}
	if (sfs.f_type != FUSE_SUPER_MAGIC) {
		report("%s is not on an efscache mount (not a FUSE file system)", path);
		return -ENOTSUP;
	}
	info = read_mountinfo();
	if (!info) {
		report("%s: cannot read /proc/self/mountinfo: %s", path, strerror(errno));
		return -EIO;
	}
	r = ctl_mountinfo_find(info, st.st_dev, fstype, sizeof(fstype), owner);
	free(info);
	if (r < 0 || strcmp(fstype, CTL_FSTYPE)) {
		report("%s is not on an efscache mount (its file system is '%s', not '" CTL_FSTYPE
		       "')",
		       path, r < 0 ? "unknown" : fstype);
		return -ENOTSUP;
	}
	return 0;
}

/* Is uid root or the mount's owner? */
static bool trusted_uid(uid_t uid, long owner)
{
	return uid == 0 || (owner >= 0 && (long)uid == owner);
}

/* cache_dir and the socket in it, checked before connecting: a directory
 * (not a symlink) owned by root or the mount's owner that nobody else can
 * write to, and a socket owned by one of them.  Returns an O_PATH fd of
 * cache_dir, -EPERM (reported) if they fail the check, or -errno (-ENOENT
 * while there is no socket yet, -EACCES for a caller who may not look). */
static int open_ctl_dir(const char *what, const char *path, const char *cache_dir, long owner)
{
	struct stat st;
	int dfd = open(cache_dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	if (dfd < 0)
		return -errno;
	if (fstat(dfd, &st) < 0 || !trusted_uid(st.st_uid, owner) || (st.st_mode & 022)) {
		report("%s %s: refusing the control socket in '%s': the directory must be owned by "
		       "root or the mount's owner (uid %ld) and writable by no one else (it is "
		       "owned by uid %ld, mode %04o)",
		       what, path, cache_dir, owner, (long)st.st_uid,
		       (unsigned)(st.st_mode & 07777));
		close(dfd);
		return -EPERM;
	}
	if (fstatat(dfd, CTL_SOCKET_NAME, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		int e = errno;

		close(dfd);
		return -e;
	}
	if (!S_ISSOCK(st.st_mode) || !trusted_uid(st.st_uid, owner)) {
		report("%s %s: refusing '%s/" CTL_SOCKET_NAME "': not a socket owned by root or "
		       "the mount's owner (uid %ld)",
		       what, path, cache_dir, owner);
		close(dfd);
		return -EPERM;
	}
	return dfd;
}

int ctl_open(const char *what, const char *path, struct ctl_conn *cc)
{
	char proc[32];
	struct ctl_stats *st;
	long owner = -1;
	char *text;
	int r, pfd;

	memset(cc, 0, sizeof(*cc));
	cc->fd = -1;
	/* One object for every check and the query: the path cannot be
	 * swapped under us. */
	pfd = open(path, O_PATH | O_CLOEXEC);
	if (pfd < 0) {
		r = -errno;
		path_error(path, -r);
		return r;
	}
	r = check_mount(path, pfd, &owner);
	if (r == 0) {
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", pfd);
		r = get_stats(proc, &text, &st);
		if (r == -EBADMSG)
			not_on_mount(path);
		else if (r < 0)
			xattr_error(path, -r);
	}
	close(pfd);
	if (r < 0)
		return r;
	cc->cache_dir = strdup(st->cache_dir);
	free(text);
	free(st);
	if (!cc->cache_dir) {
		path_error(path, ENOMEM);
		return -ENOMEM;
	}
	/* The daemon binds its socket just after mounting, and again within a
	 * second when cache_dir was recreated: give it that long. */
	for (int tries = 0; tries < CONNECT_TRIES; tries++) {
		int dfd = open_ctl_dir(what, path, cc->cache_dir, owner);

		if (dfd == -EPERM)
			return dfd; /* reported: not a socket to trust */
		r = dfd < 0 ? dfd : ctl_connect_at(dfd);
		if (dfd >= 0)
			close(dfd);
		if (r != -ENOENT && r != -ECONNREFUSED)
			break;
		usleep(100 * 1000);
	}
	if (r == -EACCES || r == -EPERM) {
		denied(what, path, cc->cache_dir);
		return -EPERM;
	}
	if (r < 0) {
		report("%s %s: cannot reach the daemon's control socket in '%s': %s", what, path,
		       cc->cache_dir, strerror(-r));
		return r;
	}
	cc->fd = r;
	ctl_reader_init(&cc->rd, r);
	return 0;
}

void ctl_close(struct ctl_conn *cc)
{
	if (cc->fd >= 0)
		close(cc->fd);
	free(cc->cache_dir);
	cc->fd = -1;
	cc->cache_dir = NULL;
}

/* Read replies to a request until `done`; progress messages go to fn. */
static int ctl_wait_done(struct ctl_conn *cc, struct ctl_msg *done,
			 void (*fn)(const struct ctl_msg *m, void *arg), void *arg)
{
	for (;;) {
		int r = ctl_recv(&cc->rd, done);

		if (r < 0)
			return r;
		if (done->kind == CTL_DONE)
			return 0;
		if (done->kind == CTL_PROGRESS && fn)
			fn(done, arg);
	}
}

/* A daemon that refused the connection has sent its `done` and closed:
 * read it even if sending failed. */
int ctl_request(struct ctl_conn *cc, const struct ctl_msg *req, struct ctl_msg *done,
		void (*fn)(const struct ctl_msg *m, void *arg), void *arg)
{
	int r = ctl_send(cc->fd, req);

	if (r == 0 || r == -EPIPE || r == -ECONNRESET) {
		int w = ctl_wait_done(cc, done, fn, arg);
		r = w == 0 ? 0 : r < 0 ? r : w;
	}
	return r;
}

int ctl_result(const char *what, const char *path, struct ctl_conn *cc, int r,
	       const struct ctl_msg *done)
{
	int err = r < 0 ? -r : (int)ctl_get(done, CTL_F_error);

	if (r == -ECONNRESET) {
		report("%s %s: the daemon closed the control connection (unmounted?)", what, path);
		return r;
	}
	if (err == EPERM)
		denied(what, path, cc->cache_dir);
	else if (err)
		report("%s %s: %s", what, path, strerror(err));
	return -err;
}
