/* store.c - cache_dir layout, metadata records, chunk I/O.
 *
 * State: an fd of cache_dir (every path below it is opened relative to
 * it), the lock fd, and the fd of the v1/ directory.  Callers serialize
 * access to one record (the cache entry's lock); distinct records are
 * independent files.  One lock of its own, fds_mu, a leaf: the sweeper
 * replaces the three fds when cache_dir is recreated (store_check_dir,
 * write-locked) while readers, writers and the control thread use them
 * (read-locked for the one call that takes the fd), so no call ever gets
 * an fd that was closed, or reused for another file, under it.  See
 * store.h for the format.
 *
 * Nothing here changes the bytes of an existing data file but a chunk
 * write and a hole punch the cache asks for: a new record gets a new data
 * file (the old one is unlinked), a record is removed by unlinking, and
 * no data file is ever created for a record that lost its own.  The
 * startup scan only stats.
 */
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "checksum.h"
#include "io.h"
#include "le.h"

#define LAYOUT_DIR "v1"
/* At start, how long a cache_dir locked by a daemon that is exiting (just
 * unmounted) is waited for before it is called busy, and how often its lock
 * is tried meanwhile. */
#define LOCK_GRACE_MS 3000
#define LOCK_POLL_MS 100
static const unsigned char magic[8] = {'E', 'F', 'S', 'C', 'M', 'E', 'T', 'A'};

struct store {
	char *path;
	int dir_fd;    /* cache_dir */
	int layout_fd; /* cache_dir/v1 */
	int lock_fd;
	bool lost;     /* atomic: cache_dir was recreated and another daemon
			* holds its lock; every record call fails with -EBUSY */
	dev_t dev;
	ino_t ino;
	time_t opened_at; /* files older than this are not being written by us */
	pthread_rwlock_t fds_mu; /* dir_fd, layout_fd, lock_fd, dev, ino */
};

/* Read-lock the fds for one call that uses them (see the top comment). */
static void fds_rdlock(struct store *s)
{
	pthread_rwlock_rdlock(&s->fds_mu);
}

static void fds_unlock(struct store *s)
{
	pthread_rwlock_unlock(&s->fds_mu);
}

/* The byte offsets below are the header's and the slot's fields as the
 * table in store.h lists them. */
void store_encode_header(const struct store_identity *id, uint32_t chunk_size, uint32_t nchunks,
			 unsigned char out[STORE_HEADER_SIZE])
{
	memset(out, 0, STORE_HEADER_SIZE);
	memcpy(out, magic, 8);
	put32(out + 8, STORE_FORMAT_VERSION);
	put32(out + 12, chunk_size);
	put64(out + 16, id->ino);
	put64(out + 24, id->size);
	put64(out + 32, (uint64_t)id->mtime_sec);
	put32(out + 40, id->mtime_nsec);
	put32(out + 44, nchunks);
	put64(out + 48, (uint64_t)id->ctime_sec);
	put32(out + 56, id->ctime_nsec);
	put32(out + 60, (uint32_t)csum64(out, 60));
}

int store_decode_header(const unsigned char in[STORE_HEADER_SIZE], struct store_identity *id,
			uint32_t *chunk_size, uint32_t *nchunks, uint32_t *hdr_check)
{
	uint64_t n;
	uint32_t cs;

	if (memcmp(in, magic, 8) || get32(in + 8) != STORE_FORMAT_VERSION)
		return -EBADMSG;
	if (get32(in + 60) != (uint32_t)csum64(in, 60))
		return -EBADMSG;
	id->ino = get64(in + 16);
	id->size = get64(in + 24);
	id->mtime_sec = (int64_t)get64(in + 32);
	id->mtime_nsec = get32(in + 40);
	id->ctime_sec = (int64_t)get64(in + 48);
	id->ctime_nsec = get32(in + 56);
	cs = get32(in + 12);
	/* A checksummed header can still carry nonsense from a buggy writer. */
	if (cs == 0 || (cs & (cs - 1)))
		return -EBADMSG;
	n = (id->size + cs - 1) / cs;
	if (n != get32(in + 44))
		return -EBADMSG;
	*chunk_size = cs;
	*nchunks = (uint32_t)n;
	*hdr_check = get32(in + 60);
	return 0;
}

