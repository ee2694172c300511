/* test_cache_fetch.c - the cache core's fetch path against a fake source,
 * no mount (the fixture: cache_fixture.c).
 *
 * What the cache promises when it fetches: one fetch per chunk however many
 * readers; bytes served for an identity that moved (mtime, size, inode)
 * mid-fetch or at open are never stored; the layer above hears what an open
 * validated; a source error deletes nothing; a corrupt chunk is refetched,
 * also one found by verify=always in a running cache.  The stats counters,
 * the fake's read count and the files under cache_dir are the witnesses.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

#include "cache_fixture.h"

/* ---- single flight ------------------------------------------------------- */

#define NREADERS 8

struct reader_arg {
	struct env *v;
	struct handle *h;
	uint64_t off;
	size_t len;
	ssize_t n;
};

static void *reader_main(void *p)
{
	struct reader_arg *a = p;

	a->n = read_check(a->v, a->h, a->off, a->len, 1);
	return NULL;
}

static void test_single_flight(void)
{
	struct env v;
	struct handle h;
	struct efs_inode *ino;
	pthread_t th[NREADERS];
	struct reader_arg a[NREADERS];

	env_init(&v, 64u << 20);
	ino = make_file(&v, "sf", 3 * CS, 1);
	CHECK(h_open(&v, ino, &h, NULL) == 0);

	/* Every reader wants part of chunk 1; the first one's read waits at
	 * the gate until all others wait for its fetch. */
	fake_set_hold(&v.f, true);
	for (int i = 0; i < NREADERS; i++) {
		a[i] = (struct reader_arg){.v = &v, .h = &h, .off = CS + 1000u * i, .len = 5000};
		CHECK(pthread_create(&th[i], NULL, reader_main, &a[i]) == 0);
	}
	CHECK(wait_stat(&v, ST_fetch_waits, NREADERS - 1));
	fake_set_hold(&v.f, false);
	for (int i = 0; i < NREADERS; i++) {
		pthread_join(th[i], NULL);
		CHECK(a[i].n == 5000);
	}
	wait_stored(&v);
	CHECK(fake_reads(&v.f) == 1);
	CHECK(st(&v, ST_misses) == 1);
	CHECK(st(&v, ST_chunks_stored) == 1);
	CHECK(st(&v, ST_hits) == NREADERS - 1);
	CHECK(disk_slot_len(&v, ino, 1) == CS);
	CHECK(disk_slot_len(&v, ino, 0) == 0);

	/* Once stored, the chunk is served from the cache. */
	CHECK(read_check(&v, &h, CS, CS, 1) == CS);
	CHECK(fake_reads(&v.f) == 1);
	h_close(&v, &h);
	CHECK(st(&v, ST_fetch_waits) == NREADERS - 1);
	env_fini(&v);
}

/* A reader waiting for a chunk is woken whenever another chunk of the file
 * is done (one condition variable per entry): its one wait is counted
 * once, not at each wake-up. */
static void test_wait_counted_once(void)
{
	struct env v;
	struct handle h;
	pthread_t th[2];
	struct reader_arg a[2];

	env_init(&v, 64u << 20);
	make_file(&v, "once", 3 * CS, 1);
	CHECK(h_open(&v, lookup(&v, "once"), &h, NULL) == 0);
	/* Our own reads pass the gate; the two readers' wait there. */
	fake_hold_others(&v.f, true);
	for (int i = 0; i < 2; i++) {
		a[i] = (struct reader_arg){.v = &v, .h = &h, .off = CS + 100u * i, .len = 1000};
		CHECK(pthread_create(&th[i], NULL, reader_main, &a[i]) == 0);
		if (i == 0)
			for (int k = 0; k < 400 && fake_held(&v.f) < 1; k++)
				usleep(5000);
	}
	CHECK(wait_stat(&v, ST_fetch_waits, 1));
	/* Another chunk fetched and stored meanwhile wakes the waiter. */
	CHECK(read_check(&v, &h, 0, CS, 1) == CS);
	CHECK(read_check(&v, &h, 2 * CS, CS, 1) == CS);
	wait_stored(&v);
	usleep(20000);
	CHECK(st(&v, ST_fetch_waits) == 1);
	fake_hold_others(&v.f, false);
	for (int i = 0; i < 2; i++) {
		pthread_join(th[i], NULL);
		CHECK(a[i].n == 1000);
	}
	CHECK(st(&v, ST_fetch_waits) == 1);
	CHECK(fake_reads(&v.f) == 3);
	h_close(&v, &h);
	env_fini(&v);
}

