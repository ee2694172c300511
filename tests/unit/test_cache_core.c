/* test_cache_core.c - the cache core (cache.c over store.c and evict.c)
 * against a fake source, no mount.
 *
 * The fake serves real files of a temporary directory through the real
 * source calls, and lets a test count its reads, hold reads at a gate, fail
 * every call with EIO, and change the file's identity (mtime or size) in the
 * middle of a read.  Each test checks what the cache promises: one fetch
 * per chunk however many readers; bytes served for an identity that moved
 * are never stored; a source error deletes nothing; a corrupt chunk is
 * refetched; pinned bytes never change under a reply (eviction, reset); and
 * cache_size holds under concurrent fills.  The stats counters and the
 * files under cache_dir are the witnesses.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cache.h"
#include "check.h"
#include "inode.h"
#include "source.h"
#include "store.h"

#define CS (64u << 10) /* chunk size of every test: the smallest allowed */
#define BLK 4096u      /* the cache accounts in 4 KiB blocks */

/* ---- the fake source ----------------------------------------------------- */

/* How a read changes the file's identity.  An fd cannot move to another
 * inode on a local file system, so CHG_INODE is told by the fake itself:
 * the next stat of an open fd reports another inode number, as a server
 * would whose file handle now leads elsewhere. */
enum change { CHG_NONE, CHG_MTIME, CHG_SIZE, CHG_INODE };

struct fake {
	int root;	       /* O_PATH fd of the source directory */
	struct inode_table *t; /* for open_object */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	/* All below protected by mu. */
	unsigned reads;	      /* read calls */
	unsigned stat_opens;  /* stat_open calls */
	unsigned validated;   /* validated calls */
	off_t validated_size; /* the size the last one was told */
	int fail;	      /* errno every call fails with; 0 = none */
	bool other_ino;	      /* the next stat_open reports another inode */
	bool hold;	      /* reads wait at the gate until it opens */
	unsigned held;	      /* reads waiting at the gate now */
	enum change change;   /* done once, after the next read's bytes */
	char change_name[64]; /* the file it is done to */
};

static void fake_wait_gate(struct fake *f)
{
	pthread_mutex_lock(&f->mu);
	f->reads++;
	f->held++;
	pthread_cond_broadcast(&f->cv);
	while (f->hold)
		pthread_cond_wait(&f->cv, &f->mu);
	f->held--;
	pthread_mutex_unlock(&f->mu);
}

static int fake_fail(struct fake *f)
{
	int r;

	pthread_mutex_lock(&f->mu);
	r = f->fail;
	pthread_mutex_unlock(&f->mu);
	return -r;
}

/* Change the file's identity on the source, as another client would. */
static void change_file(struct fake *f, enum change how, const char *name)
{
	if (how == CHG_MTIME) {
		struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT},
					 {.tv_sec = 1000000000, .tv_nsec = 7}};
		CHECK(utimensat(f->root, name, ts, 0) == 0);
	} else if (how == CHG_SIZE) {
		int fd = openat(f->root, name, O_WRONLY | O_APPEND);
		CHECK(fd >= 0);
		CHECK(fd >= 0 && write(fd, "+", 1) == 1);
		if (fd >= 0)
			close(fd);
	}
}

static int fake_stat_named(void *arg, struct efs_inode *ino, struct stat *st)
{
	struct fake *f = arg;
	int r = fake_fail(f);

	if (r < 0)
		return r;
	r = src_stat_sync_at(f->root, ino->name, st);
	return r == -ENOENT ? -ESTALE : r;
}

static int fake_open_named(void *arg, struct efs_inode *ino, int flags)
{
	struct fake *f = arg;
	int r = fake_fail(f);

	if (r < 0)
		return r;
	r = src_open_at(f->root, ino->name, flags);
	return r == -ENOENT ? -ESTALE : r;
}

static int fake_open_object(void *arg, struct efs_inode *ino, int flags)
{
	struct fake *f = arg;
	int r = fake_fail(f), fd;

	if (r < 0)
		return r;
	fd = inode_fd_get(f->t, ino);
	if (fd < 0)
		return fd;
	r = src_open(fd, flags);
	inode_fd_put(f->t, ino);
	return r;
}

static void fake_validated(void *arg, struct efs_inode *ino, const struct stat *st)
{
	struct fake *f = arg;

	(void)ino;
	pthread_mutex_lock(&f->mu);
	f->validated++;
	f->validated_size = st->st_size;
	pthread_mutex_unlock(&f->mu);
}

