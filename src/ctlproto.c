/* ctlproto.c - encode and decode the query text (status, stats) and the
 * socket messages, send and receive them, connect and listen on the control
 * socket.  Used by both the daemon (fsops.c, control.c) and efscachectl, so
 * every name and format of the control channel exists once, in ctlproto.h.
 * No state, no locks: a ctl_reader belongs to one thread.
 */
#include "ctlproto.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

/* ---- query text ----------------------------------------------------------- */

/* snprintf at buf+used, clipped to len; adds to used what it needed. */
#define APPEND(fmt, ...)                                                                           \
	do {                                                                                       \
		int n_ = snprintf(buf ? buf + (used < len ? used : len) : NULL,                    \
				  used < len ? len - used : 0, fmt, __VA_ARGS__);                  \
		if (n_ > 0)                                                                        \
			used += (size_t)n_;                                                        \
	} while (0)

/* The keys of a query, numbered 0..nkeys-1 in the order of the text.  name
 * writes key i's name into buf (or returns a constant); slot gives where
 * its number goes, or NULL for a key with a text value, which set_text
 * stores. */
struct kv_schema {
	unsigned nkeys;
	const char *(*name)(unsigned i, char *buf, size_t len);
	uint64_t *(*slot)(void *obj, unsigned i);
	int (*set_text)(void *obj, unsigned i, const char *v, size_t vlen);
	const char *(*get_text)(const void *obj, unsigned i);
};

#define KV_NAME_MAX 64
#define KV_KEYS_MAX 128 /* room for stats.h's lists to grow */

static size_t kv_format(const struct kv_schema *ks, const void *obj, char *buf, size_t len)
{
	size_t used = 0;

	if (len)
		buf[0] = '\0';
	for (unsigned i = 0; i < ks->nkeys; i++) {
		char nb[KV_NAME_MAX];
		const char *name = ks->name(i, nb, sizeof(nb));
		uint64_t *v = ks->slot((void *)obj, i);

		if (v)
			APPEND("%s %" PRIu64 "\n", name, *v);
		else
			APPEND("%s %s\n", name, ks->get_text(obj, i));
	}
	return used;
}

static int kv_key(const struct kv_schema *ks, const char *key, size_t klen)
{
	for (unsigned i = 0; i < ks->nkeys; i++) {
		char nb[KV_NAME_MAX];
		const char *name = ks->name(i, nb, sizeof(nb));

		if (strlen(name) == klen && !memcmp(name, key, klen))
			return (int)i;
	}
	return -1;
}

/* A decimal u64 of exactly vlen bytes. */
static bool parse_u64(const char *v, size_t vlen, uint64_t *out)
{
	char tmp[32], *end;

	if (!vlen || vlen >= sizeof(tmp) || v[0] < '0' || v[0] > '9')
		return false;
	memcpy(tmp, v, vlen);
	tmp[vlen] = '\0';
	errno = 0;
	*out = strtoull(tmp, &end, 10);
	return !errno && *end == '\0';
}

static int kv_parse(const struct kv_schema *ks, const char *text, void *obj)
{
	bool seen[KV_KEYS_MAX] = {false};
	const char *p = text;

	while (*p) {
		const char *eol = strchr(p, '\n'), *sp;
		size_t n;
		int i;

		if (!eol)
			return -EBADMSG; /* truncated */
		n = (size_t)(eol - p);
		sp = memchr(p, ' ', n);
		if (!sp || sp == p)
			return -EBADMSG;
		i = kv_key(ks, p, (size_t)(sp - p));
		if (i >= 0) {
			const char *v = sp + 1;
			size_t vlen = (size_t)(eol - v);
			uint64_t *slot = ks->slot(obj, (unsigned)i);

			if (slot ? !parse_u64(v, vlen, slot)
				 : ks->set_text(obj, (unsigned)i, v, vlen) < 0)
				return -EBADMSG;
			seen[i] = true;
		}
		p = eol + 1;
	}
	for (unsigned i = 0; i < ks->nkeys; i++)
		if (!seen[i])
			return -EBADMSG;
	return 0;
}

/* status: "state", then CTL_STATUS_FIELDS. */

