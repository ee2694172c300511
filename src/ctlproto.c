/* ctlproto.c - encode, decode, send and receive control messages; connect
 * and listen on the control socket.  Used by both the daemon (control.c)
 * and efscachectl, so the names of kinds and fields exist once, in
 * ctlproto.h.  No state, no locks: a ctl_reader belongs to one thread.
 */
#include "ctlproto.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

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

int ctl_connect(const char *cache_dir)
{
	struct sockaddr_un sun;
	int fd, dir_fd = -1, r;

	if (socket_addr(cache_dir, -1, &sun) < 0) {
		dir_fd = open(cache_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (dir_fd < 0)
			return -errno;
		socket_addr(NULL, dir_fd, &sun);
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		r = -errno;
		goto out_close_dir;
	}
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		r = -errno;
		close(fd);
		goto out_close_dir;
	}
	r = fd;
out_close_dir:
	if (dir_fd >= 0)
		close(dir_fd);
	return r;
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
