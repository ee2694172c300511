/* test_cache_own.c - the cache core under faults on its own side (DESIGN
 * rules 16 and 17), no mount (the fixture: cache_fixture.c).
 *
 * Each test is one finding of issue 15: EMFILE while a record is opened
 * (C1), a data file removed under the daemon (H5), a file grown on the
 * source while open (M3), a complete record's data file that a passthrough
 * reader (of this daemon or of one before it) holds, and evict beside a
 * passthrough open that came while it waited (P1), verify racing an unlink
 * (H1), prefetch with failing record opens (H2), a huge sparse file (H6),
 * write-behind within its bound in bytes while the disk stalls, many files
 * read once (M1); and an open that could not read an old record, which
 * verify then loaded (the model test, seed 103).  Witnesses:
 * every byte read is checked against the source's pattern, the fake's read
 * count, the files under cache_dir, fds held by the test itself, and
 * malloc's bytes in use.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cache_fixture.h"
#include "cache_test.h"
#include "passthrough.h"

/* An RLIMIT_NOFILE under which exactly `room` more fds can be opened: fd
 * numbers must stay below it, and the lowest free ones are used first. */
static rlim_t limit_with_room(unsigned room)
{
	int fd = 0;

	for (;; fd++)
		if (fcntl(fd, F_GETFD) < 0 && room-- == 0)
			return (rlim_t)fd;
}

static void on_alarm(int sig)
{
	static const char msg[] = "test_cache_own: hung\n";

	(void)sig;
	if (write(2, msg, sizeof(msg) - 1) < 0)
		_exit(1);
	_exit(1);
}

/* Read [off, off + len) of every byte of a file of the test's pattern. */
static void read_all(struct env *v, struct handle *h, uint64_t size, unsigned seed)
{
	for (uint64_t o = 0; o < size; o += CS) {
		size_t n = size - o < CS ? (size_t)(size - o) : CS;

		CHECK(read_check(v, h, o, n, seed) == (ssize_t)n);
	}
}

/* A file made, read whole through the cache and closed: its record is on
 * disk, every chunk stored. */
static struct efs_inode *cached_file(struct env *v, const char *name, uint64_t size,
				     unsigned seed)
{
	struct efs_inode *ino = make_file(v, name, size, seed);
	struct handle h;

	CHECK(h_open(v, ino, &h, NULL) == 0);
	read_all(v, &h, size, seed);
	wait_stored(v);
	h_close(v, &h);
	return ino;
}

static bool exists(const char *p)
{
	return access(p, F_OK) == 0;
}

/* ---- gates: calls held on demand ----------------------------------------- */

/* This program's fstatat, pwrite and pread (further down), which the
 * cache's static library calls instead of libc's, hold some calls at a gate
 * while it is closed: an index stuck on a stat, a disk that stalls, a hit
 * whose copy takes its time.  They find libc's with dlsym, which a static
 * binary has none of: the release tarball's static build leaves this
 * program out. */
struct gate {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool closed;   /* protected by mu */
	unsigned held; /* protected by mu: calls waiting at it */
};
#define GATE_INIT {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, 0}

/* A call goes through g: it waits while g is closed. */
static void gate_pass(struct gate *g)
{
	pthread_mutex_lock(&g->mu);
	g->held++;
	pthread_cond_broadcast(&g->cv);
	while (g->closed)
		pthread_cond_wait(&g->cv, &g->mu);
	g->held--;
	pthread_mutex_unlock(&g->mu);
}

static bool gate_is_closed(struct gate *g)
{
	bool closed;

	pthread_mutex_lock(&g->mu);
	closed = g->closed;
	pthread_mutex_unlock(&g->mu);
	return closed;
}

static void gate_set(struct gate *g, bool closed)
{
	pthread_mutex_lock(&g->mu);
	g->closed = closed;
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->mu);
}

/* Wait (10 s at most) until a call waits at g. */
static bool gate_wait_held(struct gate *g)
{
	bool held = false;

	for (int i = 0; i < 10000 && !held; i++) {
		pthread_mutex_lock(&g->mu);
		held = g->held > 0;
		pthread_mutex_unlock(&g->mu);
		if (!held)
			usleep(1000);
	}
	return held;
}

/* fd is a record's data file (KEY.data), by its name. */
static bool is_data_file(int fd)
{
	char link[64], path[512];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, path, sizeof(path) - 1);
	if (n < 0)
		return false;
	path[n] = '\0';
	return strstr(path, ".data") != NULL;
}

/* ---- C1: EMFILE while a record's files are opened ---------------------- */

/* Look name up and open it with room for one more fd only: the record's
 * metadata file opens, its data file does not (EMFILE), the handle's own
 * source fd was opened before.  The open must succeed without the cache
 * (no keep_cache).  Returns the inode; h is the handle. */
static struct efs_inode *open_short_of_fds(struct env *v, const char *name, struct handle *h)
{
	struct efs_inode *ino = lookup(v, name);
	struct meta_attr attr = {0};
	struct rlimit old, low;
	bool keep = true;
	int r;