static const char *const state_names[] = {
#define X(id, word, what) word,
    CTL_FILE_STATES(X)
#undef X
};

static const char *const status_names[] = {
    "state",
#define X(name, what) #name,
    CTL_STATUS_FIELDS(X)
#undef X
};

static const size_t status_offsets[] = {
    0,
#define X(name, what) offsetof(struct ctl_file_status, name),
    CTL_STATUS_FIELDS(X)
#undef X
};

#define STATUS_NKEYS (sizeof(status_names) / sizeof(status_names[0]))

const char *ctl_state_name(enum ctl_file_state s)
{
	return s < CTL__NSTATES ? state_names[s] : "?";
}

static const char *status_name(unsigned i, char *buf, size_t len)
{
	(void)buf;
	(void)len;
	return status_names[i];
}

static uint64_t *status_slot(void *obj, unsigned i)
{
	return i ? (uint64_t *)((char *)obj + status_offsets[i]) : NULL;
}

static int status_set_state(void *obj, unsigned i, const char *v, size_t vlen)
{
	struct ctl_file_status *st = obj;

	(void)i;
	for (int s = 0; s < CTL__NSTATES; s++) {
		if (strlen(state_names[s]) == vlen && !memcmp(state_names[s], v, vlen)) {
			st->state = (enum ctl_file_state)s;
			return 0;
		}
	}
	return -EBADMSG;
}

static const char *status_get_state(const void *obj, unsigned i)
{
	(void)i;
	return ctl_state_name(((const struct ctl_file_status *)obj)->state);
}

static const struct kv_schema status_schema = {
    STATUS_NKEYS, status_name, status_slot, status_set_state, status_get_state,
};

size_t ctl_status_format(const struct ctl_file_status *st, char *buf, size_t len)
{
	return kv_format(&status_schema, st, buf, len);
}

int ctl_status_parse(const char *text, struct ctl_file_status *st)
{
	memset(st, 0, sizeof(*st));
	return kv_parse(&status_schema, text, st);
}

/* stats: the keys in the order of ctlproto.h. */

enum {
#define X(name, kind, what) SK_CACHE_##name,
	CTL_STATS_CACHE(X)
#undef X
	SK_NCACHE
};

enum {
#define X(name, kind, what) SK_INODE_##name,
	CTL_STATS_INODES(X)
#undef X
	SK_NINODES
};

enum {
#define X(name, kind, what) SK_INDEX_##name,
	CTL_STATS_INDEX(X)
#undef X
	SK_NINDEX
};

enum {
	SK_COUNTER = 0,
	SK_FETCH_LE = SK_COUNTER + ST__COUNT,
	SK_FETCH_COUNT = SK_FETCH_LE + STATS_FETCH_NBOUNDS + 1,
	SK_FETCH_SUM,
	SK_CACHE,
	SK_DIR = SK_CACHE + SK_NCACHE,
	SK_MNT,
	SK_INODES,
	SK_INDEX = SK_INODES + SK_NINODES,
	SK__N = SK_INDEX + SK_NINDEX
};

_Static_assert(SK__N <= KV_KEYS_MAX, "raise KV_KEYS_MAX");

static const uint64_t fetch_bounds_us[STATS_FETCH_NBOUNDS] = {STATS_FETCH_BOUNDS_US};

/* The keys from SK_CACHE on: name, kind, help, where the number goes (0 for
 * the two paths). */
static const char *const stats_extra_names[] = {
#define X(name, kind, what) #name,
    CTL_STATS_CACHE(X) "cache_dir", "mountpoint", CTL_STATS_INODES(X) CTL_STATS_INDEX(X)
#undef X
};

static const char *const stats_extra_kinds[] = {
#define X(name, kind, what) #kind,
    CTL_STATS_CACHE(X) "text", "text", CTL_STATS_INODES(X) CTL_STATS_INDEX(X)
#undef X
};

static const char *const stats_extra_helps[] = {
#define X(name, kind, what) what,
    CTL_STATS_CACHE(X) CTL_STATS_DIR_HELP, CTL_STATS_MNT_HELP, CTL_STATS_INODES(X) CTL_STATS_INDEX(X)
#undef X
};

