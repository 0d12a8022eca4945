#include "core/log.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/uio.h>
#include <unistd.h>

#define SG_LOG_BUF       (64 * 1024)
#define SG_LOG_LINE_MAX  (8 * 1024) /* a line never grows past this */
#define SG_LOG_VALUE_MAX 1024       /* longer values are cut and marked with "..." */

/* The writer thread and its queue (see sg_log_start_writer). */
typedef struct log_chunk {
  struct log_chunk *next;
  size_t len;
  char data[];
} log_chunk;

static struct {
  pthread_mutex_t lock;
  pthread_cond_t wake;
  log_chunk *head, *tail;
  size_t bytes;
  uint64_t dropped_lines;
  int running, stop;
  int sleeping; /* the writer waits on |wake|: only then is a signal worth a system call */
  pthread_t thread;
} writer = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};

static sg_log_level g_min = SG_LOG_INFO;
static sg_log_format g_format = SG_LOG_TEXT;
static int g_fd = 2;
static pthread_mutex_t g_write_lock = PTHREAD_MUTEX_INITIALIZER;

typedef struct {
  char buf[SG_LOG_BUF];
  size_t len;
  size_t line_start;
  int active;   /* inside begin..end with an enabled level */
  int overflow; /* put() dropped bytes of the field being added */
  int buffered;
  time_t cached_sec; /* the formatted "YYYY-MM-DDTHH:MM:SS" below belongs to this second */
  char cached_time[24];
} sg_log_state;

/* 64 KiB per thread that logs; zero-initialized (cached_sec 0 never matches a real clock). */
static _Thread_local sg_log_state tls_state;

static sg_log_state *state(void) {
  return &tls_state;
}

void sg_log_init(sg_log_level min_level, sg_log_format format, int fd) {
  g_min = min_level;
  g_format = format;
  g_fd = fd;
}

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int sg_log_parse_level(const char *s, sg_log_level *out) {
  for (int i = 0; i < 4; i++) {
    if (strcmp(s, level_names[i]) == 0) {
      *out = (sg_log_level)i;
      return 0;
    }
  }
  return -1;
}

int sg_log_parse_format(const char *s, sg_log_format *out) {
  if (strcmp(s, "text") == 0)
    *out = SG_LOG_TEXT;
  else if (strcmp(s, "json") == 0)
    *out = SG_LOG_JSON;
  else
    return -1;
  return 0;
}

int sg_log_enabled(sg_log_level level) {
  return level >= g_min;
}

static void write_all(const char *p, size_t n) {
  pthread_mutex_lock(&g_write_lock);
  while (n > 0) {
    ssize_t w = write(g_fd, p, n);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      break; /* a log sink that fails must not take the server down */
    }
    p += w;
    n -= (size_t)w;
  }
  pthread_mutex_unlock(&g_write_lock);
}

/* Hands |n| bytes to the writer thread; returns 0 if it is not running (the caller writes). */
static int enqueue(const char *p, size_t n) {
  pthread_mutex_lock(&writer.lock);
  if (!writer.running) {
    pthread_mutex_unlock(&writer.lock);
    return 0;
  }
  log_chunk *c = writer.bytes + n > SG_LOG_QUEUE_MAX ? NULL : malloc(sizeof(*c) + n);
  if (c == NULL) { /* too far behind (or out of memory): drop, count, and carry on */
    for (size_t i = 0; i < n; i++)
      writer.dropped_lines += p[i] == '\n';
    pthread_mutex_unlock(&writer.lock);
    return 1;
  }
  c->next = NULL;
  c->len = n;
  memcpy(c->data, p, n);
  if (writer.tail != NULL)
    writer.tail->next = c;
  else
    writer.head = c;
  writer.tail = c;
  writer.bytes += n;
  if (writer.sleeping)
    pthread_cond_signal(&writer.wake);
  pthread_mutex_unlock(&writer.lock);
  return 1;
}

/* Writes a list of chunks with as few system calls as writev allows, then frees them. */
static void write_chunks(log_chunk *c) {
  while (c != NULL) {
    struct iovec iov[64];
    log_chunk *batch = c;
    int n = 0;
    for (; c != NULL && n < 64; c = c->next)
      iov[n++] = (struct iovec){c->data, c->len};
    pthread_mutex_lock(&g_write_lock);
    int i = 0;
    while (i < n) {
      ssize_t w = writev(g_fd, iov + i, n - i);
      if (w < 0 && errno == EINTR)
        continue;
      if (w < 0)
        break; /* a log sink that fails must not take the server down */
      while (i < n && (size_t)w >= iov[i].iov_len)
        w -= (ssize_t)iov[i++].iov_len;
      if (i < n) {
        iov[i].iov_base = (char *)iov[i].iov_base + w;
        iov[i].iov_len -= (size_t)w;
      }
    }
    pthread_mutex_unlock(&g_write_lock);
    while (batch != c) {
      log_chunk *next = batch->next;
      free(batch);
      batch = next;
    }
  }
}

