/* test_cache_space.c - the cache core's space accounting against a fake
 * source, no mount (the fixture: cache_fixture.c).
 *
 * Pinned bytes never change under a reply: eviction skips pinned chunks and
 * a reset waits for them; cache_size holds under concurrent fills; evicting
 * a chunk whose record is gone from disk neither hangs nor leaks.  The
 * stats counters, the fake's read count and the files under cache_dir are
 * the witnesses.
 */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cache_fixture.h"

/* ---- eviction never drops a pinned chunk -------------------------------- */

static bool pinned_bytes_right(const struct cache_read *rd, uint64_t off, size_t len, unsigned seed)
{
	unsigned char *b = malloc(len);
	bool ok;

	gather(rd, b);
	ok = bytes_are(b, off, len, seed);
	free(b);
	return ok;
}

static void test_evict_skips_pinned(void)
{
	struct env v;
	struct handle ha, hb;
	struct efs_inode *a, *b;
	struct cache_read rd;
	const unsigned nb = 16;
	const uint64_t size = 4 * CS + 2 * BLK; /* four chunks and two records */

	env_init(&v, size);
	a = make_file(&v, "a", CS, 1);
	b = make_file(&v, "b", (uint64_t)nb * CS, 2);
	CHECK(h_open(&v, a, &ha, NULL) == 0);
	CHECK(h_open(&v, b, &hb, NULL) == 0);
	CHECK(read_check(&v, &ha, 0, CS, 1) == CS);
	wait_stored(&v);

	/* A reply of a0 is in flight: its bytes were copied out of the data
	 * file (a hit is never spliced), so nothing done to the cache after
	 * can change them. */
	CHECK(cache_read(v.c, a, ha.fd, 0, CS, false, v.kernel_size, &rd) == CS);
	CHECK(rd.nseg == 1 && rd.seg[0].fd < 0);
	CHECK(st(&v, ST_hits) == 1);

	/* Fill four times the cache with b: a0 goes too. */
	for (unsigned i = 0; i < nb; i++) {
		CHECK(read_check(&v, &hb, (uint64_t)i * CS, CS, 2) == CS);
		wait_stored(&v);
		CHECK(pinned_bytes_right(&rd, 0, CS, 1));
		CHECK(stat_line(&v, "cache_usage_bytes") <= size);
	}
	CHECK(st(&v, ST_evictions) >= nb - 3);
	CHECK(disk_slot_len(&v, a, 0) == 0);
	cache_read_done(v.c, &rd);

	/* Read again: right, from the source. */
	CHECK(read_check(&v, &ha, 0, CS, 1) == CS);
	h_close(&v, &ha);
	h_close(&v, &hb);
	env_fini(&v);
}

/* ---- reset while readers hold pins --------------------------------------- */

struct opener_arg {
	struct env *v;
	struct efs_inode *ino;
	struct handle h;
	bool keep;
	int r;
	bool done; /* atomic */
};

static void *opener_main(void *p)
{
	struct opener_arg *a = p;

	a->r = h_open(a->v, a->ino, &a->h, &a->keep);
	__atomic_store_n(&a->done, true, __ATOMIC_RELEASE);
	return NULL;
}

static void test_reset_while_pinned(void)
{
	struct env v;
	struct handle h;
	struct efs_inode *ino;
	struct cache_read rd;
	struct opener_arg oa;
	pthread_t th;
	struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_sec = 1000000000}};

	env_init(&v, 64u << 20);
	ino = make_file(&v, "rs", 2 * CS, 1);
	CHECK(h_open(&v, ino, &h, NULL) == 0);
	CHECK(read_check(&v, &h, 0, CS, 1) == CS);
	wait_stored(&v);
	CHECK(cache_read(v.c, ino, h.fd, 100, CS - 100, false, v.kernel_size, &rd) == CS - 100);

	/* Another client rewrites the file; another process opens it: the
	 * reset goes ahead (the reply in flight holds a copy, no pin), and
	 * that reply's bytes stay those it was given. */
	write_file(&v, "rs", 2 * CS, 2);
	CHECK(utimensat(v.f.root, "rs", ts, 0) == 0);
	oa = (struct opener_arg){.v = &v, .ino = ino};
	CHECK(pthread_create(&th, NULL, opener_main, &oa) == 0);
	pthread_join(th, NULL);
	CHECK(oa.r == 0);
	CHECK(!oa.keep);
	CHECK(st(&v, ST_stale_dropped) == 1);
	CHECK(pinned_bytes_right(&rd, 100, CS - 100, 1));
	cache_read_done(v.c, &rd);

	/* The new handle reads the new bytes. */
	{
		unsigned reads = fake_reads(&v.f);
		CHECK(read_check(&v, &oa.h, 0, 2 * CS, 2) == 2 * CS);
		CHECK(fake_reads(&v.f) == reads + 2);
	}
	wait_stored(&v);
	h_close(&v, &oa.h);
	h_close(&v, &h);
	env_fini(&v);
}