static const size_t stats_extra_offsets[] = {
#define X(name, kind, what) offsetof(struct ctl_stats, name),
    CTL_STATS_CACHE(X) 0, 0, CTL_STATS_INODES(X) CTL_STATS_INDEX(X)
#undef X
};

#define STATS_NEXTRA (sizeof(stats_extra_names) / sizeof(stats_extra_names[0]))
_Static_assert(SK_CACHE + STATS_NEXTRA == SK__N, "the extra keys and SK_* disagree");

static const char *stats_key_name(unsigned i, char *buf, size_t len)
{
	if (i < SK_FETCH_LE)
		return stats_name((enum stat_id)i);
	if (i < SK_FETCH_LE + STATS_FETCH_NBOUNDS) {
		snprintf(buf, len, "fetch_latency_us_le_%" PRIu64,
			 fetch_bounds_us[i - SK_FETCH_LE]);
		return buf;
	}
	if (i < SK_FETCH_COUNT)
		return "fetch_latency_us_le_inf";
	if (i == SK_FETCH_COUNT)
		return "fetch_latency_us_count";
	if (i == SK_FETCH_SUM)
		return "fetch_latency_us_sum";
	return stats_extra_names[i - SK_CACHE];
}

static uint64_t *stats_slot(void *obj, unsigned i)
{
	struct ctl_stats *st = obj;

	if (i < SK_FETCH_LE)
		return &st->counter[i];
	if (i < SK_FETCH_COUNT)
		return &st->fetch_le[i - SK_FETCH_LE];
	if (i == SK_FETCH_COUNT)
		return &st->fetch_count;
	if (i == SK_FETCH_SUM)
		return &st->fetch_sum_us;
	if (i == SK_DIR || i == SK_MNT)
		return NULL;
	return (uint64_t *)((char *)st + stats_extra_offsets[i - SK_CACHE]);
}

static char *stats_text_of(struct ctl_stats *st, unsigned i)
{
	return i == SK_DIR ? st->cache_dir : st->mountpoint;
}

static int stats_set_text(void *obj, unsigned i, const char *v, size_t vlen)
{
	char *dst = stats_text_of(obj, i);

	if (!vlen || vlen >= CTL_PATH_MAX)
		return -EBADMSG;
	memcpy(dst, v, vlen);
	dst[vlen] = '\0';
	return 0;
}

static const char *stats_get_text(const void *obj, unsigned i)
{
	return stats_text_of((struct ctl_stats *)obj, i);
}

static const struct kv_schema stats_schema = {
    SK__N, stats_key_name, stats_slot, stats_set_text, stats_get_text,
};

size_t ctl_stats_format(const struct ctl_stats *st, char *buf, size_t len)
{
	return kv_format(&stats_schema, st, buf, len);
}

int ctl_stats_parse(const char *text, struct ctl_stats *st)
{
	memset(st, 0, sizeof(*st));
	return kv_parse(&stats_schema, text, st);
}

const char *ctl_stats_help(const char *name)
{
	for (int i = 0; i < ST__COUNT; i++)
		if (!strcmp(stats_name((enum stat_id)i), name))
			return stats_help((enum stat_id)i);
	for (size_t i = 0; i < STATS_NEXTRA; i++)
		if (!strcmp(stats_extra_names[i], name))
			return stats_extra_helps[i];
	return "";
}

const char *ctl_stats_kind(const char *name)
{
	for (int i = 0; i < ST__COUNT; i++)
		if (!strcmp(stats_name((enum stat_id)i), name))
			return i < ST__NCOUNTERS ? "counter" : "gauge";
	for (size_t i = 0; i < STATS_NEXTRA; i++)
		if (!strcmp(stats_extra_names[i], name))
			return stats_extra_kinds[i];
	return NULL;
}

/* ---- socket messages -------------------------------------------------------- */

static const char *const kind_names[] = {
#define X(id, word, what) word,
    CTL_KINDS(X)
#undef X
};

static const char *const field_names[] = {
#define X(name, what) #name,
    CTL_FIELDS(X)
#undef X
};

void ctl_msg_init(struct ctl_msg *m, enum ctl_kind kind)
{
	memset(m, 0, sizeof(*m));
	m->kind = kind;
}