static int fake_stat_open(void *arg, int fd, struct stat *st)
{
	struct fake *f = arg;
	int r = fake_fail(f);
	bool other;

	pthread_mutex_lock(&f->mu);
	f->stat_opens++;
	other = f->other_ino;
	f->other_ino = false;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
	if (r == 0)
		r = src_stat(fd, st);
	if (r == 0 && other)
		st->st_ino++;
	return r;
}

static ssize_t fake_read(void *arg, int fd, void *buf, size_t len, off_t off)
{
	struct fake *f = arg;
	enum change how;
	ssize_t n;
	int r;

	fake_wait_gate(f);
	r = fake_fail(f);
	if (r < 0)
		return r;
	n = src_read(fd, buf, len, off);
	pthread_mutex_lock(&f->mu);
	how = f->change;
	f->change = CHG_NONE;
	if (how == CHG_INODE)
		f->other_ino = true;
	pthread_mutex_unlock(&f->mu);
	if (how == CHG_MTIME || how == CHG_SIZE)
		change_file(f, how, f->change_name);
	return n;
}

static unsigned fake_reads(struct fake *f)
{
	unsigned n;

	pthread_mutex_lock(&f->mu);
	n = f->reads;
	pthread_mutex_unlock(&f->mu);
	return n;
}

static void fake_set_fail(struct fake *f, int err)
{
	pthread_mutex_lock(&f->mu);
	f->fail = err;
	pthread_mutex_unlock(&f->mu);
}

static void fake_set_hold(struct fake *f, bool hold)
{
	pthread_mutex_lock(&f->mu);
	f->hold = hold;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
}

static void fake_arm_change(struct fake *f, enum change how, const char *name)
{
	pthread_mutex_lock(&f->mu);
	f->change = how;
	snprintf(f->change_name, sizeof(f->change_name), "%s", name);
	pthread_mutex_unlock(&f->mu);
}

/* ---- the environment: source dir, cache_dir, inode table, cache ------- */

struct env {
	char src[64], cdir[64];
	struct efs_config cfg;
	struct efs_stats stats;
	struct fake f;
	struct inode_table *t;
	struct cache *c;
};

static void env_up(struct env *v)
{
	char err[256] = "";
	const struct cache_source src = {
	    .stat_named = fake_stat_named,
	    .open_named = fake_open_named,
	    .open_object = fake_open_object,
	    .stat_open = fake_stat_open,
	    .validated = fake_validated,
	    .read = fake_read,
	    .arg = &v->f,
	};
	int root = src_open_root(v->src);

	CHECK(root >= 0);
	CHECK(itab_new(&v->t, root, 64) == 0);
	v->f.t = v->t;
	CHECK(cache_new(&v->c, &v->cfg, &src, &v->stats, err, sizeof(err)) == 0);
	if (err[0])
		fprintf(stderr, "cache_new: %s\n", err);
	itab_set_release_hook(v->t, cache_inode_release, v->c);
	CHECK(cache_start(v->c) == 0);
}

/* What a daemon's exit does: the inodes go, then the cache. */
static void env_down(struct env *v)
{
	itab_free(v->t);
	cache_free(v->c);
	v->t = NULL;
	v->c = NULL;
}

static void env_init_full(struct env *v, uint64_t cache_size, unsigned prefetch,
			  enum verify_mode verify)
{
	memset(v, 0, sizeof(*v));
	snprintf(v->src, sizeof(v->src), "/tmp/efs-test-core-src-XXXXXX");
	snprintf(v->cdir, sizeof(v->cdir), "/tmp/efs-test-core-cache-XXXXXX");
	CHECK(mkdtemp(v->src) != NULL);
	CHECK(mkdtemp(v->cdir) != NULL);
	v->cfg.source = v->src;
	v->cfg.cache_dir = v->cdir;
	v->cfg.cache_size = cache_size;
	v->cfg.min_free_pct = 0;
	v->cfg.chunk_size = CS;
	v->cfg.prefetch = prefetch;
	v->cfg.verify = verify;
	v->f.root = src_open_root(v->src);
	CHECK(v->f.root >= 0);
	pthread_mutex_init(&v->f.mu, NULL);
	pthread_cond_init(&v->f.cv, NULL);
	env_up(v);
}

