/* Prometheus metrics: counters, gauges and histograms that any thread updates with one relaxed
 * atomic add (no lock, no allocation, no lookup on the hot path), and a registry that renders
 * them in the Prometheus text exposition format (version 0.0.4) when scraped.
 *
 * A series is a caller-owned object (usually static) registered once, at start-up, under a
 * family name with fixed label values:
 *
 *   static sg_counter hits;
 *   sg_metrics_counter(reg, "sealgate_cache_hits_total", "Cache hits.",
 *                      SG_LABELS("cache", "api_key"), &hits);
 *   ...
 *   sg_counter_inc(&hits);   // any thread, any time
 *
 * Label values are fixed at registration, so the set of series (and the cost of a scrape) is
 * bounded by the code, never by what clients send. Histograms count integer observations (ns
 * for durations) into fixed buckets and are rendered divided by a scale (1e9: seconds). */
#ifndef SG_CORE_METRICS_H
#define SG_CORE_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
  _Atomic uint64_t v;
} sg_counter;

typedef struct {
  _Atomic int64_t v;
} sg_gauge;

#define SG_HISTOGRAM_MAX_BOUNDS 24

/* Upper bounds (inclusive, ascending) in the unit observed; the +Inf bucket is implicit. */
typedef struct {
  const uint64_t *bounds;
  size_t n_bounds;
  double scale; /* rendered value = observed / scale */
} sg_histogram_buckets;

typedef struct {
  const sg_histogram_buckets *buckets;
  _Atomic uint64_t counts[SG_HISTOGRAM_MAX_BOUNDS + 1]; /* per bucket, not cumulative */
  _Atomic uint64_t sum;
} sg_histogram;

/* Durations from 10 µs to 10 s, in ns, rendered in seconds. */
extern const sg_histogram_buckets sg_latency_buckets;

static inline void sg_counter_add(sg_counter *c, uint64_t n) {
  atomic_fetch_add_explicit(&c->v, n, memory_order_relaxed);
}

static inline void sg_counter_inc(sg_counter *c) {
  sg_counter_add(c, 1);
}

static inline uint64_t sg_counter_get(const sg_counter *c) {
  return atomic_load_explicit(&((sg_counter *)c)->v, memory_order_relaxed);
}

static inline void sg_gauge_add(sg_gauge *g, int64_t n) {
  atomic_fetch_add_explicit(&g->v, n, memory_order_relaxed);
}

static inline void sg_gauge_set(sg_gauge *g, int64_t v) {
  atomic_store_explicit(&g->v, v, memory_order_relaxed);
}

static inline int64_t sg_gauge_get(const sg_gauge *g) {
  return atomic_load_explicit(&((sg_gauge *)g)->v, memory_order_relaxed);
}

/* Prepares |h| (zeroed or static) to count into |buckets|, which must outlive it and have at
 * most SG_HISTOGRAM_MAX_BOUNDS bounds. */
void sg_histogram_init(sg_histogram *h, const sg_histogram_buckets *buckets);

/* Counts |value| (in the buckets' unit) into its bucket and the sum. Any thread. */
void sg_histogram_observe(sg_histogram *h, uint64_t value);

/* Observations so far: the sum of every bucket, +Inf included. */
uint64_t sg_histogram_count(const sg_histogram *h);

/* --- Registry ------------------------------------------------------------------------------ */

/* The details of this structure are intentionally hidden. */
typedef struct sg_metrics sg_metrics;

/* A NULL-terminated list of label names and values: SG_LABELS("method", m, "code", c). */
#define SG_LABELS(...) ((const char *const[]){__VA_ARGS__, NULL})

sg_metrics *sg_metrics_new(void);

/* Frees the registry (the series it points to are their owners'). */
void sg_metrics_free(sg_metrics *m);

/* Each registers one series of family |name| (a valid metric name; "_total" for counters by
 * convention), with |help| for the family (the first registration's is kept) and |labels| (or
 * NULL for none; copied). The series must outlive the registry. A family's series must all be
 * of one type, and no two may carry the same labels: breaking either is a programming error
 * and aborts. Thread-safe. */
void sg_metrics_counter(sg_metrics *m, const char *name, const char *help,
                        const char *const *labels, const sg_counter *c);
void sg_metrics_gauge(sg_metrics *m, const char *name, const char *help, const char *const *labels,
                      const sg_gauge *g);
void sg_metrics_histogram(sg_metrics *m, const char *name, const char *help,
                          const char *const *labels, const sg_histogram *h);

/* A series whose value |read|(|arg|) gives at each scrape (a count another module keeps, a
 * state to report). |read| runs on the scraping thread and must be thread-safe. */
typedef double (*sg_metric_read_fn)(void *arg);
void sg_metrics_counter_fn(sg_metrics *m, const char *name, const char *help,
                           const char *const *labels, sg_metric_read_fn read, void *arg);
void sg_metrics_gauge_fn(sg_metrics *m, const char *name, const char *help,
                         const char *const *labels, sg_metric_read_fn read, void *arg);

/* Leaves the series of family |name| that are still zero (histograms: with no observation)
 * out of the exposition: for families with many label combinations of which few are used,
 * such as RPCs by method and status. The family must be registered. */
void sg_metrics_hide_zero(sg_metrics *m, const char *name);

/* Renders every family in registration order as Prometheus text (HELP and TYPE lines, label
 * values escaped, histograms as cumulative _bucket{le=...} series with +Inf, _sum and
 * _count). Returns a NUL-terminated string the caller frees, its length in |*len|. */
char *sg_metrics_render(sg_metrics *m, size_t *len);

#endif
