/* Host patterns (SPEC §2 "Host patterns"): a host name, "*.example.com" (any subdomain at any
 * depth, not the apex) or "*" alone; compared normalized (lower-case, one trailing dot dropped);
 * a scheme, path, port, misplaced '*' or IP literal is invalid. */
#include <criterion/criterion.h>
#include <string.h>

#include "core/mem.h"
#include "policy/host.h"

typedef struct {
  const char *in;
  const char *want; /* normalized form, or the reason it is rejected */
} vector;

static void expect_pattern(const char *in, size_t len, const char *want) {
  char out[SG_HOST_MAX + 1];
  const char *why = "unset";
  int rc = sg_host_pattern_normalize(in, len, out, &why);
  cr_expect_eq(rc, 0, "\"%.*s\" was rejected: %s", (int)len, in, rc ? why : "");
  if (rc == 0)
    cr_expect_str_eq(out, want, "\"%.*s\" normalized to \"%s\", want \"%s\"", (int)len, in, out,
                     want);
}

static void expect_pattern_rejected(const char *in, size_t len, const char *want_why) {
  char out[SG_HOST_MAX + 1];
  const char *why = NULL;
  int rc = sg_host_pattern_normalize(in, len, out, &why);
  cr_expect_eq(rc, -1, "\"%.*s\" was accepted as \"%s\"", (int)len, in, out);
  if (rc == -1)
    cr_expect_str_eq(why, want_why, "\"%.*s\": \"%s\", want \"%s\"", (int)len, in, why, want_why);
}

static void expect_patterns(const vector *v, size_t n) {
  for (size_t i = 0; i < n; i++)
    expect_pattern(v[i].in, strlen(v[i].in), v[i].want);
}

static void expect_patterns_rejected(const vector *v, size_t n) {
  for (size_t i = 0; i < n; i++)
    expect_pattern_rejected(v[i].in, strlen(v[i].in), v[i].want);
}

/* A name of |len| characters made of 63-character labels ("aaa...a.aaa..."). */
static void make_name(char *buf, size_t len) {
  for (size_t i = 0; i < len; i++)
    buf[i] = i % 64 == 63 ? '.' : 'a';
  buf[len] = '\0';
}

/* Host patterns: valid ones and their normalized form. */

Test(host_pattern, valid_patterns_normalize_to_lower_case_without_the_trailing_dot) {
  static const vector v[] = {
      {"api.anthropic.com", "api.anthropic.com"},
      {"API.OpenAI.com.", "api.openai.com"},
      {"*.openai.com", "*.openai.com"},
      {"*.OpenAI.COM.", "*.openai.com"},
      {"*", "*"},
      {"localhost", "localhost"},
      {"_dmarc.Example.org", "_dmarc.example.org"},
      {"xn--bcher-kva.example", "xn--bcher-kva.example"},
      {"a-b.c_d.e-f", "a-b.c_d.e-f"},
      {"123.example.com", "123.example.com"},
      {"1e100.net", "1e100.net"},
      {"0x7f.example.com", "0x7f.example.com"},
      {"a.b.c.d.e.f.g", "a.b.c.d.e.f.g"},
  };
  expect_patterns(v, SG_ARRAY_LEN(v));
}

Test(host_pattern, a_wildcard_over_a_top_level_domain_is_allowed) {
  static const vector v[] = {{"*.com", "*.com"}, {"*.co.uk", "*.co.uk"}, {"*.IO.", "*.io"}};
  expect_patterns(v, SG_ARRAY_LEN(v));
}

Test(host_pattern, normalizing_a_normalized_pattern_changes_nothing) {
  static const char *const in[] = {"API.OpenAI.com.", "*.Example.ORG", "*", "a_b-c.D."};
  for (size_t i = 0; i < SG_ARRAY_LEN(in); i++) {
    char once[SG_HOST_MAX + 1], twice[SG_HOST_MAX + 1];
    const char *why;
    cr_assert_eq(sg_host_pattern_normalize(in[i], strlen(in[i]), once, &why), 0, "%s", in[i]);
    cr_assert_eq(sg_host_pattern_normalize(once, strlen(once), twice, &why), 0, "%s", once);
    cr_expect_str_eq(twice, once);
  }
}

