/* warm.c - `efscachectl warm`: read files and trees through the mount so
 * that the daemon fetches and caches them.
 *
 * Contract: the main thread walks the trees (walk.c) and queues files; N
 * workers open each file through the mount (O_DIRECT where the mount takes
 * it) and read it with 1 MiB preads, which makes the daemon fetch and
 * store it.  A file the status query shows
 * complete and valid is skipped.  A file larger than one segment (16 MiB,
 * or a chunk if chunks are larger) is split into segments that other
 * workers pick up first, so one big file is fetched in parallel too.  The
 * kernel's page cache of each file is dropped before reading (pages still
 * cached there would never reach the daemon) and after each segment (they
 * are of no use once the daemon has the data).  On a TTY a progress thread
 * redraws one status line.
 *
 * Locks: the queue, the counters of finished files, scan_done and finished
 * are under w->mu (taken before the output lock of client.c, never after);
 * byte counters are relaxed atomics; the rate samples belong to the
 * progress thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"

#define WARM_READ (1 << 20)	/* bytes per read(2) while warming */
#define WARM_SEGMENT (16 << 20) /* a bigger file is split into segments this size */
#define WARM_DEFAULT_JOBS 4
#define WARM_MAX_JOBS 256
#define RATE_SAMPLES 20 /* progress redraws the rate is averaged over (5 s) */
#define SETTLE_POLL_MS 20 /* write-behind drain: stats query interval */
#define SETTLE_MAX_MS 60000 /* ... and how long to wait before saying so */

struct warm_file {
	char *path;
	int fd;
	int err;	   /* first error, positive errno; under w->mu */
	unsigned pending;  /* segments not finished; under w->mu */
	uint64_t expected; /* size counted in w->bytes_total */
};

struct warm_item {
	struct warm_item *next;
	struct warm_file *f;
	uint64_t off, len; /* len 0 = the whole file (first item of a file) */
};

struct warm {
	pthread_mutex_t mu;
	pthread_cond_t cv;	       /* work queued, or the scan ended */
	struct warm_item *head, *tail; /* under mu */
	bool scan_done;		       /* under mu */
	bool finished;		       /* under mu: workers are done, progress stops */
	pthread_cond_t done_cv;	       /* finished changed */
	bool tty;
	/* Recent (time, bytes_read) samples for the rate; progress thread only. */
	double sample_t[RATE_SAMPLES];
	uint64_t sample_b[RATE_SAMPLES];
	unsigned nsamples;
	uint64_t files_total, files_done, files_failed, files_skipped; /* under mu */
	uint64_t bytes_total, bytes_done, bytes_read;		       /* atomic */
	double start;
};

static uint64_t ld(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static void add(uint64_t *p, int64_t v)
{
	__atomic_fetch_add(p, (uint64_t)v, __ATOMIC_RELAXED);
}

static void warm_push_locked(struct warm *w, struct warm_item *it, bool front)
{
	if (front) {
		it->next = w->head;
		w->head = it;
		if (!w->tail)
			w->tail = it;
	} else {
		it->next = NULL;
		if (w->tail)
			w->tail->next = it;
		else
			w->head = it;
		w->tail = it;
	}
	pthread_cond_broadcast(&w->cv);
}

static struct warm_item *warm_pop(struct warm *w)
{
	struct warm_item *it;

	pthread_mutex_lock(&w->mu);
	while (!w->head && !w->scan_done)
		pthread_cond_wait(&w->cv, &w->mu);
	it = w->head;
	if (it) {
		w->head = it->next;
		if (!w->head)
			w->tail = NULL;
	}
	pthread_mutex_unlock(&w->mu);
	return it;
}

/* One segment (or a whole file) is finished; the last one closes the file. */
static void warm_finish(struct warm *w, struct warm_file *f, int err, bool skipped)
{
	bool last;

	pthread_mutex_lock(&w->mu);
	if (err && !f->err)
		f->err = err;
	last = --f->pending == 0;
	if (last) {
		w->files_done++;
		if (f->err)
			w->files_failed++;
		else if (skipped)
			w->files_skipped++;
	}
	pthread_mutex_unlock(&w->mu);
	if (!last)
		return;
	if (f->err)
		path_error(f->path, f->err);
	if (f->fd >= 0)
		close(f->fd);
	free(f->path);
	free(f);
}

/* Read [off, off+len) (len UINT64_MAX: to EOF); returns 0 or a positive errno. */
static int warm_read(struct warm *w, int fd, void *buf, uint64_t off, uint64_t len)
{
	uint64_t done = 0;
	int err = 0;

	while (done < len) {
		size_t want = len - done < WARM_READ ? (size_t)(len - done) : WARM_READ;
		ssize_t n = pread(fd, buf, want, (off_t)(off + done));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			err = errno;
			break;
		}
		if (n == 0)
			break;
		done += (uint64_t)n;
		add(&w->bytes_done, n);
		add(&w->bytes_read, n);
	}
	/* The daemon has the data now; the kernel's copy is of no use. */
	posix_fadvise(fd, (off_t)off, len == UINT64_MAX ? 0 : (off_t)len, POSIX_FADV_DONTNEED);
	return err;
}

