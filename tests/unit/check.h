/* check.h - tiny assertion macros for the unit tests.
 *
 * CHECK() records a failure and keeps going so one run shows every broken
 * case; check_done() prints the summary and returns the exit status.
 * The counters are atomic: tests call CHECK() from the threads they start.
 */
#ifndef EFS_CHECK_H
#define EFS_CHECK_H

#include <stdio.h>
#include <string.h>

/* A program built from several files that CHECK defines CHECK_SHARED_COUNTERS
 * before including this in each, and the two counters in one of them
 * (tests/unit/cache_fixture.h and .c); a program of one file needs nothing. */
#ifdef CHECK_SHARED_COUNTERS
extern _Atomic int check_failures;
extern _Atomic int check_count;
#else
static _Atomic int check_failures;
static _Atomic int check_count;
#endif

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		check_count++;                                                                     \
		if (!(cond)) {                                                                     \
			check_failures++;                                                          \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);  \
		}                                                                                  \
	} while (0)

#define CHECK_STR_CONTAINS(hay, needle)                                                            \
	do {                                                                                       \
		check_count++;                                                                     \
		if (!strstr((hay), (needle))) {                                                    \
			check_failures++;                                                          \
			fprintf(stderr, "%s:%d: '%s' does not contain '%s'\n", __FILE__,           \
				__LINE__, (hay), (needle));                                        \
		}                                                                                  \
	} while (0)

static inline int check_done(const char *name)
{
	printf("%s: %d checks, %d failed\n", name, check_count, check_failures);
	return check_failures ? 1 : 0;
}

#endif
