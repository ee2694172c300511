/* test_cache_cold.c - cold reads against a fake source, no mount (the
 * fixture: cache_fixture.c).
 *
 * What issue 18 promises: a reader that misses chunks out of order (mmap
 * faults, a loader's preads) gets the rest of the file fetched ahead, each
 * chunk once, and so does a reader of a model file (safetensors or GGUF
 * header) after its first scattered miss; a sequential reader or one that
 * looks at two places of a file does not; the sweep stops when the reader
 * goes away; prefetched chunks kept in memory are the source's bytes;
 * chunks written behind from the reply's buffer reach the data file whole;
 * a swept file's chunks go to the kernel's page cache (the fake's push
 * checks their bytes), never while a request that must follow them is
 * answered (a fence), a writer has the file open or after its inode went.
 * The fake's read count, the stats counters, the record's slots and the
 * data file witness it.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache_fixture.h"
#include "../../src/cache_int.h" /* c->pf: wait for the prefetch queue */

#define NCH 32u /* chunks of the test files */

static uint32_t stored_chunks(struct env *v, struct efs_inode *ino, uint32_t n)
{
	uint32_t k = 0;

	for (uint32_t idx = 0; idx < n; idx++)
		k += disk_slot_len(v, ino, idx) != 0;
	return k;
}

/* Every chunk of ino is on disk with its slot (bounded wait). */
static bool wait_all_stored(struct env *v, struct efs_inode *ino, uint32_t n)
{
	for (int i = 0; i < 2000; i++) {
		if (stored_chunks(v, ino, n) == n)
			return true;
		usleep(5000);
	}
	return false;
}

/* Chunks in an order no sequential reader has. */
static const uint32_t scattered[] = {17, 3, 28, 9, 22, 5, 30, 12};

static void test_scattered_reader_sweeps(void)
{
	struct env v;
	struct handle h;
	struct efs_inode *ino;

	env_init_full(&v, 64u << 20, 2, VERIFY_ONCE);
	ino = make_file(&v, "scatter", (uint64_t)NCH * CS, 3);
	CHECK(h_open(&v, ino, &h, NULL) == 0);
	/* Small reads inside chunks, as page faults are. */
	for (unsigned i = 0; i < 5; i++)
		CHECK(read_check_seq(&v, &h, (uint64_t)scattered[i] * CS + 4096, 8192, 3, false) ==
		      8192);
	CHECK(st(&v, ST_scatter_sweeps) == 1);
	CHECK(wait_all_stored(&v, ino, NCH));
	wait_stored(&v);
	/* Each chunk came from the source once: the sweep skipped what the
	 * reader had fetched, and the reader's next reads are hits. */
	CHECK(fake_reads(&v.f) == NCH);
	for (uint32_t idx = 0; idx < NCH; idx++)
		CHECK(read_check_seq(&v, &h, (uint64_t)idx * CS, CS, 3, false) == CS);
	CHECK(fake_reads(&v.f) == NCH);
	h_close(&v, &h);
	env_fini(&v);
}

static void test_no_sweep(void)
{
	struct env v;
	struct handle h;
	struct efs_inode *ino;

	env_init_full(&v, 64u << 20, 2, VERIFY_ONCE);
	ino = make_file(&v, "two", (uint64_t)NCH * CS, 4);
	CHECK(h_open(&v, ino, &h, NULL) == 0);
	/* The end of a file, then its start, then on from there (a zip
	 * reader; a tool that reads a header and a trailer). */
	CHECK(read_check_seq(&v, &h, (uint64_t)(NCH - 1) * CS, CS, 4, false) == CS);
	CHECK(read_check_seq(&v, &h, 0, CS, 4, false) == CS);
	CHECK(read_check_seq(&v, &h, CS, CS, 4, false) == CS);
	CHECK(read_check_seq(&v, &h, 2 * CS, CS, 4, false) == CS);
	wait_stored(&v);
	CHECK(st(&v, ST_scatter_sweeps) == 0);
	CHECK(stored_chunks(&v, ino, NCH) == 4);
	CHECK(fake_reads(&v.f) == 4);
	h_close(&v, &h);

	/* A file too small to sweep. */
	ino = make_file(&v, "small", 6 * CS, 5);
	CHECK(h_open(&v, ino, &h, NULL) == 0);
	for (uint32_t idx = 5;; idx -= 2) {
		CHECK(read_check_seq(&v, &h, (uint64_t)idx * CS, 100, 5, false) == 100);
		if (idx < 2)
			break;
	}
	CHECK(read_check_seq(&v, &h, 4 * CS, 100, 5, false) == 100);
	CHECK(read_check_seq(&v, &h, 2 * CS, 100, 5, false) == 100);
	CHECK(st(&v, ST_scatter_sweeps) == 0);
	h_close(&v, &h);
	env_fini(&v);
}

