/* Command-line flags and their SEALGATE_* environment variables (SPEC §6): the command line wins
 * over the environment, the environment over the default. */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/flags.h"

/* Destinations live in static storage: lists "are allocated and live until exit". */
static const char *name;
static long long port;
static long long max_size;
static int verbose;
static sg_strlist hosts;

static const sg_flag flags[] = {
    {"name", SG_FLAG_STR, &name, 0, 0, "NAME", "who to greet"},
    {"port", SG_FLAG_INT, &port, 1, 65535, "PORT", "where to listen"},
    {"max-size", SG_FLAG_BYTES, &max_size, 1024, 1LL << 30, "BYTES", "largest message"},
    {"verbose", SG_FLAG_BOOL, &verbose, 0, 0, NULL, "log more"},
    {"allow-host", SG_FLAG_LIST, &hosts, 0, 0, "HOST", "hosts to allow"},
};
#define N_FLAGS (sizeof(flags) / sizeof(flags[0]))

static const char *const env_vars[] = {"SEALGATE_NAME", "SEALGATE_PORT", "SEALGATE_MAX_SIZE",
                                       "SEALGATE_VERBOSE", "SEALGATE_ALLOW_HOST"};

static char err[256];
static sg_positionals pos;

/* Each test starts from the defaults and an environment without SEALGATE_* variables. */
static void setup(void) {
  for (size_t i = 0; i < sizeof(env_vars) / sizeof(env_vars[0]); i++)
    unsetenv(env_vars[i]);
  name = "default-name";
  port = 443;
  max_size = 4096;
  verbose = 0;
  hosts = (sg_strlist){NULL, 0};
  memset(err, 0, sizeof(err));
}

static void teardown(void) {
  free(pos.args);
  memset(&pos, 0, sizeof(pos));
}

TestSuite(flags, .init = setup, .fini = teardown);

/* Parses the NULL-terminated argument list, collecting positionals into |p| (may be NULL). */
static int parse_with(sg_positionals *p, const char *first, ...) {
  static char *argv[32];
  int argc = 0;
  va_list ap;
  va_start(ap, first);
  for (const char *a = first; a != NULL; a = va_arg(ap, const char *)) {
    cr_assert_lt(argc, 32);
    argv[argc++] = (char *)a;
  }
  va_end(ap);
  return sg_flags_parse(flags, N_FLAGS, argc, argv, p, err, sizeof(err));
}

#define parse(...) parse_with(&pos, __VA_ARGS__, NULL)

static void assert_err_mentions(const char *what) {
  cr_assert_not_null(strstr(err, what), "error \"%s\" does not mention \"%s\"", err, what);
}

static void assert_hosts(size_t n, ...) {
  cr_assert_eq(hosts.n, n, "%zu hosts, want %zu", hosts.n, n);
  va_list ap;
  va_start(ap, n);
  for (size_t i = 0; i < n; i++)
    cr_assert_str_eq(hosts.items[i], va_arg(ap, const char *), "host %zu", i);
  va_end(ap);
}

Test(flags, nothing_given_keeps_the_defaults) {
  cr_assert_eq(parse_with(&pos, NULL), SG_FLAGS_OK);

  cr_assert_str_eq(name, "default-name");
  cr_assert_eq(port, 443);
  cr_assert_eq(max_size, 4096);
  cr_assert_eq(verbose, 0);
  cr_assert_eq(hosts.n, 0);
}

Test(flags, a_value_can_follow_as_the_next_argument) {
  cr_assert_eq(parse("--name", "alice", "--port", "8080"), SG_FLAGS_OK);

  cr_assert_str_eq(name, "alice");
  cr_assert_eq(port, 8080);
}

Test(flags, a_value_can_follow_an_equals_sign) {
  cr_assert_eq(parse("--name=bob", "--port=9000"), SG_FLAGS_OK);

  cr_assert_str_eq(name, "bob");
  cr_assert_eq(port, 9000);
}

Test(flags, only_the_first_equals_sign_separates_the_value) {
  cr_assert_eq(parse("--name=a=b"), SG_FLAGS_OK);

  cr_assert_str_eq(name, "a=b");
}

Test(flags, an_empty_value_after_equals_is_a_value) {
  cr_assert_eq(parse("--name="), SG_FLAGS_OK);

  cr_assert_str_eq(name, "");
}

Test(flags, the_last_occurrence_wins) {
  cr_assert_eq(parse("--port", "1", "--port=2"), SG_FLAGS_OK);

  cr_assert_eq(port, 2);
}