static uint32_t slot_check(uint32_t hdr_check, uint32_t idx, const struct store_slot *slot)
{
	unsigned char b[16];

	put32(b, idx);
	put64(b + 4, slot->hash);
	put32(b + 12, slot->len);
	return (uint32_t)csum64_seed(b, sizeof(b), hdr_check);
}

void store_encode_slot(uint32_t hdr_check, uint32_t idx, const struct store_slot *slot,
		       unsigned char out[STORE_SLOT_SIZE])
{
	if (slot->len == 0) {
		memset(out, 0, STORE_SLOT_SIZE);
		return;
	}
	put64(out, slot->hash);
	put32(out + 8, slot->len);
	put32(out + 12, slot_check(hdr_check, idx, slot));
}

bool store_decode_slot(uint32_t hdr_check, uint32_t idx, const unsigned char in[STORE_SLOT_SIZE],
		       struct store_slot *slot)
{
	struct store_slot s = {.hash = get64(in), .len = get32(in + 8)};

	if (s.len == 0 || get32(in + 12) != slot_check(hdr_check, idx, &s))
		return false;
	*slot = s;
	return true;
}

/* ---- cache_dir ----------------------------------------------------------- */

/* Format a message into err, append ": strerror(e)", return -e. */
static int seterr(char *err, size_t len, int e, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int seterr(char *err, size_t len, int e, const char *fmt, ...)
{
	va_list ap;
	size_t n;

	if (!err || !len)
		return -e;
	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
	n = strlen(err);
	snprintf(err + n, len - n, ": %s", strerror(e));
	return -e;
}

/* Refuse a cache_dir another user could tamper with. */
static int check_trust(const struct stat *st, const char *path, char *err, size_t errlen)
{
	if (!S_ISDIR(st->st_mode)) {
		snprintf(err, errlen, "cache_dir '%s' is not a directory", path);
		return -ENOTDIR;
	}
	if (st->st_uid != geteuid()) {
		snprintf(err, errlen,
			 "cache_dir '%s' is owned by uid %u, not by us (uid %u): refusing to "
			 "trust it",
			 path, (unsigned)st->st_uid, (unsigned)geteuid());
		return -EPERM;
	}
	if (st->st_mode & (S_IWGRP | S_IWOTH)) {
		snprintf(err, errlen,
			 "cache_dir '%s' is writable by group or others (mode %04o): refusing to "
			 "trust it; chmod 700 it",
			 path, (unsigned)(st->st_mode & 07777));
		return -EPERM;
	}
	return 0;
}

/* Open the cache_dir itself (creating it 0700), refusing symlinks. */
static int open_cache_dir(const char *path, char *err, size_t errlen)
{
	struct stat st;
	int fd;

	if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode)) {
		snprintf(err, errlen, "cache_dir '%s' is a symlink: refusing to follow it", path);
		return -ELOOP;
	}
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return seterr(err, errlen, errno, "cannot create cache_dir '%s'", path);
	fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ELOOP || errno == ENOTDIR) {
			snprintf(err, errlen,
				 "cache_dir '%s' is a symlink or not a directory: refusing it",
				 path);
			return -errno;
		}
		return seterr(err, errlen, errno, "cannot open cache_dir '%s'", path);
	}
	if (fstat(fd, &st) < 0) {
		int e = errno;
		close(fd);
		return seterr(err, errlen, e, "cannot stat cache_dir '%s'", path);
	}
	{
		int r = check_trust(&st, path, err, errlen);
		if (r < 0) {
			close(fd);
			return r;
		}
	}
	return fd;
}

