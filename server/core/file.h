/* Small-file I/O that survives signals and crashes: whole reads and writes (EINTR retried) and
 * making a new directory entry durable. */
#ifndef SG_CORE_FILE_H
#define SG_CORE_FILE_H

#include <stddef.h>
#include <sys/types.h>

/* Reads up to |cap| bytes (all of a small file); returns the count or -1 (errno set). */
ssize_t sg_read_all(int fd, char *buf, size_t cap);

/* Writes all |n| bytes; returns 0 or -1 (errno set). */
int sg_write_all(int fd, const char *p, size_t n);

/* fsyncs directory |dir|, so that a file just created in it survives a crash. Best effort: a
 * directory that cannot be opened still holds a file the caller fsync'd. */
void sg_sync_dir(const char *dir);

#endif
