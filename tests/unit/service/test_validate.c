/* Input rules of SPEC §2 "Semantics": store names 1-128 of [A-Za-z0-9._-], secret names
 * [A-Za-z_][A-Za-z0-9_]{0,127}, values 1 byte to 64 KiB, ids, host lists and page sizes; bad
 * input is INVALID_ARGUMENT "whose message names the field". */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/arena.h"
#include "core/mem.h"
#include "service/validate.h"

static char err[512];

static void reset_err(void) {
  memset(err, 0, sizeof(err));
}

TestSuite(validate, .init = reset_err);

/* A string of |len| copies of |c| (len < 300). */
static const char *repeat(char c, size_t len) {
  static char buf[300];
  memset(buf, c, len);
  buf[len] = '\0';
  return buf;
}

static void expect_starts_with_field(const char *field) {
  char want[64];
  snprintf(want, sizeof(want), "%s:", field);
  cr_expect(strncmp(err, want, strlen(want)) == 0, "\"%s\" does not start with \"%s\"", err, want);
}

/* Store names. */

Test(validate, store_names_of_letters_digits_dot_underscore_hyphen_are_valid) {
  static const char *const ok[] = {"a", "prod", "Prod-Store_1.v2", "...", "-", "_", "0"};
  for (size_t i = 0; i < SG_ARRAY_LEN(ok); i++)
    cr_expect_eq(sg_validate_store_name("name", ok[i], err, sizeof(err)), 0, "\"%s\": %s", ok[i],
                 err);
}

Test(validate, a_store_name_of_128_characters_is_valid) {
  cr_expect_eq(sg_validate_store_name("name", repeat('s', 128), err, sizeof(err)), 0, "%s", err);
}

Test(validate, a_store_name_of_129_characters_is_invalid) {
  cr_expect_eq(sg_validate_store_name("name", repeat('s', 129), err, sizeof(err)), -1);
  cr_expect_str_eq(err, "name: must be 1-128 characters of A-Z a-z 0-9 . _ -");
}

Test(validate, an_empty_store_name_is_invalid) {
  cr_expect_eq(sg_validate_store_name("name", "", err, sizeof(err)), -1);
  cr_expect_eq(sg_validate_store_name("name", NULL, err, sizeof(err)), -1);
  expect_starts_with_field("name");
}

Test(validate, a_store_name_with_another_character_is_invalid) {
  static const char *const bad[] = {"a b", "a/b", "a:b", "a@b", "st\xc3\xb6re", "a\tb", "a*"};
  for (size_t i = 0; i < SG_ARRAY_LEN(bad); i++)
    cr_expect_eq(sg_validate_store_name("name", bad[i], err, sizeof(err)), -1, "\"%s\"", bad[i]);
}

/* Secret names. */

Test(validate, environment_variable_names_are_valid_secret_names) {
  static const char *const ok[] = {"OPENAI_API_KEY", "A", "_", "_1", "a", "gitToken", "X9_"};
  for (size_t i = 0; i < SG_ARRAY_LEN(ok); i++)
    cr_expect_eq(sg_validate_secret_name("name", ok[i], err, sizeof(err)), 0, "\"%s\": %s", ok[i],
                 err);
}

Test(validate, a_secret_name_starting_with_a_digit_is_invalid) {
  cr_expect_eq(sg_validate_secret_name("name", "1PASSWORD", err, sizeof(err)), -1);
  cr_expect_eq(sg_validate_secret_name("name", "9", err, sizeof(err)), -1);
  expect_starts_with_field("name");
}

Test(validate, a_secret_name_of_128_characters_is_valid) {
  cr_expect_eq(sg_validate_secret_name("name", repeat('K', 128), err, sizeof(err)), 0, "%s", err);
}

Test(validate, a_secret_name_of_129_characters_is_invalid) {
  cr_expect_eq(sg_validate_secret_name("name", repeat('K', 129), err, sizeof(err)), -1);
}

Test(validate, an_empty_secret_name_is_invalid) {
  cr_expect_eq(sg_validate_secret_name("name", "", err, sizeof(err)), -1);
  cr_expect_eq(sg_validate_secret_name("name", NULL, err, sizeof(err)), -1);
}

