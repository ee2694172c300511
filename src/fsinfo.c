/* fsinfo.c - what kind of file system a path is on (statfs); see fsinfo.h.
 * No state, no locks. */
#include "fsinfo.h"

#include <errno.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/vfs.h>

/* statfs of path, or of its nearest existing parent.  0 or -errno. */
static int statfs_existing(const char *path, struct statfs *sf)
{
	char *p = strdup(path), *slash;
	int r;

	if (!p)
		return -ENOMEM;
	for (;;) {
		if (statfs(*p ? p : "/", sf) == 0) {
			r = 0;
			break;
		}
		r = -errno;
		slash = strrchr(p, '/');
		if (r != -ENOENT || !slash)
			break;
		*slash = '\0'; /* "/a" becomes "", which is "/" above */
	}
	free(p);
	return r;
}

int fsinfo_ram_warning(const char *what, const char *path, char *buf, size_t len)
{
	struct statfs sf;
	const char *kind;
	int r = statfs_existing(path, &sf);

	if (r < 0)
		return r;
	if (sf.f_type == TMPFS_MAGIC)
		kind = "tmpfs";
	else if (sf.f_type == RAMFS_MAGIC)
		kind = "ramfs";
	else
		return 0;
	snprintf(buf, len,
		 "%s '%s' is on %s, in RAM: the cache takes memory from the applications and "
		 "is lost at every reboot; put it on a disk (e.g. -o cache_dir=/var/cache/efscache)",
		 what, path, kind);
	return 1;
}