/* Every prefetch job and push job queued has run (pushes of the chunks a
 * reader fetched itself run on a queue of their own). */
static void drain_jobs(struct env *v)
{
	prefetch_drain(v->c->pf);
	prefetch_drain(v->c->pushq);
}

/* Overwrite the first bytes of the source file name with hdr. */
static void put_header(struct env *v, const char *name, const void *hdr, size_t len)
{
	char p[128];
	int fd;

	snprintf(p, sizeof(p), "%s/%s", v->src, name);
	fd = open(p, O_WRONLY);
	CHECK(fd >= 0);
	CHECK(pwrite(fd, hdr, len, 0) == (ssize_t)len);
	close(fd);
}

/* A loader reads the header (from offset 0: through a mount, the reader
 * looks sequential, how = CACHE_READ_SEQUENTIAL), then one tensor far away. */
static void test_loader_sweeps(const char *name, const void *hdr, size_t len, bool model,
			       unsigned how)
{
	struct env v;
	struct handle h;
	struct efs_inode *ino;
	unsigned char b[64];
	struct cache_read rd;
	ssize_t n;

	env_init_full(&v, 64u << 20, 2, VERIFY_ONCE);
	write_file(&v, name, (uint64_t)NCH * CS, 6);
	put_header(&v, name, hdr, len);
	ino = lookup(&v, name);
	CHECK(h_open(&v, ino, &h, NULL) == 0);
	n = cache_read(v.c, ino, h.fd, 0, sizeof(b), how, UINT64_MAX, &rd);
	CHECK(n == (ssize_t)sizeof(b));
	if (n == (ssize_t)sizeof(b)) {
		gather(&rd, b);
		CHECK(!memcmp(b, hdr, len));
	}
	cache_read_done(v.c, &rd);
	CHECK(read_check_seq(&v, &h, 20 * CS + 512, 4096, 6, false) == 4096);
	CHECK(st(&v, ST_scatter_sweeps) == (model ? 1u : 0u));
	if (model)
		CHECK(wait_all_stored(&v, ino, NCH));
	wait_stored(&v);
	if (model || !how)
		CHECK(fake_reads(&v.f) == (model ? NCH : 2u));
	h_close(&v, &h);
	env_fini(&v);
}

static void test_loaders(void)
{
	/* safetensors: u64 LE header length, then the JSON header. */
	static const unsigned char st_hdr[] = {40, 0, 0, 0, 0, 0, 0, 0, '{', '"', 'a', '"', ':'};
	/* Not one: the length points past the file. */
	static const unsigned char bad_hdr[] = {0, 0, 0, 0, 1, 0, 0, 0, '{', '"', 'a', '"', ':'};

	for (unsigned how = 0; how <= CACHE_READ_SEQUENTIAL; how += CACHE_READ_SEQUENTIAL) {
		test_loader_sweeps("model.safetensors", st_hdr, sizeof(st_hdr), true, how);
		test_loader_sweeps("model.gguf", "GGUF\3\0\0\0", 8, true, how);
		test_loader_sweeps("data.bin", bad_hdr, sizeof(bad_hdr), false, how);
	}
}

static void test_sweep_stops_at_close(void)
{
	struct env v;
	struct handle h;
	struct efs_inode *ino;
	const uint32_t nch = 256;
	unsigned reads;

	env_init_full(&v, 256u << 20, 2, VERIFY_ONCE);
	ino = make_file(&v, "gone", (uint64_t)nch * CS, 7);
	CHECK(h_open(&v, ino, &h, NULL) == 0);
	for (unsigned i = 0; i < 5; i++)
		CHECK(read_check_seq(&v, &h, (uint64_t)scattered[i] * CS, 100, 7, false) == 100);
	CHECK(st(&v, ST_scatter_sweeps) == 1);
	/* The reader goes away while the sweep's first jobs wait at the gate. */
	fake_set_hold(&v.f, true);
	h_close(&v, &h);
	fake_set_hold(&v.f, false);
	/* Every job queued ran (a sweep that went on would queue more). */
	drain_jobs(&v);
	wait_stored(&v);
	reads = fake_reads(&v.f);
	/* The 5 misses, and the jobs queued before the close: a window
	 * (2 x prefetch) and a job's refill each. */
	CHECK(reads < 5 + 4 * 2 + 8);
	CHECK(reads >= 5);
	env_fini(&v);
}