Test(validate, a_secret_name_with_another_character_is_invalid) {
  static const char *const bad[] = {"A-B", "A.B", "A B", "A=B", "$A", "A\n", "\xc3\x84"};
  for (size_t i = 0; i < SG_ARRAY_LEN(bad); i++)
    cr_expect_eq(sg_validate_secret_name("name", bad[i], err, sizeof(err)), -1, "\"%s\"", bad[i]);
}

/* Someone may paste the value into the name field; it must not travel on in the message. */
Test(validate, a_rejected_secret_name_is_not_quoted_back) {
  cr_expect_eq(sg_validate_secret_name("name", "sk-live-abc123", err, sizeof(err)), -1);
  cr_expect_null(strstr(err, "sk-live"), "%s", err);
}

/* Values. */

Test(validate, an_empty_value_is_invalid) {
  cr_expect_eq(sg_validate_value("value", 0, err, sizeof(err)), -1);
  cr_expect_str_eq(err, "value: must not be empty");
}

Test(validate, a_value_of_one_byte_is_valid) {
  cr_expect_eq(sg_validate_value("value", 1, err, sizeof(err)), 0);
}

Test(validate, a_value_of_64_kib_is_valid) {
  cr_expect_eq(sg_validate_value("value", 64 * 1024, err, sizeof(err)), 0);
}

Test(validate, a_value_of_64_kib_and_one_byte_is_invalid) {
  cr_expect_eq(sg_validate_value("value", 64 * 1024 + 1, err, sizeof(err)), -1);
  cr_expect_str_eq(err, "value: must be at most 64 KiB (65536 bytes)");
}

/* Ids. */

Test(validate, a_uuid_is_a_valid_id) {
  cr_expect_eq(sg_validate_id("store_id", "5f0c2a9e-3b1d-4e6f-8a7c-9d0e1f2a3b4c", err, sizeof(err)),
               0);
  cr_expect_eq(sg_validate_id("store_id", "5F0C2A9E-3B1D-4E6F-8A7C-9D0E1F2A3B4C", err, sizeof(err)),
               0);
}

Test(validate, an_empty_id_is_invalid) {
  cr_expect_eq(sg_validate_id("store_id", "", err, sizeof(err)), -1);
  cr_expect_eq(sg_validate_id("store_id", NULL, err, sizeof(err)), -1);
  cr_expect_str_eq(err, "store_id: must be an id such as 5f0c2a9e-3b1d-4e6f-8a7c-9d0e1f2a3b4c");
}

Test(validate, an_id_of_64_characters_is_valid_and_65_invalid) {
  cr_expect_eq(sg_validate_id("store_id", repeat('a', 64), err, sizeof(err)), 0);
  cr_expect_eq(sg_validate_id("store_id", repeat('a', 65), err, sizeof(err)), -1);
}

Test(validate, an_id_with_a_character_other_than_hex_digits_and_hyphens_is_invalid) {
  static const char *const bad[] = {"my-store", "5f0c2a9e 3b1d", "5f0c2a9e_3b1d",
                                    "{5f0c}",   "5f0c\n",        "g"};
  for (size_t i = 0; i < SG_ARRAY_LEN(bad); i++)
    cr_expect_eq(sg_validate_id("store_id", bad[i], err, sizeof(err)), -1, "\"%s\"", bad[i]);
}

/* UUIDs (ids that filter a list). */

Test(validate, a_uuid_in_either_case_is_a_valid_uuid) {
  cr_expect_eq(
      sg_validate_uuid("sandbox_id", "5f0c2a9e-3b1d-4e6f-8a7c-9d0e1f2a3b4c", err, sizeof(err)), 0,
      "%s", err);
  cr_expect_eq(
      sg_validate_uuid("sandbox_id", "5F0C2A9E-3B1D-4E6F-8A7C-9D0E1F2A3B4C", err, sizeof(err)), 0,
      "%s", err);
}