Test(flags, a_bare_bool_flag_is_true) {
  cr_assert_eq(parse("--verbose"), SG_FLAGS_OK);

  cr_assert_eq(verbose, 1);
}

Test(flags, a_bare_bool_flag_does_not_take_the_next_argument) {
  cr_assert_eq(parse("--verbose", "false"), SG_FLAGS_OK);

  cr_assert_eq(verbose, 1);
  cr_assert_eq(pos.n, 1);
  cr_assert_str_eq(pos.args[0], "false");
}

Test(flags, a_bool_flag_takes_true_and_false_after_equals) {
  const char *yes[] = {"--verbose=true", "--verbose=1", "--verbose=yes"};
  const char *no[] = {"--verbose=false", "--verbose=0", "--verbose=no"};
  for (size_t i = 0; i < 3; i++) {
    verbose = 0;
    cr_assert_eq(parse(yes[i]), SG_FLAGS_OK, "%s", yes[i]);
    cr_assert_eq(verbose, 1, "%s", yes[i]);
    verbose = 1;
    cr_assert_eq(parse(no[i]), SG_FLAGS_OK, "%s", no[i]);
    cr_assert_eq(verbose, 0, "%s", no[i]);
  }
}

Test(flags, a_bool_flag_rejects_other_words_naming_the_flag) {
  cr_assert_eq(parse("--verbose=maybe"), SG_FLAGS_ERROR);

  assert_err_mentions("--verbose");
  assert_err_mentions("maybe");
}

Test(flags, an_int_flag_accepts_its_bounds) {
  cr_assert_eq(parse("--port=1"), SG_FLAGS_OK);
  cr_assert_eq(port, 1);
  cr_assert_eq(parse("--port=65535"), SG_FLAGS_OK);
  cr_assert_eq(port, 65535);
}

Test(flags, an_int_below_the_minimum_is_an_error_naming_the_flag) {
  cr_assert_eq(parse("--port", "0"), SG_FLAGS_ERROR);

  assert_err_mentions("--port");
  assert_err_mentions("\"0\"");
  cr_assert_eq(port, 443, "a rejected value was stored");
}

Test(flags, an_int_above_the_maximum_is_an_error_naming_the_flag) {
  cr_assert_eq(parse("--port=65536"), SG_FLAGS_ERROR);

  assert_err_mentions("--port");
  assert_err_mentions("65535");
}

Test(flags, an_int_that_is_not_a_number_is_an_error) {
  const char *bad[] = {"--port=80x", "--port=", "--port=x80", "--port=8.0"};
  for (size_t i = 0; i < 4; i++) {
    cr_assert_eq(parse(bad[i]), SG_FLAGS_ERROR, "%s", bad[i]);
    assert_err_mentions("--port");
  }
}

Test(flags, an_int_too_large_for_long_long_is_an_error) {
  cr_assert_eq(parse("--port=99999999999999999999"), SG_FLAGS_ERROR);

  assert_err_mentions("--port");
}

static long long bytes(const char *s) {
  long long v = -1;
  cr_assert_eq(sg_flags_parse_bytes(s, &v), 0, "\"%s\" was rejected", s);
  return v;
}

static void assert_bad_bytes(const char *s) {
  long long v = 77;
  cr_assert_eq(sg_flags_parse_bytes(s, &v), -1, "\"%s\" was accepted", s);
  cr_assert_eq(v, 77);
}

Test(flags, a_plain_byte_count_is_bytes) {
  cr_assert_eq(bytes("4194304"), 4194304);
  cr_assert_eq(bytes("0"), 0);
  cr_assert_eq(bytes("12B"), 12);
}

Test(flags, byte_suffixes_are_binary_multiples) {
  cr_assert_eq(bytes("64KiB"), 64 * 1024);
  cr_assert_eq(bytes("4MiB"), 4 * 1024 * 1024);
  cr_assert_eq(bytes("2GiB"), 2LL * 1024 * 1024 * 1024);
}

Test(flags, unknown_or_malformed_byte_suffixes_are_rejected) {
  assert_bad_bytes("4MB");
  assert_bad_bytes("4kb");
  assert_bad_bytes("4mib");
  assert_bad_bytes("4 MiB");
  assert_bad_bytes("4MiBx");
  assert_bad_bytes("1.5MiB");
  assert_bad_bytes("MiB");
  assert_bad_bytes("");
}

