/* siblings.c - a directory's small files fetched ahead when one of them is
 * opened cold (issue 17), and the cache's records of a listed directory's
 * small files read back into the page cache (SIB_WARM jobs, sib_listed:
 * cache_read_ahead on batches of inode numbers, no source access; their
 * window table s->warm is apart from the cold one), and the index
 * snapshots of its subdirectories loaded from cache_dir with them
 * (SIB_SNAP jobs: the loader, dix_get; no source access either).
 *
 *   cold open of d/a.py (no record, <= SIB_MAX_FILE)
 *     -> sib_cold_open: d's burst within SIB_WINDOW_S?  too many in flight?
 *        else dup d's O_PATH fd into a struct sib_dir, queue a DIR job
 *   DIR job:  list d (s->lister: the directory index's snapshot of it,
 *             or its pass made now; else from the source itself); each
 *             regular file but a.py that the cache has no
 *             record of (cache_fill_wanted, by d_ino), up to cfg->siblings
 *             of them: queue a FILE job (a reference on the sib_dir each)
 *   FILE job: skip it if the source's client knows it is large or not a
 *             file (no round trip); open the name in d (O_NOFOLLOW, nothing
 *             but a regular file, O_DIRECT where allowed); small, and the
 *             burst has bytes left (SIB_MAX_BYTES)?  cache_fill it
 *
 * The source is reached as SOURCE is everywhere (source.c): by name
 * relative to the directory's fd, never following a symlink, never opening
 * a FIFO or a device.  A file is read as the daemon: its open through the
 * mount still asks the source whether the caller may read it, as for any
 * cached file (docs/design.md, "Permissions").  What is fetched is stored
 * under the identity the source gave at its open and confirmed after the
 * read, and validated at its own open like any record (cache_fill).
 *
 * Priority below demand reads: a pool of its own (threads and a bounded
 * queue; a job that does not fit is dropped), and the cache claims nothing
 * of a file while it is read here, so a demand open or read of it never
 * waits for this work (cache.h).
 *
 * State: s->mu (a leaf: held for memory only, never while calling the cache
 * or the source) protects the window table (directories whose burst began
 * within SIB_WINDOW_S, a fixed array: memory does not grow with the tree)
 * and s->ndirs.  A struct sib_dir is shared by the jobs of one burst
 * (refs, files and bytes left: atomics); the last reference closes its fd.
 */
#include "siblings.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "log.h"
#include "prefetch.h"
#include "source.h"

#define SIB_SLOTS 256        /* directories remembered for the window */
#define SIB_QUEUE_MAX 4096   /* jobs queued at most */

enum sib_kind { SIB_DIR, SIB_FILE, SIB_WARM, SIB_SNAP };

/* Files per SIB_WARM job: a directory's records are read back by a few
 * workers at once (each open waits for its inode from disk). */
#define SIB_WARM_BATCH 4
/* A listing reaches the daemon only when the kernel lost it, which is
 * when the page cache may have lost the records too: read them back
 * at most once per this many seconds per directory (a burst of
 * listers), not once a minute. */
#define SIB_WARM_WINDOW_S 2

struct sib_dir {
	struct sib *s;
	int fd;             /* O_PATH fd of the directory (a dup) */
	dev_t dev;
	char *opened;       /* the file whose open began the burst */
	unsigned refs;      /* atomic: the queued and running jobs */
	uint64_t bytes_left; /* atomic */
};

struct sib_slot {
	dev_t dev;
	uint64_t ino;
	time_t at; /* CLOCK_MONOTONIC seconds; 0: empty */
};

struct sib {
	const struct efs_config *cfg;
	struct cache *c;
	struct efs_stats *stats;
	struct prefetch *pool;
	pthread_mutex_t mu;
	struct sib_slot slot[SIB_SLOTS]; /* protected by mu */
	struct sib_slot warm[SIB_SLOTS]; /* listings read back; protected by mu */
	unsigned ndirs;                  /* bursts in flight; protected by mu */
	sib_lister_fn lister;            /* set before the workers start */
	void *lister_arg;
	sib_loader_fn loader;            /* set before the workers start */
	void *loader_arg;
};