/* Chunks written behind from the reply's own buffer (no copy) reach the
 * data file whole: it ends where the source file does (a last chunk that
 * is not whole pages) and holds its bytes. */
static void test_data_file_whole(void)
{
	const uint64_t size = 8ull * CS + 1234;
	struct env v;
	struct handle h;
	struct efs_inode *ino;
	struct stat sb;
	unsigned char *b;
	char p[256];
	int fd;

	env_init(&v, 64u << 20);
	ino = make_file(&v, "direct", size, 8);
	CHECK(h_open(&v, ino, &h, NULL) == 0);
	CHECK(read_check_seq(&v, &h, 0, (size_t)size, 8, false) == (ssize_t)size);
	wait_stored(&v);
	CHECK(stored_chunks(&v, ino, 9) == 9);
	record_path(&v, (uint64_t)ino->ino, "data", p, sizeof(p));
	CHECK(stat(p, &sb) == 0 && (uint64_t)sb.st_size == size);
	b = malloc(size);
	fd = open(p, O_RDONLY);
	CHECK(b && fd >= 0 && pread(fd, b, size, 0) == (ssize_t)size);
	CHECK(b && bytes_are(b, 0, (size_t)size, 8));
	if (fd >= 0)
		close(fd);
	free(b);
	h_close(&v, &h);
	env_fini(&v);
}

/* A mount that opens files without asking (-o immutable) tells of no close:
 * each read is an open and a close of the entry.  A scattered reader's
 * sweep must not stop at those closes, and fetches the whole file. */
static void test_sweep_without_handles(void)
{
	unsigned char *b = malloc(8192);
	struct env v;
	struct efs_inode *ino;
	bool keep;

	env_init_full(&v, 64u << 20, 2, VERIFY_ONCE);
	env_down(&v);
	v.cfg.immutable = true;
	env_up(&v);
	ino = make_file(&v, "noopen", (uint64_t)NCH * CS, 10);
	for (unsigned i = 0; i < 5; i++) {
		const uint64_t off = (uint64_t)scattered[i] * CS + 4096;
		ssize_t n;

		CHECK(core_open(&v, ino, &keep) == 0);
		n = core_read(&v, ino, -1, off, 8192, false, b, NULL);
		if (n == -EBADFD) {
			int fd = core_source_fd(&v, ino);

			n = fd < 0 ? fd : core_read(&v, ino, fd, off, 8192, false, b, NULL);
			if (fd >= 0)
				close(fd);
		}
		CHECK(n == 8192 && b && bytes_are(b, off, 8192, 10));
		core_close(&v, ino);
	}
	CHECK(st(&v, ST_scatter_sweeps) == 1);
	CHECK(wait_all_stored(&v, ino, NCH));
	wait_stored(&v);
	CHECK(fake_reads(&v.f) == NCH);
	free(b);
	env_fini(&v);
}

/* A prefetched chunk kept in memory for its reader is served from memory
 * to its end, also when the reader reads some of its bytes twice (the
 * kernel's readahead and a reader's own reads overlap). */
static void test_kept_overlapping_reads(void)
{
	static const struct {
		size_t from, to;
	} part[] = {{0, CS / 2}, {CS / 4, 3 * CS / 4}, {CS / 2, CS}};
	unsigned char *b = malloc(CS);
	struct env v;
	struct efs_inode *ino;
	bool keep;
	int fd;

	env_init_full(&v, 64u << 20, 2, VERIFY_ONCE);
	ino = make_file(&v, "kept", 8 * CS, 11);
	CHECK(core_open(&v, ino, &keep) == 0);
	fd = core_source_fd(&v, ino);
	CHECK(fd >= 0 && b);
	CHECK(core_read(&v, ino, fd, 0, CS, true, b, NULL) == CS);
	drain_jobs(&v);
	wait_stored(&v);
	CHECK(disk_slot_len(&v, ino, 1) == CS);
	for (unsigned i = 0; i < 3; i++) {
		const size_t len = part[i].to - part[i].from;

		CHECK(core_read(&v, ino, fd, CS + part[i].from, len, false, b, NULL) ==
		      (ssize_t)len);
		CHECK(bytes_are(b, CS + part[i].from, len, 11));
		CHECK(st(&v, ST_kept_hits) == i + 1);
	}
	/* Served whole: the next read of it is the data file's. */
	CHECK(core_read(&v, ino, fd, CS, CS, false, b, NULL) == CS);
	CHECK(bytes_are(b, CS, CS, 11));
	CHECK(st(&v, ST_kept_hits) == 3);
	close(fd);
	core_close(&v, ino);
	free(b);
	env_fini(&v);
}

