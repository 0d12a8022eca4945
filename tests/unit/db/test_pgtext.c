/* PostgreSQL text forms: text[] literals and their parsing, bytea hex. */
#include <criterion/criterion.h>
#include <string.h>

#include "db/pgtext.h"

static sg_arena *a;

static void setup(void) {
  a = sg_arena_new();
}

static void teardown(void) {
  sg_arena_free(a);
}

TestSuite(pgtext, .init = setup, .fini = teardown);

Test(pgtext, an_array_literal_quotes_every_element) {
  char *items[] = {"api.anthropic.com", "*.openai.com"};
  cr_assert_str_eq(sg_pg_array(a, items, 2), "{\"api.anthropic.com\",\"*.openai.com\"}");
}

Test(pgtext, an_empty_array_literal_is_braces) {
  cr_assert_str_eq(sg_pg_array(a, NULL, 0), "{}");
}

Test(pgtext, quotes_and_backslashes_are_escaped_in_a_literal) {
  char *items[] = {"a\"b\\c"};
  cr_assert_str_eq(sg_pg_array(a, items, 1), "{\"a\\\"b\\\\c\"}");
}

Test(pgtext, a_literal_parses_back_to_its_elements) {
  char *items[] = {"x", "y z", "q\"uo\\te", ",", "{}"};
  char **out;
  size_t n;
  cr_assert_eq(sg_pg_array_parse(a, sg_pg_array(a, items, 5), &out, &n), 0);
  cr_assert_eq(n, 5);
  for (size_t i = 0; i < n; i++)
    cr_assert_str_eq(out[i], items[i]);
}

Test(pgtext, postgres_output_with_bare_and_quoted_elements_parses) {
  char **out;
  size_t n;
  cr_assert_eq(sg_pg_array_parse(a, "{api.anthropic.com,\"a b\",*.openai.com}", &out, &n), 0);
  cr_assert_eq(n, 3);
  cr_assert_str_eq(out[0], "api.anthropic.com");
  cr_assert_str_eq(out[1], "a b");
  cr_assert_str_eq(out[2], "*.openai.com");
}

Test(pgtext, an_empty_array_parses_to_nothing) {
  char **out;
  size_t n = 7;
  cr_assert_eq(sg_pg_array_parse(a, "{}", &out, &n), 0);
  cr_assert_eq(n, 0);
}

Test(pgtext, a_null_element_parses_as_empty) {
  char **out;
  size_t n;
  cr_assert_eq(sg_pg_array_parse(a, "{a,NULL,b}", &out, &n), 0);
  cr_assert_eq(n, 3);
  cr_assert_str_eq(out[1], "");
}

Test(pgtext, malformed_arrays_are_refused) {
  const char *bad[] = {"", "{", "}", "a,b", "{a,}", "{,a}", "{\"a}", "{a}x", "{\"a\"b}", "{a\\"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    char **out;
    size_t n;
    cr_assert_eq(sg_pg_array_parse(a, bad[i], &out, &n), -1, "accepted \"%s\"", bad[i]);
  }
}

Test(pgtext, hex_bytea_decodes) {
  uint8_t *out;
  size_t len;
  cr_assert_eq(sg_pg_bytea_parse(a, "\\x00ff10Ab", &out, &len), 0);
  cr_assert_eq(len, 4);
  cr_assert_eq(memcmp(out, "\x00\xff\x10\xab", 4), 0);
}

Test(pgtext, an_empty_bytea_decodes_to_nothing) {
  uint8_t *out;
  size_t len = 9;
  cr_assert_eq(sg_pg_bytea_parse(a, "\\x", &out, &len), 0);
  cr_assert_eq(len, 0);
}

Test(pgtext, malformed_bytea_is_refused) {
  const char *bad[] = {"", "00ff", "\\x0", "\\xzz", "\\x00f", "\\X00"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    uint8_t *out;
    size_t len;
    cr_assert_eq(sg_pg_bytea_parse(a, bad[i], &out, &len), -1, "accepted \"%s\"", bad[i]);
  }
}
