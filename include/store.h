/* store.h - the on-disk layout of cache_dir.
 *
 *   cache_dir/            0700, owned by the daemon's user
 *     lock                flock'ed by the one daemon using this cache_dir
 *     v1/XX/KEY.meta      per-file metadata record (format below)
 *     v1/XX/KEY.data      sparse data: chunk i at offset i * chunk_size
 *
 * KEY is 32 hex digits of XXH3-128(SOURCE path, NUL, source inode number)
 * for files on SOURCE's own file system, and of (SOURCE path, NUL, inode
 * number, device number) for files on a file system mounted below SOURCE
 * (inode numbers repeat across file systems); XX is its first two digits.  The source's identity (inode, size, mtime,
 * ctime) is stored in the record and must match exactly for any of its
 * chunks to be used, so it is part of the key in effect.
 *
 * Metadata record, all integers little-endian:
 *   header, 64 bytes
 *     0  u8[8]  magic "EFSCMETA"
 *     8  u32    format version (1)
 *    12  u32    chunk_size in bytes
 *    16  u64    source inode number
 *    24  u64    source size in bytes
 *    32  i64    source mtime seconds
 *    40  u32    source mtime nanoseconds
 *    44  u32    number of chunk slots (ceil(size / chunk_size))
 *    48  i64    source ctime seconds
 *    56  u32    source ctime nanoseconds
 *    60  u32    low 32 bits of XXH3-64 of bytes 0..59
 *   then one 16-byte slot per chunk
 *     0  u64    XXH3-64 of the chunk's bytes
 *     8  u32    chunk length (0 = slot empty)
 *    12  u32    low 32 bits of XXH3-64(index, hash, length) seeded with the
 *               header checksum, binding the slot to this identity
 *
 * Atomicity: a new or reset record gets a new data file first (the old one
 * is unlinked, never truncated: the kernel may read it for a passthrough
 * open, of this daemon or of one before it), then its header is written
 * whole to a temporary file and renamed into place.  A chunk is added by
 * writing its data, then its slot (16 bytes, in one sector).  A torn or
 * stale slot fails its own check; a slot whose chunk lies past the data
 * file's end is ignored; data that did not reach the disk fails the chunk
 * checksum, which is verified before the first use by each daemon
 * (verify=once).  Nothing here ever creates a data file for an existing
 * record: a record whose data file is gone is no record.
 */
#ifndef EFS_STORE_H
#define EFS_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define STORE_FORMAT_VERSION 1
#define STORE_HEADER_SIZE 64
#define STORE_SLOT_SIZE 16

struct store_identity {
	uint64_t ino;
	uint64_t size;
	int64_t mtime_sec;
	uint32_t mtime_nsec;
	int64_t ctime_sec;
	uint32_t ctime_nsec;
};

struct store_key {
	char hex[33];
};

/* The key as two integers (16 bytes instead of 33), for in-memory indexes. */
struct store_key_bin {
	uint64_t h[2];
};

struct store_slot {
	uint64_t hash;
	uint32_t len; /* 0 = empty */
};

/* A loaded or created record: its fds and decoded header. */
struct store_file {
	int meta_fd;
	int data_fd;
	struct store_identity id;
	uint32_t chunk_size;
	uint32_t nchunks;
	uint32_t hdr_check; /* seeds the slot checks */
	/* atomic: the data file is at least this long (the end of the last
	 * chunk written or loaded).  Shorter: it was cut under the daemon,
	 * which SEEK_HOLE alone cannot tell inside the block at the cut once
	 * a later write extended the file again. */
	uint64_t data_min;
};

struct store;

/* Open (creating if needed) and check cache_dir: it must be a directory,
 * not a symlink, owned by us, not writable by group or others.  Takes the
 * lock.  Returns 0 or -errno with a message naming the path in err. */
int store_open(struct store **out, const char *cache_dir, char *err, size_t errlen);
void store_close(struct store *s);
/* Write our pid into the lock file (again after daemonizing: the lock is
 * inherited across fork, the pid is not). */
void store_note_pid(struct store *s);
const char *store_path(const struct store *s);

/* If cache_dir was removed (or replaced), create it again and take its lock.
 * Returns 1 if it was recreated, 0 if it was fine, -errno if it cannot be
 * made, or -EBUSY if another daemon holds the new directory's lock: the
 * store is then unusable (store_load/store_create fail with -EBUSY) until a
 * later call gets the lock. */
int store_check_dir(struct store *s);
/* True while the directory at cache_dir's path is the one we hold the lock
 * of (not removed, not replaced, not taken by another daemon). */
bool store_dir_ok(const struct store *s);

/* The key of source file ino on device tag dev (0: SOURCE's own file
 * system) under source_root.  0, or -ENAMETOOLONG if source_root is not
 * shorter than PATH_MAX (no key is made up then). */
int store_key_of(const char *source_root, uint64_t dev, uint64_t ino, struct store_key *k);
void store_key_pack(const struct store_key *k, struct store_key_bin *b);
void store_key_unpack(const struct store_key_bin *b, struct store_key *k);

/* Open the record of key: its header decoded into f, both fds open
 * (neither file is ever created here).  -ENOENT if either file is missing,
 * -EBADMSG if the header is corrupt or of another version, -EBUSY if the
 * store is lost to another daemon. */
