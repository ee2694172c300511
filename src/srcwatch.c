/* srcwatch.c - SOURCE's mount: checked at start, watched while mounted.
 *
 * A mount is named by the id statx(STATX_MNT_ID) gives, which is the first
 * field of its line in /proc/self/mountinfo.  An id is not reused while
 * something holds the mount, and the daemon's root fd holds the one it
 * serves, so "the SOURCE path leads to another mount id" means another
 * mount, even when the old one was detached and the same file system
 * mounted again.
 *
 * The watch thread: every period, or sooner when poked, statx of the root
 * fd and of the SOURCE path (AT_STATX_DONT_SYNC: the answer of the client's
 * cache, no round trip to the server); a different mount id, device or
 * inode is reported once through the callback, then the thread ends.  A
 * statx that fails (ENOTCONN from a dead FUSE source, ESTALE, ENOENT when
 * SOURCE's directory was removed) tells nothing about another tree: the
 * daemon stays up, reads get the source's errno, and the next look decides.
 * The thread blocks every signal, so that the SIGTERM a callback may send
 * to its own process is handled by another thread.  w->stop and w->poked
 * are protected by w->mu; everything else is set before the thread starts.
 */
#include "srcwatch.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* Pokes closer together than this are one check. */
#define POKE_MIN_GAP_MS 100
/* How long srcwatch_free waits for a thread stuck in a look. */
#define SRCWATCH_JOIN_WAIT_S 5

/* Decode mountinfo's octal escapes (\040 space, \011 tab, \012 newline,
 * \134 backslash) in place. */
static void unescape(char *s)
{
	char *w = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*w++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 | (s[3] - '0'));
			s += 3;
		} else {
			*w++ = *s;
		}
	}
	*w = '\0';
}

/* The next space-separated field of *p, NUL-terminated in place, or NULL. */
static char *field(char **p)
{
	char *s = *p, *e;

	while (*s == ' ')
		s++;
	if (!*s)
		return NULL;
	e = strchr(s, ' ');
	if (e) {
		*e = '\0';
		*p = e + 1;
	} else {
		*p = s + strlen(s);
	}
	return s;
}

static int parse_u64(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end)
		return -EINVAL;
	*out = v;
	return 0;
}

int srcwatch_parse_line(char *line, struct srcwatch_mnt *m)
{
	char *p = line, *f, *dev, *colon;
	uint64_t maj, min;

	line[strcspn(line, "\n")] = '\0';
	memset(m, 0, sizeof(*m));
	/* id parent maj:min root mountpoint options [optional...] - type source super */
	if (parse_u64(field(&p), &m->id) || parse_u64(field(&p), &m->parent))
		return -EINVAL;
	dev = field(&p);
	if (!dev || !(colon = strchr(dev, ':')))
		return -EINVAL;
	*colon = '\0';
	if (parse_u64(dev, &maj) || parse_u64(colon + 1, &min) || maj > UINT32_MAX ||
	    min > UINT32_MAX)
		return -EINVAL;
	m->major = (unsigned)maj;
	m->minor = (unsigned)min;
	m->root = field(&p);
	m->mountpoint = field(&p);
	if (!m->root || !m->mountpoint || !field(&p)) /* options */
		return -EINVAL;
	do {
		f = field(&p);
		if (!f)
			return -EINVAL;
	} while (strcmp(f, "-"));
	m->fstype = field(&p);
	m->source = field(&p);
	if (!m->fstype || !m->source)
		return -EINVAL;
	unescape(m->root);
	unescape(m->mountpoint);
	unescape(m->fstype);
	unescape(m->source);
	return 0;
}

/* Copy s into a fixed buffer, cut if it does not fit. */
static void copy_str(char *dst, size_t len, const char *s)
{
	snprintf(dst, len, "%s", s);
}