/* ---- identity change in the middle of a fetch --------------------------- */

static void test_change_mid_fetch(enum change how)
{
	struct env v;
	struct handle h;
	struct efs_inode *ino;
	bool keep;

	env_init(&v, 64u << 20);
	ino = make_file(&v, "chg", 2 * CS, 1);
	CHECK(h_open(&v, ino, &h, NULL) == 0);

	fake_arm_change(&v.f, how, "chg");
	CHECK(read_check(&v, &h, 0, CS, 1) == CS); /* the bytes read are served */
	wait_stored(&v);
	CHECK(fake_reads(&v.f) == 1);
	CHECK(st(&v, ST_chunks_stored) == 0); /* ...and nothing is stored */
	CHECK(disk_slot_len(&v, ino, 0) == 0);
	CHECK(disk_data_bytes(&v, ino) == 0);

	/* Until the next open, the file is read from the source, uncached. */
	CHECK(read_check(&v, &h, CS, CS, 1) == CS);
	wait_stored(&v);
	CHECK(fake_reads(&v.f) == 2);
	CHECK(st(&v, ST_bytes_bypassed) == CS);
	CHECK(st(&v, ST_chunks_stored) == 0);
	h_close(&v, &h);

	/* The next open sees the new identity, and caching starts over. */
	CHECK(h_open(&v, ino, &h, &keep) == 0);
	CHECK(!keep);
	CHECK(st(&v, ST_stale_dropped) == 1);
	CHECK(read_check(&v, &h, 0, CS, 1) == CS);
	wait_stored(&v);
	CHECK(fake_reads(&v.f) == 3);
	CHECK(st(&v, ST_misses) == 2);
	CHECK(st(&v, ST_chunks_stored) == 1);
	CHECK(disk_slot_len(&v, ino, 0) == CS);
	CHECK(read_check(&v, &h, 0, CS, 1) == CS);
	CHECK(fake_reads(&v.f) == 3);
	h_close(&v, &h);
	env_fini(&v);
}

/* ---- a source error keeps cached data ------------------------------------ */

static void test_eio_keeps_cache(void)
{
	struct env v;
	struct handle h;
	struct efs_inode *ino;
	bool keep;

	env_init(&v, 64u << 20);
	ino = make_file(&v, "eio", 3 * CS, 1);
	CHECK(h_open(&v, ino, &h, NULL) == 0);
	CHECK(read_check(&v, &h, 0, CS, 1) == CS);
	wait_stored(&v);
	CHECK(disk_slot_len(&v, ino, 0) == CS);

	fake_set_fail(&v.f, EIO);
	CHECK(read_check(&v, &h, 0, CS, 1) == CS); /* cached: no source call */
	CHECK(fake_reads(&v.f) == 1);
	CHECK(read_check(&v, &h, CS, CS, 1) == -EIO); /* absent: the source's errno */
	CHECK(st(&v, ST_source_errors) == 1);
	h_close(&v, &h);

	/* An open that cannot reach the source fails and deletes nothing. */
	CHECK(h_open(&v, ino, &h, NULL) == -EIO);
	CHECK(disk_slot_len(&v, ino, 0) == CS);
	CHECK(disk_data_bytes(&v, ino) >= CS);
	CHECK(st(&v, ST_stale_dropped) == 0);

	/* When the source is back, the cached chunk is still used. */
	fake_set_fail(&v.f, 0);
	CHECK(h_open(&v, ino, &h, &keep) == 0);
	CHECK(keep);
	CHECK(read_check(&v, &h, 0, CS, 1) == CS);
	CHECK(fake_reads(&v.f) == 2); /* the failed read of chunk 1 */
	CHECK(read_check(&v, &h, CS, 2 * CS, 1) == 2 * CS);
	CHECK(fake_reads(&v.f) == 4);
	h_close(&v, &h);
	env_fini(&v);
}

