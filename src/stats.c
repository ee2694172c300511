/* stats.c - names and formatting of the counters in stats.h. */
#include "stats.h"

#include <inttypes.h>
#include <stdio.h>

static const char *const names[] = {
#define X(name, help) #name,
	STATS_LIST(X)
#undef X
};

static const char *const helps[] = {
#define X(name, help) help,
	STATS_LIST(X)
#undef X
};

const char *stats_name(enum stat_id id)
{
	return names[id];
}

const char *stats_help(enum stat_id id)
{
	return helps[id];
}

size_t stats_format(const struct efs_stats *s, char *buf, size_t len)
{
	size_t used = 0;
	int i;

	for (i = 0; i < ST__COUNT; i++) {
		int n = snprintf(buf ? buf + (used < len ? used : len) : NULL,
				 used < len ? len - used : 0, "%s %" PRIu64 "\n", names[i],
				 stats_get(s, (enum stat_id)i));
		if (n > 0)
			used += (size_t)n;
	}
	return used;
}