	h->ino = ino;
	h->fd = openat(v->f.root, name, O_RDONLY);
	CHECK(h->fd >= 0);
	CHECK(getrlimit(RLIMIT_NOFILE, &old) == 0);
	low = old;
	low.rlim_cur = limit_with_room(1);
	CHECK(setrlimit(RLIMIT_NOFILE, &low) == 0);
	r = cache_open(v->c, ino, -1, &attr, &keep);
	CHECK(setrlimit(RLIMIT_NOFILE, &old) == 0);
	CHECK(r == 0);
	CHECK(!keep);
	return ino;
}

static void test_emfile_at_load(void)
{
	struct env v;
	struct handle h;
	struct efs_inode *ino;
	unsigned reads;

	env_init(&v, 64u << 20);
	ino = cached_file(&v, "f", 4 * CS, 1);
	itab_forget(v.t, ino, 1); /* the kernel forgets it: its record is unloaded */

	/* Room for one more fd: the record's metadata file opens, its data
	 * file does not (EMFILE), the source's fetch fd does. */
	ino = open_short_of_fds(&v, "f", &h);

	/* The record could not be read: this open reads the source, right. */
	reads = fake_reads(&v.f);
	read_all(&v, &h, 4 * CS, 1);
	CHECK(fake_reads(&v.f) == reads + 4);
	wait_stored(&v);
	h_close(&v, &h);

	/* The next open reads the record (kept, not replaced): from the
	 * cache, every byte right, nothing fetched. */
	CHECK(h_open(&v, ino, &h, NULL) == 0);
	reads = fake_reads(&v.f);
	read_all(&v, &h, 4 * CS, 1);
	CHECK(fake_reads(&v.f) == reads);
	h_close(&v, &h);
	env_fini(&v);
}

/* An open that could not read the record (EMFILE) reads the source and
 * validates nothing; the file had changed on the source, so the record on
 * disk is of an older version.  A verify (or anything else that loads the
 * record) must not make that handle's reads hits of the old version. */
static void test_unvalidated_load(void)
{
	const uint64_t size2 = 3 * CS + 100;
	struct env v;
	struct handle h;
	struct efs_inode *ino;
	struct cache_verify_report rep;
	unsigned reads;

	env_init(&v, 64u << 20);
	ino = cached_file(&v, "u", 4 * CS, 1);
	itab_forget(v.t, ino, 1); /* its record is unloaded */
	write_file(&v, "u", size2, 2); /* changed in place on the source */

	ino = open_short_of_fds(&v, "u", &h);
	read_all(&v, &h, size2, 2); /* from the source */

	/* verify loads the old record (nothing wrong with it as a record) and
	 * keeps it loaded, as the file is open: the handle still reads the
	 * source, up to the new end. */
	CHECK(cache_verify_all(v.c, &rep, NULL, NULL) == 0);
	CHECK(rep.chunks_checked == 4 && rep.chunks_bad == 0);
	reads = fake_reads(&v.f);
	read_all(&v, &h, size2, 2);
	CHECK(fake_reads(&v.f) == reads + 4);
	CHECK(read_check(&v, &h, size2, CS, 2) == 0);
	h_close(&v, &h);

	/* The next open checks the record, finds it old and replaces it. */
	CHECK(h_open(&v, ino, &h, NULL) == 0);
	read_all(&v, &h, size2, 2);
	CHECK(read_check(&v, &h, size2, CS, 2) == 0);
	wait_stored(&v);
	reads = fake_reads(&v.f);
	read_all(&v, &h, size2, 2);
	CHECK(fake_reads(&v.f) == reads);
	h_close(&v, &h);
	env_fini(&v);
}

/* ---- H5: the data file removed under the daemon -------------------------- */

static void test_data_removed(void)
{
	struct env v;
	struct handle h;
	struct efs_inode *ino;
	char data[256], meta[256];
	unsigned reads;

	env_init(&v, 64u << 20);
	ino = make_file(&v, "g", 4 * CS, 2);
	CHECK(h_open(&v, ino, &h, NULL) == 0);
	read_all(&v, &h, 4 * CS, 2);
	wait_stored(&v);
	record_path(&v, (uint64_t)ino->ino, "data", data, sizeof(data));
	record_path(&v, (uint64_t)ino->ino, "meta", meta, sizeof(meta));
	CHECK(unlink(data) == 0); /* a cleaner of /tmp */

	/* The open record still holds the bytes it verified. */
	reads = fake_reads(&v.f);
	read_all(&v, &h, 4 * CS, 2);
	CHECK(fake_reads(&v.f) == reads);
	h_close(&v, &h);
	itab_forget(v.t, ino, 1);

	/* Loaded again: a record without its data file is no record, and no
	 * empty data file is made for it (it served empty bytes). */
	ino = lookup(&v, "g");
	CHECK(h_open(&v, ino, &h, NULL) == 0);
	CHECK(!exists(data));
	reads = fake_reads(&v.f);
	read_all(&v, &h, 4 * CS, 2);
	CHECK(fake_reads(&v.f) == reads + 4);
	wait_stored(&v);
	CHECK(exists(data) && exists(meta));
	CHECK(disk_data_bytes(&v, ino) >= 4 * CS);
	reads = fake_reads(&v.f);
	read_all(&v, &h, 4 * CS, 2);
	CHECK(fake_reads(&v.f) == reads);
	h_close(&v, &h);
	env_fini(&v);
}