static void *writer_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&writer.lock);
  for (;;) {
    while (writer.head == NULL && !writer.stop) {
      writer.sleeping = 1;
      pthread_cond_wait(&writer.wake, &writer.lock);
      writer.sleeping = 0;
    }
    if (writer.head == NULL)
      break;
    log_chunk *c = writer.head;
    uint64_t dropped = writer.dropped_lines;
    writer.head = writer.tail = NULL;
    writer.bytes = 0;
    writer.dropped_lines = 0;
    pthread_mutex_unlock(&writer.lock);
    if (dropped > 0) {
      char note[96];
      int n = snprintf(note, sizeof(note),
                       "level=warn msg=log_dropped lines=%llu detail=\"log sink too slow\"\n",
                       (unsigned long long)dropped);
      write_all(note, (size_t)n);
    }
    write_chunks(c);
    pthread_mutex_lock(&writer.lock);
  }
  pthread_mutex_unlock(&writer.lock);
  return NULL;
}

void sg_log_start_writer(void) {
  pthread_mutex_lock(&writer.lock);
  if (!writer.running) {
    writer.stop = 0;
    if (pthread_create(&writer.thread, NULL, writer_main, NULL) == 0)
      writer.running = 1;
  }
  pthread_mutex_unlock(&writer.lock);
}

void sg_log_stop_writer(void) {
  sg_log_flush();
  pthread_mutex_lock(&writer.lock);
  int running = writer.running;
  writer.stop = 1;
  writer.running = 0;
  pthread_cond_signal(&writer.wake);
  pthread_mutex_unlock(&writer.lock);
  if (running)
    pthread_join(writer.thread, NULL);
}

void sg_log_flush(void) {
  sg_log_state *s = state();
  size_t n = s->active ? s->line_start : s->len;
  if (n == 0)
    return;
  if (!enqueue(s->buf, n))
    write_all(s->buf, n);
  memmove(s->buf, s->buf + n, s->len - n);
  s->len -= n;
  s->line_start -= n;
}

size_t sg_log_pending(void) {
  sg_log_state *s = state();
  return s->active ? s->line_start : s->len;
}

void sg_log_set_buffered(int on) {
  state()->buffered = on;
}

static void put(sg_log_state *s, const char *p, size_t n) {
  size_t room = SG_LOG_BUF - s->len;
  if (s->len - s->line_start + n > SG_LOG_LINE_MAX - 2) {
    s->overflow = 1; /* field_end() drops the whole field */
    return;
  }
  if (n > room)
    n = room;
  memcpy(s->buf + s->len, p, n);
  s->len += n;
}

static void putc_(sg_log_state *s, char c) {
  put(s, &c, 1);
}

static void put_time(sg_log_state *s) {
  struct timespec ts;
  /* Millisecond timestamps from the coarse clock (a few ms of granularity, no system call):
   * durations are measured on CLOCK_MONOTONIC by the callers. */
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  if (ts.tv_sec != s->cached_sec) {
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    strftime(s->cached_time, sizeof(s->cached_time), "%Y-%m-%dT%H:%M:%S", &tm);
    s->cached_sec = ts.tv_sec;
  }
  long ms = ts.tv_nsec / 1000000;
  char frac[5] = {'.', (char)('0' + ms / 100), (char)('0' + ms / 10 % 10), (char)('0' + ms % 10),
                  'Z'};
  put(s, s->cached_time, strlen(s->cached_time));
  put(s, frac, sizeof(frac));
}

/* Digits of |v| into the end of |buf|; returns where they start. Writes at most 20 bytes. */
static char *format_int(char *end, int64_t v) {
  uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
  char *p = end;
  do {
    *--p = (char)('0' + u % 10);
    u /= 10;
  } while (u > 0);
  if (v < 0)
    *--p = '-';
  return p;
}

/* Printable ASCII that needs no escape (logfmt and JSON alike). */
static int literal(unsigned char c) {
  return c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
}

static void put_escaped(sg_log_state *s, const char *v, size_t n) {
  static const char hex[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    size_t run = i;
    while (run < n && literal((unsigned char)v[run]))
      run++;
    if (run > i) { /* copy runs of plain bytes at once */
      put(s, v + i, run - i);
      i = run;
      if (i == n)
        break;
    }
    unsigned char c = (unsigned char)v[i];
    if (c == '"' || c == '\\') {
      putc_(s, '\\');
      putc_(s, (char)c);
    } else if (c < 0x20 || c >= 0x7f) {
      /* Bytes outside printable ASCII are shown as escapes in both formats, so a client
       * cannot inject a newline or a terminal control sequence into the log. */
      char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
      if (g_format == SG_LOG_TEXT)
        put(s, (char[]){'\\', 'x', hex[c >> 4], hex[c & 15]}, 4);
      else
        put(s, e, 6);
    } else {
      putc_(s, (char)c);
    }
  }
}

/* A field that does not fit in the line is left out whole rather than cut at an arbitrary byte
 * (which could leave a quote open), so the line stays well formed. */
