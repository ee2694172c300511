/*
 * emu-ctl.c: efs-emu's counters and control (efs-emu.c has the overview; README.md,
 * "Counters" and "Control", the interface).
 *
 * Counters: the totals are atomics in e->ctr; per-file counters are struct emu_fstats in the
 * fstats hash, kept until exit and zeroed by reset. Settings: emu_set, shared by -o parsing
 * (efs-emu.c) and setxattr of user.efsemu.NAME; numbers are atomics, globs are swapped under
 * glob_lock. Their key=value text serves user.efsemu.stats and user.efsemu.config and the
 * stats file. The xattr operations answer user.efsemu.* here and pass every other name to
 * SOURCE, never listing ours.
 *
 * Locks: fstats_lock (the per-file counter hash, not the counters), glob_lock (written by
 * emu_set_glob, read by emu_fmt_config).
 */

#include "emu.h"

/* The names of enum emu_ctr and enum emu_fctr (emu.h): the keys of user.efsemu.stats. */
/* clang-format off */
static const char *const ctr_names[C_NR] = {
	"ops", "lookups", "getattrs", "readdirs", "opens",
	"read_ops", "read_bytes", "write_ops", "write_bytes", "faults",
	"estale", "neg_entries", "attr_invals", "open_getattrs", "hangs",
};
/* clang-format on */

/* clang-format off */
static const char *const fctr_names[F_NR] = {
	"opens", "read_ops", "read_bytes", "write_ops", "write_bytes", "getattrs", "lookups",
};
/* clang-format on */

/* ---- counters ---- */

void ctr_add(struct emu *e, enum emu_ctr c, uint64_t n)
{
	atomic_fetch_add_explicit(&e->ctr[c], n, memory_order_relaxed);
}

void fctr_add(struct emu_inode *in, enum emu_fctr c, uint64_t n)
{
	if (in->st)
		atomic_fetch_add_explicit(&in->st->v[c], n, memory_order_relaxed);
}

/* Count one metadata request (and 'kind' if it is not C_OPS) and delay it. */
void emu_meta(struct emu *e, enum emu_ctr kind)
{
	uint64_t lat = atomic_load(&e->meta_latency_ns);

	ctr_add(e, C_OPS, 1);
	if (kind != C_OPS)
		ctr_add(e, kind, 1);
	if (lat)
		emu_sleep_until(emu_now() + lat);
}

/* ---- per-file counters ---- */

/* Find or create the counters of (dev, ino); NULL only on ENOMEM. Takes fstats_lock. */
struct emu_fstats *emu_fstats_get(struct emu *e, dev_t dev, ino_t ino)
{
	struct emu_fstats *st, *fresh = calloc(1, sizeof(*fresh));

	pthread_mutex_lock(&e->fstats_lock);
	st = (struct emu_fstats *)htab_find(&e->fstats, dev, ino);
	if (!st && fresh) {
		fresh->h.dev = dev;
		fresh->h.ino = ino;
		htab_insert(&e->fstats, &fresh->h);
		st = fresh;
		fresh = NULL;
	}
	pthread_mutex_unlock(&e->fstats_lock);
	free(fresh);
	return st;
}

static void emu_reset_counters(struct emu *e)
{
	for (int c = 0; c < C_NR; c++)
		atomic_store(&e->ctr[c], 0);
	pthread_mutex_lock(&e->fstats_lock);
	for (size_t i = 0; i < e->fstats.nb; i++) {
		for (struct emu_hnode *p = e->fstats.b[i]; p; p = p->next) {
			struct emu_fstats *st = (struct emu_fstats *)p;

			for (int c = 0; c < F_NR; c++)
				atomic_store(&st->v[c], 0);
		}
	}
	pthread_mutex_unlock(&e->fstats_lock);
}

/* ---- settings ---- */

static int parse_double(const char *val, double max, double *out)
{
	char *end;
	double d;

	errno = 0;
	d = strtod(val, &end);
	if (errno || end == val || *end || !(d >= 0 && d <= max)) /* also NaN, inf */
		return -EINVAL;
	*out = d;
	return 0;
}

