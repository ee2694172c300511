/* ctlproto.h - the control protocol between efscachectl and the daemon.
 *
 * Contract: everything both sides of the control channel must agree on is
 * defined here, once, and encoded and decoded by ctlproto.c for both: the
 * reserved xattr names, the text of the two queries (struct <-> text), and
 * the socket messages.  No state, no locks; a ctl_reader belongs to one
 * thread.
 *
 * Two channels, split by what they may do (docs/design.md, "Control"):
 *
 *   queries   getxattr of CTL_XATTR_STATS / CTL_XATTR_STATUS on any path of
 *             the mount.  Open to whoever can see the path; no side effects.
 *             The value is "name value\n" lines (below: struct ctl_stats,
 *             struct ctl_file_status).
 *   actions   evict and verify, over the Unix stream socket
 *             CACHE_DIR/CTL_SOCKET_NAME.  cache_dir is 0700 and owned by the
 *             daemon's user, so only that user and root can reach it; the
 *             daemon checks the peer again with SO_PEERCRED.
 *
 * On the socket every message is one line of at most CTL_LINE_MAX bytes:
 *
 *     KIND FIELD=VALUE FIELD=VALUE ...\n
 *
 * KIND is a word of CTL_KINDS, FIELD a name of CTL_FIELDS, VALUE an unsigned
 * decimal.  Unknown fields are ignored, so either side may add fields.  A
 * client sends one request and reads replies until `done` (a verify sends
 * `progress` lines first); it may then send another request on the same
 * connection.  `error` is a positive errno, 0 on success.
 *
 * Files are named by their source inode number, which is what st_ino shows
 * through the mount: the daemon turns it into the cache key (store_key_of)
 * and never resolves a path given by the client.
 */
#ifndef EFS_CTLPROTO_H
#define EFS_CTLPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "stats.h"

#define CTL_XATTR_PREFIX "user.efscache."
#define CTL_XATTR_STATS CTL_XATTR_PREFIX "stats"   /* query: counters, on any inode */
#define CTL_XATTR_STATUS CTL_XATTR_PREFIX "status" /* query: one file's cache state */

/* ---- queries: the xattrs' text ------------------------------------------
 *
 * Both are "name value\n" lines, value running to the end of the line.  A
 * decoder ignores names it does not know (either side may add some) and
 * refuses (-EBADMSG) text that lacks a name it knows, has a line without a
 * value or without its '\n' (truncated), or a number that is not one. */

/* A file's state in the status query: X(id, word, what). */
#define CTL_FILE_STATES(X)                                                                         \
	X(UNCACHED, "uncached", "nothing cached (no record)")                                      \
	X(UNVALIDATED, "unvalidated", "a record not yet checked against the source")               \
	X(VALID, "valid", "checked against the source by the last open")                           \
	X(STALE, "stale", "written through the mount: cached data unused until the next open")

enum ctl_file_state {
#define X(id, word, what) CTL_STATE_##id,
	CTL_FILE_STATES(X)
#undef X
	CTL__NSTATES
};

/* The numbers of the status query, after "state WORD": X(name, what). */
#define CTL_STATUS_FIELDS(X)                                                                       \
	X(size, "bytes: the record's size, else the source's")                                     \
	X(cached_bytes, "bytes of data cached")                                                    \
	X(chunk_size, "bytes per chunk")                                                           \
	X(chunks, "chunks of the file")                                                            \
	X(chunks_cached, "chunks cached")                                                          \
	X(chunks_verified, "cached chunks re-hashed since the daemon loaded the record")           \
	X(last_validated, "epoch seconds of the last check against the source, 0: never")

/* The status query (CTL_XATTR_STATUS) of one file. */
struct ctl_file_status {
	enum ctl_file_state state;
#define X(name, what) uint64_t name;
	CTL_STATUS_FIELDS(X)
#undef X
};

const char *ctl_state_name(enum ctl_file_state s);
/* Encode st as its lines into buf; returns the length needed (like
 * snprintf: the text is whole when it is < len). */