/* ---- a data file cut under the daemon, then written past the cut -------- */

/* Truncated in the middle of a block (by hand, a cleaner, a full disk's
 * recovery), the data file keeps zeros after the cut up to the block's end:
 * SEEK_HOLE calls that block data.  If the daemon then stored a chunk past
 * the cut, the file grew again and a hit on the cut block copied the zeros
 * (found by the model test, seed 101).  Nothing may be written past a cut,
 * and a hit checks the file is not shorter than what was stored. */
static void test_data_cut(void)
{
	struct env v;
	struct handle h;
	struct efs_inode *ino;
	char data[256];
	unsigned reads;

	env_init(&v, 64u << 20);
	ino = make_file(&v, "cut", 4 * CS, 5);
	CHECK(h_open(&v, ino, &h, NULL) == 0);
	/* Chunks 0 and 1 cached. */
	CHECK(read_check(&v, &h, 0, CS, 5) == CS);
	CHECK(read_check(&v, &h, CS, CS, 5) == CS);
	wait_stored(&v);
	record_path(&v, (uint64_t)ino->ino, "data", data, sizeof(data));
	CHECK(truncate(data, CS + 1234) == 0);
	/* Chunks 2 and 3 fetched: nothing may be written past the cut. */
	CHECK(read_check(&v, &h, 2 * CS, CS, 5) == CS);
	CHECK(read_check(&v, &h, 3 * CS, CS, 5) == CS);
	wait_stored(&v);
	{
		struct stat st;

		CHECK(stat(data, &st) != 0 || st.st_size == CS + 1234);
	}
	/* The cut block itself: the source's bytes, from the source. */
	reads = fake_reads(&v.f);
	CHECK(read_check(&v, &h, CS, 4096, 5) == 4096);
	CHECK(read_check(&v, &h, CS + 1234, 100, 5) == 100);
	CHECK(fake_reads(&v.f) > reads);
	CHECK(st(&v, ST_cache_io_errors) >= 1);
	h_close(&v, &h);
	itab_forget(v.t, ino, 1);

	/* The next open replaces the record, and caching comes back. */
	ino = lookup(&v, "cut");
	CHECK(h_open(&v, ino, &h, NULL) == 0);
	read_all(&v, &h, 4 * CS, 5);
	wait_stored(&v);
	reads = fake_reads(&v.f);
	read_all(&v, &h, 4 * CS, 5);
	CHECK(fake_reads(&v.f) == reads);
	h_close(&v, &h);
	env_fini(&v);
}

/* ---- M3: only the source decides where a file ends ---------------------- */

static void append_pattern(struct env *v, const char *name, uint64_t from, uint64_t to,
			   unsigned seed)
{
	int fd = openat(v->f.root, name, O_WRONLY);

	CHECK(fd >= 0);
	for (uint64_t o = from; fd >= 0 && o < to; o++) {
		unsigned char b = pat(o, seed);

		CHECK(pwrite(fd, &b, 1, (off_t)o) == 1);
	}
	if (fd >= 0)
		close(fd);
}

static void test_grown_while_open(void)
{
	const uint64_t old_size = 100 << 10, new_size = 150 << 10;
	struct env v;
	struct handle h;
	struct efs_inode *ino;

	env_init(&v, 64u << 20);
	ino = make_file(&v, "grow", old_size, 3);
	CHECK(h_open(&v, ino, &h, NULL) == 0);
	CHECK(read_check(&v, &h, 0, 256 << 10, 3) == (ssize_t)old_size);
	wait_stored(&v);

	/* Another host appends; this open validated 100 KiB. */
	append_pattern(&v, "grow", old_size, new_size, 3);

	/* A kernel that knows no more than 100 KiB: the end as it knows it. */
	v.kernel_size = old_size;
	CHECK(read_check(&v, &h, 0, 256 << 10, 3) == (ssize_t)old_size);
	/* A kernel told 150 KiB (a getattr after its window): the read that
	 * straddles the validated size is finished from the source, never cut
	 * there (the kernel would take the short reply for the end, and keep
	 * zeros in its pages). */
	v.kernel_size = new_size;
	CHECK(read_check(&v, &h, 0, 256 << 10, 3) == (ssize_t)new_size);
	CHECK(read_check(&v, &h, 96 << 10, 128 << 10, 3) == (ssize_t)(new_size - (96 << 10)));
	/* Not past what the source has either. */
	v.kernel_size = UINT64_MAX;
	CHECK(read_check(&v, &h, 0, 1 << 20, 3) == (ssize_t)new_size);
	h_close(&v, &h);
	env_fini(&v);
}

/* ---- P1: a complete record's data file never changes in place ------------ */

/* The data file of name's record, opened as the kernel does for a
 * passthrough open: it must keep reading the file's bytes, whatever the
 * cache does with the record afterwards. */