static int parse_u64(const char *val, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (*val < '0' || *val > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(val, &end, 10);
	if (errno || *end)
		return -EINVAL;
	*out = v;
	return 0;
}

static int emu_set_glob(struct emu *e, char **slot, const char *val)
{
	char *glob = *val ? strdup(val) : NULL;
	char *old;

	if (*val && !glob)
		return -ENOMEM;
	pthread_rwlock_wrlock(&e->glob_lock);
	old = *slot;
	*slot = glob;
	atomic_store(&e->have_globs, e->fail_eio || e->fail_enoent || e->fail_estale || e->hang ||
					     e->short_reads || e->flip_reads);
	pthread_rwlock_unlock(&e->glob_lock);
	free(old);
	return 0;
}

/* Seconds (fractions allowed, 0 to 1e6) as ns; -EINVAL with *why set otherwise. */
static int parse_secs(const char *val, uint64_t *ns, const char **why)
{
	double d;

	if (parse_double(val, 1e6, &d)) {
		*why = "expected a number of seconds from 0 to 1000000 (fractions allowed)";
		return -EINVAL;
	}
	*ns = (uint64_t)(d * 1e9 + 0.5);
	return 0;
}

/* Settings of the faults above (emu_set's tail); -ENOENT for an unknown key. */
static int emu_set_extra(struct emu *e, const char *key, const char *val, const char **why)
{
	double d;

	if (!strcmp(key, "hang_ms")) {
		if (parse_double(val, 3600e3, &d)) {
			*why = "expected milliseconds from 0 (until the hang glob is cleared) to "
			       "3600000";
			return -EINVAL;
		}
		atomic_store(&e->hang_ns, (uint64_t)(d * 1e6 + 0.5));
		return 0;
	}
	if (!strcmp(key, "fail_estale"))
		return emu_set_glob(e, &e->fail_estale, val);
	if (!strcmp(key, "hang"))
		return emu_set_glob(e, &e->hang, val);
	if (!strcmp(key, "short_reads"))
		return emu_set_glob(e, &e->short_reads, val);
	if (!strcmp(key, "flip_reads"))
		return emu_set_glob(e, &e->flip_reads, val);
	return -ENOENT;
}

/*
 * Apply setting 'key' (without the user.efsemu. prefix) = 'val'. Shared by -o parsing and
 * setxattr. Returns 0, -EINVAL for a bad value (*why says what was expected), -ENOENT for
 * an unknown key, -ENOMEM.
 */
int emu_set(struct emu *e, const char *key, const char *val, const char **why)
{
	double d;
	uint64_t u;

	*why = "";
	if (!strcmp(key, "latency_ms") || !strcmp(key, "meta_latency_ms")) {
		if (parse_double(val, 3600e3, &d)) {
			*why = "expected milliseconds from 0 to 3600000 (fractions allowed)";
			return -EINVAL;
		}
		atomic_store(key[0] == 'l' ? &e->latency_ns : &e->meta_latency_ns,
			     (uint64_t)(d * 1e6 + 0.5));
		return 0;
	}
	if (!strcmp(key, "bw_mib")) {
		if (parse_double(val, 1e9, &d)) {
			*why = "expected MiB/s from 0 (unlimited) to 1e9";
			return -EINVAL;
		}
		atomic_store(&e->bw_bps, (uint64_t)(d * EMU_MIB + 0.5));
		return 0;
	}
	if (!strcmp(key, "fail_after_bytes")) {
		if (parse_u64(val, &u)) {
			*why = "expected a decimal number of bytes (0 = off)";
			return -EINVAL;
		}
		atomic_store(&e->fail_after_bytes, 0);
		atomic_store(&e->fault_bytes, 0);
		atomic_store(&e->fail_after_bytes, u);
		return 0;
	}
	if (!strcmp(key, "serial_reads")) {
		if (strcmp(val, "0") && strcmp(val, "1")) {
			*why = "expected 0 or 1";
			return -EINVAL;
		}
		atomic_store(&e->serial_reads, val[0] == '1');
		return 0;
	}
	if (!strcmp(key, "acregmin") || !strcmp(key, "acdirmin")) {
		if (parse_secs(val, &u, why))
			return -EINVAL;
		atomic_store(key[2] == 'r' ? &e->acreg_ns : &e->acdir_ns, u);
		return 0;
	}
	if (!strcmp(key, "timeout")) {
		if (!*val) { /* empty: back to acregmin/acdirmin */
			atomic_store(&e->timeout_ns, EMU_UNSET);
			return 0;
		}
		if (parse_secs(val, &u, why))
			return -EINVAL;
		atomic_store(&e->timeout_ns, u);
		return 0;
	}
	if (!strcmp(key, "lookupcache")) {
		if (!strcmp(val, "all"))
			atomic_store(&e->lookupcache, LC_ALL);
		else if (!strcmp(val, "positive") || !strcmp(val, "pos"))
			atomic_store(&e->lookupcache, LC_POSITIVE);
		else if (!strcmp(val, "none"))
			atomic_store(&e->lookupcache, LC_NONE);
		else {
			*why = "expected all, positive or none";
			return -EINVAL;
		}
		return 0;
	}
	if (!strcmp(key, "fail_eio"))
		return emu_set_glob(e, &e->fail_eio, val);
	if (!strcmp(key, "fail_enoent"))
		return emu_set_glob(e, &e->fail_enoent, val);
	return emu_set_extra(e, key, val, why);
}

/* ---- key=value text for the stats xattr, the stats file and the config xattr ---- */

static size_t emu_fmt_totals(struct emu *e, char *buf, size_t size)
{
	size_t n = 0;

	for (int c = 0; c < C_NR && n < size; c++)
		n += (size_t)snprintf(buf + n, size - n, "%s%s=%" PRIu64, c ? " " : "",
				      ctr_names[c], atomic_load(&e->ctr[c]));
	if (n < size)
		n += (size_t)snprintf(buf + n, size - n, " hung_now=%" PRIu64,
				      atomic_load(&e->hung_now));
	if (n < size) {
		size_t inodes;

		pthread_mutex_lock(&e->inode_lock);
		inodes = e->inodes.n;
		pthread_mutex_unlock(&e->inode_lock);
		n += (size_t)snprintf(buf + n, size - n, " inodes=%zu pruned=%" PRIu64, inodes,
				      atomic_load(&e->pruned));
	}
	return n < size ? n : size - 1;
}

static size_t emu_fmt_file(const struct emu_fstats *st, char *buf, size_t size)
{
	size_t n = 0;

	for (int c = 0; c < F_NR && n < size; c++)
		n += (size_t)snprintf(buf + n, size - n, "%s%s=%" PRIu64, c ? " " : "",
				      fctr_names[c], st ? atomic_load(&st->v[c]) : 0);
	return n < size ? n : size - 1;
}

static size_t emu_fmt_config(struct emu *e, char *buf, size_t size)
{
	static const char *const lc_names[] = {"all", "positive", "none"};
	uint64_t t = atomic_load(&e->timeout_ns);
	char tbuf[32] = "";
	int n;

	if (t != EMU_UNSET)
		snprintf(tbuf, sizeof(tbuf), "%g", ns_to_s(t));
	pthread_rwlock_rdlock(&e->glob_lock);
	n = snprintf(buf, size,
		     "latency_ms=%g meta_latency_ms=%g bw_mib=%g serial_reads=%d "
		     "fail_after_bytes=%" PRIu64 " acregmin=%g acdirmin=%g lookupcache=%s "
		     "timeout=%s fail_eio=%s fail_enoent=%s",
		     (double)atomic_load(&e->latency_ns) / 1e6,
		     (double)atomic_load(&e->meta_latency_ns) / 1e6,
		     (double)atomic_load(&e->bw_bps) / EMU_MIB, (int)atomic_load(&e->serial_reads),
		     atomic_load(&e->fail_after_bytes), ns_to_s(atomic_load(&e->acreg_ns)),
		     ns_to_s(atomic_load(&e->acdir_ns)), lc_names[atomic_load(&e->lookupcache)],
		     tbuf, e->fail_eio ? e->fail_eio : "", e->fail_enoent ? e->fail_enoent : "");
	pthread_rwlock_unlock(&e->glob_lock);
	return n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
}

/* Write the totals to stats_file (via a temporary and rename). */
void emu_write_stats_file(struct emu *e)
{
	char buf[1024];
	char tmp[PATH_MAX];
	size_t n;
	int fd;

	if (!e->stats_file)
		return;
	n = emu_fmt_totals(e, buf, sizeof(buf) - 1);
	buf[n++] = '\n';
	snprintf(tmp, sizeof(tmp), "%s.tmp", e->stats_file);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		goto err;
	if (write(fd, buf, n) != (ssize_t)n) {
		close(fd);
		goto err_unlink;
	}
	if (close(fd) < 0 || rename(tmp, e->stats_file) < 0)
		goto err_unlink;
	return;

err_unlink:
	unlink(tmp);
err:
	emu_err("writing stats file '%s': %s", e->stats_file, strerror(errno));
}

/* ---- xattrs, including the user.efsemu.* control interface ---- */

static bool is_ctl_name(const char *name)
{
	return strncmp(name, EMU_XATTR, EMU_XATTR_LEN) == 0;
}

/* Reply to a getxattr/listxattr with 'len' bytes of 'val' for a caller buffer of 'size'. */
static void emu_reply_value(fuse_req_t req, const char *val, size_t len, size_t size)
{
	if (!size)
		fuse_reply_xattr(req, len);
	else if (len > size)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, val, len);
}