Test(host_pattern, the_input_length_is_honoured_rather_than_a_nul) {
  expect_pattern("a.com.evil.com", 5, "a.com");
}

/* Host patterns: what is rejected, and why. */

Test(host_pattern, an_empty_pattern_is_rejected) {
  expect_pattern_rejected("", 0, "is empty");
  expect_pattern_rejected(NULL, 0, "is empty");
}

Test(host_pattern, a_scheme_is_rejected) {
  static const vector v[] = {{"https://x", "has a scheme"},
                             {"x://", "has a scheme"},
                             {"HTTP://api.openai.com/v1", "has a scheme"},
                             {"wss://a.com:443", "has a scheme"}};
  expect_patterns_rejected(v, SG_ARRAY_LEN(v));
}

Test(host_pattern, a_path_is_rejected) {
  static const vector v[] = {{"a.com/x", "has a path"},
                             {"a.com/", "has a path"},
                             {"a.com\\x", "has a path"},
                             {"//a.com", "has a path"},
                             {"a.com/x?y#z", "has a path"}};
  expect_patterns_rejected(v, SG_ARRAY_LEN(v));
}

Test(host_pattern, a_query_or_fragment_is_rejected) {
  static const vector v[] = {{"a.com?x=1", "has a query"},
                             {"a.com?", "has a query"},
                             {"a.com#top", "has a fragment"},
                             {"a.com#", "has a fragment"}};
  expect_patterns_rejected(v, SG_ARRAY_LEN(v));
}

Test(host_pattern, a_port_is_rejected) {
  static const vector v[] = {{"a.com:443", "has a port"},
                             {"a.com:", "has a port"},
                             {"*.a.com:8080", "has a port"},
                             {"localhost:0", "has a port"}};
  expect_patterns_rejected(v, SG_ARRAY_LEN(v));
}

Test(host_pattern, userinfo_is_rejected) {
  static const vector v[] = {{"u@a.com", "has userinfo"},
                             {"u:p@a.com", "has userinfo"},
                             {"@a.com", "has userinfo"},
                             {"api.openai.com@evil.com", "has userinfo"}};
  expect_patterns_rejected(v, SG_ARRAY_LEN(v));
}

Test(host_pattern, a_star_anywhere_but_a_leading_star_dot_label_is_rejected) {
  static const char why[] = "has '*' outside a leading '*.' label";
  static const vector v[] = {{"a*.com", why},   {"*a.com", why},   {"a.*.com", why},
                             {"**.com", why},   {"*.*.com", why},  {"a.com*", why},
                             {"*.a*.com", why}, {"a.com.*", why},  {"**", why},
                             {"*.com.*", why},  {"f*.x.com", why}, {"*com", why}};
  expect_patterns_rejected(v, SG_ARRAY_LEN(v));
}

Test(host_pattern, a_star_dot_with_nothing_after_it_is_rejected) {
  static const vector v[] = {{"*.", "has nothing after '*.'"},
                             {"*..", "has nothing after '*.'"},
                             {"*...", "has an empty label"}};
  expect_patterns_rejected(v, SG_ARRAY_LEN(v));
}

Test(host_pattern, an_ipv4_literal_is_rejected) {
  static const vector v[] = {
      {"1.2.3.4", "is an IP literal"},    {"1.2.3.4.", "is an IP literal"},
      {"127.0.0.01", "is an IP literal"}, {"*.1.2.3", "is an IP literal"},
      {"0.0.0.0", "is an IP literal"},    {"255.255.255.255", "is an IP literal"},
  };
  expect_patterns_rejected(v, SG_ARRAY_LEN(v));
}