static int hold_data(struct env *v, struct efs_inode *ino)
{
	char p[256];

	record_path(v, (uint64_t)ino->ino, "data", p, sizeof(p));
	return open(p, O_RDONLY);
}

static bool held_bytes_right(int fd, uint64_t size, unsigned seed)
{
	unsigned char *b = malloc(size);
	bool ok = b && pread(fd, b, size, 0) == (ssize_t)size && bytes_are(b, 0, size, seed);

	free(b);
	return ok;
}

static void test_complete_never_punched(bool restart)
{
	struct env v;
	struct handle h;
	struct efs_inode *m, *n;
	char meta[256];
	int held;

	/* Room for five chunks and two records' metadata. */
	env_init(&v, 5 * CS + 2 * BLK);
	m = cached_file(&v, "m", 4 * CS, 4);
	held = hold_data(&v, m);
	CHECK(held >= 0);
	CHECK(held_bytes_right(held, 4 * CS, 4));
	record_path(&v, (uint64_t)m->ino, "meta", meta, sizeof(meta));
	if (restart) {
		/* The reader outlives the daemon (kill -9): the next one does
		 * not know it. */
		env_down(&v);
		env_up(&v);
	}

	/* Another file needs the room: m is the coldest, and complete, so it
	 * goes whole (unlinked), never chunk by chunk (hole punches). */
	n = cached_file(&v, "n", 4 * CS, 5);
	CHECK(!exists(meta));
	CHECK(held_bytes_right(held, 4 * CS, 4));
	CHECK(st(&v, ST_evicted_bytes) >= 4 * CS);
	CHECK(stat_line(&v, "cache_usage_bytes") <= 5 * CS + 2 * BLK);
	close(held);

	/* A change on the source: the old data file is replaced, not
	 * truncated. */
	held = hold_data(&v, n);
	CHECK(held >= 0);
	write_file(&v, "n", 4 * CS, 6);
	{
		struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_sec = 1000000000}};

		CHECK(utimensat(v.f.root, "n", ts, 0) == 0);
	}
	n = lookup(&v, "n");
	CHECK(h_open(&v, n, &h, NULL) == 0);
	read_all(&v, &h, 4 * CS, 6);
	wait_stored(&v);
	h_close(&v, &h);
	CHECK(held_bytes_right(held, 4 * CS, 5));
	close(held);
	env_fini(&v);
}

/* A record never complete may lose single chunks (punched). */
static void test_incomplete_punched(void)
{
	struct env v;
	struct handle h;
	struct efs_inode *big;

	env_init(&v, 4 * CS + 2 * BLK);
	big = make_file(&v, "big", 8 * CS, 7); /* never fits: never complete */
	CHECK(h_open(&v, big, &h, NULL) == 0);
	read_all(&v, &h, 8 * CS, 7);
	wait_stored(&v);
	CHECK(disk_slot_len(&v, big, 0) == 0);   /* the coldest went */
	CHECK(disk_slot_len(&v, big, 7) == CS);  /* the newest stayed */
	CHECK(stat_line(&v, "cache_usage_bytes") <= 4 * CS + 2 * BLK);
	read_all(&v, &h, 8 * CS, 7);
	h_close(&v, &h);
	env_fini(&v);
}

/* ---- P1: evict beside a passthrough open that came while it waited ------ */

/* passthrough.c answers opens with kernel backing ids (libfuse >= 3.17 and
 * a kernel that agreed at INIT), which a unit test has neither of.  This
 * program's pt_open_locked and pt_release_locked stand in for it (the
 * static library links them instead of passthrough.c's): the rules of
 * passthrough.h over struct pt_entry, with made-up ids.  Only the evict
 * test below opens through cache_pt_open. */
static int fake_ids; /* atomic: backing ids handed out */
static int fake_req; /* the requests' stand-in (never looked into) */

int pt_open_locked(struct pt_entry *pe, void *req, bool ro, bool unchanged, bool eligible,
		   int data_fd, uint64_t data_size, int *backing_id)
{
	struct stat s;

	(void)req;
	*backing_id = 0;
	if (pe->opens > 0) {
		if (!ro || !unchanged)
			return ro ? -EBUSY : -ETXTBSY;
		pe->opens++;
		*backing_id = pe->backing_id;
		return PT_PASSTHROUGH;
	}
	if (ro && eligible && !pe->cached && data_fd >= 0 && fstat(data_fd, &s) == 0 &&
	    (uint64_t)s.st_size == data_size) {
		pe->backing_id = __atomic_add_fetch(&fake_ids, 1, __ATOMIC_RELAXED);
		pe->opens = 1;
		*backing_id = pe->backing_id;
		return PT_PASSTHROUGH;
	}
	pe->cached++;
	return PT_CACHED;
}

void pt_release_locked(struct pt_entry *pe, void *req, enum pt_mode mode)
{
	(void)req;
	if (mode == PT_CACHED && pe->cached)
		pe->cached--;
	if (mode == PT_PASSTHROUGH && pe->opens && --pe->opens == 0)
		pe->backing_id = 0;
}

