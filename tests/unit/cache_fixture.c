/* cache_fixture.c - the cache core's unit-test fixture: a fake source and
 * the environment the tests of test_cache_fetch.c, test_cache_space.c and
 * test_cache_model.c run the cache core (cache.c over store.c and evict.c)
 * in, no mount.
 *
 * The fake serves real files of a temporary directory through the real
 * source calls, and lets a test count its reads, hold reads at a gate, fail
 * every call with EIO, and change the file's identity (mtime or size) in the
 * middle of a read.  The environment is that source directory, a cache_dir,
 * an inode table and a started cache; the helpers make and look up files,
 * open handles, read through the cache checking every byte, wait for
 * write-behind, and read the record's slots and data size off the disk.
 * The core_* functions at the end are the cache core's calls as the FUSE
 * ops make them (lookup, open, read, the handle's own source fd, evict,
 * verify, source-gone): the model test calls nothing else of cache.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache_fixture.h"
#include "source.h"
#include "store.h"

/* tests/faultinj, when the program links it (test_cache_model). */
void faultinj_pause_thread(bool pause) __attribute__((weak));

/* check.h's counters, shared by the fixture and the test program. */
_Atomic int check_failures;
_Atomic int check_count;

/* ---- the fake source ----------------------------------------------------- */


static bool fake_gated_locked(struct fake *f)
{
	return f->hold || (f->hold_others && !pthread_equal(pthread_self(), f->free_thread));
}

