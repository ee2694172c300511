/* test_store.c - on-disk record format and cache_dir safety, no mount. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "checksum.h"
#include "store.h"

static const struct store_identity ID = {
	.ino = 1234567, .size = 10 * 1024 * 1024 + 17,
	.mtime_sec = 1700000000, .mtime_nsec = 123456789,
	.ctime_sec = 1700000001, .ctime_nsec = 987654321,
};

static void test_header_roundtrip(void)
{
	unsigned char h[STORE_HEADER_SIZE];
	struct store_identity id;
	uint32_t cs, n, chk;

	store_encode_header(&ID, 1 << 20, 11, h);
	CHECK(store_decode_header(h, &id, &cs, &n, &chk) == 0);
	CHECK(id.ino == ID.ino && id.size == ID.size && id.mtime_sec == ID.mtime_sec &&
	      id.mtime_nsec == ID.mtime_nsec && id.ctime_sec == ID.ctime_sec &&
	      id.ctime_nsec == ID.ctime_nsec);
	CHECK(cs == 1 << 20 && n == 11);

	/* Every single-bit flip in the header is detected. */
	for (int byte = 0; byte < STORE_HEADER_SIZE; byte++) {
		for (int bit = 0; bit < 8; bit++) {
			unsigned char c[STORE_HEADER_SIZE];
			memcpy(c, h, sizeof(c));
			c[byte] ^= (unsigned char)(1 << bit);
			if (store_decode_header(c, &id, &cs, &n, &chk) == 0) {
				CHECK(!"bit flip not detected");
				return;
			}
		}
	}
	/* A checksummed header with a chunk count that does not fit the size. */
	store_encode_header(&ID, 1 << 20, 12, h);
	CHECK(store_decode_header(h, &id, &cs, &n, &chk) == -EBADMSG);
}

static void test_slots(void)
{
	unsigned char h[STORE_HEADER_SIZE], raw[STORE_SLOT_SIZE];
	struct store_identity id, other = ID;
	struct store_slot s = {.hash = 0x1122334455667788ULL, .len = 1 << 20}, out;
	uint32_t cs, n, chk, chk2;

	store_encode_header(&ID, 1 << 20, 11, h);
	store_decode_header(h, &id, &cs, &n, &chk);
	store_encode_slot(chk, 3, &s, raw);
	CHECK(store_decode_slot(chk, 3, raw, &out) && out.hash == s.hash && out.len == s.len);
	/* Bound to its index. */
	CHECK(!store_decode_slot(chk, 4, raw, &out));
	/* Bound to the identity: a slot of the old version is void. */
	other.mtime_nsec++;
	store_encode_header(&other, 1 << 20, 11, h);
	store_decode_header(h, &id, &cs, &n, &chk2);
	CHECK(chk2 != chk);
	CHECK(!store_decode_slot(chk2, 3, raw, &out));
	/* Torn or flipped slot. */
	raw[5] ^= 1;
	CHECK(!store_decode_slot(chk, 3, raw, &out));
	/* Empty slot is all zeros and never valid. */
	s.len = 0;
	store_encode_slot(chk, 3, &s, raw);
	for (int i = 0; i < STORE_SLOT_SIZE; i++)
		CHECK(raw[i] == 0);
	CHECK(!store_decode_slot(chk, 3, raw, &out));
}

static char *mkpath(const char *dir, const char *name)
{
	char *p = malloc(strlen(dir) + strlen(name) + 2);
	strcpy(p, dir);
	strcat(p, "/");
	strcat(p, name);
	return p;
}