/* Wait (bounded) until cond(v) holds. */
static bool wait_until(struct env *v, bool (*cond)(struct env *))
{
	for (int i = 0; i < 4000; i++) {
		if (cond(v))
			return true;
		usleep(2500);
	}
	return false;
}

static bool a_push_held(struct env *v)
{
	return fake_pushing(&v->f) > 0;
}

/* Open ino and miss 5 chunks out of order: the fifth starts the sweep. */
static void scatter(struct env *v, struct handle *h, struct efs_inode *ino, unsigned seed)
{
	CHECK(h_open(v, ino, h, NULL) == 0);
	for (unsigned i = 0; i < 5; i++)
		CHECK(read_check_seq(v, h, (uint64_t)scattered[i] * CS + 4096, 8192, seed, false) ==
		      8192);
	CHECK(st(v, ST_scatter_sweeps) >= 1);
}

struct fencer {
	struct env *v;
	struct efs_inode *ino;
	int r;
	bool done; /* atomic */
};

static void *fence_thread(void *arg)
{
	struct fencer *f = arg;

	f->r = cache_fence_begin(f->v->c, f->ino, true);
	__atomic_store_n(&f->done, true, __ATOMIC_RELEASE);
	return NULL;
}

static void *release_thread(void *arg)
{
	struct fencer *f = arg;

	cache_inode_release(f->ino, f->v->c);
	__atomic_store_n(&f->done, true, __ATOMIC_RELEASE);
	return NULL;
}

static void test_sweep_pushes(void)
{
	struct env v;
	struct handle h;
	struct efs_inode *ino;
	unsigned n;

	env_init_full(&v, 64u << 20, 2, VERIFY_ONCE);
	fake_set_push(&v.f, true, false);
	ino = make_file(&v, "pushed", (uint64_t)NCH * CS, 6);
	scatter(&v, &h, ino, 6);
	CHECK(wait_all_stored(&v, ino, NCH));
	wait_stored(&v);
	drain_jobs(&v);
	/* Every chunk the sweep fetched, and the reader's own misses once
	 * the sweep began (the fifth), went to the kernel, each with the
	 * source's bytes. */
	n = fake_pushes(&v.f);
	CHECK(n >= NCH - 4 && n <= NCH);
	CHECK(v.f.push_bad == 0);
	CHECK(st(&v, ST_pushed_bytes) == v.f.pushed);
	CHECK(st(&v, ST_push_waits) == 0);
	/* A reader that keeps no pages (O_DIRECT: efscachectl warm) makes the
	 * cache sweep a file it reads out of order, which pushes nothing. */
	ino = make_file(&v, "direct", (uint64_t)NCH * CS, 11);
	h_close(&v, &h);
	CHECK(h_open(&v, ino, &h, NULL) == 0);
	for (unsigned i = 0; i < 5; i++) {
		struct cache_read rd;

		CHECK(cache_read(v.c, ino, h.fd, (off_t)((uint64_t)scattered[i] * CS + 4096), 8192,
				 CACHE_READ_NO_PAGES, UINT64_MAX, &rd) == 8192);
		cache_read_done(v.c, &rd);
	}
	CHECK(st(&v, ST_scatter_sweeps) == 2);
	CHECK(wait_all_stored(&v, ino, NCH));
	wait_stored(&v);
	drain_jobs(&v);
	CHECK(fake_pushes(&v.f) == n);
	/* A sequential reader of another file pushes nothing. */
	ino = make_file(&v, "seq", (uint64_t)NCH * CS, 8);
	h_close(&v, &h);
	CHECK(h_open(&v, ino, &h, NULL) == 0);
	for (uint32_t idx = 0; idx < NCH; idx++)
		CHECK(read_check_seq(&v, &h, (uint64_t)idx * CS, CS, 8, true) == CS);
	wait_stored(&v);
	drain_jobs(&v);
	CHECK(fake_pushes(&v.f) == n);
	h_close(&v, &h);
	env_fini(&v);
}