static void emu_ctl_get(fuse_req_t req, struct emu *e, struct emu_inode *in, const char *key,
			size_t size)
{
	char buf[1024];
	size_t n;

	if (!strcmp(key, "stats")) {
		n = in == &e->root ? emu_fmt_totals(e, buf, sizeof(buf))
				   : emu_fmt_file(in->st, buf, sizeof(buf));
	} else if (!strcmp(key, "config") && in == &e->root) {
		n = emu_fmt_config(e, buf, sizeof(buf));
	} else {
		fuse_reply_err(req, ENODATA);
		return;
	}
	emu_reply_value(req, buf, n, size);
}

static void emu_ctl_set(fuse_req_t req, struct emu *e, struct emu_inode *in, const char *key,
			const char *value, size_t size)
{
	char val[PATH_MAX];
	const char *why;
	int err;

	if (in != &e->root) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (!strcmp(key, "reset")) {
		emu_reset_counters(e);
		fuse_reply_err(req, 0);
		return;
	}
	if (size >= sizeof(val)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	memcpy(val, value, size);
	val[size] = '\0';
	while (size && (val[size - 1] == '\n' || val[size - 1] == '\0'))
		val[--size] = '\0';
	err = emu_set(e, key, val, &why);
	fuse_reply_err(req, err == -ENOENT ? EINVAL : -err);
}

void emu_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct emu *e = emu_of(req);
	struct emu_inode *in = emu_inode(e, ino);
	char proc[64];
	char *buf = NULL;
	ssize_t n;

	if (is_ctl_name(name)) {
		emu_ctl_get(req, e, in, name + EMU_XATTR_LEN, size);
		return;
	}
	emu_meta(e, C_OPS);
	emu_procname(proc, sizeof(proc), in->fd);
	if (size) {
		buf = malloc(size);
		if (!buf) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
	}
	n = getxattr(proc, name, buf, size);
	if (n < 0)
		fuse_reply_err(req, errno);
	else
		emu_reply_value(req, buf, (size_t)n, size);
	free(buf);
}