/* Free a burst's record (d may be NULL or half made: a failed start) and
 * give back its place among the bursts in flight. */
static void dir_free(struct sib *s, struct sib_dir *d)
{
	if (d) {
		if (d->fd >= 0)
			close(d->fd);
		free(d->opened);
		free(d);
	}
	pthread_mutex_lock(&s->mu);
	s->ndirs--;
	pthread_mutex_unlock(&s->mu);
}

static void dir_put(struct sib_dir *d)
{
	if (__atomic_sub_fetch(&d->refs, 1, __ATOMIC_ACQ_REL))
		return;
	dir_free(d->s, d);
}

/* One sibling: open it by name, fetch it whole if it is small and the
 * burst has bytes left. */
static void run_file(struct sib *s, struct sib_dir *d, const char *name, uint64_t ino)
{
	uint64_t size, left;
	struct stat st;
	ssize_t n;
	int fd;

	/* Opened through the mount since the listing (the application got
	 * there first): its open fetches it, an OPEN here would be wasted. */
	if (!cache_fill_wanted(s->c, d->dev, ino))
		return;
	/* A file the source's client already knows to be large or not a
	 * file (a listing with attributes, as NFS's READDIR and FUSE's
	 * READDIRPLUS give) costs no OPEN. */
	if (src_stat_cached_at(d->fd, name, &st) == 0 &&
	    (!S_ISREG(st.st_mode) || st.st_size <= 0 || (uint64_t)st.st_size > SIB_MAX_FILE))
		return;
	fd = src_open_at(d->fd, name, O_RDONLY | O_DIRECT);
	if (fd == -EINVAL)
		fd = src_open_at(d->fd, name, O_RDONLY);
	if (fd < 0)
		return; /* gone, replaced by a directory, out of fds: not ours to say */
	stats_add(s->stats, ST_source_opens, 1);
	if (src_stat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
	    (uint64_t)st.st_size > SIB_MAX_FILE)
		goto out_close;
	size = (uint64_t)st.st_size;
	left = __atomic_load_n(&d->bytes_left, __ATOMIC_RELAXED);
	do {
		if (left < size)
			goto out_close;
	} while (!__atomic_compare_exchange_n(&d->bytes_left, &left, left - size, false,
					      __ATOMIC_RELAXED, __ATOMIC_RELAXED));
	n = cache_fill(s->c, fd, &st);
	if (n > 0) {
		stats_add(s->stats, ST_sibling_files, 1);
		stats_add(s->stats, ST_sibling_bytes, (uint64_t)n);
	}
out_close:
	close(fd);
}

/* Queue a FILE job for the regular file name (inode ino) unless it is the
 * one opened or the cache has it.  Returns 1 if queued, 0 if skipped, -1 if
 * no more can be (out of memory, the queue full: the rest is fetched at its
 * open). */
static int queue_file(struct sib *s, struct sib_dir *d, const char *name, uint64_t ino)
{
	struct prefetch_job job = {.idx = SIB_FILE, .fd = -1, .entry = d, .tag = ino};

	if (!strcmp(name, d->opened) || !cache_fill_wanted(s->c, d->dev, ino))
		return 0;
	job.buf = strdup(name);
	if (!job.buf)
		return -1;
	__atomic_add_fetch(&d->refs, 1, __ATOMIC_RELAXED);
	stats_add(s->stats, ST_sibling_pending, 1);
	if (!prefetch_submit(s->pool, &job)) {
		stats_sub(s->stats, ST_sibling_pending, 1);
		free(job.buf);
		dir_put(d);
		return -1;
	}
	return 1;
}

