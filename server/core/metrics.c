#include "core/metrics.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

/* 10 µs .. 10 s in a 1-2.5-5 progression: an RPC answered from a cache and one that waited on
 * a slow database both land in a bucket that tells them apart. */
static const uint64_t latency_bounds_ns[] = {
    10000,     25000,      50000,      100000,     250000,      500000,    1000000,
    2500000,   5000000,    10000000,   25000000,   50000000,    100000000, 250000000,
    500000000, 1000000000, 2500000000, 5000000000, 10000000000,
};

const sg_histogram_buckets sg_latency_buckets = {latency_bounds_ns, SG_ARRAY_LEN(latency_bounds_ns),
                                                 1e9};

void sg_histogram_init(sg_histogram *h, const sg_histogram_buckets *buckets) {
  if (buckets->n_bounds > SG_HISTOGRAM_MAX_BOUNDS)
    sg_fatal("a histogram has more bounds than SG_HISTOGRAM_MAX_BOUNDS");
  h->buckets = buckets;
}

void sg_histogram_observe(sg_histogram *h, uint64_t value) {
  const sg_histogram_buckets *b = h->buckets;
  /* Binary search for the first bound >= value; n_bounds means +Inf. */
  size_t lo = 0, hi = b->n_bounds;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (value <= b->bounds[mid])
      hi = mid;
    else
      lo = mid + 1;
  }
  atomic_fetch_add_explicit(&h->counts[lo], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&h->sum, value, memory_order_relaxed);
}

uint64_t sg_histogram_count(const sg_histogram *h) {
  uint64_t n = 0;
  for (size_t i = 0; i <= h->buckets->n_bounds; i++)
    n += atomic_load_explicit(&((sg_histogram *)h)->counts[i], memory_order_relaxed);
  return n;
}

/* --- Registry ------------------------------------------------------------------------------ */

typedef enum { TYPE_COUNTER, TYPE_GAUGE, TYPE_HISTOGRAM } family_type;

typedef struct {
  const void *obj;        /* sg_counter, sg_gauge or sg_histogram; NULL when |read| is set */
  sg_metric_read_fn read; /* the value at scrape time */
  void *arg;
  char *labels; /* rendered: name="value",... without braces; "" for none */
} series;

typedef struct {
  char *name, *help;
  family_type type;
  int hide_zero;
  series *s;
  size_t n, cap;
} family;

struct sg_metrics {
  pthread_mutex_t lock;
  family *f;
  size_t n, cap;
};

sg_metrics *sg_metrics_new(void) {
  sg_metrics *m = sg_calloc(1, sizeof(*m));
  pthread_mutex_init(&m->lock, NULL);
  return m;
}

void sg_metrics_free(sg_metrics *m) {
  if (m == NULL)
    return;
  for (size_t i = 0; i < m->n; i++) {
    for (size_t j = 0; j < m->f[i].n; j++)
      free(m->f[i].s[j].labels);
    free(m->f[i].s);
    free(m->f[i].name);
    free(m->f[i].help);
  }
  free(m->f);
  pthread_mutex_destroy(&m->lock);
  free(m);
}

/* --- Text building ------------------------------------------------------------------------- */

typedef struct {
  char *p;
  size_t len, cap;
} buf;

static void buf_reserve(buf *b, size_t more) {
  if (b->len + more + 1 <= b->cap)
    return;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < b->len + more + 1)
    cap *= 2;
  b->p = sg_realloc(b->p, cap);
  b->cap = cap;
}

