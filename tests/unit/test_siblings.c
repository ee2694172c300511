/* test_siblings.c - small files fetched ahead of their open (siblings.c
 * over the cache core and the fixture's fake source), no mount.
 *
 * The bounds of a burst (files, bytes, the size of one file, once per
 * directory per window, none into a small cache), what it stores (the
 * source's bytes under the identity of the read, validated at the open like
 * any record, with the kernel's pages dropped at the first open), and that
 * a demand open and read never wait for it: the fake holds every read but
 * the test thread's at a gate, so a sibling's read stays in the source
 * while the demand opens and reads the same file.  No wall clock: a hang
 * is the failure (an alarm ends it).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache_fixture.h"
#include "siblings.h"

static void on_alarm(int sig)
{
	static const char msg[] = "test_siblings: hung\n";

	(void)sig;
	if (write(2, msg, sizeof(msg) - 1) < 0)
		_exit(1);
	_exit(1);
}

/* The cache (64 MiB chunks budget aside: 1 GiB, so that space is never
 * short) with a sibling pool of 2 workers fetching up to `files`. */
static struct sib *setup(struct env *v, unsigned files, uint64_t cache_size)
{
	struct sib *s = NULL;

	env_init_full(v, cache_size, 2, VERIFY_ONCE);
	v->cfg.siblings = files;
	CHECK(sib_new(&s, &v->cfg, v->c, &v->stats) == 0);
	CHECK(s != NULL);
	CHECK(sib_start(s) == 0);
	return s;
}

static void teardown(struct env *v, struct sib *s)
{
	sib_free(s);
	env_fini(v);
}

/* A cold open of `name` in the source root, as fsops reports it. */
static void cold_open(struct env *v, struct sib *s, const char *name, uint64_t size)
{
	struct stat d;

	CHECK(fstat(v->f.root, &d) == 0);
	sib_cold_open(s, v->f.root, d.st_dev, (uint64_t)d.st_ino, name, size);
}

static void settle(struct env *v, struct sib *s)
{
	sib_drain(s);
	wait_stored(v);
	CHECK(st(v, ST_sibling_pending) == 0);
}

/* Open name, read it whole checking every byte, close; returns the source
 * reads it cost and sets *keep to the open's keep_cache. */
static unsigned open_read(struct env *v, const char *name, uint64_t size, unsigned seed,
			  bool *keep)
{
	struct efs_inode *ino = lookup(v, name);
	unsigned before = fake_reads(&v->f);
	struct handle h;

	CHECK(h_open(v, ino, &h, keep) == 0);
	for (uint64_t o = 0; o < size; o += CS)
		CHECK(read_check(v, &h, o, CS, seed) == (ssize_t)(size - o < CS ? size - o : CS));
	h_close(v, &h);
	itab_forget(v->t, ino, 1);
	return fake_reads(&v->f) - before;
}

/* Files: at most `siblings` of them, never the one opened, never one over
 * SIB_MAX_FILE, never anything but a regular file; what is stored is served
 * with no source read. */
