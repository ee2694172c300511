/* ctlproto.h - the control protocol between efscachectl and the daemon.
 *
 * Two channels, split by what they may do (docs/design.md, "Control"):
 *
 *   queries   getxattr of CTL_XATTR_STATS / CTL_XATTR_STATUS on any path of
 *             the mount.  Open to whoever can see the path; no side effects.
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

#define CTL_XATTR_PREFIX "user.efscache."
#define CTL_XATTR_STATS CTL_XATTR_PREFIX "stats"   /* query: counters, on any inode */
#define CTL_XATTR_STATUS CTL_XATTR_PREFIX "status" /* query: one file's cache state */

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

/* Daemon side: bind and listen on CTL_SOCKET_NAME inside the directory
 * dir_fd (an old socket there is replaced: the caller holds the cache_dir
 * lock).  Returns the listening fd or -errno. */
int ctl_listen(int dir_fd);

#endif