void ctl_set(struct ctl_msg *m, enum ctl_field f, uint64_t v)
{
	m->v[f] = v;
	m->has |= 1u << f;
}

uint64_t ctl_get(const struct ctl_msg *m, enum ctl_field f)
{
	return m->has & (1u << f) ? m->v[f] : 0;
}

const char *ctl_kind_name(enum ctl_kind k)
{
	return k < CTL__NKINDS ? kind_names[k] : "?";
}

const char *ctl_field_name(enum ctl_field f)
{
	return f < CTL__NFIELDS ? field_names[f] : "?";
}

size_t ctl_format(const struct ctl_msg *m, char *buf, size_t len)
{
	size_t n = 0;
	int r;

	r = snprintf(buf, len, "%s", ctl_kind_name(m->kind));
	n += r > 0 ? (size_t)r : 0;
	for (int f = 0; f < CTL__NFIELDS; f++) {
		if (!(m->has & (1u << f)))
			continue;
		r = snprintf(buf + (n < len ? n : len), n < len ? len - n : 0, " %s=%" PRIu64,
			     field_names[f], m->v[f]);
		n += r > 0 ? (size_t)r : 0;
	}
	if (n + 1 < len) {
		buf[n] = '\n';
		buf[n + 1] = '\0';
	}
	return n + 1;
}

static int kind_of(const char *word, size_t len)
{
	for (int k = 0; k < CTL__NKINDS; k++)
		if (strlen(kind_names[k]) == len && !memcmp(kind_names[k], word, len))
			return k;
	return -1;
}

static int field_of(const char *name, size_t len)
{
	for (int f = 0; f < CTL__NFIELDS; f++)
		if (strlen(field_names[f]) == len && !memcmp(field_names[f], name, len))
			return f;
	return -1;
}

int ctl_parse(const char *line, struct ctl_msg *m)
{
	const char *p = line;
	size_t n = strcspn(p, " ");
	int k = kind_of(p, n);

	if (k < 0)
		return -EBADMSG;
	ctl_msg_init(m, (enum ctl_kind)k);
	p += n;
	while (*p == ' ') {
		const char *name = ++p, *eq;
		char *end;
		uint64_t v;
		int f;

		n = strcspn(p, " ");
		eq = memchr(name, '=', n);
		if (!eq || eq == name || eq[1] < '0' || eq[1] > '9')
			return -EBADMSG;
		errno = 0;
		v = strtoull(eq + 1, &end, 10);
		if (errno || end != p + n)
			return -EBADMSG;
		f = field_of(name, (size_t)(eq - name));
		if (f >= 0)
			ctl_set(m, (enum ctl_field)f, v);
		p += n;
	}
	return *p ? -EBADMSG : 0;
}

