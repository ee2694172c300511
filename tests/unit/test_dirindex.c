/* test_dirindex.c - the directory index (dirindex.h) without a cache: the
 * format round-trips and refuses anything torn, flipped or out of order;
 * the memory bound; a fake store that hands back a corrupt snapshot (never
 * trusted, removed); and the rules of when a snapshot may answer
 * (dix_judge, dix_recheck, dix_attr_left) with default options and with
 * ttl=never.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dirindex.h"

#define DEV 42u
#define DIR_INO 1000u

static struct stat dir_stat(long mtime, long ctime)
{
	struct stat st;

	memset(&st, 0, sizeof(st));
	st.st_dev = DEV;
	st.st_ino = DIR_INO;
	st.st_mode = S_IFDIR | 0755;
	st.st_mtim.tv_sec = mtime;
	st.st_ctim.tv_sec = ctime;
	st.st_mtim.tv_nsec = 5;
	st.st_ctim.tv_nsec = 6;
	return st;
}

static struct stat file_stat(uint64_t ino, off_t size)
{
	struct stat st;

	memset(&st, 0, sizeof(st));
	st.st_dev = DEV;
	st.st_ino = ino;
	st.st_mode = S_IFREG | 0644;
	st.st_nlink = 1;
	st.st_uid = 1000;
	st.st_gid = 1000;
	st.st_size = size;
	st.st_blksize = 4096;
	st.st_blocks = (size + 511) / 512;
	st.st_mtim.tv_sec = 1700000000;
	st.st_mtim.tv_nsec = 123;
	st.st_ctim = st.st_mtim;
	st.st_atim = st.st_mtim;
	return st;
}

static const struct timespec T0 = {.tv_sec = 100};

/* A snapshot of n files named f0..f(n-1), published in x. */
static struct dix_dir *build(struct dix *x, unsigned n, long mtime)
{
	struct stat d = dir_stat(mtime, mtime);
	struct dix_build *b = dix_build_begin(&d);
	char name[32];

	CHECK(b != NULL);
	for (unsigned i = n; i-- > 0;) { /* out of order: commit sorts */
		struct stat st = file_stat(2000 + i, i * 10);
		struct timespec bt = {.tv_sec = 7, .tv_nsec = (long)i};

		snprintf(name, sizeof(name), "f%u", i);
		CHECK(dix_build_add(b, name, &st, i % 2 ? &bt : NULL) == 0);
	}
	dix_build_dots(b, DIR_INO, 1);
	return dix_build_commit(x, b, &T0);
}

static void test_round_trip(void)
{
	struct dix *x;
	struct dix_dir *d, *back;
	const struct dix_entry *e;
	struct timespec bt;
	struct stat st, want = file_stat(2003, 30);
	void *buf;
	size_t len;

	CHECK(dix_new(&x, 1 << 20, NULL) == 0);
	d = build(x, 10, 50);
	CHECK(d && d->n == 10);
	CHECK(dix_encode(d, &buf, &len) == 0);
	CHECK(len == DIX_HEADER_SIZE + 10 * DIX_ENTRY_SIZE + d->names_len);
	CHECK(dix_decode(buf, len, DEV, DIR_INO, &back) == 0);
	CHECK(back->n == 10 && back->dot_ino == DIR_INO && back->dotdot_ino == 1);
	CHECK(back->mtime.tv_sec == 50 && back->ctime.tv_nsec == 6);
	CHECK(!back->seen_here && !back->checked_here);
	e = dix_find(back, "f3", 2);
	CHECK(e != NULL);
	if (e) {
		dix_stat(e, DEV, &st);
		CHECK(st.st_ino == want.st_ino && st.st_size == want.st_size &&
		      st.st_mode == want.st_mode && st.st_mtim.tv_nsec == 123 &&
		      st.st_blocks == want.st_blocks && st.st_dev == DEV);
		CHECK(dix_btime(e, &bt) && bt.tv_sec == 7 && bt.tv_nsec == 3);
	}
	e = dix_find(back, "f4", 2);
	CHECK(e && !dix_btime(e, &bt));
	CHECK(dix_find(back, "f10", 3) == NULL);
	CHECK(dix_find(back, "f", 1) == NULL);
	/* Another directory's inode number: not its snapshot. */
	{
		struct dix_dir *other;

		CHECK(dix_decode(buf, len, DEV, DIR_INO + 1, &other) == -EBADMSG);
	}
	dix_dir_free(back);
	free(buf);
	dix_put(x, d);
	dix_free(x);
}