Test(flags, a_negative_byte_count_is_rejected) {
  assert_bad_bytes("-1");
  assert_bad_bytes("-1KiB");
}

Test(flags, a_byte_count_that_overflows_is_rejected) {
  assert_bad_bytes("99999999999999999999");
  assert_bad_bytes("8589934592GiB");
}

Test(flags, a_bytes_flag_takes_suffixes) {
  cr_assert_eq(parse("--max-size", "4MiB"), SG_FLAGS_OK);

  cr_assert_eq(max_size, 4 * 1024 * 1024);
}

Test(flags, a_bytes_flag_with_a_bad_suffix_is_an_error_naming_the_flag) {
  cr_assert_eq(parse("--max-size=4MB"), SG_FLAGS_ERROR);

  assert_err_mentions("--max-size");
  assert_err_mentions("4MB");
}

Test(flags, a_bytes_flag_out_of_bounds_is_an_error_naming_the_flag) {
  cr_assert_eq(parse("--max-size=2GiB"), SG_FLAGS_ERROR);
  assert_err_mentions("--max-size");

  cr_assert_eq(parse("--max-size=1023"), SG_FLAGS_ERROR);
  assert_err_mentions("--max-size");
}

Test(flags, an_unknown_flag_is_an_error_naming_it) {
  cr_assert_eq(parse("--port=1", "--no-such-flag", "x"), SG_FLAGS_ERROR);

  assert_err_mentions("--no-such-flag");
}

Test(flags, an_unknown_flag_is_named_without_its_value) {
  cr_assert_eq(parse("--secret-token=hunter2"), SG_FLAGS_ERROR);

  assert_err_mentions("--secret-token");
  cr_assert_null(strstr(err, "hunter2"), "error \"%s\" repeats the value", err);
}

Test(flags, a_flag_name_must_match_whole) {
  cr_assert_eq(parse("--por=1"), SG_FLAGS_ERROR);
  cr_assert_eq(parse("--ports=1"), SG_FLAGS_ERROR);
  cr_assert_eq(parse("--PORT=1"), SG_FLAGS_ERROR);
}

Test(flags, a_missing_value_at_the_end_is_an_error_naming_the_flag) {
  cr_assert_eq(parse("--name"), SG_FLAGS_ERROR);

  assert_err_mentions("--name");
  cr_assert_str_eq(name, "default-name");
}

Test(flags, help_returns_help) {
  cr_assert_eq(parse("--help"), SG_FLAGS_HELP);
  cr_assert_eq(parse("-h"), SG_FLAGS_HELP);
}

Test(flags, help_wins_over_what_follows_it) {
  cr_assert_eq(parse("--port=1", "--help", "--no-such-flag"), SG_FLAGS_HELP);
}

Test(flags, the_environment_is_used_when_the_flag_is_absent) {
  setenv("SEALGATE_PORT", "9090", 1);
  setenv("SEALGATE_NAME", "from-env", 1);

  cr_assert_eq(parse_with(&pos, NULL), SG_FLAGS_OK);

  cr_assert_eq(port, 9090);
  cr_assert_str_eq(name, "from-env");
}

Test(flags, the_command_line_overrides_the_environment) {
  setenv("SEALGATE_PORT", "9090", 1);

  cr_assert_eq(parse("--port", "7070"), SG_FLAGS_OK);

  cr_assert_eq(port, 7070);
}

Test(flags, a_dashed_flag_reads_an_upper_case_underscored_variable) {
  setenv("SEALGATE_MAX_SIZE", "64KiB", 1);

  cr_assert_eq(parse_with(&pos, NULL), SG_FLAGS_OK);

  cr_assert_eq(max_size, 64 * 1024);
}

Test(flags, a_bool_reads_true_and_false_from_the_environment) {
  setenv("SEALGATE_VERBOSE", "true", 1);
  cr_assert_eq(parse_with(&pos, NULL), SG_FLAGS_OK);
  cr_assert_eq(verbose, 1);

  setenv("SEALGATE_VERBOSE", "false", 1);
  cr_assert_eq(parse_with(&pos, NULL), SG_FLAGS_OK);
  cr_assert_eq(verbose, 0);
}

Test(flags, a_bad_environment_value_is_an_error_naming_the_variable) {
  setenv("SEALGATE_PORT", "http", 1);

  cr_assert_eq(parse_with(&pos, NULL), SG_FLAGS_ERROR);

  assert_err_mentions("SEALGATE_PORT");
}