int store_open_record(struct store *s, const struct store_key *k, struct store_file *f);
/* Ask the kernel to read key's record (both files, whole) into the page
 * cache ahead of its use, without waiting for the data: a hint that
 * changes nothing on disk or in the cache.  0, -ENOENT (no such record),
 * -EBUSY (store lost), or -errno of an open. */
int store_readahead(struct store *s, const struct store_key *k);
/* Call fn for every intact slot of the open record f whose chunk the data
 * file holds (a slot past the data file's end is skipped: its bytes are
 * not there), reading the slot array in blocks and skipping its holes, so
 * a record of a huge sparse file costs what it caches.  fn returns 0 to go
 * on or a negative value to stop, which is returned.  0 or -errno. */
int store_each_slot(struct store_file *f,
		    int (*fn)(uint32_t idx, const struct store_slot *slot, void *arg), void *arg);
/* store_open_record plus every slot in an array of f->nchunks (empty slots
 * have len 0; the caller frees it): for tools and tests, not the daemon (a
 * sparse multi-TiB record would make a huge array). */
int store_load(struct store *s, const struct store_key *k, struct store_file *f,
	       struct store_slot **slots);
/* Write a fresh record (all slots empty) for id, replacing any old one: a
 * new empty data file replaces the old one (unlinked, never truncated),
 * then the header is renamed into place.  Returns 0 or -errno. */
int store_create(struct store *s, const struct store_key *k, const struct store_identity *id,
		 uint32_t chunk_size, struct store_file *f);
/* Fill f (no fds) with what store_create() will write for id, without
 * touching the disk: the record is created later (write-behind). */
int store_prepare(const struct store_identity *id, uint32_t chunk_size, struct store_file *f);
/* Whether key has a metadata file (one fstatat, nothing opened). */
bool store_has_record(struct store *s, const struct store_key *k);
/* Close the record's fds; the decoded header stays valid. */
void store_file_close(struct store_file *f);
/* Remove both files of key (metadata first: a crash leaves a data file
 * without a record, which the startup scan removes).  1 if the record
 * existed (its metadata file was there), 0 if not, or -errno. */
int store_remove(struct store *s, const struct store_key *k);

/* -ESTALE, writing nothing, when the data file is shorter than data_min
 * (cut under us: a write past its end would make the cut's tail read as
 * data). */
int store_write_chunk(struct store_file *f, uint32_t idx, const void *buf, uint32_t len,
		      bool sync);
/* 0 if the data file is still at least data_min long, -ESTALE if it was
 * cut, or -errno.  A hit checks it after its copy. */
int store_data_intact(const struct store_file *f);
int store_read_chunk(struct store_file *f, uint32_t idx, void *buf, uint32_t len);
int store_set_slot(struct store_file *f, uint32_t idx, const struct store_slot *slot);
/* Bytes in chunk idx of f's source file: chunk_size, less for the last
 * chunk, 0 past the end. */
uint32_t store_chunk_len(const struct store_file *f, uint32_t idx);
/* Check chunk idx against its slot: the slot's length is the chunk's, the
 * bytes are on disk, and their XXH3 is the slot's hash.  buf receives the
 * bytes (room for store_chunk_len(f, idx)).  Returns 0 if good; -EBADMSG if
 * bad, with *why (if why is not NULL) saying how ("checksum mismatch",
 * "data missing", ...); else the -errno of a failed read (*why NULL). */
int store_verify_chunk(struct store_file *f, uint32_t idx, const struct store_slot *slot,
		       void *buf, const char **why);
/* Empty a slot and release the chunk's blocks. */
int store_drop_chunk(struct store_file *f, uint32_t idx);

/* Disk usage of a record's files in bytes (blocks actually allocated). */
uint64_t store_file_usage(const struct store_file *f);

/* What the startup scan knows of a record without opening it. */
struct store_scan_rec {
	struct store_key key;
	uint64_t bytes;   /* blocks allocated to its two files, in bytes */
	int64_t mtime_ns; /* the newer of its files' mtimes: when it was last stored to */
};

/* Call fn for every record found (metadata and data file both present),
 * for the background index: two fstatat per record, no open, no read.
 * Removes stray temporary files, data files without a record and records
 * without a data file. */
int store_scan(struct store *s, void (*fn)(const struct store_scan_rec *r, void *arg), void *arg);

/* Free and total bytes of the file system holding cache_dir. */
int store_fs_space(struct store *s, uint64_t *avail, uint64_t *total);

/* Encode/decode helpers, exposed for unit tests and the fuzzer. */
void store_encode_header(const struct store_identity *id, uint32_t chunk_size, uint32_t nchunks,
			 unsigned char out[STORE_HEADER_SIZE]);
int store_decode_header(const unsigned char in[STORE_HEADER_SIZE], struct store_identity *id,
			uint32_t *chunk_size, uint32_t *nchunks, uint32_t *hdr_check);
void store_encode_slot(uint32_t hdr_check, uint32_t idx, const struct store_slot *slot,
		       unsigned char out[STORE_SLOT_SIZE]);
/* Returns true and fills slot if the slot is in use and intact. */
bool store_decode_slot(uint32_t hdr_check, uint32_t idx, const unsigned char in[STORE_SLOT_SIZE],
		       struct store_slot *slot);

#endif
