/* meta.h - how long the kernel may cache names and attributes, and when an
 * open must ask the source again: efscache's metadata consistency model.
 *
 * The model is the Linux NFS client's with the options EFS recommends
 * (docs/design.md, "Metadata"):
 *   - attributes of a file are cached between acregmin and acregmax seconds,
 *     of a directory between acdirmin and acdirmax; the window starts at the
 *     minimum, doubles each time the source reports the object unchanged and
 *     falls back to the minimum when it changed (NFS's attrtimeo);
 *   - names are cached for the parent directory's attribute window;
 *     negative entries too with lookupcache=all (none with positive,
 *     and no name caching at all with none);
 *   - close-to-open (cto, the default): every open of a file asks the source
 *     once; with nocto an open trusts attributes still inside their window;
 *   - ttl=N: the tree may be N seconds stale, so every window is at least N
 *     and an open trusts a validation younger than N; ttl=never: immutable;
 *   - ttl=never: attributes the source reported for a file (a lookup, its
 *     directory's index) that equal its cached record's identity validate
 *     it: one look at the source per file, not per file and daemon.
 * Pure functions over a policy and a per-inode state: no I/O, no locks (the
 * caller protects struct meta_attr).
 */
#ifndef EFS_META_H
#define EFS_META_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

struct efs_config;

enum lookupcache_mode { LOOKUPCACHE_ALL, LOOKUPCACHE_POSITIVE, LOOKUPCACHE_NONE };

struct meta_policy {
	double regmin, regmax; /* seconds, after ttl's floor */
	double dirmin, dirmax;
	enum lookupcache_mode lookupcache;
	bool cto;              /* open asks the source (unless ttl trusts it) */
	bool immutable;        /* ttl=never (or -o immutable) */
	bool no_open;          /* -o immutable: the kernel opens without asking */
	double ttl;            /* seconds an open trusts a validation; 0 = none */
};

/* Per-inode attribute cache state; the caller protects it. */
struct meta_attr {
	bool seen;                    /* fields below hold a source answer */
	double timeo;                 /* current window, seconds */
	struct timespec mtime, ctime; /* as last seen */
	int64_t size;
	struct timespec at;           /* CLOCK_MONOTONIC of that answer */
};

void meta_policy_init(struct meta_policy *p, const struct efs_config *cfg);

/* The source just answered st for an object (lookup, getattr, open check):
 * adapt its window (doubled if unchanged, reset if changed) and return the
 * attribute timeout to give the kernel. */
double meta_observe(const struct meta_policy *p, struct meta_attr *a, const struct stat *st,
		    const struct timespec *now);
/* Does st show the size, mtime and ctime last seen in a? */
bool meta_attr_same(const struct meta_attr *a, const struct stat *st);
/* Timeout for a name (positive entry) found in a directory whose state is
 * dir. */
double meta_entry_timeout(const struct meta_policy *p, const struct meta_attr *dir);
/* Timeout for a negative entry in dir; 0 = do not cache it. */
double meta_negative_timeout(const struct meta_policy *p, const struct meta_attr *dir);
/* May an open of a file skip asking the source?  validated_age: seconds
 * since its data was last validated against the source (< 0: never). */
bool meta_open_trusts(const struct meta_policy *p, const struct meta_attr *a,
		      double validated_age, const struct timespec *now);
/* Seconds from a to b. */
double meta_elapsed(const struct timespec *a, const struct timespec *b);

#endif
