/* passthrough.c - kernel passthrough of fully cached files (passthrough.h).
 *
 * State: three process-wide atomics (wanted, negotiated, failed), one log
 * flag per reason, and the backing ids still to close (pt_stale_mu, a
 * leaf); the per-entry state lives in struct pt_entry under the entry's
 * mutex.
 */
#include "passthrough.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>

#include <fuse_lowlevel.h>

#include "log.h"

static bool pt_asked;	       /* -o passthrough=auto */
static bool pt_ro;	       /* -o ro */
static bool pt_want;	       /* both: passthrough may be used */
static bool pt_negotiated;     /* atomic: the kernel agreed at init */
static bool pt_failed;	       /* atomic: a backing open failed for good */
static bool pt_logged;	       /* atomic: why it is off was logged */
static bool pt_logged_refused; /* atomic: a refused open was logged */
static struct efs_stats *pt_stats;

void pt_configure(bool want, bool ro, struct efs_stats *stats)
{
	pt_asked = want;
	pt_ro = ro;
	pt_want = want && ro;
	pt_stats = stats;
	__atomic_store_n(&pt_negotiated, false, __ATOMIC_RELAXED);
	__atomic_store_n(&pt_failed, false, __ATOMIC_RELAXED);
	__atomic_store_n(&pt_logged, false, __ATOMIC_RELAXED);
	__atomic_store_n(&pt_logged_refused, false, __ATOMIC_RELAXED);
}

/* Why passthrough is off is logged here, at the kernel's INIT, not at
 * startup: by then a daemon has left the caller's terminal (the log goes to
 * syslog), so `efscache SRC MNT` prints nothing on success. */
void pt_conn_init(struct fuse_conn_info *conn)
{
	if (!pt_asked)
		return;
#ifndef EFS_HAVE_PASSTHROUGH
	(void)conn;
	log_once(pt_logged, LOG_LVL_INFO,
		 "passthrough: off: built against libfuse %s, passthrough needs 3.17 or later",
		 fuse_pkgversion());
#else
	if (!pt_ro) {
		/* While a file has passthrough opens the kernel fails every
		 * other open of it, a writer's too: on a rw mount that would
		 * break POSIX. */
		log_once(pt_logged, LOG_LVL_INFO,
			 "passthrough: off: the mount is read-write (passthrough=auto uses kernel "
			 "passthrough on -o ro mounts only: beside a passthrough open the kernel "
			 "would refuse a writer's open of the same file)");
		return;
	}
	if (!(conn->capable & FUSE_CAP_PASSTHROUGH)) {
		log_once(pt_logged, LOG_LVL_INFO,
			 "passthrough: off: the kernel did not offer FUSE passthrough (Linux 6.9 "
			 "or later with CONFIG_FUSE_PASSTHROUGH)");
		return;
	}
	/* The data files' file system may not itself be stacked (overlayfs,
	 * another FUSE passthrough): cache_dir lives on a plain disk. */
	conn->max_backing_stack_depth = 0;
	/* conn->want, as op_init sets the others: libfuse 3.17 refuses a mix
	 * of want and fuse_set_feature_flag()'s want_ext. */
	conn->want |= FUSE_CAP_PASSTHROUGH;
	__atomic_store_n(&pt_negotiated, true, __ATOMIC_RELAXED);
#endif
}

bool pt_enabled(void)
{
	return pt_want && __atomic_load_n(&pt_negotiated, __ATOMIC_RELAXED) &&
	       !__atomic_load_n(&pt_failed, __ATOMIC_RELAXED);
}

#ifdef EFS_HAVE_PASSTHROUGH
/* A backing open failed with err: give up for good when it says passthrough
 * cannot work here, else only for this open. */
static void backing_failed(int err)
{
	const char *why;

	switch (err) {
	case EPERM:
		why = "no privilege to open backing files (CAP_SYS_ADMIN is needed)";
		break;
	case ELOOP:
		why = "cache_dir is on a stacked file system (overlayfs or FUSE)";
		break;
	case EOPNOTSUPP:
	case ENOTTY:
	case EINVAL:
		why = "the kernel refused backing files";
		break;
	default:
		log_debug("passthrough: backing open failed: %s; this open is served as before",
			  strerror(err));
		return;
	}
	__atomic_store_n(&pt_failed, true, __ATOMIC_RELAXED);
	log_once(pt_logged, LOG_LVL_WARN, "passthrough: off: %s (%s)", why, strerror(err));
}