static void env_init(struct env *v, uint64_t cache_size)
{
	env_init_full(v, cache_size, 0, VERIFY_ONCE);
}

static void env_fini(struct env *v)
{
	char cmd[200];

	env_down(v);
	close(v->f.root);
	pthread_mutex_destroy(&v->f.mu);
	pthread_cond_destroy(&v->f.cv);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s'", v->src, v->cdir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s, %s\n", v->src, v->cdir);
}

/* The byte at offset o of a test file made with seed. */
static unsigned char pat(uint64_t o, unsigned seed)
{
	uint64_t x = (o + 1) * 0x9E3779B97F4A7C15ull + seed * 0xBF58476D1CE4E5B9ull;

	return (unsigned char)(x >> 56 ^ x >> 29);
}

static void write_file(struct env *v, const char *name, uint64_t size, unsigned seed)
{
	unsigned char buf[4096];
	int fd = openat(v->f.root, name, O_CREAT | O_WRONLY | O_TRUNC, 0644);

	CHECK(fd >= 0);
	for (uint64_t o = 0; fd >= 0 && o < size; o += sizeof(buf)) {
		size_t n = size - o < sizeof(buf) ? (size_t)(size - o) : sizeof(buf);
		for (size_t i = 0; i < n; i++)
			buf[i] = pat(o + i, seed);
		CHECK(pwrite(fd, buf, n, (off_t)o) == (ssize_t)n);
	}
	if (fd >= 0)
		close(fd);
}

/* Make the file and look it up, as the kernel's lookup does through fsops. */
static struct efs_inode *make_file(struct env *v, const char *name, uint64_t size, unsigned seed)
{
	struct efs_inode *root = itab_root(v->t), *ino = NULL;
	struct stat st;
	int pfd, fd;

	write_file(v, name, size, seed);
	pfd = inode_fd_get(v->t, root);
	CHECK(pfd >= 0);
	if (pfd >= 0 && src_lookup(pfd, name, &fd, &st) == 0)
		ino = itab_get(v->t, root, name, fd, &st);
	inode_fd_put(v->t, root);
	CHECK(ino != NULL);
	return ino;
}

static struct efs_inode *lookup(struct env *v, const char *name)
{
	struct efs_inode *root = itab_root(v->t), *ino = NULL;
	struct stat st;
	int pfd, fd;

	pfd = inode_fd_get(v->t, root);
	if (pfd >= 0 && src_lookup(pfd, name, &fd, &st) == 0)
		ino = itab_get(v->t, root, name, fd, &st);
	inode_fd_put(v->t, root);
	CHECK(ino != NULL);
	return ino;
}

/* A file handle: cache_open plus the handle's own source fd. */
struct handle {
	struct efs_inode *ino;
	int fd;
};

static int h_open(struct env *v, struct efs_inode *ino, struct handle *h, bool *keep)
{
	struct meta_attr attr = {0};
	bool k;
	int r = cache_open(v->c, ino, -1, &attr, keep ? keep : &k);

	h->ino = ino;
	h->fd = r == 0 ? openat(v->f.root, ino->name, O_RDONLY) : -1;
	return r;
}

static void h_close(struct env *v, struct handle *h)
{
	cache_close(v->c, h->ino);
	if (h->fd >= 0)
		close(h->fd);
	h->fd = -1;
}

/* Copy the reply's bytes out of its segments. */
static void gather(const struct cache_read *rd, unsigned char *out)
{
	size_t at = 0;

	for (unsigned i = 0; i < rd->nseg; i++) {
		const struct cache_seg *s = &rd->seg[i];

		if (s->fd >= 0)
			CHECK(pread(s->fd, out + at, s->len, s->pos) == (ssize_t)s->len);
		else
			memcpy(out + at, s->mem, s->len);
		at += s->len;
	}
}

static bool bytes_are(const unsigned char *b, uint64_t off, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		if (b[i] != pat(off + i, seed))
			return false;
	return true;
}

/* Read [off, off+len) through the cache and check the bytes against seed;
 * returns the byte count or -errno. */