/* This program's pread holds reads of data files at read_gate, for the
 * threads that ask for it: a hit whose copy waits there keeps its chunk
 * pinned.  With 64-bit file offsets the headers name this symbol pread64. */
static struct gate read_gate = GATE_INIT;
static _Thread_local bool reads_held;

ssize_t pread(int fd, void *buf, size_t len, off_t off)
{
	ssize_t (*real)(int, void *, size_t, off_t);

	*(void **)&real = dlsym(RTLD_NEXT, "pread64");
	if (reads_held && is_data_file(fd))
		gate_pass(&read_gate);
	return real(fd, buf, len, off);
}

/* Thread tid sleeps in a futex: it waits on a mutex or a condition
 * variable (Linux's /proc/self/task/TID/syscall starts with the number of
 * the call a blocked thread is in, and says "running" otherwise). */
static bool in_futex(pid_t tid)
{
	char p[64], line[128];
	long nr = -1;
	FILE *f;

	snprintf(p, sizeof(p), "/proc/self/task/%d/syscall", (int)tid);
	f = fopen(p, "r");
	if (!f)
		return false;
	if (!fgets(line, sizeof(line), f) || sscanf(line, "%ld", &nr) != 1)
		nr = -1;
	fclose(f);
	return nr == SYS_futex;
}

struct evict_arg {
	struct env *v;
	uint64_t ino;
	pid_t tid;  /* atomic: its thread, once started */
	int r;
	bool done;  /* atomic */
};

/* efscachectl evict of the file. */
static void *evict_main(void *p)
{
	struct evict_arg *a = p;
	uint64_t bytes = 0, chunks = 0;

	__atomic_store_n(&a->tid, gettid(), __ATOMIC_RELEASE);
	a->r = cache_evict_ino(a->v->c, a->ino, &bytes, &chunks);
	__atomic_store_n(&a->done, true, __ATOMIC_RELEASE);
	return NULL;
}

struct hit_arg {
	struct env *v;
	struct handle *h;
	ssize_t n;
};

/* A hit on chunk 0 whose copy out of the data file waits at read_gate. */
static void *held_hit_main(void *p)
{
	struct hit_arg *a = p;

	reads_held = true;
	a->n = read_check(a->v, a->h, 0, CS, 13);
	return NULL;
}

/* efscachectl evict waits until nothing uses the record (no BUSY chunk, no
 * pin), then removes it whole.  A read-only open may come meanwhile and
 * be answered with passthrough (every chunk cached and verified): from
 * then on the kernel reads the data file, and evict must answer EBUSY and
 * leave the record alone, however quiet it found it before its wait. */
static void test_evict_waits_then_passthrough(void)
{
	struct env v;
	struct handle h;
	struct efs_inode *ino;
	struct evict_arg ea;
	struct hit_arg ha;
	pthread_t evictor, reader;
	struct stat before, after;
	char data[256], meta[256];
	uint64_t bytes = 0, chunks = 0;
	unsigned reads;
	int mode, id = 0, held, asleep, i;

	env_init(&v, 64u << 20);
	ino = cached_file(&v, "ev", 4 * CS, 13);
	record_path(&v, (uint64_t)ino->ino, "data", data, sizeof(data));
	record_path(&v, (uint64_t)ino->ino, "meta", meta, sizeof(meta));
	CHECK(stat(data, &before) == 0);
	held = hold_data(&v, ino); /* to read the bytes, whatever happens to the name */
	CHECK(held >= 0);
	CHECK(h_open(&v, ino, &h, NULL) == 0);
	signal(SIGALRM, on_alarm);
	alarm(30);

	/* A hit in progress: chunk 0 pinned while its copy waits. */
	gate_set(&read_gate, true);
	ha = (struct hit_arg){.v = &v, .h = &h};
	CHECK(pthread_create(&reader, NULL, held_hit_main, &ha) == 0);
	CHECK(gate_wait_held(&read_gate));

	/* evict waits for the pin to go: its thread sleeps in a futex, twice
	 * 10 ms apart (nothing else it could sleep on is held: the hit waits
	 * at the gate without the entry's mutex). */
	ea = (struct evict_arg){.v = &v, .ino = (uint64_t)ino->ino};
	CHECK(pthread_create(&evictor, NULL, evict_main, &ea) == 0);
	for (asleep = 0, i = 0; asleep < 2 && i < 2000; i++) {
		pid_t tid = __atomic_load_n(&ea.tid, __ATOMIC_ACQUIRE);

		asleep = tid && in_futex(tid) ? asleep + 1 : 0;
		usleep(10000);
	}
	CHECK(asleep == 2);

	/* Meanwhile a read-only open, unchanged: passthrough. */
	mode = cache_pt_open(v.c, ino, &fake_req, true, true, &id);
	CHECK(mode == PT_PASSTHROUGH && id > 0);
	CHECK(!__atomic_load_n(&ea.done, __ATOMIC_ACQUIRE));

	/* The hit ends, evict wakes: the kernel reads the data file now. */
	gate_set(&read_gate, false);
	pthread_join(reader, NULL);
	CHECK(ha.n == CS);
	pthread_join(evictor, NULL);
	CHECK(ea.r == -EBUSY);
	CHECK(stat(data, &after) == 0 && after.st_ino == before.st_ino &&
	      after.st_size == before.st_size && after.st_blocks == before.st_blocks);
	CHECK(exists(meta));
	CHECK(held_bytes_right(held, 4 * CS, 13));
	reads = fake_reads(&v.f);
	read_all(&v, &h, 4 * CS, 13);
	CHECK(fake_reads(&v.f) == reads);

	/* Once the passthrough open is released, evict removes the record. */
	cache_pt_close(v.c, ino, &fake_req, mode);
	CHECK(cache_evict_ino(v.c, (uint64_t)ino->ino, &bytes, &chunks) == 0);
	CHECK(bytes == 4 * CS && chunks == 4);
	CHECK(!exists(data) && !exists(meta));
	CHECK(held_bytes_right(held, 4 * CS, 13));
	alarm(0);
	h_close(&v, &h);
	close(held);
	env_fini(&v);
}