Test(validate, hex_digits_that_are_no_uuid_are_not_a_valid_uuid) {
  static const char *const bad[] = {"",
                                    "5f0c2a9e",
                                    "5f0c2a9e3b1d4e6f8a7c9d0e1f2a3b4c",
                                    "5f0c2a9e-3b1d-4e6f-8a7c-9d0e1f2a3b4",
                                    "5f0c2a9e-3b1d-4e6f-8a7c-9d0e1f2a3b4c0",
                                    "5f0c2a9e-3b1d-4e6f-8a7c-9d0e1f2a3b4g",
                                    "5f0c2a9e-3b1d4-e6f-8a7c-9d0e1f2a3b4c"};
  for (size_t i = 0; i < SG_ARRAY_LEN(bad); i++) {
    cr_expect_eq(sg_validate_uuid("store_id", bad[i], err, sizeof(err)), -1, "\"%s\"", bad[i]);
    cr_expect_str_eq(err, "store_id: must be an id such as 5f0c2a9e-3b1d-4e6f-8a7c-9d0e1f2a3b4c");
  }
  cr_expect_eq(sg_validate_uuid("store_id", NULL, err, sizeof(err)), -1);
}

/* RFC 3339 times. */

Test(validate, rfc3339_times_in_every_form_are_valid) {
  static const char *const ok[] = {
      "2026-11-27T22:41:40Z",           "2026-11-27t22:41:40z",      "2026-11-27T22:41:40.5Z",
      "2026-11-27T22:41:40.123456789Z", "2026-11-27T22:41:40+05:45", "2026-11-27T22:41:40-23:59",
      "2024-02-29T00:00:00Z",           "2000-02-29T00:00:00Z",      "0001-01-01T00:00:00Z",
      "9999-12-31T23:59:59Z",           "2016-12-31T23:59:60Z" /* leap */};
  for (size_t i = 0; i < SG_ARRAY_LEN(ok); i++)
    cr_expect_eq(sg_validate_time("since", ok[i], err, sizeof(err)), 0, "\"%s\": %s", ok[i], err);
}

Test(validate, a_time_out_of_shape_or_range_is_invalid_and_named) {
  static const char *const bad[] = {
      "",
      "2026-11-27",
      "2026-11-27T22:41:40",
      "2026-11-27 22:41:40Z",
      "2026-11-27T22:41Z",
      "26-11-27T22:41:40Z",
      "2026-11-27T22:41:40.Z",
      "2026-11-27T22:41:40.1234567890Z",
      "2026-11-27T22:41:40+05",
      "2026-11-27T22:41:40+5:45",
      "2026-11-27T22:41:40+05:4",
      "2026-11-27T22:41:40+24:00",
      "2026-11-27T22:41:40+05:60",
      "2026-11-27T22:41:40Z ",
      "2026-11-27T22:41:40ZZ",
      "2026-02-29T00:00:00Z",
      "1900-02-29T00:00:00Z",
      "2026-04-31T00:00:00Z",
      "2026-00-10T00:00:00Z",
      "2026-13-10T00:00:00Z",
      "2026-11-00T00:00:00Z",
      "2026-11-27T24:00:00Z",
      "2026-11-27T23:60:00Z",
      "2026-11-27T23:59:61Z",
      "0000-01-01T00:00:00Z",
      "-001-01-01T00:00:00Z",
      "2026-11-27T22:41:40\xef\xbc\xba",
  };
  for (size_t i = 0; i < SG_ARRAY_LEN(bad); i++) {
    reset_err();
    cr_expect_eq(sg_validate_time("since", bad[i], err, sizeof(err)), -1, "\"%s\"", bad[i]);
    cr_expect_str_eq(err, "since: must be an RFC 3339 time such as 2026-11-27T22:41:40Z");
  }
  cr_expect_eq(sg_validate_time("since", NULL, err, sizeof(err)), -1);
}

/* Page sizes. */

static void expect_page_size(int32_t in, int32_t want) {
  int32_t out = -7;
  cr_expect_eq(sg_validate_page_size("page_size", in, &out, err, sizeof(err)), 0, "%d: %s", in,
               err);
  cr_expect_eq(out, want, "%d gave %d", in, out);
}

static void expect_page_size_invalid(int32_t in) {
  int32_t out = -7;
  cr_expect_eq(sg_validate_page_size("page_size", in, &out, err, sizeof(err)), -1, "%d", in);
  cr_expect_eq(out, -7, "%d wrote %d", in, out);
  cr_expect_str_eq(err, "page_size: must be 0 (the default, 50) to 1000");
}

Test(validate, a_page_size_of_0_means_50) {
  expect_page_size(0, 50);
}

Test(validate, page_sizes_from_1_to_1000_are_kept) {
  expect_page_size(1, 1);
  expect_page_size(50, 50);
  expect_page_size(1000, 1000);
}