/* An empty directory (the root of a new mount, a package's empty data
 * dir): a snapshot of no names, which answers every name absent. */
static void test_empty(void)
{
	struct dix *x;
	struct dix_dir *d, *back;
	void *buf;
	size_t len;

	CHECK(dix_new(&x, 1 << 20, NULL) == 0);
	d = build(x, 0, 50);
	CHECK(d && d->n == 0 && d->names_len == 0);
	CHECK(d && dix_find(d, "f0", 2) == NULL);
	CHECK(d && dix_encode(d, &buf, &len) == 0 && len == DIX_HEADER_SIZE);
	if (d && len == DIX_HEADER_SIZE) {
		CHECK(dix_decode(buf, len, DEV, DIR_INO, &back) == 0);
		CHECK(back->n == 0 && dix_find(back, "f0", 2) == NULL);
		dix_dir_free(back);
		free(buf);
	}
	dix_put(x, d);
	dix_free(x);
}

/* Torn at every length, every bit flipped: refused, never trusted. */
static void test_torn_and_flipped(void)
{
	struct dix *x;
	struct dix_dir *d, *back;
	unsigned char *buf;
	size_t len;
	unsigned accepted = 0;

	CHECK(dix_new(&x, 1 << 20, NULL) == 0);
	d = build(x, 4, 50);
	CHECK(dix_encode(d, (void **)&buf, &len) == 0);
	for (size_t cut = 0; cut < len; cut++)
		if (dix_decode(buf, cut, DEV, DIR_INO, &back) == 0) {
			accepted++;
			dix_dir_free(back);
		}
	CHECK(accepted == 0);
	for (size_t bit = 0; bit < len * 8; bit++) {
		buf[bit / 8] ^= (unsigned char)(1u << (bit % 8));
		if (dix_decode(buf, len, DEV, DIR_INO, &back) == 0) {
			accepted++;
			dix_dir_free(back);
		}
		buf[bit / 8] ^= (unsigned char)(1u << (bit % 8));
	}
	CHECK(accepted == 0);
	CHECK(dix_decode(buf, len, DEV, DIR_INO, &back) == 0);
	dix_dir_free(back);
	free(buf);
	dix_put(x, d);
	dix_free(x);
}

static void test_bad_names(void)
{
	struct stat d = dir_stat(1, 1), f = file_stat(5, 1);
	struct dix_build *b = dix_build_begin(&d);
	char big[DIX_NAME_MAX + 2];

	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	CHECK(dix_build_add(b, "", &f, NULL) == -EINVAL);
	CHECK(dix_build_add(b, ".", &f, NULL) == -EINVAL);
	CHECK(dix_build_add(b, "..", &f, NULL) == -EINVAL);
	CHECK(dix_build_add(b, "a/b", &f, NULL) == -EINVAL);
	CHECK(dix_build_add(b, big, &f, NULL) == -EINVAL);
	big[DIX_NAME_MAX] = '\0';
	CHECK(dix_build_add(b, big, &f, NULL) == 0);
	dix_build_abort(b);
}

