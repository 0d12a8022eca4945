/* grpc-timeout (PROTOCOL-HTTP2.md): "TimeoutValue → {positive integer as ASCII string of at most
 * eight digits}", "TimeoutUnit → Hour / Minute / Second / Millisecond / Microsecond /
 * Nanosecond" spelled H M S m u n. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "rpc/timeout.h"

static int parse(const char *s, int64_t *ns) {
  return sg_timeout_parse(s, strlen(s), ns);
}

static void assert_parses_to(const char *s, int64_t want) {
  int64_t ns = -1;
  cr_assert_eq(parse(s, &ns), 0, "\"%s\" was rejected", s);
  cr_assert_eq(ns, want, "\"%s\" gave %lld ns, want %lld", s, (long long)ns, (long long)want);
}

static void assert_rejected(const char *s, size_t len) {
  int64_t ns = 12345;
  cr_assert_eq(sg_timeout_parse(s, len, &ns), -1, "\"%.*s\" was accepted", (int)len, s);
  cr_assert_eq(ns, 12345, "a rejected timeout wrote its output");
}

Test(timeout, hours_are_3600_seconds) {
  assert_parses_to("2H", 2 * 3600 * 1000000000LL);
}

Test(timeout, minutes_are_60_seconds) {
  assert_parses_to("3M", 3 * 60 * 1000000000LL);
}

Test(timeout, seconds) {
  assert_parses_to("5S", 5 * 1000000000LL);
}

Test(timeout, milliseconds) {
  assert_parses_to("250m", 250 * 1000000LL);
}

Test(timeout, microseconds) {
  assert_parses_to("7u", 7000);
}

Test(timeout, nanoseconds) {
  assert_parses_to("9n", 9);
}

Test(timeout, zero_is_a_valid_value) {
  assert_parses_to("0S", 0);
}

Test(timeout, leading_zeros_are_digits_like_any_other) {
  assert_parses_to("00000100m", 100 * 1000000LL);
}

Test(timeout, eight_digits_are_accepted) {
  assert_parses_to("99999999n", 99999999);
  assert_parses_to("12345678S", 12345678 * 1000000000LL);
}

Test(timeout, nine_digits_are_rejected) {
  assert_rejected("123456789n", 10);
  assert_rejected("000000001S", 10);
}

Test(timeout, the_length_argument_bounds_the_text) {
  int64_t ns = 0;
  /* "10S" followed by bytes that are not part of the header value. */
  cr_assert_eq(sg_timeout_parse("10Sxyz", 3, &ns), 0);
  cr_assert_eq(ns, 10 * 1000000000LL);
}

Test(timeout, an_empty_value_is_rejected) {
  assert_rejected("", 0);
}

Test(timeout, digits_without_a_unit_are_rejected) {
  assert_rejected("100", 3);
  assert_rejected("1", 1);
}

Test(timeout, a_unit_without_digits_is_rejected) {
  assert_rejected("S", 1);
  assert_rejected("m", 1);
}

Test(timeout, a_sign_is_rejected) {
  assert_rejected("-1S", 3);
  assert_rejected("+1S", 3);
}

Test(timeout, whitespace_is_rejected) {
  assert_rejected(" 1S", 3);
  assert_rejected("1 S", 3);
  assert_rejected("1S ", 3);
}

Test(timeout, an_unknown_unit_is_rejected) {
  assert_rejected("1s", 2);
  assert_rejected("1h", 2);
  assert_rejected("1x", 2);
  assert_rejected("1U", 2);
  assert_rejected("1N", 2);
}

Test(timeout, a_non_digit_in_the_value_is_rejected) {
  assert_rejected("1a0S", 4);
  assert_rejected("1.5S", 4);
  assert_rejected("0x10m", 5);
}

Test(timeout, a_nul_byte_is_rejected) {
  assert_rejected("1\0S", 3);
}

Test(timeout, huge_hour_values_clamp_to_int64_max) {
  assert_parses_to("99999999H", INT64_MAX);
  assert_parses_to("2562048H", INT64_MAX); /* the first hour count past INT64_MAX ns */
}

Test(timeout, the_largest_hour_value_that_fits_is_exact) {
  assert_parses_to("2562047H", 3600 * 1000000000LL * 2562047);
}

Test(timeout, eight_digits_of_minutes_do_not_overflow) {
  assert_parses_to("99999999M", 60 * 1000000000LL * 99999999);
}

static void assert_format(int64_t ns, const char *want) {
  char out[SG_TIMEOUT_MAX_LEN + 1];
  size_t n = sg_timeout_format(ns, out);
  cr_assert_str_eq(out, want, "%lld ns", (long long)ns);
  cr_assert_eq(n, strlen(want));
}

Test(timeout, format_keeps_nanoseconds_while_they_fit_in_8_digits) {
  assert_format(1, "1n");
  assert_format(99999999, "99999999n");
}

Test(timeout, format_moves_to_a_coarser_unit_past_8_digits) {
  assert_format(100000000, "100000u");
  assert_format(5 * 1000000000LL, "5000000u");
  assert_format(3600 * 1000000000LL, "3600000m");
}

Test(timeout, format_rounds_up_so_the_peer_never_sees_a_shorter_deadline) {
  assert_format(100000001, "100001u");
  assert_format(99999999999LL, "100000m"); /* 99999999.999u rounds up past 8 digits */
}

Test(timeout, format_of_int64_max_is_in_hours) {
  assert_format(INT64_MAX, "2562048H");
}

Test(timeout, format_treats_a_non_positive_value_as_1_nanosecond) {
  assert_format(0, "1n");
  assert_format(-5, "1n");
}

/* Values across the whole range, each side of every unit boundary. */
static const int64_t samples[] = {
    1,
    999,
    99999999,
    100000000,
    100000001,
    99999999999LL,
    100000000000LL,
    100000000001LL,
    99999999999999LL,
    100000000000001LL,
    1000000000LL * 99999999,
    1000000000LL * 99999999 + 1,
    60000000000LL * 99999999,
    60000000000LL * 99999999 + 1,
    3600000000000LL * 2000000 + 7,
    INT64_MAX - 1,
    INT64_MAX,
};

Test(timeout, format_round_trips_to_a_value_no_shorter) {
  for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
    char out[SG_TIMEOUT_MAX_LEN + 1];
    int64_t back = 0;
    size_t n = sg_timeout_format(samples[i], out);
    cr_assert_eq(sg_timeout_parse(out, n, &back), 0, "\"%s\" does not parse", out);
    cr_assert_geq(back, samples[i], "%lld ns formats as \"%s\", which is only %lld ns",
                  (long long)samples[i], out, (long long)back);
  }
}

Test(timeout, format_never_writes_more_than_8_digits) {
  for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
    char out[SG_TIMEOUT_MAX_LEN + 1];
    size_t n = sg_timeout_format(samples[i], out);
    cr_assert_leq(n, SG_TIMEOUT_MAX_LEN, "\"%s\"", out);
    cr_assert_eq(strlen(out), n);
    cr_assert_geq(n, 2);
    for (size_t j = 0; j + 1 < n; j++)
      cr_assert(out[j] >= '0' && out[j] <= '9', "\"%s\"", out);
  }
}

Test(timeout, format_loses_less_than_one_unit) {
  /* Rounding up costs at most one step of the unit chosen: 1000000001 ns is 1000001u, not 2S. */
  char out[SG_TIMEOUT_MAX_LEN + 1];
  int64_t back = 0;
  size_t n = sg_timeout_format(1000000001, out);
  cr_assert_eq(sg_timeout_parse(out, n, &back), 0);
  cr_assert_eq(back, 1000001000);
}