void emu_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct emu *e = emu_of(req);
	char proc[64];
	char *buf = NULL, *p, *q;
	ssize_t n;

	emu_meta(e, C_OPS);
	emu_procname(proc, sizeof(proc), emu_inode(e, ino)->fd);
	/* Fetch the whole list even for a size probe: our names are filtered out of it. */
	for (;;) {
		n = listxattr(proc, NULL, 0);
		if (n < 0) {
			fuse_reply_err(req, errno);
			return;
		}
		free(buf);
		buf = malloc((size_t)n + 1);
		if (!buf) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
		n = listxattr(proc, buf, (size_t)n);
		if (n >= 0)
			break;
		if (errno != ERANGE) {
			fuse_reply_err(req, errno);
			goto out_free;
		}
	}
	for (p = q = buf; p < buf + n; p += strlen(p) + 1) {
		size_t len = strlen(p) + 1;

		if (!is_ctl_name(p)) {
			memmove(q, p, len);
			q += len;
		}
	}
	emu_reply_value(req, buf, (size_t)(q - buf), size);
out_free:
	free(buf);
}

void emu_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size,
		  int flags)
{
	struct emu *e = emu_of(req);
	struct emu_inode *in = emu_inode(e, ino);
	char proc[64];

	if (is_ctl_name(name)) {
		emu_ctl_set(req, e, in, name + EMU_XATTR_LEN, value, size);
		return;
	}
	emu_meta(e, C_OPS);
	emu_procname(proc, sizeof(proc), in->fd);
	fuse_reply_err(req, setxattr(proc, name, value, size, flags) < 0 ? errno : 0);
}

void emu_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	struct emu *e = emu_of(req);
	char proc[64];

	if (is_ctl_name(name)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	emu_meta(e, C_OPS);
	emu_procname(proc, sizeof(proc), emu_inode(e, ino)->fd);
	fuse_reply_err(req, removexattr(proc, name) < 0 ? errno : 0);
}