/* List the directory and queue its small files the cache lacks. */
static void run_dir(struct sib *s, struct sib_dir *d, uint64_t dir_ino)
{
	unsigned queued = 0, max = s->cfg->siblings;
	struct sib_names known;
	struct dirent *ent;
	DIR *dp;
	int r;

	if (!cache_room_ahead(s->c, SIB_MAX_BYTES))
		return;
	stats_add(s->stats, ST_sibling_scans, 1);
	/* The index's listing: a snapshot the daemon has (the opener's own
	 * listing) or the pass it makes now, which then answers the
	 * directory's listing and names.  It holds the small regular files
	 * only; one more than max, for the opened file among them. */
	if (s->lister && s->lister(s->lister_arg, d->dev, dir_ino, max + 1, &known) == 0) {
		const char *name = known.names;

		for (unsigned k = 0; k < known.n && queued < max; k++, name += strlen(name) + 1) {
			r = queue_file(s, d, name, known.ino[k]);
			if (r < 0)
				break;
			queued += (unsigned)r;
		}
		free(known.names);
		free(known.ino);
		return;
	}
	if (src_opendir(d->fd, &dp) < 0)
		return;
	stats_add(s->stats, ST_source_readdirs, 1);
	while (queued < max && src_readdir(dp, &ent) == 0 && ent) {
		/* d_type is what the listing says; the open checks again. */
		if (ent->d_type != DT_REG)
			continue;
		r = queue_file(s, d, ent->d_name, (uint64_t)ent->d_ino);
		if (r < 0)
			break;
		queued += (unsigned)r;
	}
	src_closedir(dp);
}

/* A SIB_WARM or SIB_SNAP job: job->buf holds job->len inode numbers of
 * the device job->tag, files whose records are read back (WARM) or
 * directories whose snapshots are loaded (SNAP); no sib_dir. */
static void run_batch(struct sib *s, const struct prefetch_job *job)
{
	const uint64_t *ino = job->buf;

	for (uint32_t i = 0; i < job->len; i++) {
		if (job->idx == SIB_WARM)
			(void)cache_read_ahead(s->c, (dev_t)job->tag, ino[i]);
		else if (s->loader)
			s->loader(s->loader_arg, (dev_t)job->tag, ino[i]);
	}
}

static void run_job(const struct prefetch_job *job, void *arg)
{
	struct sib *s = arg;
	struct sib_dir *d = job->entry;

	if (job->idx == SIB_WARM || job->idx == SIB_SNAP) {
		run_batch(s, job);
		free(job->buf);
		stats_sub(s->stats, ST_sibling_pending, 1);
		return;
	}
	if (job->idx == SIB_DIR)
		run_dir(s, d, job->tag);
	else
		run_file(s, d, job->buf, job->tag);
	free(job->buf);
	dir_put(d);
	stats_sub(s->stats, ST_sibling_pending, 1);
}

static void drop_job(const struct prefetch_job *job, void *arg)
{
	struct sib *s = arg;

	free(job->buf);
	stats_sub(s->stats, ST_sibling_pending, 1);
	if (job->idx != SIB_WARM && job->idx != SIB_SNAP)
		dir_put(job->entry);
}

int sib_new(struct sib **out, const struct efs_config *cfg, struct cache *c,
	    struct efs_stats *stats)
{
	unsigned queue = SIB_MAX_DIRS * (cfg->siblings + 1);
	struct sib *s;
	int r;

	*out = NULL;
	if (!cfg->siblings || !cfg->prefetch)
		return 0;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->cfg = cfg;
	s->c = c;
	s->stats = stats;
	pthread_mutex_init(&s->mu, NULL);
	r = prefetch_new(&s->pool, cfg->prefetch, queue < SIB_QUEUE_MAX ? queue : SIB_QUEUE_MAX,
			 run_job, s);
	if (r < 0) {
		pthread_mutex_destroy(&s->mu);
		free(s);
		return r;
	}
	*out = s;
	return 0;
}

void sib_set_lister(struct sib *s, sib_lister_fn fn, void *arg)
{
	if (!s)
		return;
	s->lister = fn;
	s->lister_arg = arg;
}

void sib_set_loader(struct sib *s, sib_loader_fn fn, void *arg)
{
	if (!s)
		return;
	s->loader = fn;
	s->loader_arg = arg;
}

int sib_start(struct sib *s)
{
	return s ? prefetch_start(s->pool) : 0;
}