int ctl_send(int fd, const struct ctl_msg *m)
{
	char buf[CTL_LINE_MAX];
	size_t len = ctl_format(m, buf, sizeof(buf)), off = 0;

	if (len >= sizeof(buf))
		return -EMSGSIZE;
	while (off < len) {
		ssize_t w = send(fd, buf + off, len - off, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		off += (size_t)w;
	}
	return 0;
}

void ctl_reader_init(struct ctl_reader *rd, int fd)
{
	rd->fd = fd;
	rd->len = 0;
}

int ctl_recv(struct ctl_reader *rd, struct ctl_msg *m)
{
	for (;;) {
		char *nl = memchr(rd->buf, '\n', rd->len);
		ssize_t n;

		if (nl) {
			size_t used = (size_t)(nl - rd->buf) + 1;
			int r;

			*nl = '\0';
			r = used > CTL_LINE_MAX ? -EBADMSG : ctl_parse(rd->buf, m);
			memmove(rd->buf, rd->buf + used, rd->len - used);
			rd->len -= used;
			return r;
		}
		if (rd->len >= CTL_LINE_MAX)
			return -EBADMSG; /* no newline where one must be */
		n = recv(rd->fd, rd->buf + rd->len, sizeof(rd->buf) - rd->len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ECONNRESET;
		rd->len += (size_t)n;
	}
}

/* Fill sun with dir/CTL_SOCKET_NAME, or with /proc/self/fd/DIRFD/... when
 * the path does not fit (sun_path holds 107 bytes). */
static int socket_addr(const char *dir, int dir_fd, struct sockaddr_un *sun)
{
	int n;

	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	if (dir)
		n = snprintf(sun->sun_path, sizeof(sun->sun_path), "%s/%s", dir, CTL_SOCKET_NAME);
	else
		n = snprintf(sun->sun_path, sizeof(sun->sun_path), "/proc/self/fd/%d/%s", dir_fd,
			     CTL_SOCKET_NAME);
	return n > 0 && (size_t)n < sizeof(sun->sun_path) ? 0 : -ENAMETOOLONG;
}

static int connect_to(const struct sockaddr_un *sun)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if (connect(fd, (const struct sockaddr *)sun, sizeof(*sun)) < 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	return fd;
}

int ctl_connect(const char *cache_dir)
{
	struct sockaddr_un sun;
	int dir_fd, r;

	if (socket_addr(cache_dir, -1, &sun) == 0)
		return connect_to(&sun);
	dir_fd = open(cache_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dir_fd < 0)
		return -errno;
	r = ctl_connect_at(dir_fd);
	close(dir_fd);
	return r;
}

int ctl_connect_at(int dir_fd)
{
	struct sockaddr_un sun;

	socket_addr(NULL, dir_fd, &sun);
	return connect_to(&sun);
}

/* The next space-separated field of *p (advanced past it), or NULL. */
static const char *next_field(const char **p, const char *eol, size_t *len)
{
	const char *s = *p, *e;

	while (s < eol && *s == ' ')
		s++;
	if (s >= eol)
		return NULL;
	for (e = s; e < eol && *e != ' '; e++)
		;
	*len = (size_t)(e - s);
	*p = e;
	return s;
}

/* user_id=N of the comma-separated super options opts (len bytes), or -1. */
static long user_id_of(const char *opts, size_t len)
{
	const char *o = opts, *end = opts + len;
	long id = -1;

	while (o < end) {
		const char *comma = memchr(o, ',', (size_t)(end - o));
		const char *stop = comma ? comma : end;

		if (stop - o > 8 && !strncmp(o, "user_id=", 8))
			id = strtol(o + 8, NULL, 10);
		o = stop + 1;
	}
	return id;
}

int ctl_mountinfo_find(const char *mountinfo, dev_t dev, char *fstype, size_t fstype_len,
		       long *owner)
{
	const char *line = mountinfo;

	while (line && *line) {
		const char *eol = strchr(line, '\n'), *p = line, *f = NULL;
		unsigned maj, min;
		size_t len = 0;
		int k;

		if (!eol)
			eol = line + strlen(line);
		/* ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE
		 * SOURCE SUPEROPTIONS */
		for (k = 0; k < 3 && (f = next_field(&p, eol, &len)); k++)
			;
		if (k == 3 && sscanf(f, "%u:%u", &maj, &min) == 2 && makedev(maj, min) == dev) {
			while ((f = next_field(&p, eol, &len)) && !(len == 1 && *f == '-'))
				;
			f = f ? next_field(&p, eol, &len) : NULL;
			if (f) {
				snprintf(fstype, fstype_len, "%.*s", (int)len, f);
				*owner = -1;
				if (next_field(&p, eol, &len) && (f = next_field(&p, eol, &len)))
					*owner = user_id_of(f, len);
				return 0;
			}
		}
		line = *eol ? eol + 1 : NULL;
	}
	return -ENOENT;
}

int ctl_listen(int dir_fd)
{
	struct sockaddr_un sun;
	int fd, r;

	socket_addr(NULL, dir_fd, &sun);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (unlinkat(dir_fd, CTL_SOCKET_NAME, 0) < 0 && errno != ENOENT) {
		r = -errno;
		goto err_close;
	}
	/* Owner only, like everything in cache_dir (connect needs write).  Not
	 * with umask(): it is per process, and other threads create files. */
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
	    fchmodat(dir_fd, CTL_SOCKET_NAME, 0600, 0) < 0 || listen(fd, CTL_BACKLOG) < 0) {
		r = -errno;
		goto err_close;
	}
	return fd;

err_close:
	close(fd);
	return r;
}
