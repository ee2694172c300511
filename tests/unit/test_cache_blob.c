/* test_cache_blob.c - whole records (cache_blob.h) and the directory
 * index kept in them (dirindex_cache.h), on the cache fixture: a blob
 * round-trips and survives a restart; it is counted in cache_size (to the
 * block, and back to nothing when it goes); a chunk flipped on disk or a
 * record torn by a crash (a slot never written) is refused and removed,
 * never trusted; blobs stay within cache_size, the coldest evicted; and a
 * directory's snapshot made by one daemon is read back by the next.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache_blob.h"
#include "cache_fixture.h"
#include "dirindex_cache.h"
#include "store.h"

static uint64_t usage(struct env *v)
{
	struct cache_usage u;

	cache_usage(v->c, &u);
	return u.usage_bytes;
}

static void blob_path(struct env *v, const struct store_key *k, const char *ext, char *p,
		      size_t len)
{
	snprintf(p, len, "%s/v1/%.2s/%s.%s", v->cdir, k->hex, k->hex, ext);
}

static unsigned char *pattern(size_t len, unsigned seed)
{
	unsigned char *b = malloc(len);

	for (size_t i = 0; i < len; i++)
		b[i] = pat(i, seed);
	return b;
}

static struct store_identity ident(uint64_t ino, size_t len)
{
	return (struct store_identity){.ino = ino, .size = len, .mtime_sec = 5, .ctime_sec = 6};
}

/* Bytes a blob of len costs: a block of metadata, each chunk rounded up to
 * blocks. */
static uint64_t cost(size_t len)
{
	uint64_t b = BLK;

	for (size_t off = 0; off < len; off += CS) {
		size_t n = len - off < CS ? len - off : CS;

		b += (n + BLK - 1) / BLK * BLK;
	}
	return b;
}

static void test_round_trip_and_restart(void)
{
	struct env v;
	struct store_key k, kf;
	struct store_identity id, got;
	const size_t len = 2 * CS + 1000;
	unsigned char *b = pattern(len, 3);
	void *out;
	size_t outlen;
	uint64_t base;

	env_init(&v, 64u << 20);
	CHECK(cache_blob_key(v.c, "dirindex", 0, 77, &k) == 0);
	/* Never a file's key. */
	CHECK(store_key_of(v.src, 0, 77, &kf) == 0);
	CHECK(strcmp(k.hex, kf.hex) != 0);
	CHECK(cache_blob_get(v.c, &k, &got, &out, &outlen) == -ENOENT);
	base = usage(&v);
	id = ident(77, len);
	CHECK(cache_blob_put(v.c, &k, &id, b, len) == 0);
	CHECK(usage(&v) == base + cost(len));
	CHECK(cache_blob_get(v.c, &k, &got, &out, &outlen) == 0);
	CHECK(outlen == len && memcmp(out, b, len) == 0 && got.ino == 77 && got.mtime_sec == 5);
	free(out);
	/* Replaced whole by a shorter one: counted as the new one only. */
	id = ident(77, 100);
	CHECK(cache_blob_put(v.c, &k, &id, b + 1, 100) == 0);
	CHECK(usage(&v) == base + cost(100));
	/* A size that is not the identity's: refused. */
	id = ident(77, 99);
	CHECK(cache_blob_put(v.c, &k, &id, b, 100) == -EINVAL);

	/* A daemon restart: found by the startup index, counted, intact. */
	env_down(&v);
	env_up(&v);
	CHECK(usage(&v) == base + cost(100));
	CHECK(cache_blob_get(v.c, &k, &got, &out, &outlen) == 0);
	CHECK(outlen == 100 && memcmp(out, b + 1, 100) == 0);
	free(out);
	cache_blob_remove(v.c, &k);
	CHECK(usage(&v) == base);
	CHECK(cache_blob_get(v.c, &k, &got, &out, &outlen) == -ENOENT);
	env_fini(&v);
	free(b);
}

/* Flip one byte of the data on disk: the read refuses the blob (checksum),
 * removes it and gives its bytes back; after a restart too, and whether
 * efscachectl verify saw it first or not. */
static void test_corrupt_chunk(void)
{
	struct env v;
	struct store_key k;
	struct store_identity id, got;
	const size_t len = CS + 10;
	unsigned char *b = pattern(len, 4), c;
	char p[256];
	void *out = NULL;
	size_t outlen;
	uint64_t base;
	int fd;

	for (int restart = 0; restart < 2; restart++) {
		env_init(&v, 64u << 20);
		base = usage(&v);
		CHECK(cache_blob_key(v.c, "dirindex", 0, 78, &k) == 0);
		id = ident(78, len);
		CHECK(cache_blob_put(v.c, &k, &id, b, len) == 0);
		if (restart)
			env_down(&v);
		blob_path(&v, &k, "data", p, sizeof(p));
		fd = open(p, O_RDWR);
		CHECK(fd >= 0);
		CHECK(pread(fd, &c, 1, CS + 3) == 1);
		c ^= 0x40;
		CHECK(pwrite(fd, &c, 1, CS + 3) == 1);
		close(fd);
		if (restart)
			env_up(&v);
		if (restart) {
			/* efscachectl verify finds it too; it leaves a
			 * complete record's chunk for its next reader. */
			struct cache_verify_report rep = {0};

			CHECK(core_verify_all(&v, NULL, NULL, &rep) == 0);
			CHECK(rep.chunks_bad == 1);
		}
		CHECK(cache_blob_get(v.c, &k, &got, &out, &outlen) == -EBADMSG);
		CHECK(st(&v, ST_checksum_mismatches) == 1u + (unsigned)restart);
		CHECK(access(p, F_OK) != 0);
		CHECK(usage(&v) == base);
		CHECK(cache_blob_get(v.c, &k, &got, &out, &outlen) == -ENOENT);
		env_fini(&v);
	}
	free(b);
}