void sib_free(struct sib *s)
{
	if (!s)
		return;
	prefetch_free(s->pool, drop_job);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

void sib_drain(struct sib *s)
{
	if (s)
		prefetch_drain(s->pool);
}

/* Claim the directory's place in table (s->slot or s->warm): false if it
 * had one within the window.  s->mu held. */
static bool window_claim_locked(struct sib_slot *table, time_t window, dev_t dev, uint64_t ino)
{
	struct sib_slot *sl = &table[(ino ^ (uint64_t)dev * 0x9e3779b97f4a7c15ULL) % SIB_SLOTS];
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	if (sl->at && sl->dev == dev && sl->ino == ino && now.tv_sec - sl->at < window)
		return false;
	sl->dev = dev;
	sl->ino = ino;
	sl->at = now.tv_sec ? now.tv_sec : 1;
	return true;
}

/* Claim the directory's burst: false if it had one within the window or
 * too many are in flight.  s->mu held. */
static bool claim_locked(struct sib *s, dev_t dev, uint64_t ino)
{
	if (s->ndirs >= SIB_MAX_DIRS || !window_claim_locked(s->slot, SIB_WINDOW_S, dev, ino))
		return false;
	s->ndirs++;
	return true;
}

void sib_cold_open(struct sib *s, int dirfd, dev_t dev, uint64_t dir_ino, const char *name,
		   uint64_t size)
{
	struct prefetch_job job = {.idx = SIB_DIR, .fd = -1, .tag = dir_ino};
	struct sib_dir *d;
	bool ok;

	if (!s || size > SIB_MAX_FILE)
		return;
	pthread_mutex_lock(&s->mu);
	ok = claim_locked(s, dev, dir_ino);
	pthread_mutex_unlock(&s->mu);
	if (!ok)
		return;
	d = calloc(1, sizeof(*d));
	if (d) {
		d->s = s;
		d->dev = dev;
		d->refs = 1;
		d->bytes_left = SIB_MAX_BYTES;
		d->opened = strdup(name);
		d->fd = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
	}
	if (!d || !d->opened || d->fd < 0) {
		dir_free(s, d);
		return;
	}
	job.entry = d;
	stats_add(s->stats, ST_sibling_pending, 1);
	if (!prefetch_submit(s->pool, &job)) {
		stats_sub(s->stats, ST_sibling_pending, 1);
		dir_put(d);
	}
}

/* Queue ino[0..n) of device dev in jobs of kind `kind` (SIB_WARM or
 * SIB_SNAP), SIB_WARM_BATCH each; false once the queue is full (the rest
 * is done at its use). */
static bool queue_batches(struct sib *s, enum sib_kind kind, dev_t dev, const uint64_t *ino,
			  unsigned n)
{
	if (n > s->cfg->siblings)
		n = s->cfg->siblings;
	for (unsigned at = 0; at < n; at += SIB_WARM_BATCH) {
		unsigned k = n - at < SIB_WARM_BATCH ? n - at : SIB_WARM_BATCH;
		struct prefetch_job job = {.idx = kind, .fd = -1, .tag = (uint64_t)dev};

		job.buf = malloc(k * sizeof(*ino));
		if (!job.buf)
			return false;
		memcpy(job.buf, ino + at, k * sizeof(*ino));
		job.len = k;
		stats_add(s->stats, ST_sibling_pending, 1);
		if (!prefetch_submit(s->pool, &job)) {
			stats_sub(s->stats, ST_sibling_pending, 1);
			free(job.buf);
			return false;
		}
	}
	return true;
}

void sib_listed(struct sib *s, dev_t dev, uint64_t dir_ino, const uint64_t *ino, unsigned n,
		const uint64_t *sub, unsigned nsub)
{
	bool ok;

	if (!s || (!n && !(nsub && s->loader)))
		return;
	pthread_mutex_lock(&s->mu);
	ok = window_claim_locked(s->warm, SIB_WARM_WINDOW_S, dev, dir_ino);
	pthread_mutex_unlock(&s->mu);
	if (!ok)
		return;
	/* The subdirectories first: a walk lists them before it opens the
	 * files (their listings then queue theirs). */
	if (s->loader && !queue_batches(s, SIB_SNAP, dev, sub, nsub))
		return;
	(void)queue_batches(s, SIB_WARM, dev, ino, n);
}