/* One name twice: the pass saw the directory change; nothing published. */
static void test_duplicate(void)
{
	struct dix *x;
	struct stat d = dir_stat(1, 1), f = file_stat(5, 1);
	struct dix_build *b = dix_build_begin(&d);
	struct dix_counts n;

	CHECK(dix_new(&x, 1 << 20, NULL) == 0);
	CHECK(dix_build_add(b, "a", &f, NULL) == 0);
	CHECK(dix_build_add(b, "b", &f, NULL) == 0);
	CHECK(dix_build_add(b, "a", &f, NULL) == 0);
	CHECK(dix_build_commit(x, b, &T0) == NULL);
	dix_counts(x, &n);
	CHECK(n.dirs == 0);
	CHECK(dix_get(x, DEV, DIR_INO) == NULL);
	dix_free(x);
}

/* The bound of one snapshot: DIX_MAX_BYTES encoded, DIX_MAX_ENTRIES. */
static void test_size_bound(void)
{
	struct stat d = dir_stat(1, 1), f = file_stat(5, 1);
	struct dix_build *b = dix_build_begin(&d);
	char name[DIX_NAME_MAX + 1];
	size_t total = DIX_HEADER_SIZE;
	unsigned i;
	int r = 0;

	memset(name, 'n', DIX_NAME_MAX);
	name[DIX_NAME_MAX] = '\0';
	for (i = 0; r == 0; i++) {
		snprintf(name, sizeof(name), "%08u", i);
		name[8] = 'n';
		r = dix_build_add(b, name, &f, NULL);
		if (r == 0)
			total += DIX_ENTRY_SIZE + DIX_NAME_MAX;
	}
	CHECK(r == -E2BIG);
	CHECK(total <= DIX_MAX_BYTES && total + DIX_ENTRY_SIZE + DIX_NAME_MAX > DIX_MAX_BYTES);
	dix_build_abort(b);
}

/* The memory bound: unused snapshots past mem_max leave memory (they stay
 * in the store); one in use stays until put. */
static void test_memory_bound(void)
{
	struct dix *x;
	struct dix_counts n;
	struct dix_dir *first, *held = NULL;
	struct stat f = file_stat(5, 1);
	size_t one;

	CHECK(dix_new(&x, 1 << 20, NULL) == 0);
	first = build(x, 100, 1);
	one = first->bytes;
	dix_put(x, first);
	dix_free(x);

	CHECK(dix_new(&x, 3 * one, NULL) == 0);
	for (unsigned i = 0; i < 10; i++) {
		struct stat d = dir_stat(1, 1);
		struct dix_build *b;
		char name[16];

		d.st_ino = DIR_INO + i;
		b = dix_build_begin(&d);
		for (unsigned j = 0; j < 100; j++) {
			snprintf(name, sizeof(name), "f%u", j);
			CHECK(dix_build_add(b, name, &f, NULL) == 0);
		}
		first = dix_build_commit(x, b, &T0);
		CHECK(first != NULL);
		if (i == 0) {
			held = first; /* in use: stays, may exceed the bound */
			continue;
		}
		dix_put(x, first);
		dix_counts(x, &n);
		CHECK(n.bytes <= 3 * one + one);
	}
	dix_counts(x, &n);
	CHECK(n.dirs <= 4 && n.bytes <= 4 * one);
	CHECK(held && dix_find(held, "f0", 2) != NULL);
	dix_put(x, held);
	dix_counts(x, &n);
	CHECK(n.bytes <= 3 * one);
	dix_free(x);
}

/* ---- a fake store: one blob per directory, which a test may spoil ------ */

struct fake_store {
	unsigned char *buf;
	size_t len;
	unsigned loads, saves, removes;
	unsigned not_yet; /* saves that answer -EAGAIN first */
	struct dix *forget_in_load; /* a change through the mount during a load */
};

static int fs_load(void *arg, uint64_t dev, uint64_t ino, void **buf, size_t *len)
{
	struct fake_store *s = arg;

	(void)dev;
	(void)ino;
	s->loads++;
	if (!s->buf)
		return -ENOENT;
	*buf = malloc(s->len);
	memcpy(*buf, s->buf, s->len);
	*len = s->len;
	if (s->forget_in_load) {
		/* Read, then forgotten (and removed) before it is published. */
		struct dix *x = s->forget_in_load;

		s->forget_in_load = NULL;
		dix_forget(x, dev, ino);
	}
	return 0;
}