/* A crash after the data, before the last chunk's slot (the records'
 * write order): the record is torn, refused and removed. */
static void test_torn(void)
{
	struct env v;
	struct store_key k;
	struct store_identity id, got;
	const size_t len = 3 * CS;
	unsigned char *b = pattern(len, 5), zero[STORE_SLOT_SIZE] = {0};
	char p[256];
	void *out = NULL;
	size_t outlen;
	uint64_t base;
	int fd;

	env_init(&v, 64u << 20);
	base = usage(&v);
	CHECK(cache_blob_key(v.c, "dirindex", 0, 79, &k) == 0);
	id = ident(79, len);
	CHECK(cache_blob_put(v.c, &k, &id, b, len) == 0);
	env_down(&v);
	blob_path(&v, &k, "meta", p, sizeof(p));
	fd = open(p, O_RDWR);
	CHECK(fd >= 0);
	CHECK(pwrite(fd, zero, sizeof(zero), STORE_HEADER_SIZE + 2 * STORE_SLOT_SIZE) ==
	      (ssize_t)sizeof(zero));
	close(fd);
	env_up(&v);
	CHECK(cache_blob_get(v.c, &k, &got, &out, &outlen) == -ENOENT);
	CHECK(access(p, F_OK) != 0);
	CHECK(usage(&v) == base);
	env_fini(&v);
	free(b);
}

/* Blobs within cache_size: the coldest go; one larger than the cache is
 * refused. */
static void test_bound(void)
{
	struct env v;
	struct store_key k;
	struct store_identity id, got;
	const size_t len = CS; /* costs CS + BLK */
	const uint64_t size = 4 * (CS + BLK);
	unsigned char *b = pattern(2 * size, 6);
	void *out;
	size_t outlen;
	unsigned kept = 0;

	env_init(&v, size);
	for (uint64_t i = 0; i < 10; i++) {
		CHECK(cache_blob_key(v.c, "dirindex", 0, 100 + i, &k) == 0);
		id = ident(100 + i, len);
		CHECK(cache_blob_put(v.c, &k, &id, b, len) == 0);
		CHECK(usage(&v) <= size);
	}
	for (uint64_t i = 0; i < 10; i++) {
		int r;

		CHECK(cache_blob_key(v.c, "dirindex", 0, 100 + i, &k) == 0);
		r = cache_blob_get(v.c, &k, &got, &out, &outlen);
		CHECK(r == 0 || r == -ENOENT);
		if (r == 0) {
			kept++;
			CHECK(i >= 6); /* the newest */
			CHECK(outlen == len && memcmp(out, b, len) == 0);
			free(out);
		}
	}
	CHECK(kept == 4);
	CHECK(cache_blob_key(v.c, "dirindex", 0, 200, &k) == 0);
	id = ident(200, 2 * size);
	CHECK(cache_blob_put(v.c, &k, &id, b, 2 * size) == -ENOSPC);
	CHECK(usage(&v) <= size);
	env_fini(&v);
	free(b);
}

/* The directory index over the cache: a snapshot made by one daemon is
 * read back by the next, counted in cache_size; forgotten, it is gone. */
static void test_dirindex_in_cache(void)
{
	struct env v;
	struct dix_store_ops ops;
	struct dix *x;
	struct dix_dir *d;
	struct dix_build *bd;
	struct stat dir, f;
	uint64_t base;
	char name[32];

	env_init(&v, 64u << 20);
	base = usage(&v);
	CHECK(fstat(v.f.root, &dir) == 0);
	memset(&f, 0, sizeof(f));
	f.st_dev = dir.st_dev;
	f.st_mode = S_IFREG | 0644;
	dirindex_cache_ops(v.c, &ops);
	CHECK(dix_new(&x, 1 << 20, &ops) == 0);
	bd = dix_build_begin(&dir);
	for (unsigned i = 0; i < 1000; i++) {
		snprintf(name, sizeof(name), "file-%04u.py", i);
		f.st_ino = 5000 + i;
		f.st_size = i;
		CHECK(dix_build_add(bd, name, &f, NULL) == 0);
	}
	d = dix_build_commit(x, bd, &(struct timespec){.tv_sec = 1});
	CHECK(d != NULL);
	CHECK(usage(&v) == base + cost(DIX_HEADER_SIZE + 1000 * (DIX_ENTRY_SIZE + 12)));
	dix_put(x, d);
	dix_free(x);

	env_down(&v);
	env_up(&v);
	dirindex_cache_ops(v.c, &ops);
	CHECK(dix_new(&x, 1 << 20, &ops) == 0);
	d = dix_get(x, (uint64_t)dir.st_dev, (uint64_t)dir.st_ino);
	CHECK(d && d->n == 1000 && !d->checked_here);
	if (d) {
		const struct dix_entry *e = dix_find(d, "file-0999.py", 12);

		CHECK(e && e->a.ino == 5999 && e->a.size == 999);
		CHECK(dix_find(d, "file-1000.py", 12) == NULL);
		CHECK(dix_dir_same(d, &dir));
	}
	dix_put(x, d);
	dix_forget(x, (uint64_t)dir.st_dev, (uint64_t)dir.st_ino);
	CHECK(usage(&v) == base);
	CHECK(dix_get(x, (uint64_t)dir.st_dev, (uint64_t)dir.st_ino) == NULL);
	dix_free(x);
	env_fini(&v);
}

int main(void)
{
	test_round_trip_and_restart();
	test_corrupt_chunk();
	test_torn();
	test_bound();
	test_dirindex_in_cache();
	return check_done("test_cache_blob");
}