static void test_bounds_files(void)
{
	struct env v;
	struct sib *s = setup(&v, 4, 1ULL << 30);
	char name[32];
	bool keep = true;
	unsigned got = 0, reads;

	write_file(&v, "opened", 100, 1);
	write_file(&v, "big", SIB_MAX_FILE + 1, 2);
	CHECK(mkdirat(v.f.root, "sub", 0755) == 0);
	CHECK(symlinkat("opened", v.f.root, "link") == 0);
	for (unsigned i = 0; i < 3; i++) {
		snprintf(name, sizeof(name), "s%u", i);
		write_file(&v, name, 1000 + i * (CS + 7), 10 + i); /* 1, 2 and 3 chunks */
	}
	cold_open(&v, s, "opened", 100);
	settle(&v, s);
	CHECK(st(&v, ST_sibling_scans) == 1);
	/* s0..s2 only: 3 files, under the bound of 4; big is too big. */
	CHECK(st(&v, ST_sibling_files) == 3);
	CHECK(st(&v, ST_sibling_bytes) == 3 * 1000 + (0 + 1 + 2) * (CS + 7));
	for (unsigned i = 0; i < 3; i++) {
		snprintf(name, sizeof(name), "s%u", i);
		reads = open_read(&v, name, 1000 + i * (CS + 7), 10 + i, &keep);
		CHECK(reads == 0);
		got += reads;
		reads = open_read(&v, name, 1000 + i * (CS + 7), 10 + i, &keep);
		CHECK(reads == 0 && keep);
	}
	CHECK(got == 0);
	/* The same directory again within the window: nothing. */
	cold_open(&v, s, "opened", 100);
	settle(&v, s);
	CHECK(st(&v, ST_sibling_scans) == 1);
	/* A file that is not small starts nothing. */
	teardown(&v, s);

	s = setup(&v, 4, 1ULL << 30);
	for (unsigned i = 0; i < 10; i++) {
		snprintf(name, sizeof(name), "f%u", i);
		write_file(&v, name, 500, 20 + i);
	}
	cold_open(&v, s, "f0", SIB_MAX_FILE + 1);
	settle(&v, s);
	CHECK(st(&v, ST_sibling_scans) == 0);
	/* The bound of 4 files out of 9. */
	cold_open(&v, s, "f0", 500);
	settle(&v, s);
	CHECK(st(&v, ST_sibling_scans) == 1);
	CHECK(st(&v, ST_sibling_files) == 4);
	teardown(&v, s);
}

/* Bytes: SIB_MAX_BYTES per burst, whatever the file count allows; and none
 * at all into a cache smaller than 16 bursts. */
static void test_bounds_bytes(void)
{
	const unsigned n = (unsigned)(SIB_MAX_BYTES / SIB_MAX_FILE) + 4;
	struct env v;
	struct sib *s = setup(&v, 1000, 1ULL << 30);
	char name[32];

	write_file(&v, "opened", 10, 1);
	for (unsigned i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "m%02u", i);
		write_file(&v, name, SIB_MAX_FILE, 30 + i);
	}
	cold_open(&v, s, "opened", 10);
	settle(&v, s);
	CHECK(st(&v, ST_sibling_bytes) == SIB_MAX_BYTES);
	CHECK(st(&v, ST_sibling_files) == SIB_MAX_BYTES / SIB_MAX_FILE);
	teardown(&v, s);

	s = setup(&v, 1000, SIB_MAX_BYTES * 16 - 1);
	write_file(&v, "opened", 10, 1);
	write_file(&v, "x", 10, 2);
	cold_open(&v, s, "opened", 10);
	settle(&v, s);
	CHECK(st(&v, ST_sibling_scans) == 0 && st(&v, ST_sibling_files) == 0);
	teardown(&v, s);
}

/* A demand open and read of a file whose sibling fetch sits in the source
 * never waits for it; the fetch then stores nothing over the demand's. */