/* An open (or a truncate) fences pushes: on a FUSE worker it is told to
 * go elsewhere while one is in flight; elsewhere it waits for it; while
 * fenced no push starts. */
static void test_fence_waits_for_pushes(void)
{
	struct env v;
	struct handle h;
	struct fencer f = {0};
	pthread_t t;
	unsigned n;

	env_init_full(&v, 64u << 20, 2, VERIFY_ONCE);
	fake_set_push(&v.f, true, true);
	f.v = &v;
	f.ino = make_file(&v, "fenced", (uint64_t)NCH * CS, 7);
	scatter(&v, &h, f.ino, 7);
	CHECK(wait_until(&v, a_push_held));
	CHECK(cache_fence_begin(v.c, f.ino, false) == -EWOULDBLOCK);
	CHECK(pthread_create(&t, NULL, fence_thread, &f) == 0);
	usleep(100 * 1000);
	CHECK(!__atomic_load_n(&f.done, __ATOMIC_ACQUIRE)); /* waits for the push */
	fake_set_push(&v.f, true, false);
	pthread_join(t, NULL);
	CHECK(f.r == 1);
	CHECK(st(&v, ST_push_waits) == 1);
	/* Fenced: the sweep goes on fetching, but pushes nothing. */
	n = fake_pushes(&v.f);
	CHECK(wait_all_stored(&v, f.ino, NCH));
	wait_stored(&v);
	drain_jobs(&v);
	CHECK(fake_pushes(&v.f) == n);
	CHECK(cache_fence_begin(v.c, f.ino, false) == 1); /* none in flight: at once */
	cache_fence_end(v.c, f.ino);
	cache_fence_end(v.c, f.ino);
	CHECK(v.f.push_bad == 0);
	h_close(&v, &h);
	env_fini(&v);
}

/* No push while a writer has the file open (the kernel's pages would hold
 * what it wrote), and none after the inode went (its number may name
 * another file then); the inode's release waits for a push in flight. */
static void test_no_push_for_writers_or_gone(void)
{
	struct env v;
	struct handle h;
	struct fencer f = {0};
	struct meta_attr attr = {0};
	struct efs_inode *ino;
	char p[128];
	pthread_t t;
	unsigned held;
	bool keep;
	int wfd;

	env_init_full(&v, 64u << 20, 2, VERIFY_ONCE);
	fake_set_push(&v.f, true, false);
	ino = make_file(&v, "written", (uint64_t)NCH * CS, 9);
	snprintf(p, sizeof(p), "%s/written", v.src);
	wfd = open(p, O_RDWR);
	CHECK(wfd >= 0);
	CHECK(cache_open(v.c, ino, wfd, &attr, &keep) == 0);
	scatter(&v, &h, ino, 9);
	CHECK(wait_all_stored(&v, ino, NCH));
	wait_stored(&v);
	drain_jobs(&v);
	CHECK(fake_pushes(&v.f) == 0);
	cache_close(v.c, ino, true);
	close(wfd);
	h_close(&v, &h);

	fake_set_push(&v.f, true, true);
	f.v = &v;
	f.ino = make_file(&v, "gone", (uint64_t)NCH * CS, 10);
	scatter(&v, &h, f.ino, 10);
	CHECK(wait_until(&v, a_push_held));
	h_close(&v, &h);
	CHECK(pthread_create(&t, NULL, release_thread, &f) == 0);
	usleep(100 * 1000);
	CHECK(!__atomic_load_n(&f.done, __ATOMIC_ACQUIRE)); /* waits for the pushes */
	held = fake_pushing(&v.f); /* one per worker at most, and one on the push queue's */
	CHECK(held >= 1 && held <= 3);
	fake_set_push(&v.f, true, false);
	pthread_join(t, NULL);
	drain_jobs(&v);
	CHECK(fake_pushes(&v.f) == held); /* those held; none after */
	CHECK(v.f.push_bad == 0);
	env_fini(&v);
}

int main(void)
{
	test_data_file_whole();
	test_scattered_reader_sweeps();
	test_no_sweep();
	test_loaders();
	test_sweep_stops_at_close();
	test_sweep_without_handles();
	test_kept_overlapping_reads();
	test_sweep_pushes();
	test_fence_waits_for_pushes();
	test_no_push_for_writers_or_gone();
	return check_done("cache_cold");
}