/* First item of a file: open it, skip it if already cached, queue its other
 * segments, read the first. */
static void warm_open(struct warm *w, struct warm_file *f, void *buf)
{
	struct ctl_file_status st;
	uint64_t size, seg;
	struct stat sb;
	int err;

	/* O_DIRECT: the bytes go to the daemon and no further (it then pushes
	 * nothing into the kernel's page cache for a file it sweeps for us);
	 * where the file system refuses it, a buffered read whose pages are
	 * dropped after each segment. */
	f->fd = open(f->path, O_RDONLY | O_CLOEXEC | O_DIRECT);
	if (f->fd < 0 && errno == EINVAL)
		f->fd = open(f->path, O_RDONLY | O_CLOEXEC);
	if (f->fd < 0 || fstat(f->fd, &sb) < 0) {
		err = errno;
		add(&w->bytes_done, (int64_t)f->expected);
		warm_finish(w, f, err, false);
		return;
	}
	size = (uint64_t)sb.st_size;
	add(&w->bytes_total, (int64_t)(size - f->expected));
	f->expected = size;
	seg = WARM_SEGMENT;
	if (get_status(NULL, f->fd, &st) == 0) {
		/* The open validated the file: a complete, valid entry needs no reads. */
		if (st.state == CTL_STATE_VALID && st.size == size && st.cached_bytes == size) {
			add(&w->bytes_done, (int64_t)size);
			warm_finish(w, f, 0, true);
			return;
		}
		if (st.chunk_size > 0)
			seg = (seg + st.chunk_size - 1) / st.chunk_size * st.chunk_size;
	}
	/* Pages the kernel still holds would be served without asking the daemon. */
	posix_fadvise(f->fd, 0, 0, POSIX_FADV_DONTNEED);
	if (size > seg) {
		uint64_t nseg = (size + seg - 1) / seg;
		struct warm_item **items = calloc(nseg, sizeof(*items));
		uint64_t made = 0;

		for (uint64_t i = 1; items && i < nseg; i++, made++) {
			items[i] = malloc(sizeof(**items));
			if (!items[i])
				break;
			items[i]->f = f;
			items[i]->off = i * seg;
			items[i]->len = i + 1 == nseg ? UINT64_MAX : seg;
		}
		if (made + 1 < nseg) {
			/* Out of memory: read it all here instead. */
			for (uint64_t i = 1; items && i <= made; i++)
				free(items[i]);
			made = 0;
			seg = UINT64_MAX;
		}
		pthread_mutex_lock(&w->mu);
		f->pending += (unsigned)made;
		/* Front of the queue, in order: idle workers join this file first. */
		for (uint64_t i = made; i >= 1; i--)
			warm_push_locked(w, items[i], true);
		pthread_mutex_unlock(&w->mu);
		free(items);
	} else {
		seg = UINT64_MAX;
	}
	err = warm_read(w, f->fd, buf, 0, seg);
	warm_finish(w, f, err, false);
}

static void *warm_worker(void *arg)
{
	struct warm *w = arg;
	void *buf = NULL;
	struct warm_item *it;

	/* Aligned for O_DIRECT reads. */
	if (posix_memalign(&buf, 4096, WARM_READ) != 0)
		buf = NULL;
	while ((it = warm_pop(w))) {
		if (!buf) {
			warm_finish(w, it->f, ENOMEM, false);
		} else if (it->len == 0) {
			warm_open(w, it->f, buf);
		} else {
			warm_finish(w, it->f, warm_read(w, it->f->fd, buf, it->off, it->len),
				    false);
		}
		free(it);
	}
	free(buf);
	return NULL;
}