/* ---- a corrupt chunk is dropped and refetched ---------------------------- */

static void test_corrupt_chunk(void)
{
	struct env v;
	struct handle h;
	struct efs_inode *ino;
	unsigned char byte;
	char p[256];
	int fd;

	env_init(&v, 64u << 20);
	ino = make_file(&v, "bad", 2 * CS, 1);
	CHECK(h_open(&v, ino, &h, NULL) == 0);
	CHECK(read_check(&v, &h, 0, 2 * CS, 1) == 2 * CS);
	wait_stored(&v);
	CHECK(st(&v, ST_chunks_stored) == 2);
	h_close(&v, &h);

	/* A new daemon finds the record; one byte of chunk 1 has rotted. */
	record_path(&v, (uint64_t)ino->ino, "data", p, sizeof(p));
	env_down(&v);
	fd = open(p, O_RDWR);
	CHECK(fd >= 0);
	CHECK(pread(fd, &byte, 1, CS + 12345) == 1);
	byte ^= 0x20;
	CHECK(pwrite(fd, &byte, 1, CS + 12345) == 1);
	close(fd);
	memset(&v.stats, 0, sizeof(v.stats));
	env_up(&v);
	ino = lookup(&v, "bad");
	pthread_mutex_lock(&v.f.mu);
	v.f.reads = 0;
	pthread_mutex_unlock(&v.f.mu);

	CHECK(h_open(&v, ino, &h, NULL) == 0);
	CHECK(read_check(&v, &h, 0, CS, 1) == CS); /* verified, good */
	CHECK(fake_reads(&v.f) == 0);
	CHECK(read_check(&v, &h, CS, CS, 1) == CS); /* right bytes anyway */
	CHECK(fake_reads(&v.f) == 1);
	CHECK(st(&v, ST_chunks_verified) == 2);
	CHECK(st(&v, ST_checksum_mismatches) == 1);
	wait_stored(&v);
	CHECK(st(&v, ST_chunks_stored) == 1);
	CHECK(disk_slot_len(&v, ino, 1) == CS);

	/* The repaired chunk is on disk and served from there. */
	fd = open(p, O_RDONLY);
	CHECK(fd >= 0 && pread(fd, &byte, 1, CS + 12345) == 1 && byte == pat(CS + 12345, 1));
	if (fd >= 0)
		close(fd);
	CHECK(read_check(&v, &h, CS, CS, 1) == CS);
	CHECK(fake_reads(&v.f) == 1);
	h_close(&v, &h);
	env_fini(&v);
}

/* ---- the name leads to another file at open ----------------------------- */

static void test_replaced_at_open(void)
{
	struct env v;
	struct handle h;
	struct efs_inode *ino, *ino2;
	char a[128], b[128];

	env_init(&v, 64u << 20);
	ino = make_file(&v, "rep", 2 * CS, 1);
	CHECK(h_open(&v, ino, &h, NULL) == 0);
	CHECK(read_check(&v, &h, 0, 2 * CS, 1) == 2 * CS);
	wait_stored(&v);
	h_close(&v, &h);

	/* Another client renames a new file over the name. */
	write_file(&v, "rep.new", 2 * CS, 2);
	snprintf(a, sizeof(a), "%s/rep.new", v.src);
	snprintf(b, sizeof(b), "%s/rep", v.src);
	CHECK(rename(a, b) == 0);
	CHECK(h_open(&v, ino, &h, NULL) == -ESTALE); /* the kernel looks it up again */
	CHECK(disk_slot_len(&v, ino, 0) == CS);	     /* the old record is left alone */

	/* The new file is its own entry: its bytes, never the old ones. */
	ino2 = lookup(&v, "rep");
	CHECK(ino2 != ino);
	CHECK(h_open(&v, ino2, &h, NULL) == 0);
	CHECK(read_check(&v, &h, 0, 2 * CS, 2) == 2 * CS);
	CHECK(fake_reads(&v.f) == 4);
	wait_stored(&v);
	h_close(&v, &h);
	env_fini(&v);
}

