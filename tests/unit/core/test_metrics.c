/* The metrics registry: Prometheus text exposition, histogram bucket arithmetic, and counts
 * from many threads adding up. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/metrics.h"

static sg_metrics *reg;
static char *text;

static void setup(void) {
  reg = sg_metrics_new();
}

static void teardown(void) {
  free(text);
  text = NULL;
  sg_metrics_free(reg);
}

TestSuite(metrics, .init = setup, .fini = teardown);

static const char *render(void) {
  free(text);
  size_t len;
  text = sg_metrics_render(reg, &len);
  cr_assert_eq(strlen(text), len);
  return text;
}

static void assert_has_line(const char *line) {
  const char *all = render();
  size_t n = strlen(line);
  for (const char *p = all; (p = strstr(p, line)) != NULL; p++)
    if ((p == all || p[-1] == '\n') && p[n] == '\n')
      return;
  cr_assert_fail("no line \"%s\" in:\n%s", line, all);
}

Test(metrics, counter_renders_help_type_and_value) {
  static sg_counter c;
  sg_metrics_counter(reg, "t_requests_total", "Requests served.", NULL, &c);
  sg_counter_add(&c, 41);
  sg_counter_inc(&c);
  cr_assert_str_eq(render(), "# HELP t_requests_total Requests served.\n"
                             "# TYPE t_requests_total counter\n"
                             "t_requests_total 42\n");
}

Test(metrics, series_of_a_family_share_one_help_and_type_block) {
  static sg_counter a, b;
  sg_metrics_counter(reg, "t_total", "Things.", SG_LABELS("kind", "a"), &a);
  sg_metrics_counter(reg, "t_total", "ignored: the first help is kept", SG_LABELS("kind", "b"), &b);
  sg_counter_inc(&b);
  cr_assert_str_eq(render(), "# HELP t_total Things.\n"
                             "# TYPE t_total counter\n"
                             "t_total{kind=\"a\"} 0\n"
                             "t_total{kind=\"b\"} 1\n");
}

Test(metrics, label_values_escape_backslash_quote_and_newline) {
  static sg_gauge g;
  sg_metrics_gauge(reg, "t_gauge", "A gauge.", SG_LABELS("path", "a\\b\"c\nd", "x", "y"), &g);
  sg_gauge_set(&g, -3);
  assert_has_line("t_gauge{path=\"a\\\\b\\\"c\\nd\",x=\"y\"} -3");
}

Test(metrics, help_escapes_backslash_and_newline) {
  static sg_counter c;
  sg_metrics_counter(reg, "t_total", "one\\two\nthree \"quoted\"", NULL, &c);
  assert_has_line("# HELP t_total one\\\\two\\nthree \"quoted\"");
}

static double read_half(void *arg) {
  (void)arg;
  return 0.5;
}

Test(metrics, function_series_are_read_at_scrape_time) {
  sg_metrics_gauge_fn(reg, "t_ratio", "A ratio.", NULL, read_half, NULL);
  assert_has_line("# TYPE t_ratio gauge");
  assert_has_line("t_ratio 0.5");
}

static const uint64_t bounds[] = {10, 100, 1000};
static const sg_histogram_buckets buckets = {bounds, 3, 1000};

Test(metrics, histogram_buckets_are_cumulative_with_inf_sum_and_count) {
  static sg_histogram h;
  sg_histogram_init(&h, &buckets);
  sg_metrics_histogram(reg, "t_seconds", "Durations.", SG_LABELS("op", "x"), &h);
  uint64_t values[] = {0, 10, 11, 100, 500, 1000, 1001, 99999};
  for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++)
    sg_histogram_observe(&h, values[i]);
  cr_assert_eq(sg_histogram_count(&h), 8);
  cr_assert_str_eq(render(), "# HELP t_seconds Durations.\n"
                             "# TYPE t_seconds histogram\n"
                             "t_seconds_bucket{op=\"x\",le=\"0.01\"} 2\n"
                             "t_seconds_bucket{op=\"x\",le=\"0.1\"} 4\n"
                             "t_seconds_bucket{op=\"x\",le=\"1\"} 6\n"
                             "t_seconds_bucket{op=\"x\",le=\"+Inf\"} 8\n"
                             "t_seconds_sum{op=\"x\"} 102.621\n"
                             "t_seconds_count{op=\"x\"} 8\n");
}

Test(metrics, bounds_are_inclusive_upper_limits) {
  static sg_histogram h;
  sg_histogram_init(&h, &buckets);
  sg_metrics_histogram(reg, "t_seconds", "Durations.", NULL, &h);
  sg_histogram_observe(&h, 100);
  assert_has_line("t_seconds_bucket{le=\"0.01\"} 0");
  assert_has_line("t_seconds_bucket{le=\"0.1\"} 1");
}

Test(metrics, latency_buckets_span_microseconds_to_seconds) {
  static sg_histogram h;
  sg_histogram_init(&h, &sg_latency_buckets);
  sg_metrics_histogram(reg, "t_latency_seconds", "Latency.", NULL, &h);
  sg_histogram_observe(&h, 7000);        /* 7 µs */
  sg_histogram_observe(&h, 3000000);     /* 3 ms */
  sg_histogram_observe(&h, 60000000000); /* a minute */
  assert_has_line("t_latency_seconds_bucket{le=\"1e-05\"} 1");
  assert_has_line("t_latency_seconds_bucket{le=\"0.0025\"} 1");
  assert_has_line("t_latency_seconds_bucket{le=\"0.005\"} 2");
  assert_has_line("t_latency_seconds_bucket{le=\"10\"} 2");
  assert_has_line("t_latency_seconds_bucket{le=\"+Inf\"} 3");
  assert_has_line("t_latency_seconds_sum 60.003007");
  for (size_t i = 1; i < sg_latency_buckets.n_bounds; i++)
    cr_assert_gt(sg_latency_buckets.bounds[i], sg_latency_buckets.bounds[i - 1]);
}