static void fmt_eta(double secs, char *buf, size_t len)
{
	unsigned long s;

	if (secs < 0 || secs > 99 * 3600.0) {
		snprintf(buf, len, "--:--");
		return;
	}
	s = (unsigned long)(secs + 0.5);
	if (s >= 3600)
		snprintf(buf, len, "%lu:%02lu:%02lu", s / 3600, s / 60 % 60, s % 60);
	else
		snprintf(buf, len, "%lu:%02lu", s / 60, s % 60);
}

/* Draw the progress line; w->mu held (progress_printf takes the output lock). */
static void draw_progress_locked(struct warm *w)
{
	uint64_t done = ld(&w->bytes_done), total = ld(&w->bytes_total), rd = ld(&w->bytes_read);
	double now = now_mono(), rate = 0;
	unsigned slot = w->nsamples % RATE_SAMPLES, oldest;
	char a[32], b[32], eta[32], line[256];
	struct winsize ws;
	size_t width = 80;
	int n;

	/* MiB/s over the last few seconds: small files and big ones differ. */
	w->sample_t[slot] = now;
	w->sample_b[slot] = rd;
	w->nsamples++;
	oldest = w->nsamples > RATE_SAMPLES ? w->nsamples % RATE_SAMPLES : 0;
	if (now - w->sample_t[oldest] > 0.1)
		rate = mib(rd - w->sample_b[oldest]) / (now - w->sample_t[oldest]);
	else if (now - w->start > 0)
		rate = mib(rd) / (now - w->start);
	if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1)
		width = ws.ws_col;
	if (done > total)
		total = done;
	if (!w->scan_done || rate <= 0)
		snprintf(eta, sizeof(eta), "--:--");
	else
		fmt_eta(mib(total - done) / rate, eta, sizeof(eta));
	n = snprintf(line, sizeof(line),
		     "warm: %s / %s%s, %" PRIu64 " / %" PRIu64 "%s files, %.1f MiB/s, ETA %s",
		     human(done, a, sizeof(a)), human(total, b, sizeof(b)), w->scan_done ? "" : "+",
		     w->files_done, w->files_total, w->scan_done ? "" : "+", rate, eta);
	if (n > 0 && (size_t)n >= width)
		line[width - 1] = '\0';
	progress_printf("\r%s\033[K", line);
}

static void *warm_progress(void *arg)
{
	struct warm *w = arg;
	struct timespec ts;

	pthread_mutex_lock(&w->mu);
	for (;;) {
		/* Every 250 ms; a warm that ends sooner never shows a line. */
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 250 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		while (!w->finished &&
		       pthread_cond_timedwait(&w->done_cv, &w->mu, &ts) != ETIMEDOUT)
			;
		if (w->finished)
			break;
		draw_progress_locked(w);
	}
	pthread_mutex_unlock(&w->mu);
	progress_clear();
	return NULL;
}

static int warm_queue_file(const char *path, const struct stat *st, void *arg)
{
	struct warm *w = arg;
	struct warm_file *f = calloc(1, sizeof(*f));
	struct warm_item *it = malloc(sizeof(*it));

	if (!f || !it || !(f->path = strdup(path))) {
		free(f);
		free(it);
		path_error(path, ENOMEM);
		return -1;
	}
	f->fd = -1;
	f->pending = 1;
	f->expected = (uint64_t)st->st_size;
	it->f = f;
	it->off = it->len = 0;
	add(&w->bytes_total, st->st_size);
	pthread_mutex_lock(&w->mu);
	w->files_total++;
	warm_push_locked(w, it, false);
	pthread_mutex_unlock(&w->mu);
	return 0;
}

/* Reads are answered before their chunks are written to cache_dir (the
 * write-behind worker stores them after the reply), so the last files read
 * may not be cached yet when the workers finish.  Wait until each mount
 * named has nothing left to write, so that what warm reports as warmed is
 * in the cache when it returns (status, evict, a kill -9 see it).  Other
 * readers of a busy mount keep the count above zero; after SETTLE_MAX_MS
 * that is said and warm ends anyway.  Paths on one mount are polled once. */