Test(validate, a_page_size_over_1000_is_invalid) {
  expect_page_size_invalid(1001);
  expect_page_size_invalid(INT32_MAX);
}

Test(validate, a_negative_page_size_is_invalid) {
  expect_page_size_invalid(-1);
  expect_page_size_invalid(INT32_MIN);
}

/* Host lists. */

typedef struct {
  sg_arena *arena;
  char **out;
  size_t n;
} hosts_result;

static int validate_hosts(const char *const *in, size_t n, hosts_result *r) {
  r->arena = sg_arena_new();
  r->out = (char **)"sentinel";
  r->n = 12345;
  return sg_validate_hosts("egress_allowlist", (char *const *)in, n, r->arena, &r->out, &r->n, err,
                           sizeof(err));
}

Test(validate, host_lists_are_normalized_in_their_order) {
  static const char *const in[] = {"API.OpenAI.com.", "*.Anthropic.COM", "*"};
  hosts_result r;

  cr_assert_eq(validate_hosts(in, SG_ARRAY_LEN(in), &r), 0, "%s", err);

  cr_assert_eq(r.n, 3);
  cr_expect_str_eq(r.out[0], "api.openai.com");
  cr_expect_str_eq(r.out[1], "*.anthropic.com");
  cr_expect_str_eq(r.out[2], "*");
  sg_arena_free(r.arena);
}

Test(validate, duplicates_after_normalization_are_dropped_keeping_the_first) {
  static const char *const in[] = {"b.com", "A.com", "a.com.", "B.COM", "*.a.com", "a.com"};
  hosts_result r;

  cr_assert_eq(validate_hosts(in, SG_ARRAY_LEN(in), &r), 0, "%s", err);

  cr_assert_eq(r.n, 3);
  cr_expect_str_eq(r.out[0], "b.com");
  cr_expect_str_eq(r.out[1], "a.com");
  cr_expect_str_eq(r.out[2], "*.a.com");
  sg_arena_free(r.arena);
}

Test(validate, an_empty_host_list_is_valid) {
  hosts_result r;

  cr_assert_eq(validate_hosts(NULL, 0, &r), 0, "%s", err);

  cr_expect_eq(r.n, 0);
  sg_arena_free(r.arena);
}

static const char **numbered_hosts(size_t n) {
  static char names[300][32];
  static const char *ptrs[300];
  for (size_t i = 0; i < n; i++) {
    snprintf(names[i], sizeof(names[i]), "h%zu.example.com", i);
    ptrs[i] = names[i];
  }
  return ptrs;
}

Test(validate, a_host_list_of_256_entries_is_valid) {
  hosts_result r;

  cr_assert_eq(validate_hosts(numbered_hosts(256), 256, &r), 0, "%s", err);

  cr_expect_eq(r.n, 256);
  cr_expect_str_eq(r.out[255], "h255.example.com");
  sg_arena_free(r.arena);
}

Test(validate, a_host_list_of_257_entries_is_invalid) {
  hosts_result r;

  cr_expect_eq(validate_hosts(numbered_hosts(257), 257, &r), -1);

  cr_expect_str_eq(err, "egress_allowlist: must have at most 256 entries, has 257");
  sg_arena_free(r.arena);
}

/* The limit is on what the caller sent, so the work done for one request stays bounded. */
Test(validate, the_entry_limit_counts_duplicates) {
  static const char *in[257];
  for (size_t i = 0; i < SG_ARRAY_LEN(in); i++)
    in[i] = "a.com";
  hosts_result r;

  cr_expect_eq(validate_hosts(in, SG_ARRAY_LEN(in), &r), -1);
  sg_arena_free(r.arena);
}

Test(validate, a_bad_host_is_named_by_index_value_and_reason) {
  static const char *const in[] = {"a.com", "b.com", "a.com:443"};
  hosts_result r;

  cr_expect_eq(validate_hosts(in, SG_ARRAY_LEN(in), &r), -1);

  cr_expect_str_eq(err, "egress_allowlist[2]: \"a.com:443\" has a port");
  sg_arena_free(r.arena);
}