int srcwatch_lookup(int dirfd, const char *name, struct srcwatch_found *f)
{
	int flags = AT_STATX_DONT_SYNC | (*name ? 0 : AT_EMPTY_PATH);
	struct statx sx;
	char *line = NULL;
	size_t cap = 0;
	FILE *mi;
	int r = -ENXIO;

	memset(f, 0, sizeof(*f));
	if (statx(dirfd, name, flags, STATX_INO | STATX_MNT_ID, &sx) < 0)
		return -errno;
	if (!(sx.stx_mask & STATX_MNT_ID))
		return -ENOSYS;
	f->mnt_id = sx.stx_mnt_id;
	f->dev = makedev(sx.stx_dev_major, sx.stx_dev_minor);
	f->ino = (ino_t)sx.stx_ino;
	mi = fopen("/proc/self/mountinfo", "re");
	if (!mi)
		return -errno;
	while (getline(&line, &cap, mi) > 0) {
		struct srcwatch_mnt m;

		if (srcwatch_parse_line(line, &m) < 0 || m.id != f->mnt_id)
			continue;
		copy_str(f->mountpoint, sizeof(f->mountpoint), m.mountpoint);
		copy_str(f->fstype, sizeof(f->fstype), m.fstype);
		copy_str(f->source, sizeof(f->source), m.source);
		r = 0;
		break;
	}
	free(line);
	fclose(mi);
	return r;
}

int srcwatch_require(const char *source, const char *fstype, char *err, size_t errlen)
{
	struct srcwatch_found f;
	int r = srcwatch_lookup(AT_FDCWD, source, &f);

	if (r == -ENOSYS) {
		snprintf(err, errlen,
			 "SOURCE '%s': cannot tell whether it is a mount point: this kernel's "
			 "statx gives no mount id (Linux 5.8 or later needed for "
			 "-o require_source_mount)",
			 source);
		return r;
	}
	if (r < 0) {
		snprintf(err, errlen, "SOURCE '%s': cannot find its mount: %s", source,
			 strerror(-r));
		return r;
	}
	if (strcmp(f.mountpoint, source)) {
		snprintf(err, errlen,
			 "SOURCE '%s' is not a mount point (-o require_source_mount): it is a "
			 "directory of the %s file system mounted at '%s' (from %s); mount %s "
			 "there first",
			 source, f.fstype, f.mountpoint, f.source,
			 fstype ? fstype : "the source file system");
		return -EINVAL;
	}
	if (fstype && strcmp(f.fstype, fstype)) {
		snprintf(err, errlen,
			 "SOURCE '%s' is a mount point of type %s (from %s), not %s "
			 "(-o require_source_mount=%s)",
			 source, f.fstype, f.source, fstype, fstype);
		return -EINVAL;
	}
	return 0;
}

struct srcwatch {
	char *source;
	int root_fd;
	struct srcwatch_found root; /* the mount served, as found at start */
	unsigned period_ms;
	srcwatch_lost_fn lost;
	void *arg;
	pthread_t thread;
	bool running; /* thread started; set before anyone else sees w */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop;  /* protected by mu */
	bool poked; /* protected by mu */
};

/* Does SOURCE still lead to the root served?  0 yes, 1 no (why set), or
 * -errno when this look could not tell.  Only an answer tells: SOURCE's file
 * system failing (ENOTCONN from a dead FUSE source, ESTALE, a hung server)
 * is the source's error, which reads return as its errno, and a restart
 * would not mend it; SOURCE's directory removed is the same.  What does
 * mean another tree is the path leading to another mount or inode. */
static int compare(struct srcwatch *w, char *why, size_t len)
{
	struct srcwatch_found now;
	struct statx sx;
	int r;

	if (statx(w->root_fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_INO, &sx) < 0)
		return -errno;
	r = srcwatch_lookup(AT_FDCWD, w->source, &now);
	if (r < 0) /* -ENXIO: a mount that mountinfo does not list (yet) */
		return r;
	if (now.mnt_id != w->root.mnt_id) {
		if (strcmp(now.mountpoint, w->source))
			snprintf(why, len,
				 "SOURCE '%s' is no longer the %s mount from %s served since "
				 "start: the path now leads to a directory of %s from %s mounted "
				 "at '%s' (unmounted?)",
				 w->source, w->root.fstype, w->root.source, now.fstype, now.source,
				 now.mountpoint);
		else
			snprintf(why, len,
				 "another file system is mounted at SOURCE '%s': %s from %s (mount "
				 "%llu), where the daemon serves %s from %s (mount %llu)",
				 w->source, now.fstype, now.source, (unsigned long long)now.mnt_id,
				 w->root.fstype, w->root.source,
				 (unsigned long long)w->root.mnt_id);
		return 1;
	}
	if (now.dev != w->root.dev || now.ino != w->root.ino) {
		snprintf(why, len,
			 "SOURCE '%s' now names another directory (inode %llu, the daemon serves "
			 "inode %llu)",
			 w->source, (unsigned long long)now.ino, (unsigned long long)w->root.ino);
		return 1;
	}
	return 0;
}