Test(metrics, hidden_zero_series_appear_once_used) {
  static sg_counter a, b;
  static sg_histogram h;
  sg_histogram_init(&h, &buckets);
  sg_metrics_counter(reg, "t_calls_total", "Calls.", SG_LABELS("m", "a"), &a);
  sg_metrics_counter(reg, "t_calls_total", "Calls.", SG_LABELS("m", "b"), &b);
  sg_metrics_histogram(reg, "t_seconds", "Durations.", NULL, &h);
  sg_metrics_hide_zero(reg, "t_calls_total");
  sg_metrics_hide_zero(reg, "t_seconds");
  sg_counter_inc(&b);
  const char *out = render();
  cr_assert(strstr(out, "# TYPE t_calls_total counter\n") != NULL);
  cr_assert(strstr(out, "m=\"a\"") == NULL, "%s", out);
  cr_assert(strstr(out, "t_calls_total{m=\"b\"} 1\n") != NULL, "%s", out);
  cr_assert(strstr(out, "t_seconds_count") == NULL, "%s", out);
  sg_histogram_observe(&h, 1);
  assert_has_line("t_seconds_count 1");
}

Test(metrics, registering_a_series_twice_aborts, .signal = SIGABRT) {
  static sg_counter c;
  sg_metrics_counter(reg, "t_total", "x", SG_LABELS("a", "1"), &c);
  sg_metrics_counter(reg, "t_total", "x", SG_LABELS("a", "1"), &c);
}

Test(metrics, one_family_with_two_types_aborts, .signal = SIGABRT) {
  static sg_counter c;
  static sg_gauge g;
  sg_metrics_counter(reg, "t_x", "x", NULL, &c);
  sg_metrics_gauge(reg, "t_x", "x", SG_LABELS("a", "1"), &g);
}

Test(metrics, bad_metric_names_abort, .signal = SIGABRT) {
  static sg_counter c;
  sg_metrics_counter(reg, "9lives", "x", NULL, &c);
}

Test(metrics, le_is_reserved_for_histogram_buckets, .signal = SIGABRT) {
  static sg_histogram h;
  sg_histogram_init(&h, &buckets);
  sg_metrics_histogram(reg, "t_seconds", "x", SG_LABELS("le", "1"), &h);
}

enum { THREADS = 8, PER_THREAD = 100000 };

static sg_counter shared_counter;
static sg_gauge shared_gauge;
static sg_histogram shared_hist;

static void *hammer(void *arg) {
  uint64_t seed = (uint64_t)(uintptr_t)arg;
  for (int i = 0; i < PER_THREAD; i++) {
    sg_counter_inc(&shared_counter);
    sg_gauge_add(&shared_gauge, (i & 1) ? -1 : 2);
    sg_histogram_observe(&shared_hist, (seed + (uint64_t)i) % 2000);
  }
  return NULL;
}

Test(metrics, concurrent_updates_from_many_threads_sum_exactly) {
  sg_histogram_init(&shared_hist, &buckets);
  sg_metrics_counter(reg, "t_total", "x", NULL, &shared_counter);
  sg_metrics_gauge(reg, "t_gauge", "x", NULL, &shared_gauge);
  sg_metrics_histogram(reg, "t_seconds", "x", NULL, &shared_hist);
  pthread_t t[THREADS];
  for (uintptr_t i = 0; i < THREADS; i++)
    cr_assert_eq(pthread_create(&t[i], NULL, hammer, (void *)i), 0);
  for (int i = 0; i < 20; i++)
    free(sg_metrics_render(reg, &(size_t){0})); /* scrapes while they run */
  for (int i = 0; i < THREADS; i++)
    pthread_join(t[i], NULL);
  uint64_t n = (uint64_t)THREADS * PER_THREAD;
  cr_assert_eq(sg_counter_get(&shared_counter), n);
  cr_assert_eq(sg_gauge_get(&shared_gauge), (int64_t)n / 2);
  cr_assert_eq(sg_histogram_count(&shared_hist), n);
  /* Each thread's values run over 0..1999 evenly: per 2000 values, 11 are <= 10, 101 <= 100,
   * 1001 <= 1000. */
  uint64_t rounds = PER_THREAD / 2000 * THREADS;
  char line[128];
  snprintf(line, sizeof(line), "t_seconds_bucket{le=\"0.01\"} %llu",
           (unsigned long long)(11 * rounds));
  assert_has_line(line);
  snprintf(line, sizeof(line), "t_seconds_bucket{le=\"1\"} %llu",
           (unsigned long long)(1001 * rounds));
  assert_has_line(line);
  snprintf(line, sizeof(line), "t_seconds_count %llu", (unsigned long long)n);
  assert_has_line(line);
  snprintf(line, sizeof(line), "t_total %llu", (unsigned long long)n);
  assert_has_line(line);
}