/* What inet_aton and browsers read as IPv4 (the WHATWG "ends in a number" rule). */
Test(host_pattern, a_name_ending_in_a_number_is_an_ip_literal) {
  static const vector v[] = {
      {"127.1", "is an IP literal"},       {"2130706433", "is an IP literal"},
      {"0x7f.1", "is an IP literal"},      {"0x7f000001", "is an IP literal"},
      {"0X7F000001", "is an IP literal"},  {"0x7f.0.0.0x1", "is an IP literal"},
      {"0177.0.0.1", "is an IP literal"},  {"a.b.0x", "is an IP literal"},
      {"example.123", "is an IP literal"},
  };
  expect_patterns_rejected(v, SG_ARRAY_LEN(v));
}

Test(host_pattern, an_ipv6_literal_is_rejected) {
  static const vector v[] = {
      {"[::1]", "is an IP literal"},
      {"::1", "is an IP literal"},
      {"[::1]:443", "is an IP literal"},
      {"fe80::1", "is an IP literal"},
      {"2001:db8::1", "is an IP literal"},
      {"[fe80::1%25eth0]", "is an IP literal"},
      {"[api.openai.com]", "is an IP literal"},
  };
  expect_patterns_rejected(v, SG_ARRAY_LEN(v));
}

Test(host_pattern, an_ipv4_mapped_ipv6_literal_is_rejected) {
  static const vector v[] = {
      {"::ffff:127.0.0.1", "is an IP literal"},
      {"[::ffff:7f00:1]", "is an IP literal"},
      {"::ffff:169.254.169.254", "is an IP literal"},
      {"64:ff9b::a9fe:a9fe", "is an IP literal"},
  };
  expect_patterns_rejected(v, SG_ARRAY_LEN(v));
}

Test(host_pattern, whitespace_is_rejected_and_never_trimmed) {
  static const vector v[] = {
      {" a.com", "contains whitespace"},    {"a.com ", "contains whitespace"},
      {"a .com", "contains whitespace"},    {"a.com\t", "contains whitespace"},
      {"a.com\r\n", "contains whitespace"}, {" ", "contains whitespace"},
      {"* .a.com", "contains whitespace"}};
  expect_patterns_rejected(v, SG_ARRAY_LEN(v));
}

Test(host_pattern, an_empty_label_is_rejected) {
  static const vector v[] = {{"a..com", "has an empty label"},  {".a.com", "has an empty label"},
                             {"a.com..", "has an empty label"}, {".", "has an empty label"},
                             {"..", "has an empty label"},      {"*..a.com", "has an empty label"},
                             {"*.a..com", "has an empty label"}};
  expect_patterns_rejected(v, SG_ARRAY_LEN(v));
}

Test(host_pattern, a_label_of_63_characters_is_accepted_and_64_rejected) {
  char in[80];
  memset(in, 'a', 63);
  strcpy(in + 63, ".com");
  expect_pattern(in, strlen(in), in);

  memset(in, 'a', 64);
  strcpy(in + 64, ".com");
  expect_pattern_rejected(in, strlen(in), "has a label longer than 63 characters");
}

Test(host_pattern, a_name_of_253_characters_is_accepted_and_254_rejected) {
  char in[300];
  make_name(in, SG_HOST_MAX);
  expect_pattern(in, SG_HOST_MAX, in);

  make_name(in, SG_HOST_MAX + 1);
  expect_pattern_rejected(in, SG_HOST_MAX + 1, "is longer than 253 characters");
}

Test(host_pattern, the_trailing_dot_does_not_count_towards_253_characters) {
  char in[SG_HOST_MAX + 2], want[SG_HOST_MAX + 1];
  make_name(want, SG_HOST_MAX);
  memcpy(in, want, SG_HOST_MAX);
  memcpy(in + SG_HOST_MAX, ".", 2);

  expect_pattern(in, strlen(in), want);
}

Test(host_pattern, a_wildcard_pattern_counts_its_star_dot_towards_253_characters) {
  char in[300];
  in[0] = '*';
  in[1] = '.';
  make_name(in + 2, SG_HOST_MAX - 2);
  expect_pattern(in, SG_HOST_MAX, in);

  make_name(in + 2, SG_HOST_MAX - 1);
  expect_pattern_rejected(in, SG_HOST_MAX + 1, "is longer than 253 characters");
}