/* ---- H1: verify racing an unlink ---------------------------------------- */

struct race_arg {
	struct env *v;
	struct efs_inode *ino;
	unsigned calls;
};

static int unlink_during_verify(const struct cache_verify_report *rep, void *p)
{
	struct race_arg *a = p;

	(void)rep;
	/* Called with no lock held, between two chunks of the file. */
	if (++a->calls == 2)
		cache_source_gone(a->v->c, a->ino->dev, (uint64_t)a->ino->ino);
	return 0;
}

static void test_verify_races_unlink(void)
{
	struct env v;
	struct handle h;
	struct efs_inode *ino;
	struct cache_verify_report rep;
	struct race_arg a;

	env_init(&v, 64u << 20);
	ino = make_file(&v, "vr", 8 * CS, 8);
	CHECK(h_open(&v, ino, &h, NULL) == 0);
	read_all(&v, &h, 8 * CS, 8);
	wait_stored(&v);
	a = (struct race_arg){.v = &v, .ino = ino};
	CHECK(cache_verify_all(v.c, &rep, unlink_during_verify, &a) == 0);
	CHECK(a.calls >= 2);
	CHECK(rep.chunks_bad == 0);
	CHECK(rep.chunks_checked < 8); /* the record went: verify stopped there */
	/* The handle still reads its file, from the source. */
	read_all(&v, &h, 8 * CS, 8);
	h_close(&v, &h);
	env_fini(&v);
}

/* ---- H2: prefetch while records cannot be opened ------------------------ */

static void test_prefetch_emfile(void)
{
	struct env v;
	struct handle h;
	struct efs_inode *ino;
	struct rlimit old, low;

	env_init_full(&v, 64u << 20, 4, VERIFY_ONCE);
	ino = make_file(&v, "pf", 32 * CS, 9);
	CHECK(h_open(&v, ino, &h, NULL) == 0);
	CHECK(read_check_seq(&v, &h, 0, CS, 9, true) == CS);
	wait_stored(&v);
	h_close(&v, &h);
	itab_forget(v.t, ino, 1);

	/* No fd to spare for a record (a prefetch job that found no record
	 * once waited for its own chunk: the worker, the chunk and every
	 * reader of it hung). */
	ino = lookup(&v, "pf");
	CHECK(h_open(&v, ino, &h, NULL) == 0);
	signal(SIGALRM, on_alarm);
	alarm(20);
	CHECK(getrlimit(RLIMIT_NOFILE, &old) == 0);
	low = old;
	low.rlim_cur = limit_with_room(0);
	CHECK(setrlimit(RLIMIT_NOFILE, &low) == 0);
	for (unsigned i = 0; i < 32; i++)
		read_check_seq(&v, &h, (uint64_t)i * CS, CS, 9, true);
	CHECK(setrlimit(RLIMIT_NOFILE, &old) == 0);
	wait_stored(&v);
	read_all(&v, &h, 32 * CS, 9);
	alarm(0);
	h_close(&v, &h);
	env_fini(&v);
}

/* ---- H6: memory follows use, not size ----------------------------------- */

static size_t heap_in_use(void)
{
	struct mallinfo2 mi = mallinfo2();

	return mi.uordblks + mi.hblkhd;
}

/* 4 KiB at off through the cache, all zeros (a hole of the source). */
static bool read_zeros(struct env *v, struct handle *h, uint64_t off)
{
	unsigned char b[4096];
	struct cache_read rd;
	ssize_t n = cache_read(v->c, h->ino, h->fd, (off_t)off, sizeof(b), false, v->kernel_size,
			       &rd);
	bool ok = n == (ssize_t)sizeof(b);

	if (n < 0)
		return false;
	gather(&rd, b);
	for (unsigned k = 0; ok && k < sizeof(b); k++)
		ok = b[k] == 0;
	cache_read_done(v->c, &rd);
	return ok;
}