static size_t field_begin(sg_log_state *s) {
  s->overflow = 0;
  return s->len;
}

static void field_end(sg_log_state *s, size_t start) {
  if (s->overflow)
    s->len = start;
  s->overflow = 0;
}

static void put_key(sg_log_state *s, const char *key) {
  if (g_format == SG_LOG_JSON) {
    put(s, ",\"", 2);
    put(s, key, strlen(key));
    put(s, "\":", 2);
  } else {
    putc_(s, ' ');
    put(s, key, strlen(key));
    putc_(s, '=');
  }
}

void sg_log_begin(sg_log_level level, const char *event) {
  sg_log_state *s = state();
  s->active = level >= g_min;
  if (!s->active)
    return;
  if (SG_LOG_BUF - s->len < SG_LOG_LINE_MAX)
    sg_log_flush();
  s->line_start = s->len;
  if (g_format == SG_LOG_JSON) {
    put(s, "{\"time\":\"", 9);
    put_time(s);
    put(s, "\",\"level\":\"", 11);
    put(s, level_names[level], strlen(level_names[level]));
    put(s, "\",\"msg\":\"", 9);
    put_escaped(s, event, strlen(event));
    putc_(s, '"');
  } else {
    put(s, "time=", 5);
    put_time(s);
    put(s, " level=", 7);
    put(s, level_names[level], strlen(level_names[level]));
    put(s, " msg=", 5);
    put_escaped(s, event, strlen(event));
  }
}

void sg_log_str(const char *key, const char *value, size_t len) {
  sg_log_state *s = state();
  if (!s->active)
    return;
  int cut = len > SG_LOG_VALUE_MAX;
  if (cut)
    len = SG_LOG_VALUE_MAX;
  /* One scan decides both whether the value needs escapes and whether logfmt must quote it;
   * most values (paths, addresses, names) need neither and are copied whole. */
  size_t i = 0;
  int spaced = 0;
  for (; i < len; i++) {
    unsigned char c = (unsigned char)value[i];
    if (!literal(c))
      break;
    spaced |= c == ' ' || c == '=';
  }
  int clean = i == len;
  size_t start = field_begin(s);
  put_key(s, key);
  int quote = g_format == SG_LOG_JSON || cut || spaced || !clean || len == 0;
  if (quote)
    putc_(s, '"');
  if (clean)
    put(s, value, len);
  else
    put_escaped(s, value, len);
  if (cut)
    put(s, "...", 3);
  if (quote)
    putc_(s, '"');
  field_end(s, start);
}

void sg_log_cstr(const char *key, const char *value) {
  if (value == NULL)
    value = "";
  sg_log_str(key, value, strlen(value));
}

void sg_log_int(const char *key, int64_t value) {
  sg_log_state *s = state();
  if (!s->active)
    return;
  char num[24];
  char *digits = format_int(num + sizeof(num), value);
  size_t start = field_begin(s);
  put_key(s, key);
  put(s, digits, (size_t)(num + sizeof(num) - digits));
  field_end(s, start);
}

void sg_log_double(const char *key, double value) {
  sg_log_state *s = state();
  if (!s->active)
    return;
  char num[320]; /* "%.3f" of -DBL_MAX is 314 characters */
  int n;
  if (g_format == SG_LOG_JSON && !isfinite(value)) {
    n = snprintf(num, sizeof(num), "null"); /* JSON has no NaN or infinity */
  } else if (value > -1e15 && value < 1e15) {
    /* The common case (durations) without printf, rounding and signs as "%.3f" has them. */
    uint64_t mag = (uint64_t)(fabs(value) * 1000 + 0.5);
    char *end = num + sizeof(num), *p = end;
    for (int i = 0; i < 3; i++, mag /= 10)
      *--p = (char)('0' + mag % 10);
    *--p = '.';
    p = format_int(p, (int64_t)mag);
    if (signbit(value))
      *--p = '-';
    n = (int)(end - p);
    memmove(num, p, (size_t)n);
  } else {
    n = snprintf(num, sizeof(num), "%.3f", value);
  }
  size_t start = field_begin(s);
  put_key(s, key);
  put(s, num, (size_t)n);
  field_end(s, start);
}

void sg_log_end(void) {
  sg_log_state *s = state();
  if (!s->active)
    return;
  /* put() always leaves room for the two closing bytes of a line (SG_LOG_LINE_MAX - 2). */
  if (g_format == SG_LOG_JSON)
    s->buf[s->len++] = '}';
  s->buf[s->len++] = '\n';
  s->active = 0;
  s->line_start = s->len;
  if (!s->buffered || SG_LOG_BUF - s->len < SG_LOG_LINE_MAX)
    sg_log_flush();
}

void sg_logf(sg_log_level level, const char *event, const char *fmt, ...) {
  if (level < g_min)
    return;
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  sg_log_begin(level, event);
  sg_log_cstr("detail", msg);
  sg_log_end();
}