static void test_demand_not_delayed(void)
{
	const uint64_t size = 3 * CS + 11;
	struct env v;
	struct sib *s = setup(&v, 8, 1ULL << 30);
	struct efs_inode *ino;
	struct handle h;
	bool keep;

	write_file(&v, "opened", 10, 1);
	write_file(&v, "b", size, 2);
	fake_hold_others(&v.f, true);
	cold_open(&v, s, "opened", 10);
	while (fake_held(&v.f) < 1) /* the sibling's first read, at the gate */
		usleep(1000);
	/* The demand, on this thread: its reads pass the gate. */
	ino = lookup(&v, "b");
	CHECK(h_open(&v, ino, &h, &keep) == 0);
	CHECK(!keep);
	for (uint64_t o = 0; o < size; o += CS)
		CHECK(read_check(&v, &h, o, CS, 2) == (ssize_t)(size - o < CS ? size - o : CS));
	CHECK(fake_held(&v.f) == 1); /* still in the source */
	fake_hold_others(&v.f, false);
	settle(&v, s);
	/* The demand fetched and stored every chunk first: nothing of the
	 * fetch ahead was taken. */
	CHECK(st(&v, ST_sibling_files) == 0);
	CHECK(st(&v, ST_chunks_stored) == 4);
	h_close(&v, &h);
	itab_forget(v.t, ino, 1);
	CHECK(open_read(&v, "b", size, 2, &keep) == 0);
	teardown(&v, s);

	/* A demand that comes while the fetch holds its first chunk's read:
	 * the demand's own fetch of chunk 0 and the sibling's later chunks
	 * meet in one record of one identity. */
	s = setup(&v, 8, 1ULL << 30);
	write_file(&v, "opened", 10, 1);
	write_file(&v, "b", size, 3);
	fake_hold_others(&v.f, true);
	cold_open(&v, s, "opened", 10);
	while (fake_held(&v.f) < 1)
		usleep(1000);
	ino = lookup(&v, "b");
	CHECK(h_open(&v, ino, &h, &keep) == 0);
	CHECK(read_check(&v, &h, 0, 100, 3) == 100);
	fake_hold_others(&v.f, false);
	settle(&v, s);
	for (uint64_t o = 0; o < size; o += CS)
		CHECK(read_check(&v, &h, o, CS, 3) == (ssize_t)(size - o < CS ? size - o : CS));
	h_close(&v, &h);
	itab_forget(v.t, ino, 1);
	CHECK(open_read(&v, "b", size, 3, &keep) == 0);
	teardown(&v, s);
}

/* A file changed on the source while its sibling fetch read it: nothing of
 * it is stored, and its open reads the new bytes. */
static void test_changed_meanwhile(void)
{
	struct env v;
	struct sib *s = setup(&v, 8, 1ULL << 30);
	bool keep;

	write_file(&v, "opened", 10, 1);
	write_file(&v, "c", 5000, 4);
	fake_arm_change(&v.f, CHG_MTIME, "c"); /* after the fetch's read */
	cold_open(&v, s, "opened", 10);
	settle(&v, s);
	CHECK(st(&v, ST_sibling_files) == 0);
	CHECK(st(&v, ST_chunks_stored) == 0);
	CHECK(open_read(&v, "c", 5000, 4, &keep) == 1);
	teardown(&v, s);

	/* Changed after it was stored: the open finds the new identity and
	 * reads the new bytes (never the stored ones). */
	s = setup(&v, 8, 1ULL << 30);
	write_file(&v, "opened", 10, 1);
	write_file(&v, "c", 5000, 4);
	cold_open(&v, s, "opened", 10);
	settle(&v, s);
	CHECK(st(&v, ST_sibling_files) == 1);
	write_file(&v, "c", 7000, 5);
	CHECK(open_read(&v, "c", 7000, 5, &keep) >= 1);
	CHECK(!keep);
	CHECK(st(&v, ST_stale_dropped) == 1);
	teardown(&v, s);
}

/* A file the cache has a record of is not opened again. */
static void test_known_skipped(void)
{
	struct env v;
	struct sib *s = setup(&v, 8, 1ULL << 30);
	unsigned before;
	bool keep;

	write_file(&v, "opened", 10, 1);
	write_file(&v, "k", 3000, 6);
	CHECK(open_read(&v, "k", 3000, 6, &keep) == 1);
	wait_stored(&v);
	before = fake_reads(&v.f);
	cold_open(&v, s, "opened", 10);
	settle(&v, s);
	CHECK(st(&v, ST_sibling_scans) == 1);
	CHECK(st(&v, ST_sibling_files) == 0);
	CHECK(fake_reads(&v.f) == before);
	teardown(&v, s);
}

/* The kernel may hold pages of a file it read before its record was
 * evicted (its inode, and so the entry, live on): a record filled ahead
 * makes the next open drop them, once; an entry made for the fill (no
 * inode has it: the kernel has no pages of the file) needs nothing. */
