/* Structured logging. A line is built field by field into a per-thread buffer:
 *
 *   sg_log_begin(SG_LOG_INFO, "rpc");
 *   sg_log_str("method", path, path_len);   // escaped: client bytes cannot forge fields
 *   sg_log_int("code", 0);
 *   sg_log_end();
 *
 * Text format is logfmt (time=... level=info msg=rpc method=...); JSON format is one object
 * per line. Event-loop threads call sg_log_set_buffered(1) and flush in batches (see
 * net/loop.c), so a loop serving a hundred thousand RPCs a second makes a few thousand
 * write()s rather than one per line. Other threads write each line when it ends.
 *
 * Never pass a secret value, sealed token or API key to any of these functions. */
#ifndef SG_CORE_LOG_H
#define SG_CORE_LOG_H

#include <stddef.h>
#include <stdint.h>

typedef enum { SG_LOG_DEBUG, SG_LOG_INFO, SG_LOG_WARN, SG_LOG_ERROR } sg_log_level;
typedef enum { SG_LOG_TEXT, SG_LOG_JSON } sg_log_format;

/* Sets the threshold, format and destination (default: info, text, stderr). Call before any
 * thread logs. */
void sg_log_init(sg_log_level min_level, sg_log_format format, int fd);

/* Parses "debug", "info", "warn", "error" / "text", "json". Returns 0, or -1 if unknown. */
int sg_log_parse_level(const char *s, sg_log_level *out);
int sg_log_parse_format(const char *s, sg_log_format *out);

/* Returns nonzero if lines at |level| are written. */
int sg_log_enabled(sg_log_level level);

/* Starts a line with its time, level and event name. Fields added until sg_log_end belong to
 * it. A line whose level is below the threshold is built by no-ops. */
void sg_log_begin(sg_log_level level, const char *event);
void sg_log_str(const char *key, const char *value, size_t len);
void sg_log_cstr(const char *key, const char *value);
void sg_log_int(const char *key, int64_t value);
void sg_log_double(const char *key, double value);
void sg_log_end(void);

/* A one-field line: msg=<event> detail=<formatted text>. For sealgate's own words only. */
void sg_logf(sg_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* In buffered mode the calling thread's lines wait for sg_log_flush (or a full buffer). */
void sg_log_set_buffered(int on);
void sg_log_flush(void);

/* Bytes of complete lines waiting in the calling thread's buffer. */
size_t sg_log_pending(void);

/* Starts a writer thread: from now on lines are handed to it and never written by the thread
 * that made them, so a slow log sink (a stalled pipe, a full disk) cannot stop an event loop.
 * While the writer is SG_LOG_QUEUE_MAX bytes behind, new lines are dropped and counted, and a
 * line saying how many goes out once it catches up. */
#define SG_LOG_QUEUE_MAX (8u << 20)
void sg_log_start_writer(void);

/* Writes out what the writer still holds and stops it; lines are written directly again. */
void sg_log_stop_writer(void);

#endif