static void buf_add(buf *b, const char *s, size_t n) {
  buf_reserve(b, n);
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void buf_adds(buf *b, const char *s) {
  buf_add(b, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void buf_printf(buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  buf_reserve(b, (size_t)n);
  va_start(ap, fmt);
  vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

/* Label values escape \, " and newline; HELP text escapes \ and newline. */
static void buf_escaped(buf *b, const char *s, int quote) {
  for (; *s; s++) {
    if (*s == '\\')
      buf_adds(b, "\\\\");
    else if (*s == '\n')
      buf_adds(b, "\\n");
    else if (*s == '"' && quote)
      buf_adds(b, "\\\"");
    else
      buf_add(b, s, 1);
  }
}

/* The shortest text that reads back as |v|, in exponent form only for very small or large
 * values ("0.0025", "10", "1e-05"), with Prometheus' spellings of infinities and NaN. */
static void buf_double(buf *b, double v) {
  if (isnan(v)) {
    buf_adds(b, "NaN");
    return;
  }
  if (isinf(v)) {
    buf_adds(b, v > 0 ? "+Inf" : "-Inf");
    return;
  }
  char s[40];
  int prec = 1;
  for (; prec < 17; prec++) {
    snprintf(s, sizeof(s), "%.*g", prec, v);
    if (strtod(s, NULL) == v)
      break;
  }
  /* %g drops trailing zeros; at 6 digits or more it keeps "10" and "250000" out of e-form. */
  snprintf(s, sizeof(s), "%.*g", prec < 6 ? 6 : prec, v);
  buf_adds(b, s);
}

/* --- Registration -------------------------------------------------------------------------- */

static int valid_name(const char *s, int colons) {
  if (s == NULL || *s == '\0' || (*s >= '0' && *s <= '9'))
    return 0;
  for (; *s; s++) {
    char c = *s;
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
          (colons && c == ':')))
      return 0;
  }
  return 1;
}

static char *render_labels(const char *const *labels, family_type type) {
  buf b = {0};
  buf_reserve(&b, 0);
  b.p[0] = '\0';
  for (size_t i = 0; labels != NULL && labels[i] != NULL; i += 2) {
    if (labels[i + 1] == NULL || !valid_name(labels[i], 0) || strncmp(labels[i], "__", 2) == 0 ||
        (type == TYPE_HISTOGRAM && !strcmp(labels[i], "le")))
      sg_fatal("a metric label has a bad name or no value");
    if (i > 0)
      buf_adds(&b, ",");
    buf_adds(&b, labels[i]);
    buf_adds(&b, "=\"");
    buf_escaped(&b, labels[i + 1], 1);
    buf_adds(&b, "\"");
  }
  return b.p;
}

static family *find_family(sg_metrics *m, const char *name) {
  for (size_t i = 0; i < m->n; i++)
    if (strcmp(m->f[i].name, name) == 0)
      return &m->f[i];
  return NULL;
}

static void add_series(sg_metrics *m, const char *name, const char *help, family_type type,
                       const char *const *labels, const void *obj, sg_metric_read_fn read,
                       void *arg) {
  if (!valid_name(name, 1) || help == NULL)
    sg_fatal("a metric has a bad name or no help text");
  char *rendered = render_labels(labels, type);
  pthread_mutex_lock(&m->lock);
  family *f = find_family(m, name);
  if (f == NULL) {
    if (m->n == m->cap) {
      m->cap = m->cap ? m->cap * 2 : 32;
      m->f = sg_realloc(m->f, m->cap * sizeof(*m->f));
    }
    f = &m->f[m->n++];
    *f = (family){.name = sg_strdup(name), .help = sg_strdup(help), .type = type};
  }
  if (f->type != type)
    sg_fatal("a metric family was registered with two types");
  for (size_t i = 0; i < f->n; i++)
    if (strcmp(f->s[i].labels, rendered) == 0)
      sg_fatal("a metric series was registered twice");
  if (f->n == f->cap) {
    f->cap = f->cap ? f->cap * 2 : 4;
    f->s = sg_realloc(f->s, f->cap * sizeof(*f->s));
  }
  f->s[f->n++] = (series){obj, read, arg, rendered};
  pthread_mutex_unlock(&m->lock);
}

void sg_metrics_counter(sg_metrics *m, const char *name, const char *help,
                        const char *const *labels, const sg_counter *c) {
  add_series(m, name, help, TYPE_COUNTER, labels, c, NULL, NULL);
}

void sg_metrics_gauge(sg_metrics *m, const char *name, const char *help, const char *const *labels,
                      const sg_gauge *g) {
  add_series(m, name, help, TYPE_GAUGE, labels, g, NULL, NULL);
}

void sg_metrics_histogram(sg_metrics *m, const char *name, const char *help,
                          const char *const *labels, const sg_histogram *h) {
  if (h->buckets == NULL)
    sg_fatal("a histogram was registered before sg_histogram_init");
  add_series(m, name, help, TYPE_HISTOGRAM, labels, h, NULL, NULL);
}

void sg_metrics_counter_fn(sg_metrics *m, const char *name, const char *help,
                           const char *const *labels, sg_metric_read_fn read, void *arg) {
  add_series(m, name, help, TYPE_COUNTER, labels, NULL, read, arg);
}

void sg_metrics_gauge_fn(sg_metrics *m, const char *name, const char *help,
                         const char *const *labels, sg_metric_read_fn read, void *arg) {
  add_series(m, name, help, TYPE_GAUGE, labels, NULL, read, arg);
}

void sg_metrics_hide_zero(sg_metrics *m, const char *name) {
  pthread_mutex_lock(&m->lock);
  family *f = find_family(m, name);
  if (f == NULL)
    sg_fatal("sg_metrics_hide_zero: no such metric family");
  f->hide_zero = 1;
  pthread_mutex_unlock(&m->lock);
}

/* --- Exposition ---------------------------------------------------------------------------- */

static void render_sample(buf *b, const char *name, const char *suffix, const char *labels) {
  buf_adds(b, name);
  buf_adds(b, suffix);
  if (labels[0] != '\0') {
    buf_adds(b, "{");
    buf_adds(b, labels);
    buf_adds(b, "}");
  }
  buf_adds(b, " ");
}

static void render_histogram(buf *b, const family *f, const series *s) {
  const sg_histogram *h = s->obj;
  const sg_histogram_buckets *bk = h->buckets;
  /* Read each bucket once: the cumulative counts and _count agree even while observations
   * land during the scrape. */
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= bk->n_bounds; i++) {
    cumulative += atomic_load_explicit(&((sg_histogram *)h)->counts[i], memory_order_relaxed);
    buf_adds(b, f->name);
    buf_adds(b, "_bucket{");
    if (s->labels[0] != '\0') {
      buf_adds(b, s->labels);
      buf_adds(b, ",");
    }
    buf_adds(b, "le=\"");
    if (i < bk->n_bounds)
      buf_double(b, (double)bk->bounds[i] / bk->scale);
    else
      buf_adds(b, "+Inf");
    buf_printf(b, "\"} %" PRIu64 "\n", cumulative);
  }
  uint64_t sum = atomic_load_explicit(&((sg_histogram *)h)->sum, memory_order_relaxed);
  render_sample(b, f->name, "_sum", s->labels);
  buf_double(b, (double)sum / bk->scale);
  buf_adds(b, "\n");
  render_sample(b, f->name, "_count", s->labels);
  buf_printf(b, "%" PRIu64 "\n", cumulative);
}

static int series_zero(const family *f, const series *s) {
  if (s->read != NULL)
    return s->read(s->arg) == 0;
  switch (f->type) {
  case TYPE_COUNTER:
    return sg_counter_get(s->obj) == 0;
  case TYPE_GAUGE:
    return sg_gauge_get(s->obj) == 0;
  default:
    return sg_histogram_count(s->obj) == 0;
  }
}

static void render_series(buf *b, const family *f, const series *s) {
  if (f->type == TYPE_HISTOGRAM) {
    render_histogram(b, f, s);
    return;
  }
  render_sample(b, f->name, "", s->labels);
  if (s->read != NULL)
    buf_double(b, s->read(s->arg));
  else if (f->type == TYPE_COUNTER)
    buf_printf(b, "%" PRIu64, sg_counter_get(s->obj));
  else
    buf_printf(b, "%" PRId64, sg_gauge_get(s->obj));
  buf_adds(b, "\n");
}

static const char *type_name(family_type t) {
  return t == TYPE_COUNTER ? "counter" : t == TYPE_GAUGE ? "gauge" : "histogram";
}

char *sg_metrics_render(sg_metrics *m, size_t *len) {
  buf b = {0};
  buf_reserve(&b, 0);
  b.p[0] = '\0';
  pthread_mutex_lock(&m->lock);
  for (size_t i = 0; i < m->n; i++) {
    const family *f = &m->f[i];
    buf_printf(&b, "# HELP %s ", f->name);
    buf_escaped(&b, f->help, 0);
    buf_printf(&b, "\n# TYPE %s %s\n", f->name, type_name(f->type));
    for (size_t j = 0; j < f->n; j++)
      if (!f->hide_zero || !series_zero(f, &f->s[j]))
        render_series(&b, f, &f->s[j]);
  }
  pthread_mutex_unlock(&m->lock);
  *len = b.len;
  return b.p;
}