static void deadline_in(struct timespec *ts, unsigned ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

static void *watch_thread(void *arg)
{
	struct srcwatch *w = arg;
	char why[8192];
	sigset_t all;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	for (;;) {
		struct timespec ts;
		int r;

		pthread_mutex_lock(&w->mu);
		deadline_in(&ts, w->period_ms);
		while (!w->stop && !w->poked &&
		       pthread_cond_timedwait(&w->cv, &w->mu, &ts) != ETIMEDOUT)
			;
		w->poked = false;
		if (w->stop) {
			pthread_mutex_unlock(&w->mu);
			return NULL;
		}
		pthread_mutex_unlock(&w->mu);
		r = compare(w, why, sizeof(why));
		if (r == 1) {
			w->lost(w->arg, why);
			return NULL;
		}
		if (r < 0)
			log_debug("srcwatch: cannot check SOURCE '%s' now: %s", w->source,
				  strerror(-r));
		/* A burst of pokes is one check. */
		deadline_in(&ts, POKE_MIN_GAP_MS);
		pthread_mutex_lock(&w->mu);
		while (!w->stop && pthread_cond_timedwait(&w->cv, &w->mu, &ts) != ETIMEDOUT)
			;
		pthread_mutex_unlock(&w->mu);
	}
}

int srcwatch_new(struct srcwatch **out, const char *source, int root_fd, unsigned period_ms,
		 srcwatch_lost_fn lost, void *arg, char *err, size_t errlen)
{
	struct srcwatch *w = calloc(1, sizeof(*w));
	pthread_condattr_t ca;
	int r;

	*out = NULL;
	if (!w || !(w->source = strdup(source))) {
		free(w);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	w->root_fd = root_fd;
	w->period_ms = period_ms;
	w->lost = lost;
	w->arg = arg;
	r = srcwatch_lookup(root_fd, "", &w->root);
	if (r < 0) {
		snprintf(err, errlen, "SOURCE '%s': cannot find the mount of its root: %s", source,
			 strerror(-r));
		goto err_free;
	}
	r = compare(w, err, errlen);
	if (r == 1) {
		r = -ESTALE;
		goto err_free;
	}
	if (r < 0) {
		snprintf(err, errlen, "SOURCE '%s': cannot check its mount: %s", source,
			 strerror(-r));
		goto err_free;
	}
	pthread_mutex_init(&w->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w->cv, &ca);
	pthread_condattr_destroy(&ca);
	*out = w;
	return 0;

err_free:
	free(w->source);
	free(w);
	return r;
}

int srcwatch_run(struct srcwatch *w)
{
	int r = pthread_create(&w->thread, NULL, watch_thread, w);

	if (r)
		return -r;
	pthread_setname_np(w->thread, "efs-srcwatch");
	w->running = true;
	return 0;
}

void srcwatch_poke(struct srcwatch *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->mu);
	w->poked = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

void srcwatch_free(struct srcwatch *w)
{
	struct timespec ts;

	if (!w)
		return;
	if (w->running) {
		pthread_mutex_lock(&w->mu);
		w->stop = true;
		pthread_cond_signal(&w->cv);
		pthread_mutex_unlock(&w->mu);
		/* A look may wait on a hung server (the walk to a SOURCE below a
		 * network mount's root): do not hold the exit for it.  The thread
		 * keeps w then; the process is about to end. */
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += SRCWATCH_JOIN_WAIT_S;
		if (pthread_timedjoin_np(w->thread, NULL, &ts) != 0) {
			log_debug("srcwatch: the watch thread is stuck in a look at SOURCE '%s'; "
				  "not waiting for it",
				  w->source);
			return;
		}
	}
	pthread_cond_destroy(&w->cv);
	pthread_mutex_destroy(&w->mu);
	free(w->source);
	free(w);
}