static int fs_save(void *arg, uint64_t dev, uint64_t ino, const struct dix_dir *d,
		   const void *buf, size_t len)
{
	struct fake_store *s = arg;

	(void)dev;
	(void)ino;
	(void)d;
	if (s->not_yet) {
		s->not_yet--;
		return -EAGAIN;
	}
	s->saves++;
	free(s->buf);
	s->buf = malloc(len);
	memcpy(s->buf, buf, len);
	s->len = len;
	return 0;
}

static void fs_remove(void *arg, uint64_t dev, uint64_t ino)
{
	struct fake_store *s = arg;

	(void)dev;
	(void)ino;
	s->removes++;
	free(s->buf);
	s->buf = NULL;
}

/* A holder's reference keeps a snapshot that was forgotten and whose
 * other holder let go (a listing that goes on after its reply while the
 * kernel closes the handle): freed at the last put only (ASan sees a use
 * after free otherwise). */
static void test_ref(void)
{
	struct dix *x;
	struct dix_dir *d;

	CHECK(dix_new(&x, 1 << 20, NULL) == 0);
	d = build(x, 7, 90); /* the handle's reference */
	CHECK(d != NULL);
	dix_ref(x, d);       /* the listing's own */
	dix_forget(x, DEV, DIR_INO);
	dix_put(x, d);       /* the handle closed */
	CHECK(d->n == 7 && dix_find(d, "f6", 2) != NULL);
	dix_put(x, d);
	CHECK(dix_get(x, DEV, DIR_INO) == NULL);
	dix_free(x);
}

