/* main.c - efscachectl's entry: the help text, -h/-V, and dispatch of the
 * command word to its cmd_* (one file each: stats.c, status.c, warm.c,
 * evict.c, verify.c).
 *
 * Contract: exit status 0 on success, 1 if anything failed, 2 on a usage
 * error; the command sees its own name as argv[0] and parses its options
 * with getopt from optind 1.  No threads here, no locks.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "ctl.h"

const char usage_text[] =
    "usage: " PROG " COMMAND [OPTIONS] PATH...\n"
    "\n"
    "Inspect and control a mounted efscache through its mount point.\n"
    "\n"
    "commands:\n"
    "  stats [--raw|--json|--format=FMT] [--price-per-gb=USD] MOUNTPOINT\n"
    "                             counters of the mount's daemon and the EFS\n"
    "                             reads they saved; FMT is text (default), json\n"
    "                             or prometheus (for node_exporter's textfile\n"
    "                             collector); --raw prints one \"name value\"\n"
    "                             line each; --price-per-gb: EFS Elastic\n"
    "                             throughput's read price, to show the saving\n"
    "                             in dollars (no price by default)\n"
    "  status [--json] PATH...    per file: size, cached bytes, chunks, state,\n"
    "                             last validation; directories are recursed\n"
    "                             and get a total line\n"
    "  warm [-j N] PATH...        read files and trees through the mount so the\n"
    "                             daemon caches them, with N parallel readers\n"
    "                             (default 4)\n"
    "  evict PATH...              drop the cached data of files and trees (*)\n"
    "  verify MOUNTPOINT          re-hash every cached chunk in the daemon; bad\n"
    "                             chunks are removed; shows progress on a TTY;\n"
    "                             joins a verify already running (*)\n"
    "  verify CACHE_DIR           the same offline, on a cache_dir no daemon uses\n"
    "\n"
    "options:\n"
    "  -h, --help                 print this help and exit\n"
    "  -V, --version              print the version and exit\n"
    "\n"
    "PATH may be any path on an efscache mount.  (*) acts on the cache: only root\n"
    "and the mount's owner may (others get \"Operation not permitted\"); stats\n"
    "and status are open to anyone who can see the path and change nothing.\n"
    "Exit status: 0 on success, 1 if anything failed (or verify found bad data),\n"
    "2 on a usage error.\n";

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(int argc, char **argv);
	} cmds[] = {
	    {"stats", cmd_stats}, {"status", cmd_status}, {"warm", cmd_warm},
	    {"evict", cmd_evict}, {"verify", cmd_verify},
	};
	const char *cmd;

	if (argc < 2) {
		usage_error("missing COMMAND");
		return EXIT_USAGE;
	}
	cmd = argv[1];
	if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help")) {
		fputs(usage_text, stdout);
		return fflush(stdout) ? EXIT_FAIL : 0;
	}
	if (!strcmp(cmd, "-V") || !strcmp(cmd, "--version")) {
		printf(PROG " " EFSCACHE_VERSION "\n");
		return fflush(stdout) ? EXIT_FAIL : 0;
	}
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		if (!strcmp(cmd, cmds[i].name)) {
			/* getopt sees the command as argv[0]. */
			optind = 1;
			opterr = 0;
			return cmds[i].fn(argc - 1, argv + 1);
		}
	}
	if (cmd[0] == '-')
		usage_error("unknown option '%s'", cmd);
	else
		usage_error("unknown command '%s'", cmd);
	return EXIT_USAGE;
}