Test(validate, a_rejected_host_list_yields_no_output) {
  static const char *const in[] = {"a.com", "https://b.com"};
  hosts_result r;

  cr_expect_eq(validate_hosts(in, SG_ARRAY_LEN(in), &r), -1);

  cr_expect_null(r.out);
  cr_expect_eq(r.n, 0);
  sg_arena_free(r.arena);
}

Test(validate, a_missing_host_entry_is_empty) {
  static const char *const in[] = {"a.com", NULL};
  hosts_result r;

  cr_expect_eq(validate_hosts(in, SG_ARRAY_LEN(in), &r), -1);

  cr_expect_str_eq(err, "egress_allowlist[1]: \"\" is empty");
  sg_arena_free(r.arena);
}

Test(validate, a_long_bad_host_is_cut_to_64_bytes_in_the_message) {
  char long_host[200];
  snprintf(long_host, sizeof(long_host), "%.100s/path", repeat('a', 100));
  const char *in[] = {long_host};
  hosts_result r;

  cr_expect_eq(validate_hosts(in, 1, &r), -1);

  char want[200];
  snprintf(want, sizeof(want), "egress_allowlist[0]: \"%.64s...\" has a path", repeat('a', 64));
  cr_expect_str_eq(err, want);
  sg_arena_free(r.arena);
}

Test(validate, a_host_of_exactly_64_bytes_is_shown_whole) {
  char host[80];
  snprintf(host, sizeof(host), "%.62s:1", repeat('b', 62));
  const char *in[] = {host};
  hosts_result r;

  cr_expect_eq(validate_hosts(in, 1, &r), -1);

  char want[200];
  snprintf(want, sizeof(want), "egress_allowlist[0]: \"%s\" has a port", host);
  cr_expect_str_eq(err, want);
  sg_arena_free(r.arena);
}

Test(validate, unprintable_bytes_and_quotes_of_a_bad_host_are_shown_as_question_marks) {
  static const char *const in[] = {"a\x1b[31m\"\\\xc3\xa9\x7f.com"};
  hosts_result r;

  cr_expect_eq(validate_hosts(in, 1, &r), -1);

  /* The backslash also makes it a path, which is checked before the characters. */
  cr_expect_str_eq(err, "egress_allowlist[0]: \"a?[31m?????.com\" has a path");
  sg_arena_free(r.arena);
}

/* Messages. */

Test(validate, every_error_message_starts_with_the_field_name) {
  int32_t page;
  char **out;
  size_t n;
  static const char *const bad_host[] = {"x:1"};
  sg_arena *arena = sg_arena_new();

  reset_err();
  cr_expect_eq(sg_validate_store_name("store.name", "", err, sizeof(err)), -1);
  expect_starts_with_field("store.name");
  reset_err();
  cr_expect_eq(sg_validate_secret_name("secret_name", "1", err, sizeof(err)), -1);
  expect_starts_with_field("secret_name");
  reset_err();
  cr_expect_eq(sg_validate_value("secret_value", 0, err, sizeof(err)), -1);
  expect_starts_with_field("secret_value");
  reset_err();
  cr_expect_eq(sg_validate_id("sandbox_id", "zz", err, sizeof(err)), -1);
  expect_starts_with_field("sandbox_id");
  reset_err();
  cr_expect_eq(sg_validate_page_size("page_size", -1, &page, err, sizeof(err)), -1);
  expect_starts_with_field("page_size");
  reset_err();
  cr_expect_eq(sg_validate_hosts("allowed_hosts", (char *const *)bad_host, 1, arena, &out, &n, err,
                                 sizeof(err)),
               -1);
  cr_expect_eq(strncmp(err, "allowed_hosts[0]:", 17), 0, "%s", err);
  reset_err();
  cr_expect_eq(sg_validate_hosts("allowed_hosts", (char *const *)numbered_hosts(300), 300, arena,
                                 &out, &n, err, sizeof(err)),
               -1);
  expect_starts_with_field("allowed_hosts");
  sg_arena_free(arena);
}

Test(validate, a_message_is_cut_to_the_buffer_and_stays_terminated) {
  char small[8];
  memset(small, 'x', sizeof(small));

  cr_expect_eq(sg_validate_value("value", 0, small, sizeof(small)), -1);

  cr_expect_str_eq(small, "value: ");
}

Test(validate, no_message_buffer_is_allowed) {
  cr_expect_eq(sg_validate_value("value", 0, NULL, 0), -1);
}