/* ---- the layer above hears what an open validated ------------------------ */

static unsigned fake_validated_count(struct fake *f, off_t *size)
{
	unsigned n;

	pthread_mutex_lock(&f->mu);
	n = f->validated;
	*size = f->validated_size;
	pthread_mutex_unlock(&f->mu);
	return n;
}

/* fsops answers getattr from what opens validated: every open that checked
 * the file through an fd it opened tells it, with the size it saw; an open
 * of a fully cached file asked by name (stat_named tells it itself). */
static void test_validated_told(void)
{
	struct env v;
	struct handle h;
	struct efs_inode *ino;
	off_t size = 0;
	char p[128];

	env_init(&v, 64u << 20);
	ino = make_file(&v, "told", 3 * CS, 1);
	CHECK(h_open(&v, ino, &h, NULL) == 0);
	CHECK(fake_validated_count(&v.f, &size) == 1 && size == 3 * CS);
	CHECK(read_check(&v, &h, 0, CS, 1) == CS); /* not all of it */
	wait_stored(&v);
	h_close(&v, &h);

	/* Shrunk in place on the source: the next open tells the new size. */
	snprintf(p, sizeof(p), "%s/told", v.src);
	CHECK(truncate(p, CS) == 0);
	CHECK(h_open(&v, ino, &h, NULL) == 0);
	CHECK(fake_validated_count(&v.f, &size) == 2 && size == CS);
	CHECK(read_check(&v, &h, 0, CS, 1) == CS);
	wait_stored(&v);
	h_close(&v, &h);

	/* Fully cached now: asked by name, not told again. */
	CHECK(h_open(&v, ino, &h, NULL) == 0);
	CHECK(fake_validated_count(&v.f, &size) == 2);
	h_close(&v, &h);
	env_fini(&v);
}

/* ---- verify=always: corruption found in a running daemon ----------------- */

static void test_corrupt_verify_always(void)
{
	struct env v;
	struct handle h;
	struct efs_inode *ino;
	unsigned char byte = 0;
	char p[256];
	int fd;

	env_init_full(&v, 64u << 20, 0, VERIFY_ALWAYS);
	ino = make_file(&v, "alw", CS, 1);
	CHECK(h_open(&v, ino, &h, NULL) == 0);
	CHECK(read_check(&v, &h, 0, CS, 1) == CS);
	wait_stored(&v);
	CHECK(read_check(&v, &h, 0, CS, 1) == CS); /* checked, good */
	CHECK(fake_reads(&v.f) == 1);
	CHECK(st(&v, ST_chunks_verified) == 1);

	record_path(&v, (uint64_t)ino->ino, "data", p, sizeof(p));
	fd = open(p, O_RDWR);
	CHECK(fd >= 0 && pread(fd, &byte, 1, 777) == 1);
	byte = (unsigned char)~byte;
	CHECK(fd >= 0 && pwrite(fd, &byte, 1, 777) == 1);
	if (fd >= 0)
		close(fd);
	CHECK(read_check(&v, &h, 0, CS, 1) == CS);
	CHECK(fake_reads(&v.f) == 2);
	CHECK(st(&v, ST_checksum_mismatches) == 1);
	wait_stored(&v);
	CHECK(read_check(&v, &h, 0, CS, 1) == CS);
	CHECK(fake_reads(&v.f) == 2);
	h_close(&v, &h);
	env_fini(&v);
}

int main(void)
{
	test_single_flight();
	test_wait_counted_once();
	test_change_mid_fetch(CHG_MTIME);
	test_change_mid_fetch(CHG_SIZE);
	test_change_mid_fetch(CHG_INODE);
	test_replaced_at_open();
	test_validated_told();
	test_corrupt_verify_always();
	test_eio_keeps_cache();
	test_corrupt_chunk();
	return check_done("test_cache_fetch");
}