/* Backing ids whose last open was released without a request to close
 * them with (the open's reply failed): closed at the next call that has
 * one, whichever file it is for (ids belong to the connection).  Past
 * PT_STALE_MAX of them with no open or release between, an id is left to
 * the kernel, which closes it at unmount. */
#define PT_STALE_MAX 64
static pthread_mutex_t pt_stale_mu = PTHREAD_MUTEX_INITIALIZER;
static int pt_stale[PT_STALE_MAX]; /* protected by pt_stale_mu */
static unsigned pt_nstale;         /* written under pt_stale_mu, atomic */

static void stale_push(int id)
{
	pthread_mutex_lock(&pt_stale_mu);
	if (pt_nstale < PT_STALE_MAX) {
		pt_stale[pt_nstale] = id;
		__atomic_store_n(&pt_nstale, pt_nstale + 1, __ATOMIC_RELAXED);
	}
	pthread_mutex_unlock(&pt_stale_mu);
}

static void close_stale(void *req)
{
	if (!req || !__atomic_load_n(&pt_nstale, __ATOMIC_RELAXED))
		return;
	pthread_mutex_lock(&pt_stale_mu);
	for (; pt_nstale; __atomic_store_n(&pt_nstale, pt_nstale - 1, __ATOMIC_RELAXED))
		fuse_passthrough_close(req, pt_stale[pt_nstale - 1]);
	pthread_mutex_unlock(&pt_stale_mu);
}
#endif

int pt_open_locked(struct pt_entry *pe, void *req, bool ro, bool unchanged, bool eligible,
		   int data_fd, uint64_t data_size, int *backing_id)
{
	*backing_id = 0;
#ifdef EFS_HAVE_PASSTHROUGH
	struct stat st;
	int id;

	if (pe->opens > 0) {
		/* The kernel holds the inode in passthrough mode: nothing but
		 * another passthrough open of the same backing file may join. */
		if (ro && unchanged) {
			pe->opens++;
			*backing_id = pe->backing_id;
			stats_add(pt_stats, ST_passthrough_opens, 1);
			return PT_PASSTHROUGH;
		}
		stats_add(pt_stats, ST_passthrough_refused, 1);
		log_once(pt_logged_refused, LOG_LVL_WARN,
			 "passthrough: refused an open (%s) of a file that is open with "
			 "passthrough: the kernel allows no other open beside those until they "
			 "are closed (-o passthrough=off avoids this)",
			 ro ? "EBUSY: the source changed" : "ETXTBSY: a writer");
		return ro ? -EBUSY : -ETXTBSY;
	}
	close_stale(req);
	if (ro && eligible && !pe->cached && pt_enabled() && data_fd >= 0 &&
	    /* the kernel reads the backing file up to its own end: it must
	     * hold exactly the file's bytes */
	    fstat(data_fd, &st) == 0 && (uint64_t)st.st_size == data_size) {
		errno = 0;
		id = fuse_passthrough_open(req, data_fd);
		if (id > 0) {
			pe->backing_id = id;
			pe->opens = 1;
			*backing_id = id;
			stats_add(pt_stats, ST_passthrough_opens, 1);
			return PT_PASSTHROUGH;
		}
		backing_failed(errno ? errno : EIO);
	}
#else
	(void)req, (void)ro, (void)unchanged, (void)eligible, (void)data_fd, (void)data_size;
#endif
	pe->cached++;
	return PT_CACHED;
}

void pt_release_locked(struct pt_entry *pe, void *req, enum pt_mode mode)
{
	if (mode == PT_CACHED && pe->cached)
		pe->cached--;
#ifdef EFS_HAVE_PASSTHROUGH
	if (mode == PT_PASSTHROUGH && pe->opens && --pe->opens == 0) {
		if (req)
			fuse_passthrough_close(req, pe->backing_id);
		else
			stale_push(pe->backing_id);
		pe->backing_id = 0;
	}
	close_stale(req);
#else
	(void)req;
#endif
}
