/* test_ctlproto.c - the control protocol (both sides use it): round trips,
 * refusal of malformed lines, the reader over a real socket pair, and who
 * may act on the cache.  No mount. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "control.h"
#include "ctlproto.h"

static void test_roundtrip(void)
{
	struct ctl_msg m, back;
	char line[CTL_LINE_MAX];
	size_t n;

	/* Every kind, every field at its largest value: fits a line. */
	for (int k = 0; k < CTL__NKINDS; k++) {
		ctl_msg_init(&m, (enum ctl_kind)k);
		for (int f = 0; f < CTL__NFIELDS; f++)
			ctl_set(&m, (enum ctl_field)f, UINT64_MAX - (uint64_t)f);
		n = ctl_format(&m, line, sizeof(line));
		CHECK(n < sizeof(line) && line[n - 1] == '\n');
		line[n - 1] = '\0';
		CHECK(ctl_parse(line, &back) == 0);
		CHECK(back.kind == m.kind && back.has == m.has);
		CHECK(!memcmp(back.v, m.v, sizeof(m.v)));
	}
	ctl_msg_init(&m, CTL_EVICT);
	ctl_set(&m, CTL_F_ino, 1234);
	n = ctl_format(&m, line, sizeof(line));
	CHECK(!strcmp(line, "evict ino=1234\n") && n == strlen(line));
	CHECK(ctl_get(&m, CTL_F_error) == 0 && ctl_get(&m, CTL_F_ino) == 1234);
}

static void test_parse_errors(void)
{
	static const char *const bad[] = {
	    "", "evil", "evict ino", "evict ino=", "evict ino=-1", "evict ino=12x",
	    "evict =5", "evict ino=99999999999999999999999", "evict  ino=1", "evict ino=1 ",
	    "done error=0x10",
	};
	struct ctl_msg m;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = ctl_parse(bad[i], &m);
		CHECK(r == -EBADMSG);
		if (r != -EBADMSG)
			fprintf(stderr, "accepted: '%s'\n", bad[i]);
	}
	/* Unknown fields are skipped: either side may add some. */
	CHECK(ctl_parse("done error=1 future_field=7 chunks_bad=3", &m) == 0);
	CHECK(m.kind == CTL_DONE && ctl_get(&m, CTL_F_error) == 1 &&
	      ctl_get(&m, CTL_F_chunks_bad) == 3);
	CHECK(ctl_parse("verify", &m) == 0 && m.kind == CTL_VERIFY && m.has == 0);
}

static void test_socket(void)
{
	struct ctl_reader rd;
	struct ctl_msg m;
	char junk[CTL_LINE_MAX + 10];
	int sv[2];

	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	ctl_reader_init(&rd, sv[1]);
	ctl_msg_init(&m, CTL_PROGRESS);
	ctl_set(&m, CTL_F_chunks_checked, 5);
	CHECK(ctl_send(sv[0], &m) == 0);
	ctl_msg_init(&m, CTL_DONE);
	CHECK(ctl_send(sv[0], &m) == 0);
	/* Two messages in one recv come out one by one. */
	CHECK(ctl_recv(&rd, &m) == 0 && m.kind == CTL_PROGRESS &&
	      ctl_get(&m, CTL_F_chunks_checked) == 5);
	CHECK(ctl_recv(&rd, &m) == 0 && m.kind == CTL_DONE);
	/* A line longer than any message is refused, not buffered forever. */
	memset(junk, 'x', sizeof(junk));
	CHECK(write(sv[0], junk, sizeof(junk)) == (ssize_t)sizeof(junk));
	CHECK(ctl_recv(&rd, &m) == -EBADMSG);
	close(sv[0]);
	close(sv[1]);

	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	ctl_reader_init(&rd, sv[1]);
	close(sv[0]);
	CHECK(ctl_recv(&rd, &m) == -ECONNRESET);
	close(sv[1]);
}

static void test_allowed(void)
{
	CHECK(control_allowed(0, 1000));
	CHECK(control_allowed(1000, 1000));
	CHECK(!control_allowed(65534, 1000));
	CHECK(!control_allowed(65534, 0));
	CHECK(control_allowed(0, 0));
}

int main(void)
{
	test_roundtrip();
	test_parse_errors();
	test_socket();
	test_allowed();
	return check_done("test_ctlproto");
}