static void test_store(void)
{
	struct fake_store s = {0};
	const struct dix_store_ops ops = {fs_load, fs_save, fs_remove, &s};
	struct dix *x;
	struct dix_dir *d;
	struct dix_counts n;

	/* A daemon lists the directory: the snapshot is saved. */
	CHECK(dix_new(&x, 1 << 20, &ops) == 0);
	d = build(x, 5, 50);
	CHECK(s.saves == 1 && s.buf != NULL);
	dix_put(x, d);
	dix_free(x);

	/* The next daemon finds it in the store, with no check time; not
	 * from memory only (default options do not read the store). */
	CHECK(dix_new(&x, 1 << 20, &ops) == 0);
	s.loads = 0;
	CHECK(dix_get_loaded(x, DEV, DIR_INO) == NULL && s.loads == 0);
	d = dix_get(x, DEV, DIR_INO);
	CHECK(d && d->n == 5 && !d->checked_here && !d->seen_here);
	CHECK(d && dix_find(d, "f4", 2) != NULL);
	dix_put(x, d);
	d = dix_get_loaded(x, DEV, DIR_INO);
	CHECK(d && d->n == 5 && s.loads == 1);
	dix_put(x, d);
	dix_counts(x, &n);
	CHECK(n.loads == 1 && n.bad == 0);
	dix_free(x);

	/* Spoiled in the store (one byte of a name): refused, removed. */
	s.buf[s.len - 1] ^= 1;
	CHECK(dix_new(&x, 1 << 20, &ops) == 0);
	CHECK(dix_get(x, DEV, DIR_INO) == NULL);
	dix_counts(x, &n);
	CHECK(n.bad == 1 && s.removes == 1 && s.buf == NULL);
	CHECK(dix_get(x, DEV, DIR_INO) == NULL);
	dix_free(x);

	/* Forgotten: gone from memory and from the store. */
	CHECK(dix_new(&x, 1 << 20, &ops) == 0);
	d = build(x, 2, 60);
	dix_put(x, d);
	CHECK(s.buf != NULL);
	dix_forget(x, DEV, DIR_INO);
	CHECK(s.buf == NULL);
	s.loads = 0;
	CHECK(dix_get(x, DEV, DIR_INO) == NULL && s.loads == 1);
	dix_free(x);
	free(s.buf);
	s = (struct fake_store){0};

	/* Forgotten while a load (a lookup's, or one loaded ahead on another
	 * thread) read the store: what it read is the record the forget
	 * removed, so it publishes nothing and answers nothing. */
	CHECK(dix_new(&x, 1 << 20, &ops) == 0);
	d = build(x, 4, 65);
	dix_put(x, d);
	dix_free(x);
	CHECK(dix_new(&x, 1 << 20, &ops) == 0);
	s.forget_in_load = x;
	s.loads = 0;
	CHECK(dix_get(x, DEV, DIR_INO) == NULL && s.loads == 1 && s.buf == NULL);
	CHECK(!dix_loaded(x, DEV, DIR_INO) && dix_get_loaded(x, DEV, DIR_INO) == NULL);
	dix_counts(x, &n);
	CHECK(n.loads == 0 && n.dirs == 0);
	dix_free(x);
	s = (struct fake_store){0};

	/* The store not ready at the pass (the cache's startup index): saved
	 * at the next use instead, once. */
	s.not_yet = 1;
	CHECK(dix_new(&x, 1 << 20, &ops) == 0);
	d = build(x, 3, 70);
	CHECK(s.saves == 0 && s.buf == NULL);
	dix_put(x, d);
	d = dix_get(x, DEV, DIR_INO);
	CHECK(d && s.saves == 1 && s.buf != NULL);
	dix_put(x, d);
	d = dix_get(x, DEV, DIR_INO);
	CHECK(s.saves == 1);
	dix_put(x, d);
	dix_free(x);
	/* ... or at the daemon's exit, if nothing used it again. */
	s.not_yet = 1;
	CHECK(dix_new(&x, 1 << 20, &ops) == 0);
	d = build(x, 3, 80);
	CHECK(s.saves == 1);
	dix_put(x, d);
	dix_free(x);
	CHECK(s.saves == 2 && s.buf != NULL);
	free(s.buf);
}

/* ---- when a snapshot answers ---------------------------------------------- */

static struct timespec at(double s)
{
	return (struct timespec){.tv_sec = (time_t)s, .tv_nsec = (long)((s - (time_t)s) * 1e9)};
}

static struct meta_attr seen_as(const struct stat *st, double when)
{
	return (struct meta_attr){
		.seen = true,
		.timeo = 3,
		.mtime = st->st_mtim,
		.ctime = st->st_ctim,
		.at = at(when),
	};
}

/* Default options: a snapshot answers within the directory's window from
 * when it was made or checked, then is checked against the directory's
 * identity (its inode number, mtime and ctime) with one stat. */
