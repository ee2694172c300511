/* io.h - whole-buffer pread/pwrite, retrying short transfers and EINTR. */
#ifndef EFS_IO_H
#define EFS_IO_H

#include <stddef.h>
#include <sys/types.h>

/* Read up to len bytes at off; fewer only at end of file.  Returns the
 * count or -errno. */
ssize_t io_pread_full(int fd, void *buf, size_t len, off_t off);
/* Write all len bytes at off.  Returns 0 or -errno. */
int io_pwrite_full(int fd, const void *buf, size_t len, off_t off);

#endif