/* ---- cache_size under concurrent fills ----------------------------------- */

#define FILL_THREADS 4
#define FILL_FILES 12
#define FILL_CHUNKS 8
#define FILL_PREFETCH 4

struct fill_arg {
	struct env *v;
	struct handle *h; /* FILL_FILES of them */
	unsigned id;
	unsigned bad;
};

static void *fill_main(void *p)
{
	struct fill_arg *a = p;

	/* Each thread reads every file, starting at a different one: half of
	 * them sequentially (prefetch workers fetch and store ahead, each
	 * reserving space in parallel), half backwards (the readers' own
	 * fetches, stored behind their replies). */
	for (unsigned k = 0; k < FILL_FILES; k++) {
		unsigned fi = (a->id * 5 + k) % FILL_FILES;
		bool seq = (a->id + k) % 2 == 0;
		for (unsigned j = 0; j < FILL_CHUNKS; j++) {
			unsigned ci = seq ? j : FILL_CHUNKS - 1 - j;
			if (read_check_seq(a->v, &a->h[fi], (uint64_t)ci * CS, CS, 100 + fi, seq) !=
			    CS)
				a->bad++;
		}
	}
	return NULL;
}

struct watch_arg {
	struct env *v;
	bool stop; /* atomic */
	uint64_t max;
	unsigned samples;
};

static void *watch_main(void *p)
{
	struct watch_arg *w = p;

	while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
		uint64_t u = stat_line(w->v, "cache_usage_bytes");
		if (u > w->max)
			w->max = u;
		w->samples++;
		usleep(200);
	}
	return NULL;
}

/* Allocated bytes of everything under cache_dir/v1. */
static uint64_t disk_usage(const char *cdir)
{
	char p[256], q[600];
	uint64_t sum = 0;
	DIR *top, *sub;
	struct dirent *d, *e;
	struct stat s;

	snprintf(p, sizeof(p), "%s/v1", cdir);
	top = opendir(p);
	if (!top)
		return 0;
	while ((d = readdir(top))) {
		if (d->d_name[0] == '.')
			continue;
		snprintf(q, sizeof(q), "%s/%s", p, d->d_name);
		sub = opendir(q);
		if (!sub)
			continue;
		while ((e = readdir(sub))) {
			char f[900];
			if (e->d_name[0] == '.')
				continue;
			snprintf(f, sizeof(f), "%s/%s", q, e->d_name);
			if (stat(f, &s) == 0)
				sum += (uint64_t)s.st_blocks * 512;
		}
		closedir(sub);
	}
	closedir(top);
	return sum;
}