static void warm_settle(int argc, char **argv, int first)
{
	char **seen = calloc((size_t)argc, sizeof(*seen));
	int nseen = 0;

	if (!seen)
		return;
	for (int i = first; i < argc; i++) {
		struct ctl_stats *st;
		char *text;
		bool dup = false;
		int waited = 0;

		if (get_stats(argv[i], &text, &st) < 0)
			continue; /* already named by the walk */
		for (int j = 0; j < nseen && !dup; j++)
			dup = !strcmp(seen[j], st->cache_dir);
		if (!dup && (seen[nseen] = strdup(st->cache_dir)) != NULL)
			nseen++;
		while (!dup && st->write_behind_pending && waited < SETTLE_MAX_MS) {
			free(text);
			free(st);
			usleep(SETTLE_POLL_MS * 1000);
			waited += SETTLE_POLL_MS;
			if (get_stats(argv[i], &text, &st) < 0)
				goto next;
		}
		if (!dup && st->write_behind_pending)
			report("warm %s: %" PRIu64 " chunks still being written to the cache after "
			       "%d s (other readers of the mount keep it busy)",
			       argv[i], st->write_behind_pending, SETTLE_MAX_MS / 1000);
		free(text);
		free(st);
next:;
	}
	for (int j = 0; j < nseen; j++)
		free(seen[j]);
	free(seen);
}

int cmd_warm(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"jobs", required_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct warm w = {.tty = isatty(STDERR_FILENO) == 1};
	unsigned long jobs = WARM_DEFAULT_JOBS;
	pthread_t *workers, progress;
	unsigned started = 0, errors = 0;
	bool progress_started = false;
	double el;
	int c;

	while ((c = getopt_long(argc, argv, ":hj:", opts, NULL)) != -1) {
		char *end;

		if (c == 'h')
			return print_usage();
		if (c != 'j') {
			bad_option("warm", c, argv);
			return EXIT_USAGE;
		}
		errno = 0;
		jobs = strtoul(optarg, &end, 10);
		if (errno || *end || !*optarg || jobs < 1 || jobs > WARM_MAX_JOBS) {
			usage_error("warm: -j takes a number from 1 to %d, not '%s'", WARM_MAX_JOBS,
				    optarg);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage_error("warm needs at least one PATH");
		return EXIT_USAGE;
	}
	workers = calloc(jobs, sizeof(*workers));
	if (!workers) {
		path_error(argv[optind], ENOMEM);
		return EXIT_FAIL;
	}
	pthread_mutex_init(&w.mu, NULL);
	pthread_cond_init(&w.cv, NULL);
	pthread_cond_init(&w.done_cv, NULL);
	w.start = now_mono();
	for (unsigned long i = 0; i < jobs; i++) {
		if (pthread_create(&workers[i], NULL, warm_worker, &w))
			break;
		started++;
	}
	if (!started) {
		report("cannot start worker threads");
		free(workers);
		return EXIT_FAIL;
	}
	if (w.tty && pthread_create(&progress, NULL, warm_progress, &w) == 0)
		progress_started = true;
	errors += walk_args(argc, argv, optind, warm_queue_file, &w, NULL);
	pthread_mutex_lock(&w.mu);
	w.scan_done = true;
	pthread_cond_broadcast(&w.cv);
	pthread_mutex_unlock(&w.mu);
	for (unsigned i = 0; i < started; i++)
		pthread_join(workers[i], NULL);
	free(workers);
	pthread_mutex_lock(&w.mu);
	w.finished = true;
	pthread_cond_broadcast(&w.done_cv);
	pthread_mutex_unlock(&w.mu);
	if (progress_started)
		pthread_join(progress, NULL);
	warm_settle(argc, argv, optind);

	el = now_mono() - w.start;
	printf("warmed %" PRIu64 " file%s, %.1f MiB in %.1f s (%.1f MiB/s)",
	       w.files_done - w.files_failed, w.files_done - w.files_failed == 1 ? "" : "s",
	       mib(w.bytes_read), el, el > 0 ? mib(w.bytes_read) / el : 0.0);
	if (w.files_skipped)
		printf(", %" PRIu64 " already cached", w.files_skipped);
	if (w.files_failed)
		printf(", %" PRIu64 " failed", w.files_failed);
	putchar('\n');
	errors += (unsigned)w.files_failed;
	pthread_mutex_destroy(&w.mu);
	pthread_cond_destroy(&w.cv);
	pthread_cond_destroy(&w.done_cv);
	if (fflush(stdout))
		errors++;
	return errors ? EXIT_FAIL : 0;
}
