/*
 * emu-fault.c: faults efs-emu injects, each by glob on the path relative to SOURCE
 * (efs-emu.c has the overview; README.md, "Control", the interface): fail_eio and
 * fail_enoent, and those of a misbehaving server below. fail_after_bytes is checked in
 * emu_read (emu-data.c); the globs are set by emu_set (emu-ctl.c).
 *
 * State: the globs (read under glob_lock), have_globs (a fast "no faults" test), hang_ns and
 * the hung_now gauge; faults and hangs are counted.
 */

#include "emu.h"

/* ---- fault injection ---- */

/* Path of an O_PATH fd relative to SOURCE ("" for SOURCE) in buf, or NULL. */
static const char *emu_relpath(const struct emu *e, int fd, char *buf, size_t size)
{
	char proc[64];
	ssize_t n;
	const char *p;

	emu_procname(proc, sizeof(proc), fd);
	n = readlink(proc, buf, size - 1);
	if (n < 0)
		return NULL;
	buf[n] = '\0';
	if (strncmp(buf, e->root_path, e->root_len) != 0)
		return NULL;
	p = buf + e->root_len;
	if (*p == '/')
		return p + 1;
	return *p ? NULL : p;
}

/* errno injected for relative path 'rel' (ENOENT first, EIO only if 'eio'), else 0. */
static int emu_glob_fault(struct emu *e, const char *rel, bool eio)
{
	int err = 0;

	pthread_rwlock_rdlock(&e->glob_lock);
	if (e->fail_enoent && fnmatch(e->fail_enoent, rel, 0) == 0)
		err = ENOENT;
	else if (eio && e->fail_eio && fnmatch(e->fail_eio, rel, 0) == 0)
		err = EIO;
	pthread_rwlock_unlock(&e->glob_lock);
	if (err)
		ctr_add(e, C_FAULTS, 1);
	return err;
}

/* Fault for an open or read of 'in', or 0. */
int emu_inode_fault(struct emu *e, struct emu_inode *in)
{
	char buf[PATH_MAX + 16];
	const char *rel;

	if (!atomic_load(&e->have_globs))
		return 0;
	rel = emu_relpath(e, in->fd, buf, sizeof(buf));
	return rel ? emu_glob_fault(e, rel, true) : 0;
}

/* Fault for a lookup of 'name' under 'parent' (ENOENT only), or 0. */
int emu_lookup_fault(struct emu *e, struct emu_inode *parent, const char *name)
{
	char buf[PATH_MAX + 16];
	char path[2 * PATH_MAX + 16];
	const char *rel;

	if (!atomic_load(&e->have_globs))
		return 0;
	rel = emu_relpath(e, parent->fd, buf, sizeof(buf));
	if (!rel)
		return 0;
	snprintf(path, sizeof(path), "%s%s%s", rel, *rel ? "/" : "", name);
	return emu_glob_fault(e, path, false);
}

/*
 * Faults of a misbehaving server (issue 8), each by glob on the path relative to SOURCE:
 *   fail_estale   OPEN, GETATTR and READ answer ESTALE (the handle is dead, as when another
 *                 host replaced the file and the server forgot it)
 *   hang          OPEN, GETATTR and READ wait (a `hard` NFS mount whose server is away)
 *                 for hang_ms, or until the glob is cleared if hang_ms is 0; an interrupted
 *                 request (the caller got a signal) answers EINTR at once
 *   short_reads   READ returns at most half of what was asked (never 0 before EOF)
 *   flip_reads    before each READ, every byte of the file on SOURCE is inverted (another
 *                 host rewriting it between reads): two reads of one range never return the
 *                 same bytes, and its mtime and ctime change
 */

/* Does the glob in *slot match 'rel'?  Takes glob_lock. */
static bool emu_glob_matches(struct emu *e, char *const *slot, const char *rel)
{
	bool m;

	pthread_rwlock_rdlock(&e->glob_lock);
	m = *slot && fnmatch(*slot, rel, 0) == 0;
	pthread_rwlock_unlock(&e->glob_lock);
	return m;
}

/* Hang the request while 'rel' matches the hang glob; 0 or EINTR. */
static int emu_hang(fuse_req_t req, struct emu *e, const char *rel)
{
	uint64_t t0 = emu_now(), limit = atomic_load(&e->hang_ns);
	int err = 0;

	if (!emu_glob_matches(e, &e->hang, rel))
		return 0;
	ctr_add(e, C_HANGS, 1);
	atomic_fetch_add(&e->hung_now, 1);
	while (emu_glob_matches(e, &e->hang, rel) && (!limit || emu_now() - t0 < limit) &&
	       !atomic_load(&e->stopping)) {
		if (fuse_req_interrupted(req)) {
			err = EINTR;
			break;
		}
		emu_sleep_until(emu_now() + 10 * 1000 * 1000);
	}
	atomic_fetch_sub(&e->hung_now, 1);
	return err;
}

/* hang and fail_estale for an OPEN, GETATTR or READ of 'in'; 0 or the errno to answer. */
int emu_extra_fault(fuse_req_t req, struct emu *e, struct emu_inode *in)
{
	char buf[PATH_MAX + 16];
	const char *rel;
	int err;

	if (!atomic_load(&e->have_globs) || in == &e->root)
		return 0;
	rel = emu_relpath(e, in->fd, buf, sizeof(buf));
	if (!rel)
		return 0;
	err = emu_hang(req, e, rel);
	if (!err && emu_glob_matches(e, &e->fail_estale, rel)) {
		ctr_add(e, C_FAULTS, 1);
		err = ESTALE;
	}
	return err;
}

/* Invert every byte of the file of 'in' on SOURCE. */
static void emu_flip_file(struct emu_inode *in)
{
	char proc[64];
	char *b = malloc(EMU_MIB);
	off_t off = 0;
	ssize_t n;
	int fd;

	emu_procname(proc, sizeof(proc), in->fd);
	fd = open(proc, O_RDWR | O_CLOEXEC);
	if (fd < 0 || !b)
		goto out;
	while ((n = pread(fd, b, EMU_MIB, off)) > 0) {
		/* by words: this runs for every read of a matching file */
		for (ssize_t i = 0; i + 8 <= n; i += 8) {
			uint64_t w;

			memcpy(&w, b + i, 8);
			w = ~w;
			memcpy(b + i, &w, 8);
		}
		for (ssize_t i = n & ~(ssize_t)7; i < n; i++)
			b[i] = (char)~b[i];
		if (pwrite(fd, b, (size_t)n, off) != n)
			break;
		off += n;
	}
out:
	if (fd >= 0)
		close(fd);
	free(b);
}

/* short_reads and flip_reads for a READ of 'size' bytes of 'in': the size to serve. */
size_t emu_read_shape(struct emu *e, struct emu_inode *in, size_t size)
{
	char buf[PATH_MAX + 16];
	const char *rel;

	if (!atomic_load(&e->have_globs))
		return size;
	rel = emu_relpath(e, in->fd, buf, sizeof(buf));
	if (!rel)
		return size;
	if (emu_glob_matches(e, &e->flip_reads, rel)) {
		ctr_add(e, C_FAULTS, 1);
		emu_flip_file(in);
	}
	if (size > 1 && emu_glob_matches(e, &e->short_reads, rel)) {
		ctr_add(e, C_FAULTS, 1);
		size = size > 8192 ? (size / 2) & ~(size_t)4095 : size / 2;
	}
	return size;
}