static void fake_wait_gate(struct fake *f)
{
	pthread_mutex_lock(&f->mu);
	f->reads++;
	f->held++;
	pthread_cond_broadcast(&f->cv);
	while (fake_gated_locked(f))
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

unsigned fake_reads(struct fake *f)
{
	unsigned n;

	pthread_mutex_lock(&f->mu);
	n = f->reads;
	pthread_mutex_unlock(&f->mu);
	return n;
}

void fake_set_fail(struct fake *f, int err)
{
	pthread_mutex_lock(&f->mu);
	f->fail = err;
	pthread_mutex_unlock(&f->mu);
}

void fake_set_hold(struct fake *f, bool hold)
{
	pthread_mutex_lock(&f->mu);
	f->hold = hold;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
}

void fake_hold_others(struct fake *f, bool hold)
{
	pthread_mutex_lock(&f->mu);
	f->hold_others = hold;
	f->free_thread = pthread_self();
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
}

unsigned fake_held(struct fake *f)
{
	unsigned n;

	pthread_mutex_lock(&f->mu);
	n = f->held;
	pthread_mutex_unlock(&f->mu);
	return n;
}

/* The bytes pushed are checked against the source file's at off. */
static int fake_push(void *arg, struct efs_inode *ino, uint64_t off, const void *buf, size_t len)
{
	struct fake *f = arg;
	unsigned char *want = malloc(len);
	bool bad = true;
	int fd;

	pthread_mutex_lock(&f->mu);
	if (!f->push_on) {
		pthread_mutex_unlock(&f->mu);
		free(want);
		return -ENOSYS;
	}
	f->pushing++;
	pthread_cond_broadcast(&f->cv);
	while (f->push_hold)
		pthread_cond_wait(&f->cv, &f->mu);
	pthread_mutex_unlock(&f->mu);
	fd = fake_open_object(f, ino, O_RDONLY);
	if (want && fd >= 0)
		bad = pread(fd, want, len, (off_t)off) != (ssize_t)len || memcmp(want, buf, len);
	if (fd >= 0)
		close(fd);
	free(want);
	pthread_mutex_lock(&f->mu);
	f->pushing--;
	f->pushes++;
	f->pushed += len;
	f->push_bad += bad;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
	return 0;
}

void fake_set_push(struct fake *f, bool on, bool hold)
{
	pthread_mutex_lock(&f->mu);
	f->push_on = on;
	f->push_hold = hold;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
}

unsigned fake_pushes(struct fake *f)
{
	unsigned n;

	pthread_mutex_lock(&f->mu);
	n = f->pushes;
	pthread_mutex_unlock(&f->mu);
	return n;
}

unsigned fake_pushing(struct fake *f)
{
	unsigned n;

	pthread_mutex_lock(&f->mu);
	n = f->pushing;
	pthread_mutex_unlock(&f->mu);
	return n;
}

void fake_arm_change(struct fake *f, enum change how, const char *name)
{
	pthread_mutex_lock(&f->mu);
	f->change = how;
	snprintf(f->change_name, sizeof(f->change_name), "%s", name);
	pthread_mutex_unlock(&f->mu);
}

/* ---- the environment: source dir, cache_dir, inode table, cache ------- */

const char *env_tmp_parent = "/tmp";

void env_up_nowait(struct env *v)
{
	char err[256] = "";
	const struct cache_source src = {
	    .stat_named = fake_stat_named,
	    .open_named = fake_open_named,
	    .open_object = fake_open_object,
	    .stat_open = fake_stat_open,
	    .validated = fake_validated,
	    .read = fake_read,
	    .push = fake_push,
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

void env_up(struct env *v)
{
	env_up_nowait(v);
	/* Chunks are stored once the startup index is complete (it never
	 * makes a read wait); the tests start from there. */
	for (int i = 0; i < 10000 && !stat_line(v, "cache_index_ready"); i++)
		usleep(1000);
	CHECK(stat_line(v, "cache_index_ready") == 1);
}

/* What a daemon's exit does: the inodes go, then the cache. */
void env_down(struct env *v)
{
	itab_free(v->t);
	cache_free(v->c);
	v->t = NULL;
	v->c = NULL;
}

void env_init_full(struct env *v, uint64_t cache_size, unsigned prefetch,
			  enum verify_mode verify)
{
	/* EFSCACHE_TEST_TMPDIR: where (a tmpfs for a run of a million files);
	 * else env_tmp_parent (the model test sets its own). */
	const char *tmp = getenv("EFSCACHE_TEST_TMPDIR");

	if (!tmp || strlen(tmp) > 24)
		tmp = env_tmp_parent;
	memset(v, 0, sizeof(*v));
	snprintf(v->src, sizeof(v->src), "%s/efs-test-core-src-XXXXXX", tmp);
	snprintf(v->cdir, sizeof(v->cdir), "%s/efs-test-core-cache-XXXXXX", tmp);
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

void env_init(struct env *v, uint64_t cache_size)
{
	env_init_full(v, cache_size, 0, VERIFY_ONCE);
}

void env_fini(struct env *v)
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
unsigned char pat(uint64_t o, unsigned seed)
{
	uint64_t x = (o + 1) * 0x9E3779B97F4A7C15ull + seed * 0xBF58476D1CE4E5B9ull;

	return (unsigned char)(x >> 56 ^ x >> 29);
}

void write_file(struct env *v, const char *name, uint64_t size, unsigned seed)
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
struct efs_inode *make_file(struct env *v, const char *name, uint64_t size, unsigned seed)
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

struct efs_inode *lookup(struct env *v, const char *name)
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


int h_open(struct env *v, struct efs_inode *ino, struct handle *h, bool *keep)
{
	struct meta_attr attr = {0};
	bool k;
	int r = cache_open(v->c, ino, -1, &attr, keep ? keep : &k);

	h->ino = ino;
	h->fd = r == 0 ? openat(v->f.root, ino->name, O_RDONLY) : -1;
	return r;
}

void h_close(struct env *v, struct handle *h)
{
	cache_close(v->c, h->ino, false);
	if (h->fd >= 0)
		close(h->fd);
	h->fd = -1;
}

/* Copy the reply's bytes out of its segments. */
void gather(const struct cache_read *rd, unsigned char *out)
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

bool bytes_are(const unsigned char *b, uint64_t off, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		if (b[i] != pat(off + i, seed))
			return false;
	return true;
}

/* Read [off, off+len) through the cache and check the bytes against seed;
 * returns the byte count or -errno. */
ssize_t read_check_seq(struct env *v, struct handle *h, uint64_t off, size_t len,
			      unsigned seed, bool sequential)
{
	struct cache_read rd;
	unsigned char *b = malloc(len ? len : 1);
	ssize_t n = cache_read(v->c, h->ino, h->fd, (off_t)off, len, sequential, v->kernel_size, &rd);

	if (n > 0) {
		gather(&rd, b);
		CHECK(bytes_are(b, off, (size_t)n, seed));
	}
	if (n >= 0)
		cache_read_done(v->c, &rd);
	free(b);
	return n;
}

ssize_t read_check(struct env *v, struct handle *h, uint64_t off, size_t len, unsigned seed)
{
	return read_check_seq(v, h, off, len, seed, false);
}

uint64_t st(struct env *v, enum stat_id id)
{
	return stats_get(&v->stats, id);
}

/* One of the cache's own figures (cache_usage), by its stats name. */
uint64_t stat_line(struct env *v, const char *name)
{
	struct cache_usage u;

	cache_usage(v->c, &u);
	if (!strcmp(name, "write_behind_pending"))
		return u.write_behind_pending;
	if (!strcmp(name, "cache_usage_bytes"))
		return u.usage_bytes;
	if (!strcmp(name, "cache_entries"))
		return u.entries;
	if (!strcmp(name, "cache_index_ready"))
		return u.index_ready;
	return UINT64_MAX;
}

/* Write-behind done: every fetched chunk is stored (or given up). */
void wait_stored(struct env *v)
{
	int i;

	for (i = 0; i < 30000 && stat_line(v, "write_behind_pending") != 0; i++)
		usleep(1000);
	CHECK(stat_line(v, "write_behind_pending") == 0);
}

void record_path(struct env *v, uint64_t src_ino, const char *ext, char *p, size_t len)
{
	struct store_key k;

	CHECK(store_key_of(v->src, 0, src_ino, &k) == 0);
	snprintf(p, len, "%s/v1/%.2s/%s.%s", v->cdir, k.hex, k.hex, ext);
}

/* The record's slot idx as on disk: its length, 0 if empty or absent. */
uint32_t disk_slot_len(struct env *v, struct efs_inode *ino, uint32_t idx)
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
uint64_t disk_data_bytes(struct env *v, struct efs_inode *ino)
{
	struct stat s;
	char p[256];

	record_path(v, (uint64_t)ino->ino, "data", p, sizeof(p));
	return stat(p, &s) == 0 ? (uint64_t)s.st_blocks * 512 : 0;
}

/* Wait (bounded) until counter id reaches n; false if it never did. */
bool wait_stat(struct env *v, enum stat_id id, uint64_t n)
{
	for (int i = 0; i < 30000 && st(v, id) < n; i++)
		usleep(1000);
	return st(v, id) >= n;
}

/* ---- the cache core as the FUSE ops call it ------------------------------ */

int core_lookup(struct env *v, const char *name, struct efs_inode **out)
{
	struct efs_inode *root = itab_root(v->t);
	struct stat st;
	int pfd, fd, r;

	*out = NULL;
	pfd = inode_fd_get(v->t, root);
	if (pfd < 0)
		return pfd;
	r = src_lookup(pfd, name, &fd, &st);
	if (r == 0) {
		*out = itab_get(v->t, root, name, fd, &st);
		r = *out ? 0 : -ENOMEM;
	}
	inode_fd_put(v->t, root);
	return r;
}

void core_forget(struct env *v, struct efs_inode *ino)
{
	itab_forget(v->t, ino, 1);
}

int core_open(struct env *v, struct efs_inode *ino, bool *keep_cache)
{
	struct meta_attr attr = {0};

	return cache_open(v->c, ino, -1, &attr, keep_cache);
}

void core_close(struct env *v, struct efs_inode *ino)
{
	cache_close(v->c, ino, false);
}

int core_source_fd(struct env *v, struct efs_inode *ino)
{
	int fd = inode_fd_get(v->t, ino), r;

	if (fd < 0)
		return fd;
	r = src_open(fd, O_RDONLY);
	inode_fd_put(v->t, ino);
	return r;
}

/* The source's size of ino now (what a getattr would tell the kernel);
 * UINT64_MAX when it cannot be had. */
static uint64_t kernel_size_now(struct env *v, struct efs_inode *ino)
{
	int fd = inode_fd_get(v->t, ino);
	struct stat st;
	uint64_t size = UINT64_MAX;

	if (fd >= 0 && fstat(fd, &st) == 0)
		size = (uint64_t)st.st_size;
	if (fd >= 0)
		inode_fd_put(v->t, ino);
	return size;
}

ssize_t core_read(struct env *v, struct efs_inode *ino, int src_fd, uint64_t off, size_t len,
		  bool sequential, unsigned char *out, struct core_reply *rep)
{
	struct core_reply none;
	struct cache_read rd;
	/* The kernel may believe the file longer than this open validated: as
	 * if a getattr after its window had just told it the source's size
	 * (only the source decides where a file ends). */
	ssize_t n = cache_read(v->c, ino, src_fd, (off_t)off, len, sequential,
			       kernel_size_now(v, ino), &rd);
	size_t at = 0;

	if (!rep)
		rep = &none;
	rep->cut = false;
	rep->nseg = 0;
	if (n < 0)
		return n;
	if (faultinj_pause_thread)
		faultinj_pause_thread(true);
	for (unsigned i = 0; i < rd.nseg && !rep->cut; i++) {
		const struct cache_seg *s = &rd.seg[i];
		ssize_t got = (ssize_t)s->len;

		if (s->fd >= 0)
			got = pread(s->fd, out + at, s->len, s->pos);
		else
			memcpy(out + at, s->mem, s->len);
		rep->seg[rep->nseg].file = s->fd >= 0;
		rep->seg[rep->nseg].pos = s->fd >= 0 ? (uint64_t)s->pos : 0;
		rep->seg[rep->nseg++].len = s->len;
		if (got < (ssize_t)s->len) {
			rep->cut = true;
			got = got < 0 ? 0 : got;
		}
		at += (size_t)got;
	}
	if (faultinj_pause_thread)
		faultinj_pause_thread(false);
	cache_read_done(v->c, &rd);
	return rep->cut ? (ssize_t)at : n;
}

int core_evict(struct env *v, dev_t dev, ino_t ino)
{
	uint64_t bytes = 0, chunks = 0;

	(void)dev; /* efscachectl names a file by its inode number alone */
	return cache_evict_ino(v->c, (uint64_t)ino, &bytes, &chunks);
}

int core_verify_all(struct env *v, cache_progress_fn fn, void *arg,
		    struct cache_verify_report *rep)
{
	return cache_verify_all(v->c, rep, fn, arg);
}

void core_source_gone(struct env *v, dev_t dev, ino_t ino)
{
	cache_source_gone(v->c, dev, (uint64_t)ino);
}

void core_record_key(struct env *v, dev_t dev, ino_t ino, char key[33])
{
	struct store_key k;

	struct stat root;
	uint64_t tag = stat(v->src, &root) == 0 && root.st_dev == dev ? 0 : (uint64_t)dev;

	if (store_key_of(v->src, tag, (uint64_t)ino, &k) < 0)
		k.hex[0] = '\0';
	memcpy(key, k.hex, 33);
}

uint64_t core_entries(struct env *v)
{
	return stat_line(v, "cache_entries");
}

uint64_t core_write_behind(struct env *v)
{
	return stat_line(v, "write_behind_pending");
}