static void test_cache_dir_safety(const char *base)
{
	char err[512];
	struct store *s, *s2;
	struct stat st;
	char *good = mkpath(base, "good"), *link = mkpath(base, "link"),
	     *open_dir = mkpath(base, "open"), *file = mkpath(base, "file");

	/* Created 0700. */
	CHECK(store_open(&s, good, err, sizeof(err)) == 0);
	CHECK(stat(good, &st) == 0 && (st.st_mode & 07777) == 0700);
	/* A second user of the same cache_dir is refused, naming it. */
	CHECK(store_open(&s2, good, err, sizeof(err)) == -EBUSY);
	CHECK_STR_CONTAINS(err, "in use");
	CHECK_STR_CONTAINS(err, good);
	store_close(s);
	/* Released at close. */
	CHECK(store_open(&s, good, err, sizeof(err)) == 0);
	store_close(s);

	CHECK(symlink(good, link) == 0);
	CHECK(store_open(&s, link, err, sizeof(err)) < 0);
	CHECK_STR_CONTAINS(err, "symlink");

	CHECK(mkdir(open_dir, 0700) == 0 && chmod(open_dir, 0777) == 0);
	CHECK(store_open(&s, open_dir, err, sizeof(err)) == -EPERM);
	CHECK_STR_CONTAINS(err, "writable");

	if (geteuid() == 0) {
		CHECK(chmod(open_dir, 0700) == 0 && chown(open_dir, 65534, 65534) == 0);
		CHECK(store_open(&s, open_dir, err, sizeof(err)) == -EPERM);
		CHECK_STR_CONTAINS(err, "owned by uid 65534");
	}

	CHECK(close(open(file, O_CREAT | O_WRONLY, 0600)) == 0);
	CHECK(store_open(&s, file, err, sizeof(err)) < 0);
	free(good);
	free(link);
	free(open_dir);
	free(file);
}