Test(host_pattern, a_label_starting_or_ending_with_a_hyphen_is_rejected) {
  static const char why[] = "has a label starting or ending with '-'";
  static const vector v[] = {
      {"-a.com", why}, {"a-.com", why}, {"a.-com", why}, {"*.-a.com", why}, {"-", why}};
  expect_patterns_rejected(v, SG_ARRAY_LEN(v));
}

Test(host_pattern, characters_other_than_letters_digits_hyphen_underscore_dot_are_rejected) {
  static const char why[] = "has a character other than letters, digits, '-', '_' and '.'";
  static const vector v[] = {{"a!.com", why},    {"a%2e.com", why},  {"a,b.com", why},
                             {"a;b.com", why},   {"a]b.com", why},   {"a\"b.com", why},
                             {"a\x01.com", why}, {"a\x7f.com", why}, {"a'b.com", why}};
  expect_patterns_rejected(v, SG_ARRAY_LEN(v));
}

Test(host_pattern, a_nul_byte_inside_the_pattern_is_rejected) {
  static const char in[] = "api.openai.com\0.evil.com";
  expect_pattern_rejected(in, sizeof(in) - 1,
                          "has a character other than letters, digits, '-', '_' and '.'");
}

Test(host_pattern, a_non_ascii_name_is_rejected_in_favour_of_its_xn_form) {
  expect_pattern_rejected("b\xc3\xbc"
                          "cher.example",
                          strlen("b\xc3\xbc"
                                 "cher.example"),
                          "is not ASCII (write an IDN in its xn-- form)");
}

Test(host_pattern, a_rejected_pattern_leaves_an_empty_output) {
  char out[SG_HOST_MAX + 1];
  const char *why;
  memset(out, 'x', sizeof(out));

  cr_assert_eq(sg_host_pattern_normalize("a.com:443", 9, out, &why), -1);
  cr_expect_str_eq(out, "");
}

/* Host names (what the proxy sees in CONNECT, SNI and Host). */

Test(host_name, names_normalize_to_lower_case_without_the_trailing_dot) {
  static const vector v[] = {{"API.OpenAI.com.", "api.openai.com"},
                             {"api.openai.com", "api.openai.com"},
                             {"API.OPENAI.COM", "api.openai.com"},
                             {"LocalHost.", "localhost"},
                             {"_a-B.c_D", "_a-b.c_d"}};
  for (size_t i = 0; i < SG_ARRAY_LEN(v); i++) {
    char out[SG_HOST_MAX + 1];
    cr_expect_eq(sg_host_normalize(v[i].in, strlen(v[i].in), out), 0, "\"%s\" rejected", v[i].in);
    cr_expect_str_eq(out, v[i].want, "\"%s\"", v[i].in);
  }
}

Test(host_name, patterns_ports_and_ip_literals_are_not_host_names) {
  static const char *const in[] = {
      "*.openai.com",
      "*",
      "api.openai.com:443",
      "1.2.3.4",
      "127.1",
      "0x7f.1",
      "::1",
      "[::1]",
      "api..openai.com",
      "[api.openai.com]",
      "a.com..",
      ".",
      "",
      "-a.com",
      "u@a.com",
      "a.com/x",
      " a.com",
      "2130706433",
      "api.openai.com%00x",
      "b\xc3\xbc.com",
  };
  for (size_t i = 0; i < SG_ARRAY_LEN(in); i++) {
    char out[SG_HOST_MAX + 1];
    cr_expect_eq(sg_host_normalize(in[i], strlen(in[i]), out), -1, "\"%s\" accepted as \"%s\"",
                 in[i], out);
  }
}

Test(host_name, a_nul_byte_inside_the_name_is_rejected) {
  static const char in[] = "api.openai.com\0.evil.com";
  char out[SG_HOST_MAX + 1];

  cr_expect_eq(sg_host_normalize(in, sizeof(in) - 1, out), -1);
}