static void test_huge_sparse(void)
{
	/* 15 TiB: ext4's limit is 16; a quarter of a billion 64 KiB chunks. */
	const uint64_t size = 15ULL << 40;
	struct env v;
	struct handle h;
	struct efs_inode *ino;
	size_t before, after;
	int fd;

	env_init(&v, 64u << 20);
	fd = openat(v.f.root, "sparse", O_CREAT | O_WRONLY, 0644);
	CHECK(fd >= 0 && ftruncate(fd, (off_t)size) == 0);
	if (fd >= 0)
		close(fd);
	ino = lookup(&v, "sparse");
	malloc_trim(0);
	before = heap_in_use();
	CHECK(h_open(&v, ino, &h, NULL) == 0);
	CHECK(read_zeros(&v, &h, 0));
	CHECK(read_zeros(&v, &h, 7ULL << 40));
	CHECK(read_zeros(&v, &h, size - 4096));
	wait_stored(&v);
	after = heap_in_use();
	if (after > before + (1 << 20))
		fprintf(stderr, "heap grew by %zu bytes opening a 15 TiB sparse file\n",
			after - before);
	CHECK(after <= before + (1 << 20));
	h_close(&v, &h);

	/* Loaded again from disk (its slots mostly holes): the same. */
	itab_forget(v.t, ino, 1);
	ino = lookup(&v, "sparse");
	CHECK(h_open(&v, ino, &h, NULL) == 0);
	CHECK(read_zeros(&v, &h, 7ULL << 40));
	after = heap_in_use();
	CHECK(after <= before + (1 << 20));
	h_close(&v, &h);
	env_fini(&v);
}

/* ---- M5: nothing waits for the startup index ---------------------------- */

/* The index stats every record (fstatat): this program's fstatat holds
 * those of metadata files at stat_gate, so the index cannot complete
 * while it is closed. */
static struct gate stat_gate = GATE_INIT;

static int gated_fstatat(const char *sym, int dirfd, const char *path, struct stat *st,
			 int flags)
{
	int (*real)(int, const char *, struct stat *, int);

	*(void **)&real = dlsym(RTLD_NEXT, sym);
	if (path && strstr(path, ".meta"))
		gate_pass(&stat_gate);
	return real(dirfd, path, st, flags);
}

/* With 64-bit file offsets the headers name this symbol fstatat64. */
int fstatat(int dirfd, const char *path, struct stat *st, int flags)
{
	return gated_fstatat("fstatat64", dirfd, path, st, flags);
}

static void test_index_never_waits(void)
{
	struct env v;
	struct handle h;
	struct efs_inode *ino;
	unsigned reads;
	uint64_t stored;

	env_init(&v, 64u << 20);
	cached_file(&v, "old", 4 * CS, 10);

	/* A restart whose index is stuck on the first record it stats. */
	gate_set(&stat_gate, true);
	env_down(&v);
	env_up_nowait(&v);
	CHECK(gate_wait_held(&stat_gate));
	CHECK(stat_line(&v, "cache_index_ready") == 0);

	/* A cached file is served from the cache meanwhile... */
	signal(SIGALRM, on_alarm);
	alarm(20);
	ino = lookup(&v, "old");
	CHECK(h_open(&v, ino, &h, NULL) == 0);
	reads = fake_reads(&v.f);
	read_all(&v, &h, 4 * CS, 10);
	CHECK(fake_reads(&v.f) == reads);
	h_close(&v, &h);
	/* ...and a miss is answered from the source without waiting; it is
	 * not stored while the usage is unknown. */
	stored = st(&v, ST_chunks_stored);
	ino = make_file(&v, "new", 4 * CS, 11);
	CHECK(h_open(&v, ino, &h, NULL) == 0);
	read_all(&v, &h, 4 * CS, 11);
	wait_stored(&v);
	CHECK(st(&v, ST_chunks_stored) == stored);
	CHECK(st(&v, ST_fallbacks) >= 4);
	h_close(&v, &h);
	alarm(0);

	gate_set(&stat_gate, false);
	for (int i = 0; i < 5000 && !stat_line(&v, "cache_index_ready"); i++)
		usleep(1000);
	CHECK(stat_line(&v, "cache_index_ready") == 1);
	CHECK(h_open(&v, ino, &h, NULL) == 0);
	read_all(&v, &h, 4 * CS, 11);
	wait_stored(&v);
	CHECK(st(&v, ST_chunks_stored) == stored + 4);
	h_close(&v, &h);
	env_fini(&v);
}

/* ---- write-behind within its bound in bytes while the disk stalls ------- */

/* This program's pwrite holds writes to data files at write_gate, as on a
 * disk that stalls: those of every thread but the test's own (the
 * write-behind worker's).  With 64-bit file offsets the headers name this
 * symbol pwrite64. */
static struct gate write_gate = GATE_INIT;
static _Thread_local bool writes_pass; /* the test's own thread */

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
	ssize_t (*real)(int, const void *, size_t, off_t);

	*(void **)&real = dlsym(RTLD_NEXT, "pwrite64");
	if (!writes_pass && gate_is_closed(&write_gate) && is_data_file(fd))
		gate_pass(&write_gate);
	return real(fd, buf, len, off);
}