static void test_records(const char *base)
{
	char err[512], *dir = mkpath(base, "rec");
	struct store_file f, g;
	struct store_slot *slots = NULL, sl;
	struct store_key k;
	struct store *s;
	static char chunk[1 << 16];

	for (size_t i = 0; i < sizeof(chunk); i++)
		chunk[i] = (char)(i * 7);
	CHECK(store_open(&s, dir, err, sizeof(err)) == 0);
	store_key_of("/src", 0, 42, &k);
	CHECK(strlen(k.hex) == 32);
	CHECK(store_load(s, &k, &f, &slots) == -ENOENT);
	CHECK(store_readahead(s, &k) == -ENOENT);

	{
		struct store_identity id = ID;
		id.size = 3 * sizeof(chunk) + 5;
		CHECK(store_create(s, &k, &id, sizeof(chunk), &f) == 0);
		/* A hint: both files opened, nothing changed. */
		CHECK(store_readahead(s, &k) == 0);
		CHECK(f.nchunks == 4);
		CHECK(store_write_chunk(&f, 1, chunk, sizeof(chunk), true) == 0);
		sl.hash = csum64(chunk, sizeof(chunk));
		sl.len = sizeof(chunk);
		CHECK(store_set_slot(&f, 1, &sl) == 0);
		store_file_close(&f);

		CHECK(store_load(s, &k, &g, &slots) == 0);
		CHECK(g.id.size == id.size && g.nchunks == 4 && g.chunk_size == sizeof(chunk));
		CHECK(slots[0].len == 0 && slots[1].len == sizeof(chunk) && slots[1].hash == sl.hash);
		{
			static char back[sizeof(chunk)];
			struct store_slot bad = sl;
			const char *why = "";

			CHECK(store_read_chunk(&g, 1, back, sizeof(back)) == 0);
			CHECK(!memcmp(back, chunk, sizeof(chunk)));
			/* The one chunk check: length, presence, hash. */
			CHECK(store_chunk_len(&g, 0) == sizeof(chunk));
			CHECK(store_chunk_len(&g, 3) == 5);
			CHECK(store_chunk_len(&g, 4) == 0);
			memset(back, 0, sizeof(back));
			CHECK(store_verify_chunk(&g, 1, &sl, back, &why) == 0 && why == NULL);
			CHECK(!memcmp(back, chunk, sizeof(chunk)));
			bad.hash ^= 1;
			CHECK(store_verify_chunk(&g, 1, &bad, back, &why) == -EBADMSG);
			CHECK(why && !strcmp(why, "checksum mismatch"));
			bad = sl;
			bad.len = sizeof(chunk) - 1;
			CHECK(store_verify_chunk(&g, 1, &bad, back, &why) == -EBADMSG);
			CHECK(why && !strcmp(why, "not the length of its chunk"));
			bad.len = sizeof(chunk) + 1;
			CHECK(store_verify_chunk(&g, 1, &bad, back, &why) == -EBADMSG);
			CHECK(why && !strcmp(why, "longer than a chunk"));
			/* Chunk 3 lies past the end of the data file: missing. */
			CHECK(store_verify_chunk(&g, 3, &(struct store_slot){.hash = 0, .len = 5}, back,
						 &why) == -EBADMSG);
			CHECK(why && !strcmp(why, "data missing"));
		}
		free(slots);
		/* Dropping a chunk empties its slot. */
		CHECK(store_drop_chunk(&g, 1) == 0);
		store_file_close(&g);
		CHECK(store_load(s, &k, &g, &slots) == 0);
		CHECK(slots[1].len == 0);
		free(slots);
		store_file_close(&g);

		/* Re-creating for a new identity voids the old slots. */
		CHECK(store_create(s, &k, &id, sizeof(chunk), &f) == 0);
		CHECK(store_write_chunk(&f, 0, chunk, sizeof(chunk), false) == 0);
		CHECK(store_set_slot(&f, 0, &sl) == 0);
		store_file_close(&f);
		id.mtime_nsec++;
		CHECK(store_create(s, &k, &id, sizeof(chunk), &f) == 0);
		store_file_close(&f);
		CHECK(store_load(s, &k, &g, &slots) == 0);
		CHECK(slots[0].len == 0 && g.id.mtime_nsec == id.mtime_nsec);
		free(slots);
		store_file_close(&g);
	}

	/* A corrupt header is reported, not trusted. */
	{
		char name[128];
		int fd;
		snprintf(name, sizeof(name), "%s/v1/%.2s/%s.meta", dir, k.hex, k.hex);
		fd = open(name, O_WRONLY);
		CHECK(fd >= 0 && pwrite(fd, "X", 1, 20) == 1);
		close(fd);
		CHECK(store_load(s, &k, &g, &slots) == -EBADMSG);
		CHECK(store_remove(s, &k) == 1);
		CHECK(access(name, F_OK) < 0);
		CHECK(store_remove(s, &k) == 0); /* nothing left to remove */

		/* A header cut short is corrupt too (records are renamed into
		 * place whole), so the cache removes it; -ENODATA kept it forever. */
		fd = open(name, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		CHECK(fd >= 0 && write(fd, "EFSCMETA\1\0\0\0", 12) == 12);
		close(fd);
		CHECK(store_load(s, &k, &g, &slots) == -EBADMSG);
		fd = open(name, O_WRONLY | O_TRUNC);
		close(fd);
		CHECK(store_load(s, &k, &g, &slots) == -EBADMSG);
		CHECK(store_remove(s, &k) == 1);
	}

	store_close(s);
	free(dir);
}

/* The key depends only on the root and the inode; a root too long to hash
 * whole is refused, never replaced by a key made of less. */
static void test_keys(void)
{
	struct store_key a, b;
	char *longroot = malloc(PATH_MAX + 10);

	CHECK(store_key_of("/src", 0, 42, &a) == 0 && store_key_of("/src", 0, 42, &b) == 0);
	CHECK(!strcmp(a.hex, b.hex));
	/* One inode number on two file systems: two keys (M2). */
	CHECK(store_key_of("/src", 0x801, 42, &b) == 0 && strcmp(a.hex, b.hex));
	{
		struct store_key c;
		struct store_key_bin kb;

		CHECK(store_key_of("/src", 0x802, 42, &c) == 0 && strcmp(b.hex, c.hex));
		store_key_pack(&c, &kb);
		store_key_unpack(&kb, &b);
		CHECK(!strcmp(b.hex, c.hex));
	}
	CHECK(store_key_of("/src", 0, 43, &b) == 0 && strcmp(a.hex, b.hex));
	CHECK(store_key_of("/other", 0, 42, &b) == 0 && strcmp(a.hex, b.hex));
	CHECK(longroot != NULL);
	if (!longroot)
		return;
	memset(longroot, 'a', PATH_MAX + 9);
	longroot[0] = '/';
	longroot[PATH_MAX + 9] = '\0';
	CHECK(store_key_of(longroot, 0, 42, &b) == -ENAMETOOLONG);
	free(longroot);
}

/* cache_dir removed, and another daemon made the new one its own before our
 * sweep noticed: we must not use it (two daemons in one cache_dir). */
static void test_lost_lock(const char *base)
{
	char err[512], cmd[600], *dir = mkpath(base, "lost");
	struct store_identity id = ID;
	struct store *a, *b;
	struct store_file f;
	struct store_key k;

	CHECK(store_key_of("/src", 0, 7, &k) == 0);
	CHECK(store_open(&a, dir, err, sizeof(err)) == 0);
	CHECK(store_check_dir(a) == 0);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	CHECK(system(cmd) == 0);
	CHECK(store_open(&b, dir, err, sizeof(err)) == 0);
	CHECK(store_check_dir(a) == -EBUSY);
	CHECK(store_create(a, &k, &id, 1 << 20, &f) == -EBUSY);
	CHECK(f.meta_fd == -1 && f.data_fd == -1);
	CHECK(store_readahead(a, &k) == -EBUSY);
	CHECK(store_check_dir(a) == -EBUSY);
	/* The other daemon exits: the lock is ours again. */
	store_close(b);
	CHECK(store_check_dir(a) == 1);
	CHECK(store_create(a, &k, &id, 1 << 20, &f) == 0);
	store_file_close(&f);
	CHECK(store_check_dir(a) == 0);
	/* Plain recreation (nobody else) still works. */
	CHECK(system(cmd) == 0);
	CHECK(store_check_dir(a) == 1);
	store_close(a);
	free(dir);
}

static int scanned;
static uint64_t scanned_bytes;
static void count_scan(const struct store_scan_rec *r, void *arg)
{
	(void)arg;
	scanned++;
	scanned_bytes += r->bytes;
}

static void test_scan(const char *base)
{
	char err[512], *dir = mkpath(base, "scan"), junk[200];
	struct store_identity id = ID;
	struct store_file f;
	struct store_key k;
	struct store *s;
	int fd;

	CHECK(store_open(&s, dir, err, sizeof(err)) == 0);
	for (uint64_t ino = 1; ino <= 5; ino++) {
		store_key_of("/src", 0, ino, &k);
		CHECK(store_create(s, &k, &id, 1 << 20, &f) == 0);
		store_file_close(&f);
	}
	snprintf(junk, sizeof(junk), "%s/v1/%.2s/%s.meta.tmp.1", dir, k.hex, k.hex);
	fd = open(junk, O_CREAT | O_WRONLY, 0600);
	CHECK(fd >= 0);
	close(fd);
	scanned = 0;
	CHECK(store_scan(s, count_scan, NULL) == 0);
	CHECK(scanned == 5);
	CHECK(scanned_bytes > 0);
	CHECK(access(junk, F_OK) < 0);
	store_close(s);
	free(dir);
}

static int count_slot(uint32_t idx, const struct store_slot *slot, void *arg)
{
	uint32_t *seen = arg;

	(void)slot;
	seen[0]++;
	seen[1] = idx;
	return 0;
}

/* Nothing creates a data file for an existing record: a record whose data
 * file is gone is no record (H5: an empty data file was made beside it,
 * and its slots served empty bytes).  A slot whose chunk lies past the
 * data file's end is no slot.  A new record replaces the data file
 * (unlink, never truncate: an fd of the old one keeps its bytes, as a
 * passthrough reader's would). */
static void test_record_files(const char *base)
{
	char err[512], *dir = mkpath(base, "files"), data[300];
	const char bytes[] = "chunk zero bytes";
	struct store_slot slot = {.hash = csum64(bytes, sizeof(bytes)), .len = sizeof(bytes)};
	struct store_identity id = ID;
	struct store_file f, g;
	struct store_key k;
	struct store *s;
	uint32_t seen[2];
	char back[sizeof(bytes)];
	int old_data;

	id.size = 1ULL << 40; /* a TiB: a million 1 MiB slots, nearly all holes */
	CHECK(store_open(&s, dir, err, sizeof(err)) == 0);
	store_key_of("/src", 0, 9, &k);
	CHECK(!store_has_record(s, &k));
	CHECK(store_create(s, &k, &id, 1 << 20, &f) == 0);
	CHECK(store_has_record(s, &k));
	CHECK(store_write_chunk(&f, 700000, bytes, sizeof(bytes), false) == 0);
	CHECK(store_set_slot(&f, 700000, &slot) == 0);
	store_file_close(&f);

	CHECK(store_open_record(s, &k, &g) == 0);
	memset(seen, 0, sizeof(seen));
	CHECK(store_each_slot(&g, count_slot, seen) == 0);
	CHECK(seen[0] == 1 && seen[1] == 700000);
	old_data = dup(g.data_fd);
	store_file_close(&g);

	/* A new record: the old data file keeps its bytes for its holders. */
	CHECK(store_create(s, &k, &id, 1 << 20, &f) == 0);
	CHECK(pread(old_data, back, sizeof(back), (off_t)700000 << 20) == (ssize_t)sizeof(back));
	CHECK(!memcmp(back, bytes, sizeof(bytes)));
	{
		struct stat a, b;

		CHECK(fstat(old_data, &a) == 0 && fstat(f.data_fd, &b) == 0);
		CHECK(a.st_ino != b.st_ino && a.st_nlink == 0);
	}
	close(old_data);
	CHECK(store_write_chunk(&f, 700000, bytes, sizeof(bytes), false) == 0);
	CHECK(store_set_slot(&f, 700000, &slot) == 0);
	store_file_close(&f);

	/* The data file removed underneath: no record, and none is made. */
	snprintf(data, sizeof(data), "%s/v1/%.2s/%s.data", dir, k.hex, k.hex);
	CHECK(unlink(data) == 0);
	CHECK(store_open_record(s, &k, &g) == -ENOENT);
	CHECK(access(data, F_OK) < 0);

	/* Truncated underneath: the slot past its end is skipped. */
	CHECK(store_create(s, &k, &id, 1 << 20, &f) == 0);
	CHECK(store_write_chunk(&f, 700000, bytes, sizeof(bytes), false) == 0);
	CHECK(store_set_slot(&f, 700000, &slot) == 0);
	store_file_close(&f);
	CHECK(truncate(data, ((off_t)700000 << 20) + 3) == 0);
	CHECK(store_open_record(s, &k, &g) == 0);
	memset(seen, 0, sizeof(seen));
	CHECK(store_each_slot(&g, count_slot, seen) == 0);
	CHECK(seen[0] == 0);
	store_file_close(&g);
	store_close(s);
	free(dir);
}

int main(void)
{
	char tmpl[] = "/tmp/efs-test-store-XXXXXX";
	char *base = mkdtemp(tmpl);
	char cmd[256];

	CHECK(base != NULL);
	if (!base)
		return 1;
	test_header_roundtrip();
	test_slots();
	test_cache_dir_safety(base);
	test_records(base);
	test_scan(base);
	test_record_files(base);
	test_keys();
	test_lost_lock(base);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", base);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", base);
	return check_done("test_store");
}