static ssize_t read_check_seq(struct env *v, struct handle *h, uint64_t off, size_t len,
			      unsigned seed, bool sequential)
{
	struct cache_read rd;
	unsigned char *b = malloc(len ? len : 1);
	ssize_t n = cache_read(v->c, h->ino, h->fd, (off_t)off, len, sequential, &rd);

	if (n > 0) {
		gather(&rd, b);
		CHECK(bytes_are(b, off, (size_t)n, seed));
	}
	if (n >= 0)
		cache_read_done(v->c, &rd);
	free(b);
	return n;
}

static ssize_t read_check(struct env *v, struct handle *h, uint64_t off, size_t len, unsigned seed)
{
	return read_check_seq(v, h, off, len, seed, false);
}

static uint64_t st(struct env *v, enum stat_id id)
{
	return stats_get(&v->stats, id);
}

/* One of the cache's own figures (cache_usage), by its stats name. */
static uint64_t stat_line(struct env *v, const char *name)
{
	struct cache_usage u;

	cache_usage(v->c, &u);
	if (!strcmp(name, "write_behind_pending"))
		return u.write_behind_pending;
	if (!strcmp(name, "cache_usage_bytes"))
		return u.usage_bytes;
	if (!strcmp(name, "cache_entries"))
		return u.entries;
	return UINT64_MAX;
}

/* Write-behind done: every fetched chunk is stored (or given up). */
static void wait_stored(struct env *v)
{
	int i;

	for (i = 0; i < 30000 && stat_line(v, "write_behind_pending") != 0; i++)
		usleep(1000);
	CHECK(stat_line(v, "write_behind_pending") == 0);
}

static void record_path(struct env *v, uint64_t src_ino, const char *ext, char *p, size_t len)
{
	struct store_key k;

	CHECK(store_key_of(v->src, src_ino, &k) == 0);
	snprintf(p, len, "%s/v1/%.2s/%s.%s", v->cdir, k.hex, k.hex, ext);
}

/* The record's slot idx as on disk: its length, 0 if empty or absent. */
static uint32_t disk_slot_len(struct env *v, struct efs_inode *ino, uint32_t idx)
{
	unsigned char hdr[STORE_HEADER_SIZE], raw[STORE_SLOT_SIZE];
	struct store_identity id;
	struct store_slot slot;
	uint32_t cs, n, check;
	char p[256];
	int fd;
	bool ok;

	record_path(v, (uint64_t)ino->ino, "meta", p, sizeof(p));
	fd = open(p, O_RDONLY);
	if (fd < 0)
		return 0;
	ok = pread(fd, hdr, sizeof(hdr), 0) == (ssize_t)sizeof(hdr) &&
	     store_decode_header(hdr, &id, &cs, &n, &check) == 0 && idx < n &&
	     pread(fd, raw, sizeof(raw), STORE_HEADER_SIZE + (off_t)idx * STORE_SLOT_SIZE) ==
		 (ssize_t)sizeof(raw) &&
	     store_decode_slot(check, idx, raw, &slot);
	close(fd);
	return ok ? slot.len : 0;
}

/* Allocated bytes of the record's data file; 0 if it has none. */
static uint64_t disk_data_bytes(struct env *v, struct efs_inode *ino)
{
	struct stat s;
	char p[256];

	record_path(v, (uint64_t)ino->ino, "data", p, sizeof(p));
	return stat(p, &s) == 0 ? (uint64_t)s.st_blocks * 512 : 0;
}

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