Test(flags, a_list_flag_is_repeatable) {
  cr_assert_eq(parse("--allow-host", "a.example", "--allow-host=b.example"), SG_FLAGS_OK);

  assert_hosts(2, "a.example", "b.example");
}

Test(flags, a_list_item_on_the_command_line_may_hold_a_comma) {
  cr_assert_eq(parse("--allow-host=a,b"), SG_FLAGS_OK);

  assert_hosts(1, "a,b");
}

Test(flags, a_list_from_the_environment_is_comma_separated) {
  setenv("SEALGATE_ALLOW_HOST", "a.example,b.example,c.example", 1);

  cr_assert_eq(parse_with(&pos, NULL), SG_FLAGS_OK);

  assert_hosts(3, "a.example", "b.example", "c.example");
}

Test(flags, a_list_on_the_command_line_replaces_the_environment_list) {
  setenv("SEALGATE_ALLOW_HOST", "a.example,b.example", 1);

  cr_assert_eq(parse("--allow-host", "c.example", "--allow-host", "d.example"), SG_FLAGS_OK);

  assert_hosts(2, "c.example", "d.example");
}

Test(flags, empty_items_in_an_environment_list_are_skipped) {
  setenv("SEALGATE_ALLOW_HOST", ",a.example,,b.example,", 1);

  cr_assert_eq(parse_with(&pos, NULL), SG_FLAGS_OK);

  assert_hosts(2, "a.example", "b.example");
}

Test(flags, an_empty_environment_list_is_an_empty_list) {
  setenv("SEALGATE_ALLOW_HOST", "", 1);

  cr_assert_eq(parse_with(&pos, NULL), SG_FLAGS_OK);

  cr_assert_eq(hosts.n, 0);
}

/* A default list the caller stored, in memory the parser does not own. */
static const char *default_hosts[] = {"default-a", "default-b"};

Test(flags, the_environment_replaces_a_default_list) {
  hosts = (sg_strlist){default_hosts, 2};
  setenv("SEALGATE_ALLOW_HOST", "env.example", 1);

  cr_assert_eq(parse_with(&pos, NULL), SG_FLAGS_OK);

  assert_hosts(1, "env.example");
  cr_assert_str_eq(default_hosts[0], "default-a", "the caller's default was overwritten");
}

Test(flags, the_command_line_replaces_a_default_list) {
  hosts = (sg_strlist){default_hosts, 2};

  cr_assert_eq(parse("--allow-host", "cli.example"), SG_FLAGS_OK);

  assert_hosts(1, "cli.example");
  cr_assert_str_eq(default_hosts[0], "default-a", "the caller's default was overwritten");
}

Test(flags, a_default_list_is_kept_when_nothing_replaces_it) {
  hosts = (sg_strlist){default_hosts, 2};

  cr_assert_eq(parse("--port", "1"), SG_FLAGS_OK);

  assert_hosts(2, "default-a", "default-b");
}

Test(flags, positionals_are_collected_in_order) {
  cr_assert_eq(parse("serve", "--port", "80", "extra", "-"), SG_FLAGS_OK);

  cr_assert_eq(port, 80);
  cr_assert_eq(pos.n, 3);
  cr_assert_str_eq(pos.args[0], "serve");
  cr_assert_str_eq(pos.args[1], "extra");
  cr_assert_str_eq(pos.args[2], "-");
}

Test(flags, positionals_are_rejected_when_none_are_expected) {
  cr_assert_eq(parse_with(NULL, "--port", "80", "stray", NULL), SG_FLAGS_ERROR);

  assert_err_mentions("stray");
}

Test(flags, usage_prints_one_line_per_flag_with_its_variable) {
  char *text = NULL;
  size_t len = 0;
  FILE *out = open_memstream(&text, &len);

  sg_flags_usage(out, flags, N_FLAGS);
  fclose(out);

  size_t lines = 0;
  for (size_t i = 0; i < len; i++)
    lines += text[i] == '\n';
  cr_assert_eq(lines, N_FLAGS);
  cr_assert_not_null(strstr(text, "--port PORT"));
  cr_assert_not_null(strstr(text, "where to listen"));
  cr_assert_not_null(strstr(text, "[SEALGATE_PORT]"));
  cr_assert_not_null(strstr(text, "[SEALGATE_MAX_SIZE]"));
  cr_assert_not_null(strstr(text, "--verbose "));
  free(text);
}