/* A reader hands its fetched chunk's buffer to write-behind; past
 * WB_MAX_BYTES of buffers held it stores the chunk itself, so a stalled
 * disk cannot make write-behind hold the memory of every chunk read
 * meanwhile.  The bound is lowered to four chunks here (256 MiB is
 * out of a unit test's reach, and the queue's 256 chunks of 64 KiB make
 * only 16 MiB), and the worker's writes stall while 16 chunks are read. */
static void test_write_behind_bounded(void)
{
	const uint64_t limit = 4 * CS;
	const unsigned n = 16;
	struct env v;
	struct handle h;
	struct efs_inode *ino;
	unsigned reads;

	env_init(&v, 64u << 20);
	cache_test_set_wb_limit(v.c, limit);
	writes_pass = true;
	ino = make_file(&v, "wb", (n + 1) * CS, 12);
	CHECK(h_open(&v, ino, &h, NULL) == 0);
	/* Chunk 0 makes the record: the writes below only fill it. */
	CHECK(read_check(&v, &h, 0, CS, 12) == CS);
	wait_stored(&v);
	CHECK(st(&v, ST_chunks_stored) == 1);

	gate_set(&write_gate, true);
	for (unsigned i = 1; i <= n; i++) {
		CHECK(read_check(&v, &h, (uint64_t)i * CS, CS, 12) == CS);
		CHECK(cache_test_wb_bytes(v.c) <= limit);
	}
	/* The worker stalls in the write of chunk 1; chunks 1-4 fill the
	 * bound, and the readers of chunks 5-16 stored theirs themselves. */
	CHECK(gate_wait_held(&write_gate));
	CHECK(cache_test_wb_bytes(v.c) == limit);
	CHECK(stat_line(&v, "write_behind_pending") == limit / CS);
	CHECK(st(&v, ST_chunks_stored) == 1 + n - limit / CS);
	CHECK(disk_slot_len(&v, ino, 1) == 0);
	for (unsigned i = 5; i <= n; i++)
		CHECK(disk_slot_len(&v, ino, i) == CS);

	/* The disk is back: write-behind catches up, every chunk is a hit. */
	gate_set(&write_gate, false);
	wait_stored(&v);
	CHECK(cache_test_wb_bytes(v.c) == 0);
	CHECK(st(&v, ST_chunks_stored) == 1 + n);
	reads = fake_reads(&v.f);
	for (unsigned i = 0; i <= n; i++)
		CHECK(read_check(&v, &h, (uint64_t)i * CS, CS, 12) == CS);
	CHECK(fake_reads(&v.f) == reads);
	h_close(&v, &h);
	writes_pass = false;
	env_fini(&v);
}

/* ---- M1: many files read once ------------------------------------------- */

static void test_many_files(void)
{
	const char *env = getenv("EFSCACHE_MANY_FILES");
	const unsigned nfiles = env ? (unsigned)strtoul(env, NULL, 10) : 5000;
	/* Room for a quarter of them (each: a data block and a metadata one). */
	const uint64_t limit = (uint64_t)nfiles / 4 * 2 * BLK;
	struct env v;
	size_t before, after;
	double per_file;

	env_init(&v, limit);
	malloc_trim(0);
	before = heap_in_use();
	for (unsigned i = 0; i < nfiles; i++) {
		char name[32];
		struct efs_inode *ino;
		struct handle h;

		snprintf(name, sizeof(name), "s%u", i);
		ino = make_file(&v, name, 100, i);
		if (!ino || h_open(&v, ino, &h, NULL) != 0) {
			CHECK(!"open");
			break;
		}
		if (read_check(&v, &h, 0, 4096, i) != 100)
			CHECK(!"read");
		h_close(&v, &h);
		itab_forget(v.t, ino, 1);
	}
	wait_stored(&v);
	malloc_trim(0);
	after = heap_in_use();
	per_file = (double)(after > before ? after - before : 0) / nfiles;
	printf("# %u files read once: heap %+.1f MiB, %.0f bytes per file; usage %llu of %llu; "
	       "stored %llu, evictions %llu, fallbacks %llu\n",
	       nfiles, ((double)after - (double)before) / (1 << 20), per_file,
	       (unsigned long long)stat_line(&v, "cache_usage_bytes"), (unsigned long long)limit,
	       (unsigned long long)st(&v, ST_chunks_stored), (unsigned long long)st(&v, ST_evictions),
	       (unsigned long long)st(&v, ST_fallbacks));
	/* 200 bytes a file: a million files under 200 MiB. */
	CHECK(per_file <= 200);
	/* cache_size holds: records go whole, metadata too. */
	CHECK(stat_line(&v, "cache_usage_bytes") <= limit);
	CHECK(st(&v, ST_evictions) >= nfiles / 2);
	env_fini(&v);
}

int main(void)
{
	test_emfile_at_load();
	test_unvalidated_load();
	test_data_removed();
	test_data_cut();
	test_grown_while_open();
	test_complete_never_punched(false);
	test_complete_never_punched(true);
	test_incomplete_punched();
	test_evict_waits_then_passthrough();
	test_verify_races_unlink();
	test_prefetch_emfile();
	test_huge_sparse();
	test_index_never_waits();
	test_write_behind_bounded();
	test_many_files();
	return check_done("test_cache_own");
}