static void test_rules_default(void)
{
	struct fake_store s = {0};
	const struct dix_store_ops ops = {fs_load, fs_save, fs_remove, &s};
	struct dix *x;
	struct dix_dir *d;
	struct stat same = dir_stat(50, 50), changed = dir_stat(50, 51), t;
	struct timespec now;
	const double w = 3;

	CHECK(dix_new(&x, 1 << 20, &ops) == 0);
	d = build(x, 3, 50); /* made at T0 = 100 s */
	CHECK(dix_judge(x, d, false, w, NULL, &T0) == DIX_ANSWER);
	now = at(102.9);
	CHECK(dix_judge(x, d, false, w, NULL, &now) == DIX_ANSWER);
	now = at(103.0);
	CHECK(dix_judge(x, d, false, w, NULL, &now) == DIX_CHECK);
	/* The source says unchanged: another window from the check. */
	CHECK(dix_recheck(x, d, &same, &now));
	now = at(105.9);
	CHECK(dix_judge(x, d, false, w, NULL, &now) == DIX_ANSWER);
	/* A file's attributes: what is left of its window since the pass. */
	now = at(101);
	CHECK(dix_attr_left(d, false, 1.5, &now) == 0.5);
	now = at(102);
	CHECK(dix_attr_left(d, false, 1.5, &now) == 0);
	/* What this daemon saw of the directory before the check: older. */
	{
		struct meta_attr old = seen_as(&changed, 102.0);

		now = at(104);
		CHECK(dix_judge(x, d, false, w, &old, &now) == DIX_ANSWER);
	}
	/* Seen after the check with another ctime: stale at once. */
	{
		struct meta_attr newer = seen_as(&changed, 103.5);
		struct meta_attr unchanged = seen_as(&same, 103.5);

		now = at(104);
		CHECK(dix_judge(x, d, false, w, &unchanged, &now) == DIX_ANSWER);
		CHECK(dix_judge(x, d, false, w, &newer, &now) == DIX_STALE);
	}
	/* After the window, the directory changed: forgotten everywhere. */
	now = at(107);
	CHECK(dix_judge(x, d, false, w, NULL, &now) == DIX_CHECK);
	CHECK(!dix_recheck(x, d, &changed, &now));
	CHECK(s.buf == NULL);
	dix_put(x, d);
	CHECK(dix_get(x, DEV, DIR_INO) == NULL);
	/* Listed again (for the next daemon below). */
	d = build(x, 3, 50);
	dix_put(x, d);
	dix_free(x);

	/* A snapshot of an earlier daemon: checked at its first use, and its
	 * files' attributes are given no window. */
	CHECK(dix_new(&x, 1 << 20, &ops) == 0);
	d = dix_get(x, DEV, DIR_INO);
	CHECK(d != NULL);
	now = at(1);
	CHECK(dix_judge(x, d, false, w, NULL, &now) == DIX_CHECK);
	CHECK(dix_attr_left(d, false, 1.5, &now) == 0);
	t = same;
	t.st_ino = DIR_INO + 1; /* another directory: not the one listed */
	CHECK(!dix_recheck(x, d, &t, &now));
	dix_put(x, d);
	dix_free(x);
	free(s.buf);
}

/* ttl=never: no timer, also for a snapshot of an earlier daemon; only a
 * directory seen (by a lookup or getattr) with another identity drops it. */
static void test_rules_never(void)
{
	struct fake_store s = {0};
	const struct dix_store_ops ops = {fs_load, fs_save, fs_remove, &s};
	struct dix *x;
	struct dix_dir *d;
	struct stat same = dir_stat(50, 50), changed = dir_stat(51, 51);
	struct timespec now = at(1e6);

	CHECK(dix_new(&x, 1 << 20, &ops) == 0);
	d = build(x, 3, 50);
	CHECK(dix_judge(x, d, true, 0, NULL, &now) == DIX_ANSWER);
	CHECK(dix_attr_left(d, true, 86400, &now) == 86400);
	dix_put(x, d);
	dix_free(x);

	CHECK(dix_new(&x, 1 << 20, &ops) == 0);
	d = dix_get(x, DEV, DIR_INO);
	CHECK(d != NULL);
	CHECK(dix_judge(x, d, true, 0, NULL, &now) == DIX_ANSWER);
	{
		struct meta_attr a = seen_as(&same, 5);
		struct meta_attr b = seen_as(&changed, 5);

		CHECK(dix_judge(x, d, true, 0, &a, &now) == DIX_ANSWER);
		CHECK(dix_judge(x, d, true, 0, &b, &now) == DIX_STALE);
	}
	dix_put(x, d);
	dix_free(x);
	free(s.buf);
}

int main(void)
{
	test_round_trip();
	test_empty();
	test_torn_and_flipped();
	test_bad_names();
	test_duplicate();
	test_size_bound();
	test_memory_bound();
	test_ref();
	test_store();
	test_rules_default();
	test_rules_never();
	return check_done("test_dirindex");
}