static int open_layout(struct store *s)
{
	int fd;

	if (mkdirat(s->dir_fd, LAYOUT_DIR, 0700) < 0 && errno != EEXIST)
		return -errno;
	fd = openat(s->dir_fd, LAYOUT_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

static int take_lock(struct store *s, int grace_ms, char *err, size_t errlen)
{
	char pid[32] = "";
	int fd = openat(s->dir_fd, "lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	ssize_t n;

	if (fd < 0)
		return seterr(err, errlen, errno, "cannot open the lock file in cache_dir '%s'",
			      s->path);
	/* A daemon that was just unmounted may still be tearing down: give it
	 * a moment before calling the cache_dir busy. */
	for (int tries = 0; flock(fd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK &&
			    tries < grace_ms / LOCK_POLL_MS;
	     tries++)
		usleep(LOCK_POLL_MS * 1000);
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int e = errno;
		n = pread(fd, pid, sizeof(pid) - 1, 0);
		pid[n > 0 ? n : 0] = '\0';
		pid[strcspn(pid, "\n")] = '\0';
		close(fd);
		if (e == EWOULDBLOCK) {
			snprintf(err, errlen,
				 "cache_dir '%s' is in use by another efscache (pid %s); give each "
				 "mount its own cache_dir",
				 s->path, pid[0] ? pid : "unknown");
			return -EBUSY;
		}
		return seterr(err, errlen, e, "cannot lock cache_dir '%s'", s->path);
	}
	s->lock_fd = fd;
	store_note_pid(s);
	return 0;
}

void store_note_pid(struct store *s)
{
	char pid[32];
	int n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());

	/* Only a hint, for the "in use" message and for scripts. */
	if (ftruncate(s->lock_fd, 0) == 0 && pwrite(s->lock_fd, pid, (size_t)n, 0) < 0)
		return;
}

int store_open(struct store **out, const char *cache_dir, char *err, size_t errlen)
{
	struct store *s = calloc(1, sizeof(*s));
	struct stat st;
	int r;

	if (!s)
		return -ENOMEM;
	pthread_rwlock_init(&s->fds_mu, NULL);
	s->dir_fd = s->layout_fd = s->lock_fd = -1;
	/* A second of slack: file times may lag the clock by a tick. */
	s->opened_at = time(NULL) - 1;
	s->path = strdup(cache_dir);
	if (!s->path) {
		r = -ENOMEM;
		goto err_free;
	}
	r = open_cache_dir(cache_dir, err, errlen);
	if (r < 0)
		goto err_free;
	s->dir_fd = r;
	fstat(s->dir_fd, &st);
	s->dev = st.st_dev;
	s->ino = st.st_ino;
	r = take_lock(s, LOCK_GRACE_MS, err, errlen);
	if (r < 0)
		goto err_free;
	r = open_layout(s);
	if (r < 0) {
		seterr(err, errlen, -r, "cannot create the layout in cache_dir '%s'", s->path);
		goto err_free;
	}
	s->layout_fd = r;
	*out = s;
	return 0;

err_free:
	store_close(s);
	return r;
}

void store_close(struct store *s)
{
	if (!s)
		return;
	if (s->layout_fd >= 0)
		close(s->layout_fd);
	if (s->lock_fd >= 0)
		close(s->lock_fd);
	if (s->dir_fd >= 0)
		close(s->dir_fd);
	pthread_rwlock_destroy(&s->fds_mu);
	free(s->path);
	free(s);
}

const char *store_path(const struct store *s)
{
	return s->path;
}

static bool is_lost(const struct store *s)
{
	return __atomic_load_n(&s->lost, __ATOMIC_ACQUIRE);
}

bool store_dir_ok(const struct store *s)
{
	struct store *w = (struct store *)s; /* the lock only */
	struct stat st, now;
	bool ok;

	if (is_lost(s))
		return false;
	fds_rdlock(w);
	ok = fstat(s->dir_fd, &st) == 0 && st.st_nlink > 0 && stat(s->path, &now) == 0 &&
	     now.st_dev == s->dev && now.st_ino == s->ino && fstat(s->layout_fd, &st) == 0 &&
	     st.st_nlink > 0;
	fds_unlock(w);
	return ok;
}

static int replace_dir_locked(struct store *s, int fd);

int store_check_dir(struct store *s)
{
	char err[256];
	int fd, r;

	if (store_dir_ok(s))
		return 0;
	/* Gone or replaced (or lost before): open or make it again, with the
	 * same checks as at start. */
	fd = open_cache_dir(s->path, err, sizeof(err));
	if (fd < 0)
		return fd;
	/* Rare (cache_dir was removed): the few calls below run under the
	 * write lock so that no other thread sees a closed fd. */
	pthread_rwlock_wrlock(&s->fds_mu);
	r = replace_dir_locked(s, fd);
	fds_unlock(s);
	return r;
}

static int replace_dir_locked(struct store *s, int fd)
{
	struct stat st;
	char err[256];

	close(s->dir_fd);
	s->dir_fd = fd;
	fstat(fd, &st);
	s->dev = st.st_dev;
	s->ino = st.st_ino;
	/* The old lock guards a directory nobody can reach by its name any
	 * more.  Without the new one we must not touch the new directory:
	 * another daemon may have made it its cache_dir meanwhile. */
	if (s->lock_fd >= 0)
		close(s->lock_fd);
	s->lock_fd = -1;
	if (take_lock(s, 0, err, sizeof(err)) < 0)
		goto err_lost;
	fd = open_layout(s);
	if (fd < 0) {
		close(s->lock_fd);
		s->lock_fd = -1;
		return fd;
	}
	if (s->layout_fd >= 0)
		close(s->layout_fd);
	s->layout_fd = fd;
	__atomic_store_n(&s->lost, false, __ATOMIC_RELEASE);
	return 1;

err_lost:
	__atomic_store_n(&s->lost, true, __ATOMIC_RELEASE);
	return -EBUSY;
}

/* ---- records ---------------------------------------------------------- */

int store_key_of(const char *source_root, uint64_t dev, uint64_t ino, struct store_key *k)
{
	/* On the stack: a fallback key for a failed malloc would name the same
	 * file differently (or two files alike) depending on memory pressure. */
	unsigned char buf[PATH_MAX + 1 + 16];
	size_t n = strlen(source_root), len;
	uint64_t h[2];

	if (n >= PATH_MAX)
		return -ENAMETOOLONG;
	memcpy(buf, source_root, n);
	buf[n] = '\0';
	put64(buf + n + 1, ino);
	len = n + 9;
	/* SOURCE's own file system keeps the key of earlier versions; a file
	 * system mounted below SOURCE adds its device, as its inode numbers
	 * repeat those of the others. */
	if (dev) {
		put64(buf + len, dev);
		len += 8;
	}
	csum128(buf, len, h);
	snprintf(k->hex, sizeof(k->hex), "%016" PRIx64 "%016" PRIx64, h[0], h[1]);
	return 0;
}

void store_key_pack(const struct store_key *k, struct store_key_bin *b)
{
	char half[17];

	for (int i = 0; i < 2; i++) {
		memcpy(half, k->hex + 16 * i, 16);
		half[16] = '\0';
		b->h[i] = strtoull(half, NULL, 16);
	}
}

void store_key_unpack(const struct store_key_bin *b, struct store_key *k)
{
	snprintf(k->hex, sizeof(k->hex), "%016" PRIx64 "%016" PRIx64, b->h[0], b->h[1]);
}

/* "XX/KEY.ext" relative to the layout dir. */
static void rel_name(const struct store_key *k, const char *ext, char *buf, size_t len)
{
	snprintf(buf, len, "%.2s/%s.%s", k->hex, k->hex, ext);
}

static int open_rel(struct store *s, const struct store_key *k, const char *ext, int flags)
{
	char name[64];
	int fd;

	rel_name(k, ext, name, sizeof(name));
	fds_rdlock(s);
	fd = openat(s->layout_fd, name, flags | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		fd = -errno;
	fds_unlock(s);
	return fd;
}

int store_readahead(struct store *s, const struct store_key *k)
{
	static const char *const ext[] = {"meta", "data"};
	int fd;

	if (is_lost(s))
		return -EBUSY;
	for (unsigned i = 0; i < 2; i++) {
		/* O_NONBLOCK: a FIFO put in cache_dir in a record's place
		 * must not hold the worker (O_RDWR opens elsewhere do not
		 * block on one either). */
		fd = open_rel(s, k, ext[i], O_RDONLY | O_NONBLOCK);
		if (fd < 0)
			return fd;
		/* Starts the reads and returns; a failure only loses the hint. */
		(void)posix_fadvise(fd, 0, 0, POSIX_FADV_WILLNEED);
		close(fd);
	}
	return 0;
}

/* The whole range or -ENODATA: a record or chunk is never short. */
static int read_full(int fd, void *buf, size_t len, off_t off)
{
	ssize_t n = io_pread_full(fd, buf, len, off);

	if (n < 0)
		return (int)n;
	return (size_t)n < len ? -ENODATA : 0;
}

int store_open_record(struct store *s, const struct store_key *k, struct store_file *f)
{
	unsigned char hdr[STORE_HEADER_SIZE];
	int r;

	memset(f, 0, sizeof(*f));
	f->meta_fd = f->data_fd = -1;
	if (is_lost(s))
		return -EBUSY;
	r = open_rel(s, k, "meta", O_RDWR);
	if (r < 0)
		return r;
	f->meta_fd = r;
	r = read_full(f->meta_fd, hdr, sizeof(hdr), 0);
	if (r == -ENODATA)
		r = -EBADMSG; /* records are renamed into place whole: short = corrupt */
	if (r == 0)
		r = store_decode_header(hdr, &f->id, &f->chunk_size, &f->nchunks, &f->hdr_check);
	/* Never created here: a record whose data file is gone (a cleaner of
	 * cache_dir, an interrupted rm -rf) has no bytes, whatever its slots
	 * say. */
	if (r == 0) {
		r = open_rel(s, k, "data", O_RDWR);
		if (r >= 0) {
			f->data_fd = r;
			r = 0;
		}
	}
	if (r < 0)
		store_file_close(f);
	return r;
}

/* Slots are read this many at a time (64 KiB). */
#define SLOT_BATCH 4096

static void data_min_raise(struct store_file *f, uint64_t end)
{
	uint64_t cur = __atomic_load_n(&f->data_min, __ATOMIC_RELAXED);

	while (cur < end && !__atomic_compare_exchange_n(&f->data_min, &cur, end, true,
							 __ATOMIC_RELEASE, __ATOMIC_RELAXED))
		;
}

int store_data_intact(const struct store_file *f)
{
	const uint64_t min = __atomic_load_n(&f->data_min, __ATOMIC_ACQUIRE);
	struct stat st;

	if (!min)
		return 0;
	if (fstat(f->data_fd, &st) < 0)
		return -errno;
	return (uint64_t)st.st_size < min ? -ESTALE : 0;
}

int store_each_slot(struct store_file *f,
		    int (*fn)(uint32_t idx, const struct store_slot *slot, void *arg), void *arg)
{
	const off_t end = STORE_HEADER_SIZE + (off_t)f->nchunks * STORE_SLOT_SIZE;
	unsigned char *raw = malloc((size_t)SLOT_BATCH * STORE_SLOT_SIZE);
	uint64_t data_size;
	struct stat st;
	off_t pos = STORE_HEADER_SIZE;
	int r = 0;

	if (!raw)
		return -ENOMEM;
	if (fstat(f->data_fd, &st) < 0) {
		r = -errno;
		goto out;
	}
	data_size = (uint64_t)st.st_size;
	while (pos < end) {
		/* Holes of the slot array are empty slots (a sparse file's
		 * record is mostly hole). */
		off_t data = lseek(f->meta_fd, pos, SEEK_DATA);
		uint32_t first, count;

		if (data < 0) {
			if (errno == ENXIO)
				break; /* only holes from pos on */
			data = pos; /* SEEK_DATA unsupported: read everything */
		}
		if (data >= end)
			break;
		/* Whole slots only. */
		data -= (data - STORE_HEADER_SIZE) % STORE_SLOT_SIZE;
		if (data < pos)
			data = pos;
		first = (uint32_t)((data - STORE_HEADER_SIZE) / STORE_SLOT_SIZE);
		count = f->nchunks - first < SLOT_BATCH ? f->nchunks - first : SLOT_BATCH;
		r = read_full(f->meta_fd, raw, (size_t)count * STORE_SLOT_SIZE, data);
		if (r == -ENODATA)
			r = -EBADMSG;
		if (r < 0)
			goto out;
		for (uint32_t i = 0; i < count; i++) {
			struct store_slot slot;
			uint32_t idx = first + i;

			if (!store_decode_slot(f->hdr_check, idx, raw + (size_t)i * STORE_SLOT_SIZE,
					       &slot))
				continue;
			if ((uint64_t)idx * f->chunk_size + slot.len > data_size)
				continue; /* the data file does not hold it */
			data_min_raise(f, (uint64_t)idx * f->chunk_size + slot.len);
			r = fn(idx, &slot, arg);
			if (r < 0)
				goto out;
		}
		pos = data + (off_t)count * STORE_SLOT_SIZE;
	}
out:
	free(raw);
	return r;
}

static int load_one(uint32_t idx, const struct store_slot *slot, void *arg)
{
	struct store_slot *slots = arg;

	slots[idx] = *slot;
	return 0;
}

int store_load(struct store *s, const struct store_key *k, struct store_file *f,
	       struct store_slot **slots_out)
{
	struct store_slot *slots;
	int r = store_open_record(s, k, f);

	if (r < 0)
		return r;
	slots = calloc(f->nchunks ? f->nchunks : 1, sizeof(*slots));
	r = slots ? store_each_slot(f, load_one, slots) : -ENOMEM;
	if (r < 0) {
		free(slots);
		store_file_close(f);
		return r;
	}
	*slots_out = slots;
	return 0;
}

int store_prepare(const struct store_identity *id, uint32_t chunk_size, struct store_file *f)
{
	unsigned char hdr[STORE_HEADER_SIZE];
	uint64_t n = (id->size + chunk_size - 1) / chunk_size;

	memset(f, 0, sizeof(*f));
	f->meta_fd = f->data_fd = -1;
	if (n > UINT32_MAX)
		return -EFBIG;
	store_encode_header(id, chunk_size, (uint32_t)n, hdr);
	f->id = *id;
	f->chunk_size = chunk_size;
	f->nchunks = (uint32_t)n;
	f->hdr_check = (uint32_t)get32(hdr + 60);
	return 0;
}

/* Replace the record's data file with a new empty one (unlink, then create
 * exclusively): the old file's bytes never change, whoever still reads
 * them.  Returns the fd or -errno.  fds_mu read-locked. */
static int new_data_locked(struct store *s, const struct store_key *k)
{
	char name[64];
	int fd;

	rel_name(k, "data", name, sizeof(name));
	for (int tries = 0; tries < 3; tries++) {
		if (unlinkat(s->layout_fd, name, 0) < 0 && errno != ENOENT)
			return -errno;
		fd = openat(s->layout_fd, name,
			    O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd >= 0 || errno != EEXIST)
			return fd < 0 ? -errno : fd;
	}
	return -EEXIST;
}

int store_create(struct store *s, const struct store_key *k, const struct store_identity *id,
		 uint32_t chunk_size, struct store_file *f)
{
	unsigned char hdr[STORE_HEADER_SIZE];
	char sub[3], tmp[80], name[64];
	struct store_file prep;
	int fd = -1, data_fd, r;

	memset(f, 0, sizeof(*f));
	f->meta_fd = f->data_fd = -1;
	if (is_lost(s))
		return -EBUSY;
	r = store_prepare(id, chunk_size, &prep);
	if (r < 0)
		return r;
	snprintf(sub, sizeof(sub), "%.2s", k->hex);
	store_encode_header(id, chunk_size, prep.nchunks, hdr);
	/* The pid marks it as ours: the startup scan removes only others'. */
	snprintf(tmp, sizeof(tmp), "%s/%s.meta.tmp.%ld", sub, k->hex, (long)getpid());
	rel_name(k, "meta", name, sizeof(name));
	/* Made and renamed in one v1/ directory: the fds stay put meanwhile. */
	fds_rdlock(s);
	if (mkdirat(s->layout_fd, sub, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		fds_unlock(s);
		return r;
	}
	/* The data file first: a crash before the header is renamed into
	 * place leaves the old header over an empty data file, whose slots
	 * then point past its end and count as empty. */
	data_fd = new_data_locked(s, k);
	if (data_fd < 0) {
		fds_unlock(s);
		return data_fd;
	}
	fd = openat(s->layout_fd, tmp, O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		r = -errno;
	if (r == 0)
		r = io_pwrite_full(fd, hdr, sizeof(hdr), 0);
	/* Slots all zero = all empty: a sparse tail costs no blocks. */
	if (r == 0 && ftruncate(fd, STORE_HEADER_SIZE + (off_t)prep.nchunks * STORE_SLOT_SIZE) < 0)
		r = -errno;
	if (r == 0 && renameat(s->layout_fd, tmp, s->layout_fd, name) < 0)
		r = -errno;
	if (r < 0) {
		if (fd >= 0) {
			close(fd);
			unlinkat(s->layout_fd, tmp, 0);
		}
		close(data_fd);
		fds_unlock(s);
		return r;
	}
	fds_unlock(s);
	*f = prep;
	f->meta_fd = fd;
	f->data_fd = data_fd;
	return 0;
}

bool store_has_record(struct store *s, const struct store_key *k)
{
	char name[64];
	struct stat st;
	bool r;

	if (is_lost(s))
		return false;
	rel_name(k, "meta", name, sizeof(name));
	fds_rdlock(s);
	r = fstatat(s->layout_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
	fds_unlock(s);
	return r;
}

void store_file_close(struct store_file *f)
{
	if (f->meta_fd >= 0)
		close(f->meta_fd);
	if (f->data_fd >= 0)
		close(f->data_fd);
	f->meta_fd = f->data_fd = -1;
	f->data_min = 0;
}

int store_remove(struct store *s, const struct store_key *k)
{
	char name[64];
	int r = 1;

	if (is_lost(s))
		return -EBUSY;
	fds_rdlock(s);
	rel_name(k, "meta", name, sizeof(name));
	if (unlinkat(s->layout_fd, name, 0) < 0)
		r = errno == ENOENT ? 0 : -errno;
	rel_name(k, "data", name, sizeof(name));
	if (unlinkat(s->layout_fd, name, 0) < 0 && errno != ENOENT)
		r = -errno;
	fds_unlock(s);
	return r;
}

int store_write_chunk(struct store_file *f, uint32_t idx, const void *buf, uint32_t len, bool sync)
{
	const uint64_t off = (uint64_t)idx * f->chunk_size;
	int r = store_data_intact(f);

	if (r == 0)
		r = io_pwrite_full(f->data_fd, buf, len, (off_t)off);
	if (r == 0 && sync && fdatasync(f->data_fd) < 0)
		r = -errno;
	if (r == 0)
		data_min_raise(f, off + len);
	return r;
}

int store_read_chunk(struct store_file *f, uint32_t idx, void *buf, uint32_t len)
{
	int r = read_full(f->data_fd, buf, len, (off_t)idx * f->chunk_size);

	return r == -ENODATA ? -EBADMSG : r;
}

uint32_t store_chunk_len(const struct store_file *f, uint32_t idx)
{
	const uint64_t start = (uint64_t)idx * f->chunk_size;

	if (start >= f->id.size)
		return 0;
	return (uint32_t)(f->id.size - start < f->chunk_size ? f->id.size - start : f->chunk_size);
}

int store_verify_chunk(struct store_file *f, uint32_t idx, const struct store_slot *slot,
		       void *buf, const char **why)
{
	const char *bad = NULL;
	int r = 0;

	if (slot->len > f->chunk_size)
		bad = "longer than a chunk";
	else if (slot->len != store_chunk_len(f, idx))
		bad = "not the length of its chunk";
	else if ((r = read_full(f->data_fd, buf, slot->len, (off_t)idx * f->chunk_size)) == -ENODATA)
		bad = "data missing";
	else if (r == 0 && csum64(buf, slot->len) != slot->hash)
		bad = "checksum mismatch";
	if (why)
		*why = bad;
	return bad ? -EBADMSG : r;
}

int store_set_slot(struct store_file *f, uint32_t idx, const struct store_slot *slot)
{
	unsigned char raw[STORE_SLOT_SIZE];

	store_encode_slot(f->hdr_check, idx, slot, raw);
	return io_pwrite_full(f->meta_fd, raw, sizeof(raw),
			  STORE_HEADER_SIZE + (off_t)idx * STORE_SLOT_SIZE);
}

int store_drop_chunk(struct store_file *f, uint32_t idx)
{
	struct store_slot empty = {0, 0};
	int r = store_set_slot(f, idx, &empty);

	if (fallocate(f->data_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)idx * f->chunk_size, f->chunk_size) < 0 &&
	    r == 0)
		r = -errno;
	return r;
}

uint64_t store_file_usage(const struct store_file *f)
{
	struct stat st;
	uint64_t u = 0;

	if (f->meta_fd >= 0 && fstat(f->meta_fd, &st) == 0)
		u += (uint64_t)st.st_blocks * 512;
	if (f->data_fd >= 0 && fstat(f->data_fd, &st) == 0)
		u += (uint64_t)st.st_blocks * 512;
	return u;
}

static bool parse_name(const char *name, struct store_key *k, const char **ext)
{
	size_t i;

	for (i = 0; i < 32; i++)
		if (!strchr("0123456789abcdef", name[i]) || !name[i])
			return false;
	if (name[32] != '.')
		return false;
	memcpy(k->hex, name, 32);
	k->hex[32] = '\0';
	*ext = name + 33;
	return true;
}

/* A file this daemon may be writing right now (a record being created has
 * its data file before its header): debris is only what is older than the
 * store. */
static bool older_than_store(const struct store *s, const struct stat *st)
{
	return st->st_mtim.tv_sec < s->opened_at;
}

static int64_t mtime_ns(const struct stat *st)
{
	return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

/* One file of a v1/XX directory; sfd is that directory. */
static void scan_entry(struct store *s, int sfd, const char *sub, const char *name,
		       void (*fn)(const struct store_scan_rec *r, void *arg), void *arg)
{
	struct store_scan_rec rec;
	struct stat st, other;
	char peer[64];
	const char *ext;

	if (!parse_name(name, &rec.key, &ext) || strncmp(rec.key.hex, sub, 2)) {
		unlinkat(sfd, name, 0); /* not ours: debris */
		return;
	}
	if (!strncmp(ext, "meta.tmp.", 9)) {
		/* Left by a crashed daemon; ours are in flight. */
		if (strtol(ext + 9, NULL, 10) != (long)getpid())
			unlinkat(sfd, name, 0);
		return;
	}
	if (strcmp(ext, "meta") && strcmp(ext, "data")) {
		unlinkat(sfd, name, 0);
		return;
	}
	if (fstatat(sfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return;
	snprintf(peer, sizeof(peer), "%s.%s", rec.key.hex, strcmp(ext, "meta") ? "meta" : "data");
	if (fstatat(sfd, peer, &other, AT_SYMLINK_NOFOLLOW) < 0) {
		/* Half a record: no bytes can be served from it. */
		if (errno == ENOENT && older_than_store(s, &st))
			unlinkat(sfd, name, 0);
		return;
	}
	if (strcmp(ext, "meta"))
		return; /* the record is reported once, at its metadata file */
	rec.bytes = (uint64_t)(st.st_blocks + other.st_blocks) * 512;
	rec.mtime_ns = mtime_ns(&st) > mtime_ns(&other) ? mtime_ns(&st) : mtime_ns(&other);
	fn(&rec, arg);
}

int store_scan(struct store *s, void (*fn)(const struct store_scan_rec *r, void *arg), void *arg)
{
	int lfd;
	DIR *top;
	struct dirent *d;

	if (is_lost(s))
		return -EBUSY;
	fds_rdlock(s);
	lfd = fcntl(s->layout_fd, F_DUPFD_CLOEXEC, 0);
	fds_unlock(s);
	top = lfd >= 0 ? fdopendir(lfd) : NULL;
	if (!top) {
		if (lfd >= 0)
			close(lfd);
		return -errno;
	}
	while ((d = readdir(top))) {
		int sfd;
		DIR *sub;
		struct dirent *e;

		if (d->d_name[0] == '.' || strlen(d->d_name) != 2)
			continue;
		sfd = openat(lfd, d->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sfd < 0)
			continue;
		sub = fdopendir(sfd);
		if (!sub) {
			close(sfd);
			continue;
		}
		while ((e = readdir(sub)))
			if (e->d_name[0] != '.')
				scan_entry(s, sfd, d->d_name, e->d_name, fn, arg);
		closedir(sub);
	}
	closedir(top);
	return 0;
}

int store_fs_space(struct store *s, uint64_t *avail, uint64_t *total)
{
	struct statvfs v;
	int r;

	fds_rdlock(s);
	r = fstatvfs(s->dir_fd, &v) < 0 ? -errno : 0;
	fds_unlock(s);
	if (r < 0)
		return r;
	*avail = (uint64_t)v.f_bavail * v.f_frsize;
	*total = (uint64_t)v.f_blocks * v.f_frsize;
	return 0;
}