Test(host_name, exactly_the_letters_digits_hyphen_underscore_and_dot_are_accepted) {
  for (int c = 0; c < 256; c++) {
    char in[] = {'x', (char)c, 'y', '.', 'c', 'o', 'm'};
    char out[SG_HOST_MAX + 1];
    int want = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '-' || c == '_' || c == '.';

    int rc = sg_host_normalize(in, sizeof(in), out);

    cr_expect_eq(rc == 0, want, "byte 0x%02x: %s", c, rc == 0 ? "accepted" : "rejected");
  }
}

Test(host_name, lower_casing_is_ascii_only_and_maps_every_upper_case_letter) {
  for (char c = 'A'; c <= 'Z'; c++) {
    char in[] = {c, '.', 'c', 'o', 'm'};
    char out[SG_HOST_MAX + 1];
    cr_assert_eq(sg_host_normalize(in, sizeof(in), out), 0);
    cr_expect_eq(out[0], c - 'A' + 'a');
  }
}

Test(host_name, a_name_of_253_characters_is_accepted_and_254_rejected) {
  char in[300], out[SG_HOST_MAX + 1];
  make_name(in, SG_HOST_MAX);
  cr_expect_eq(sg_host_normalize(in, SG_HOST_MAX, out), 0);

  make_name(in, SG_HOST_MAX + 1);
  cr_expect_eq(sg_host_normalize(in, SG_HOST_MAX + 1, out), -1);
}

/* Matching normalized names. */

typedef struct {
  const char *pattern, *host;
} pair;

static void expect_matches(const pair *v, size_t n, int want) {
  for (size_t i = 0; i < n; i++)
    cr_expect_eq(sg_host_match(v[i].pattern, v[i].host) != 0, want, "\"%s\" %s \"%s\"",
                 v[i].pattern, want ? "does not match" : "matches", v[i].host);
}

Test(host_match, star_matches_every_host) {
  static const pair v[] = {
      {"*", "a.com"}, {"*", "localhost"}, {"*", "api.openai.com"}, {"*", "a.b.c.d.e.f.example"}};
  expect_matches(v, SG_ARRAY_LEN(v), 1);
}

Test(host_match, a_wildcard_matches_subdomains_at_any_depth) {
  static const pair v[] = {{"*.openai.com", "api.openai.com"},
                           {"*.openai.com", "a.b.openai.com"},
                           {"*.openai.com", "v.w.x.y.z.openai.com"},
                           {"*.openai.com", "openai.com.openai.com"},
                           {"*.com", "a.com"},
                           {"*.com", "a.b.com"}};
  expect_matches(v, SG_ARRAY_LEN(v), 1);
}

Test(host_match, a_wildcard_does_not_match_its_apex) {
  static const pair v[] = {{"*.openai.com", "openai.com"}, {"*.com", "com"}};
  expect_matches(v, SG_ARRAY_LEN(v), 0);
}

Test(host_match, a_wildcard_matches_only_on_a_label_boundary) {
  static const pair v[] = {{"*.openai.com", "evilopenai.com"},
                           {"*.openai.com", "xopenai.com"},
                           {"*.openai.com", "penai.com"},
                           {"*.openai.com", "api.openai.co"},
                           {"*.openai.com", "api.openai.com.evil.com"},
                           {"*.openai.com", "evil.com.openai.com.attacker"},
                           {"*.openai.com", "openai.com.evil"},
                           {"*.com", "com.evil"}};
  expect_matches(v, SG_ARRAY_LEN(v), 0);
}

Test(host_match, an_exact_pattern_matches_only_the_same_name) {
  static const pair yes[] = {{"api.openai.com", "api.openai.com"}, {"localhost", "localhost"}};
  static const pair no[] = {
      {"api.openai.com", "a.api.openai.com"}, {"api.openai.com", "openai.com"},
      {"api.openai.com", "api.openai.co"},    {"api.openai.com", "api.openai.com.evil.com"},
      {"openai.com", "api.openai.com"},       {"openai.com", "evilopenai.com"}};
  expect_matches(yes, SG_ARRAY_LEN(yes), 1);
  expect_matches(no, SG_ARRAY_LEN(no), 0);
}

