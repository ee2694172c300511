/* fsinfo.h - what kind of file system a path is on, for warnings at start.
 *
 * Pure queries (statfs), no state.  The daemon calls fsinfo_ram_warning()
 * on cache_dir once at start: a cache in RAM (tmpfs, ramfs) competes with
 * the applications for memory and is gone after a reboot, which defeats its
 * purpose; /tmp, the default cache_dir's home, is a tmpfs on Debian 13,
 * Fedora, Arch and others.
 */
#ifndef EFS_FSINFO_H
#define EFS_FSINFO_H

#include <stddef.h>

/* If path (or, while it does not exist yet, its nearest existing parent) is
 * on a file system that keeps its data in RAM, write a one-line warning
 * naming path and the file system into buf (NUL-terminated, truncated to
 * len) and return 1.  0 if it is not; -errno if no part of path could be
 * checked (buf untouched).  what names the path in the message
 * ("cache_dir"). */
int fsinfo_ram_warning(const char *what, const char *path, char *buf, size_t len);

#endif