static void test_pages_dropped(void)
{
	struct env v;
	struct sib *s = setup(&v, 8, 1ULL << 30);
	struct efs_inode *ino;
	struct handle h;
	bool keep;

	write_file(&v, "opened", 10, 1);
	write_file(&v, "p", 3000, 7);
	ino = lookup(&v, "p");
	CHECK(h_open(&v, ino, &h, &keep) == 0);
	CHECK(read_check(&v, &h, 0, CS, 7) == 3000);
	h_close(&v, &h);
	wait_stored(&v);
	/* The record goes, the entry stays with its inode (core_evict would
	 * leave an empty record of the old identity in its place). */
	core_source_gone(&v, ino->dev, ino->ino);
	write_file(&v, "p", 3000, 8); /* a new version: its pages are not the old */
	cold_open(&v, s, "opened", 10);
	settle(&v, s);
	CHECK(st(&v, ST_sibling_files) == 1);
	CHECK(h_open(&v, ino, &h, &keep) == 0);
	CHECK(!keep);
	CHECK(read_check(&v, &h, 0, CS, 8) == 3000);
	h_close(&v, &h);
	CHECK(h_open(&v, ino, &h, &keep) == 0);
	CHECK(keep);
	h_close(&v, &h);
	itab_forget(v.t, ino, 1);
	teardown(&v, s);
}

/* At most SIB_MAX_DIRS bursts at once: with every sibling read held at the
 * gate, the next directory's cold open starts nothing; once they end, it
 * does. */
static void test_dirs_in_flight(void)
{
	struct env v;
	struct sib *s = setup(&v, 8, 1ULL << 30);
	int dfd[SIB_MAX_DIRS + 1];
	char name[32];

	for (unsigned i = 0; i <= SIB_MAX_DIRS; i++) {
		int fd;

		snprintf(name, sizeof(name), "d%u", i);
		CHECK(mkdirat(v.f.root, name, 0755) == 0);
		dfd[i] = openat(v.f.root, name, O_PATH | O_DIRECTORY);
		CHECK(dfd[i] >= 0);
		fd = openat(dfd[i], "a", O_CREAT | O_WRONLY, 0644);
		CHECK(fd >= 0 && write(fd, "a", 1) == 1);
		close(fd);
		fd = openat(dfd[i], "b", O_CREAT | O_WRONLY, 0644);
		CHECK(fd >= 0 && write(fd, "bb", 2) == 2);
		close(fd);
	}
	fake_hold_others(&v.f, true);
	for (unsigned i = 0; i < SIB_MAX_DIRS; i++) {
		struct stat d;

		CHECK(fstat(dfd[i], &d) == 0);
		sib_cold_open(s, dfd[i], d.st_dev, (uint64_t)d.st_ino, "a", 1);
	}
	/* Two workers hold a sibling read each; the other bursts wait. */
	while (fake_held(&v.f) < 2)
		usleep(1000);
	{
		struct stat d;

		CHECK(fstat(dfd[SIB_MAX_DIRS], &d) == 0);
		sib_cold_open(s, dfd[SIB_MAX_DIRS], d.st_dev, (uint64_t)d.st_ino, "a", 1);
		fake_hold_others(&v.f, false);
		settle(&v, s);
		CHECK(st(&v, ST_sibling_scans) == SIB_MAX_DIRS);
		CHECK(st(&v, ST_sibling_files) == SIB_MAX_DIRS);
		sib_cold_open(s, dfd[SIB_MAX_DIRS], d.st_dev, (uint64_t)d.st_ino, "a", 1);
		settle(&v, s);
		CHECK(st(&v, ST_sibling_scans) == SIB_MAX_DIRS + 1);
		CHECK(st(&v, ST_sibling_files) == SIB_MAX_DIRS + 1);
	}
	for (unsigned i = 0; i <= SIB_MAX_DIRS; i++)
		close(dfd[i]);
	teardown(&v, s);
}

int main(void)
{
	signal(SIGALRM, on_alarm);
	alarm(120);
	test_bounds_files();
	test_bounds_bytes();
	test_demand_not_delayed();
	test_changed_meanwhile();
	test_known_skipped();
	test_pages_dropped();
	test_dirs_in_flight();
	return check_done("test_siblings");
}
