/* slownotify.c - an LD_PRELOAD module that makes the daemon's pushes into
 * the kernel's page cache slow, so a test can meet one in flight.
 *
 * libfuse sends a FUSE_NOTIFY_STORE (the cache's push of a swept chunk,
 * fsops_push.c) as one writev to /dev/fuse whose first segment is a
 * fuse_out_header with unique 0 and error FUSE_NOTIFY_STORE.  Such a
 * writev sleeps EFSCACHE_SLOW_NOTIFY_MS milliseconds (default 300) before
 * it is made; every other call goes straight through.  The sleep is in the
 * daemon, not in the kernel: the push holds no page lock meanwhile, so the
 * test sees the waits of the daemon's own fences, not the kernel's.
 *
 * With EFSCACHE_SLOW_OPEN_REPLY_MS set, a reply whose body is one struct
 * fuse_open_out (an OPEN's or OPENDIR's; a 16-byte READ's too) returns that
 * many milliseconds after it is written: the worker that answered an open
 * is still in the request while the kernel releases and forgets the file.
 * EFSCACHE_SLOW_REPLY_MS does the same after every reply: whatever a worker
 * does after answering meets the kernel's next requests on the same files.
 */
#include <dlfcn.h>
#include <linux/fuse.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>

static void sleep_ms(long ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

typedef ssize_t (*writev_fn)(int, const struct iovec *, int);

ssize_t writev(int fd, const struct iovec *iov, int n)
{
	static _Atomic(writev_fn) real;
	const struct fuse_out_header *hdr = n > 0 ? iov[0].iov_base : NULL;
	writev_fn f = real;

	if (!f) {
		void *p = dlsym(RTLD_NEXT, "writev");

		if (!p)
			abort(); /* no libc writev: nothing sane to do */
		memcpy(&f, &p, sizeof(f));
		real = f;
	}
	if (hdr && iov[0].iov_len >= sizeof(*hdr) && hdr->unique == 0 &&
	    hdr->error == FUSE_NOTIFY_STORE) {
		const char *v = getenv("EFSCACHE_SLOW_NOTIFY_MS");

		sleep_ms(v ? atol(v) : 300);
	}
	if (hdr && iov[0].iov_len >= sizeof(*hdr) && hdr->unique != 0) {
		const char *v = getenv("EFSCACHE_SLOW_REPLY_MS");
		ssize_t r;

		if (!v && hdr->error == 0 && n == 2 &&
		    iov[1].iov_len == sizeof(struct fuse_open_out))
			v = getenv("EFSCACHE_SLOW_OPEN_REPLY_MS");
		if (!v)
			return f(fd, iov, n);
		r = f(fd, iov, n);
		sleep_ms(atol(v));
		return r;
	}
	return f(fd, iov, n);
}
