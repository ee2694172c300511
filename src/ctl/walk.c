/* walk.c - visit the regular files of the paths efscachectl is given.
 *
 * Contract: a file is visited as itself, a directory by its regular files
 * at any depth, sorted by name, without following symlinks or crossing into
 * another file system mounted inside.  Errors (unreadable directories, out
 * of memory) are reported with their path and counted; a file that vanished
 * during the walk is skipped silently.  The callback runs on the calling
 * thread.  No locks.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Visit the regular files under dir.  Returns the number of errors reported. */
static unsigned walk_dir(const char *dir, dev_t dev, walk_fn fn, void *arg)
{
	DIR *d = opendir(dir);
	char **names = NULL;
	size_t n = 0, cap = 0;
	unsigned errors = 0;
	struct dirent *e;

	if (!d) {
		path_error(dir, errno);
		return 1;
	}
	errno = 0;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 64;
			char **nn = realloc(names, ncap * sizeof(*nn));
			if (!nn)
				break;
			names = nn;
			cap = ncap;
		}
		if (!(names[n] = strdup(e->d_name)))
			break;
		n++;
		errno = 0;
	}
	if (errno) {
		path_error(dir, errno);
		errors++;
	}
	if (n)
		qsort(names, n, sizeof(*names), cmp_names);
	for (size_t i = 0; i < n; i++) {
		char *p = path_join(dir, names[i]);
		struct stat st;

		if (!p) {
			path_error(dir, ENOMEM);
			errors++;
		} else if (fstatat(dirfd(d), names[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno != ENOENT) { /* gone meanwhile: nothing to do */
				path_error(p, errno);
				errors++;
			}
		} else if (st.st_dev != dev) {
			/* another file system mounted inside: not ours */
		} else if (S_ISDIR(st.st_mode)) {
			errors += walk_dir(p, dev, fn, arg);
		} else if (S_ISREG(st.st_mode)) {
			if (fn(p, &st, arg) < 0)
				errors++;
		}
		free(p);
		free(names[i]);
	}
	free(names);
	closedir(d);
	return errors;
}

unsigned walk(const char *path, walk_fn fn, void *arg, bool *is_dir)
{
	struct stat st;

	*is_dir = false;
	if (stat(path, &st) < 0) {
		path_error(path, errno);
		return 1;
	}
	if (S_ISDIR(st.st_mode)) {
		*is_dir = true;
		return walk_dir(path, st.st_dev, fn, arg);
	}
	if (!S_ISREG(st.st_mode)) {
		report("%s: not a regular file or directory", path);
		return 1;
	}
	return fn(path, &st, arg) < 0 ? 1 : 0;
}

unsigned walk_args(int argc, char **argv, int from, walk_fn fn, void *arg, const bool *stop)
{
	unsigned errors = 0;

	for (int i = from; i < argc; i++) {
		bool is_dir;

		if (stop && *stop)
			break;
		if (!probe_mount(argv[i])) {
			errors++;
			continue;
		}
		errors += walk(argv[i], fn, arg, &is_dir);
	}
	return errors;
}