size_t ctl_status_format(const struct ctl_file_status *st, char *buf, size_t len);
/* Decode text (NUL-terminated).  0 or -EBADMSG. */
int ctl_status_parse(const char *text, struct ctl_file_status *st);

/* The stats query (CTL_XATTR_STATS): lines in this order, all numbers but
 * the two paths:
 *   the counters and gauges of stats.h (STATS_LIST, STATS_GAUGES),
 *   fetch_latency_us_le_BOUND (cumulative, BOUND "inf" last),
 *   fetch_latency_us_count, fetch_latency_us_sum,
 *   CTL_STATS_CACHE, cache_dir, mountpoint, CTL_STATS_INODES, CTL_STATS_INDEX.
 * The lists give each line's kind (counter: only grows; gauge: goes up and
 * down), which metrics.c turns into the Prometheus type. */
#define CTL_STATS_CACHE(X)                                                                         \
	X(cache_entries, gauge, "records the daemon knows, on disk or in use")                     \
	X(cache_usage_bytes, gauge, "disk space used by cached data and metadata")                 \
	X(cache_size_bytes, gauge, "the cache_size limit")                                         \
	X(write_behind_pending, gauge, "chunks fetched but not yet written to cache_dir")         \
	X(cache_index_ready, gauge,                                                                \
	  "1 once the startup index of cache_dir is complete (chunks are stored only then)")
#define CTL_STATS_INODES(X)                                                                        \
	X(inodes, gauge, "inodes the daemon knows")                                                \
	X(inode_fds, gauge, "source fds the inodes hold open")                                     \
	X(inode_fd_budget, gauge, "most source fds the inodes may hold")                           \
	X(inode_reopens, counter, "source fds closed for the budget and opened again")
/* The directory index's memory (dirindex.h): snapshots kept loaded after
 * they answered, bounded by -o index_mem; the rest are read back from
 * cache_dir when asked. */
#define CTL_STATS_INDEX(X)                                                                         \
	X(index_snapshots, gauge, "directory index snapshots in memory")                           \
	X(index_memory_bytes, gauge, "memory those snapshots take")                                \
	X(index_memory_budget, gauge, "most of it kept once unused (-o index_mem)")                \
	X(index_loads, counter, "directory index snapshots read back from cache_dir")              \
	X(index_saves, counter, "directory index snapshots written to cache_dir")
#define CTL_STATS_DIR_HELP "where the cache lives"
#define CTL_STATS_MNT_HELP "where the daemon mounted the tree (its own mount namespace's path)"
#define CTL_PATH_MAX 4096

struct ctl_stats {
	uint64_t counter[ST__COUNT];                /* stats.h's ids */
	uint64_t fetch_le[STATS_FETCH_NBOUNDS + 1]; /* cumulative; the last is +Inf */
	uint64_t fetch_count, fetch_sum_us;
#define X(name, kind, what) uint64_t name;
	CTL_STATS_CACHE(X)
#undef X
	char cache_dir[CTL_PATH_MAX];
	char mountpoint[CTL_PATH_MAX];
#define X(name, kind, what) uint64_t name;
	CTL_STATS_INODES(X)
	CTL_STATS_INDEX(X)
#undef X
};

size_t ctl_stats_format(const struct ctl_stats *st, char *buf, size_t len);
int ctl_stats_parse(const char *text, struct ctl_stats *st);
/* What the stats line `name` counts, for people; "" if unknown. */
const char *ctl_stats_help(const char *name);
/* The kind of the stats line `name`: "counter", "gauge", "text" (the two
 * paths), or NULL if unknown (the fetch_latency_us_* lines are the
 * histogram's: NULL too). */
const char *ctl_stats_kind(const char *name);

/* ---- actions: the socket --------------------------------------------- */

#define CTL_SOCKET_NAME "ctl.sock"
#define CTL_LINE_MAX 512
#define CTL_BACKLOG 16 /* pending connections: a few admins at once */

/* Message kinds: X(id, word, what). */
#define CTL_KINDS(X)                                                                               \
	X(EVICT, "evict", "request: drop every cached chunk of the file `ino`")                   \
	X(VERIFY, "verify", "request: re-hash every cached chunk, drop bad ones; joins a run "     \
			    "already going")                                                       \
	X(PROGRESS, "progress", "reply: a verify's counters so far")                               \
	X(DONE, "done", "reply: the request finished (`error` says how)")