/* Wait (bounded) until counter id reaches n; false if it never did. */
static bool wait_stat(struct env *v, enum stat_id id, uint64_t n)
{
	for (int i = 0; i < 30000 && st(v, id) < n; i++)
		usleep(1000);
	return st(v, id) >= n;
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
	unsigned reads;

	env_init(&v, size);
	a = make_file(&v, "a", CS, 1);
	b = make_file(&v, "b", (uint64_t)nb * CS, 2);
	CHECK(h_open(&v, a, &ha, NULL) == 0);
	CHECK(h_open(&v, b, &hb, NULL) == 0);
	CHECK(read_check(&v, &ha, 0, CS, 1) == CS);
	wait_stored(&v);

	/* A reply from the data file is in flight: chunk a0 is pinned. */
	CHECK(cache_read(v.c, a, ha.fd, 0, CS, false, &rd) == CS);
	CHECK(rd.nseg == 1 && rd.seg[0].fd >= 0 && rd.pins == 1);

	/* Fill four times the cache with b: a0 is the coldest chunk. */
	for (unsigned i = 0; i < nb; i++) {
		CHECK(read_check(&v, &hb, (uint64_t)i * CS, CS, 2) == CS);
		wait_stored(&v);
		CHECK(pinned_bytes_right(&rd, 0, CS, 1));
		CHECK(stat_line(&v, "cache_usage_bytes") <= size);
	}
	CHECK(st(&v, ST_evictions) >= nb - 3);
	CHECK(st(&v, ST_chunks_stored) == nb + 1);
	CHECK(disk_slot_len(&v, a, 0) == CS);
	cache_read_done(v.c, &rd);

	/* a0 was never dropped: served from the cache, no source read. */
	reads = fake_reads(&v.f);
	CHECK(read_check(&v, &ha, 0, CS, 1) == CS);
	CHECK(fake_reads(&v.f) == reads);

	/* Unpinned, it can go like any other chunk. */
	for (unsigned i = 0; i < nb; i++) {
		CHECK(read_check(&v, &hb, (uint64_t)i * CS, CS, 2) == CS);
		wait_stored(&v);
	}
	CHECK(disk_slot_len(&v, a, 0) == 0);
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
	unsigned stats_before;
	struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_sec = 1000000000}};

	env_init(&v, 64u << 20);
	ino = make_file(&v, "rs", 2 * CS, 1);
	CHECK(h_open(&v, ino, &h, NULL) == 0);
	CHECK(read_check(&v, &h, 0, CS, 1) == CS);
	wait_stored(&v);
	CHECK(cache_read(v.c, ino, h.fd, 100, CS - 100, false, &rd) == CS - 100);
	CHECK(rd.pins == 1);

	/* Another client rewrites the file; another process opens it. */
	write_file(&v, "rs", 2 * CS, 2);
	CHECK(utimensat(v.f.root, "rs", ts, 0) == 0);
	pthread_mutex_lock(&v.f.mu);
	stats_before = v.f.stat_opens;
	pthread_mutex_unlock(&v.f.mu);
	oa = (struct opener_arg){.v = &v, .ino = ino};
	CHECK(pthread_create(&th, NULL, opener_main, &oa) == 0);

	/* The open has its answer from the source; the reset must wait for
	 * the pinned reply, whose bytes stay those it was given. */
	pthread_mutex_lock(&v.f.mu);
	while (v.f.stat_opens == stats_before)
		pthread_cond_wait(&v.f.cv, &v.f.mu);
	pthread_mutex_unlock(&v.f.mu);
	usleep(100 * 1000); /* let it run into the reset (it must not finish) */
	CHECK(!__atomic_load_n(&oa.done, __ATOMIC_ACQUIRE));
	CHECK(pinned_bytes_right(&rd, 100, CS - 100, 1));
	cache_read_done(v.c, &rd);
	pthread_join(th, NULL);
	CHECK(oa.r == 0);
	CHECK(!oa.keep);
	CHECK(st(&v, ST_stale_dropped) == 1);

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
	CHECK(evicted >= stored - size / CS);
	CHECK(evicted > 0);
	if (w.max > size || disk_usage(v.cdir) > size)
		fprintf(stderr, "usage max %llu, disk %llu, limit %llu\n",
			(unsigned long long)w.max, (unsigned long long)disk_usage(v.cdir),
			(unsigned long long)size);
	for (unsigned i = 0; i < FILL_FILES; i++)
		h_close(&v, &h[i]);
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

/* ---- a record gone from disk while its chunks are on the LRU ---------- */

static struct env *hung_env; /* its directories are removed on a hang */

static void on_hang(int sig)
{
	static const char msg[] = "test_cache_core: hung (deadlock) evicting a chunk whose record is gone\n";
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
	CHECK(cache_read(v.c, a, ha.fd, 0, CS, false, &rd) == CS);
	CHECK(rd.pins == 1);
	cache_source_gone(v.c, (uint64_t)a->ino); /* unlink "a" through the mount */
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
	test_single_flight();
	test_change_mid_fetch(CHG_MTIME);
	test_change_mid_fetch(CHG_SIZE);
	test_change_mid_fetch(CHG_INODE);
	test_replaced_at_open();
	test_validated_told();
	test_corrupt_verify_always();
	test_eio_keeps_cache();
	test_corrupt_chunk();
	test_evict_skips_pinned();
	test_reset_while_pinned();
	test_size_under_concurrent_fills();
	test_evict_record_gone();
	return check_done("test_cache_core");
}