Test(host_match, upper_case_and_trailing_dots_match_once_normalized) {
  static const char *const hosts[] = {"API.OpenAI.com.", "api.openai.COM", "Api.OpenAi.Com."};
  char pattern[SG_HOST_MAX + 1], exact[SG_HOST_MAX + 1];
  const char *why;
  cr_assert_eq(sg_host_pattern_normalize("*.OpenAI.com.", 13, pattern, &why), 0);
  cr_assert_eq(sg_host_pattern_normalize("API.openai.com", 14, exact, &why), 0);

  for (size_t i = 0; i < SG_ARRAY_LEN(hosts); i++) {
    char host[SG_HOST_MAX + 1];
    cr_assert_eq(sg_host_normalize(hosts[i], strlen(hosts[i]), host), 0);
    cr_expect(sg_host_match(pattern, host), "\"%s\" vs %s", pattern, hosts[i]);
    cr_expect(sg_host_match(exact, host), "\"%s\" vs %s", exact, hosts[i]);
  }
}

/* The comparison is byte-exact: a caller that forgets to normalize is denied, never allowed;
 * a '*' not followed by '.' (which the normalizer never produces) matches nothing. */
Test(host_match, an_unnormalized_host_fails_closed) {
  static const pair v[] = {
      {"api.openai.com", "API.openai.com"}, {"api.openai.com", "api.openai.com."},
      {"*.openai.com", "API.OPENAI.COM"},   {"*.openai.com", "api.openai.com."},
      {"*openai.com", "evilopenai.com"},    {"*openai.com", "api.openai.com"}};
  expect_matches(v, SG_ARRAY_LEN(v), 0);
}

Test(host_match, an_empty_or_missing_host_matches_nothing) {
  cr_expect_not(sg_host_match("*", ""));
  cr_expect_not(sg_host_match("*", NULL));
  cr_expect_not(sg_host_match(NULL, "a.com"));
  cr_expect_not(sg_host_match("*.a.com", ""));
}

/* --- sg_host_pattern_intersect ------------------------------------------------------------- */

typedef struct {
  const char *a, *b, *want; /* want NULL: they share no host */
} triple;

Test(host_intersect, the_narrower_pattern_or_nothing) {
  static const triple v[] = {
      {"*", "api.openai.com", "api.openai.com"},
      {"*", "*.openai.com", "*.openai.com"},
      {"*", "*", "*"},
      {"*.openai.com", "api.openai.com", "api.openai.com"},
      {"*.openai.com", "a.b.openai.com", "a.b.openai.com"},
      {"*.openai.com", "*.eu.openai.com", "*.eu.openai.com"},
      {"*.openai.com", "*.openai.com", "*.openai.com"},
      {"api.openai.com", "api.openai.com", "api.openai.com"},
      /* The apex is not a subdomain; look-alikes share nothing. */
      {"*.openai.com", "openai.com", NULL},
      {"*.openai.com", "evilopenai.com", NULL},
      {"*.openai.com", "api.openai.com.evil.com", NULL},
      {"*.openai.com", "*.com", "*.openai.com"},
      {"api.openai.com", "api.anthropic.com", NULL},
      {"*.openai.com", "*.anthropic.com", NULL},
  };
  for (size_t i = 0; i < SG_ARRAY_LEN(v); i++) {
    const char *ab = sg_host_pattern_intersect(v[i].a, v[i].b);
    const char *ba = sg_host_pattern_intersect(v[i].b, v[i].a);
    if (v[i].want == NULL) {
      cr_expect_null(ab, "%s ∩ %s gave %s", v[i].a, v[i].b, ab);
      cr_expect_null(ba, "%s ∩ %s gave %s", v[i].b, v[i].a, ba);
    } else {
      cr_expect(ab && strcmp(ab, v[i].want) == 0, "%s ∩ %s gave %s", v[i].a, v[i].b,
                ab ? ab : "nothing");
      cr_expect(ba && strcmp(ba, v[i].want) == 0, "%s ∩ %s gave %s", v[i].b, v[i].a,
                ba ? ba : "nothing");
    }
  }
}