static void test_size_under_concurrent_fills(void)
{
	struct env v;
	struct handle h[FILL_FILES];
	struct fill_arg a[FILL_THREADS];
	pthread_t th[FILL_THREADS], wt;
	struct watch_arg w = {0};
	/* Room for a quarter of the data, plus each record's metadata block:
	 * records are accounted at open, chunks reserved before written. */
	const uint64_t size = (uint64_t)FILL_FILES * FILL_CHUNKS * CS / 4 + FILL_FILES * BLK;
	uint64_t stored, evicted, fallbacks;

	env_init_full(&v, size, FILL_PREFETCH, VERIFY_ONCE);
	for (unsigned i = 0; i < FILL_FILES; i++) {
		char name[16];
		snprintf(name, sizeof(name), "f%u", i);
		CHECK(h_open(&v, make_file(&v, name, (uint64_t)FILL_CHUNKS * CS, 100 + i), &h[i],
			     NULL) == 0);
	}
	w.v = &v;
	CHECK(pthread_create(&wt, NULL, watch_main, &w) == 0);
	for (unsigned i = 0; i < FILL_THREADS; i++) {
		a[i] = (struct fill_arg){.v = &v, .h = h, .id = i};
		CHECK(pthread_create(&th[i], NULL, fill_main, &a[i]) == 0);
	}
	for (unsigned i = 0; i < FILL_THREADS; i++) {
		pthread_join(th[i], NULL);
		CHECK(a[i].bad == 0);
	}
	wait_stored(&v);
	__atomic_store_n(&w.stop, true, __ATOMIC_RELEASE);
	pthread_join(wt, NULL);

	stored = st(&v, ST_chunks_stored);
	evicted = st(&v, ST_evictions);
	fallbacks = st(&v, ST_fallbacks);
	CHECK(w.samples > 0);
	CHECK(w.max <= size);
	CHECK(stat_line(&v, "cache_usage_bytes") <= size);
	CHECK(disk_usage(v.cdir) <= size);
	/* Everything was read at least once and most of it had to go. */
	CHECK(stored + fallbacks >= FILL_FILES * FILL_CHUNKS);
	/* Counted per chunk or per whole record: the bytes tell. */
	CHECK(st(&v, ST_evicted_bytes) >= (stored - size / CS) * CS);
	CHECK(evicted > 0);
	if (w.max > size || disk_usage(v.cdir) > size)
		fprintf(stderr, "usage max %llu, disk %llu, limit %llu\n",
			(unsigned long long)w.max, (unsigned long long)disk_usage(v.cdir),
			(unsigned long long)size);
	for (unsigned i = 0; i < FILL_FILES; i++)
		h_close(&v, &h[i]);
	env_fini(&v);
}

/* ---- a record gone from disk while its chunks are on the LRU ---------- */

static struct env *hung_env; /* its directories are removed on a hang */

static void on_hang(int sig)
{
	static const char msg[] = "test_cache_space: hung (deadlock) evicting a chunk whose record is gone\n";
	pid_t pid;

	(void)sig;
	if (write(2, msg, sizeof(msg) - 1) < 0)
		_exit(1);
	/* Only async-signal-safe calls: the cache's locks are held. */
	pid = hung_env ? fork() : -1;
	if (pid == 0) {
		execl("/bin/rm", "rm", "-rf", hung_env->src, hung_env->cdir, (char *)NULL);
		_exit(127);
	}
	if (pid > 0)
		waitpid(pid, NULL, 0);
	_exit(1);
}

/* A file is unlinked through the mount while a reply of its data is in
 * flight: cache_source_gone removes the record but cannot unload the entry
 * (pinned), so its chunk stays on the LRU.  Once idle, the entry gives its
 * fds back.  Eviction then reaches that chunk.  drop_chunk_cb once
 * reopened the record through entry_reopen_locked, which unloads the entry
 * when the record is gone and so took the LRU lock that evict_reserve
 * already held: the daemon hung.  Deleting a .meta file under cache_dir (a
 * /tmp cleaner) did the same. */
static void test_evict_record_gone(void)
{
	struct env v;
	struct handle ha, hb;
	struct efs_inode *a, *b;
	struct cache_read rd;

	env_init(&v, 2 * CS + 2 * BLK);
	a = make_file(&v, "a", CS, 1);
	b = make_file(&v, "b", 4 * CS, 2);
	CHECK(h_open(&v, a, &ha, NULL) == 0);
	CHECK(h_open(&v, b, &hb, NULL) == 0);
	CHECK(read_check(&v, &ha, 0, CS, 1) == CS);
	wait_stored(&v);
	CHECK(cache_read(v.c, a, ha.fd, 0, CS, false, v.kernel_size, &rd) == CS);
	cache_source_gone(v.c, a->dev, (uint64_t)a->ino); /* unlink "a" through the mount */
	cache_read_done(v.c, &rd);
	h_close(&v, &ha);

	hung_env = &v;
	signal(SIGALRM, on_hang);
	alarm(5);
	for (unsigned i = 0; i < 4; i++) {
		CHECK(read_check(&v, &hb, (uint64_t)i * CS, CS, 2) == CS);
		wait_stored(&v);
	}
	alarm(0);
	CHECK(st(&v, ST_evictions) >= 2);
	CHECK(stat_line(&v, "cache_usage_bytes") <= 2 * CS + 2 * BLK);
	h_close(&v, &hb);
	env_fini(&v);
}

int main(void)
{
	test_evict_skips_pinned();
	test_reset_while_pinned();
	test_size_under_concurrent_fills();
	test_evict_record_gone();
	return check_done("test_cache_space");
}