enum ctl_kind {
#define X(id, word, what) CTL_##id,
	CTL_KINDS(X)
#undef X
	CTL__NKINDS
};

/* Message fields, all unsigned 64-bit: X(name, what). */
#define CTL_FIELDS(X)                                                                              \
	X(ino, "evict: source inode number of the file (st_ino through the mount)")               \
	X(error, "done: 0, or the errno of the failure")                                           \
	X(bytes_dropped, "evict: bytes of cached data dropped")                                    \
	X(chunks_dropped, "evict: chunks dropped")                                                 \
	X(chunks_total, "verify: chunks cached when the run started")                              \
	X(chunks_checked, "verify: chunks re-hashed so far")                                       \
	X(chunks_bad, "verify: chunks that failed and were dropped")                               \
	X(bytes_checked, "verify: bytes re-hashed so far")                                         \
	X(joined, "verify: 1 if this request joined a run another client started")

enum ctl_field {
#define X(name, what) CTL_F_##name,
	CTL_FIELDS(X)
#undef X
	CTL__NFIELDS
};

struct ctl_msg {
	enum ctl_kind kind;
	uint64_t v[CTL__NFIELDS];
	uint32_t has; /* bit f set: field f was given */
};

/* A message of kind with no fields. */
void ctl_msg_init(struct ctl_msg *m, enum ctl_kind kind);
void ctl_set(struct ctl_msg *m, enum ctl_field f, uint64_t v);
/* The field's value, or 0 if it was not given. */
uint64_t ctl_get(const struct ctl_msg *m, enum ctl_field f);
const char *ctl_kind_name(enum ctl_kind k);
const char *ctl_field_name(enum ctl_field f);

/* Encode m as one line with its '\n' into buf (CTL_LINE_MAX is always
 * enough); returns its length. */
size_t ctl_format(const struct ctl_msg *m, char *buf, size_t len);
/* Decode one line (without its '\n').  0, or -EBADMSG if it is not a
 * message (unknown kind, a field without '=', a value that is not a
 * number). */
int ctl_parse(const char *line, struct ctl_msg *m);

/* Send m whole on a stream socket (no SIGPIPE).  0 or -errno. */
int ctl_send(int fd, const struct ctl_msg *m);

/* Buffered reader of lines from a socket. */
struct ctl_reader {
	int fd;
	size_t len;
	char buf[2 * CTL_LINE_MAX];
};

void ctl_reader_init(struct ctl_reader *rd, int fd);
/* Read the next message.  0, -ECONNRESET at end of stream, -EBADMSG for a
 * line that is not a message or is too long, or -errno. */
int ctl_recv(struct ctl_reader *rd, struct ctl_msg *m);

/* Client side: connect to the control socket of cache_dir.  Returns the fd
 * or -errno (-EACCES when the caller may not reach it, -ENOENT/-ECONNREFUSED
 * when no daemon listens). */
int ctl_connect(const char *cache_dir);
/* The same, to CTL_SOCKET_NAME inside the directory behind dir_fd (an
 * O_PATH fd the caller checked). */
int ctl_connect_at(int dir_fd);

/* The mount of device dev in mountinfo, the text of /proc/self/mountinfo:
 * its file system type ("fuse.efscache" for ours) into fstype, and the
 * user_id= of its super options (a FUSE mount's owner) into *owner, or -1
 * without one.  0, or -ENOENT when no mount has that device. */
int ctl_mountinfo_find(const char *mountinfo, dev_t dev, char *fstype, size_t fstype_len,
		       long *owner);
/* The file system type of an efscache mount in mountinfo. */
#define CTL_FSTYPE "fuse.efscache"

/* Daemon side: bind and listen on CTL_SOCKET_NAME inside the directory
 * dir_fd (an old socket there is replaced: the caller holds the cache_dir
 * lock).  Returns the listening fd or -errno. */
int ctl_listen(int dir_fd);

#endif
