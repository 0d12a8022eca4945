/* One request's substitution over a hand-built view: which tokens become values for which
 * hosts, which are withheld and why, tokens of other sandboxes, Basic credentials, the query
 * (percent-encoded) against the path (never touched), the path kept for audit, the reflector
 * armed for the response, and how many audit events each step records.
 *
 * The audit writer is never started here: sg_audit_record then drops each event and counts it
 * (db/audit_writer.c), so sg_audit_dropped() tells how many events a step recorded, though not
 * what they said. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "proxy/scan.h"
#include "proxy/subst.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#define TOK_OPENAI SG_TOKEN_PREFIX "0123456789abcdef0123456789abcdef"
#define TOK_ANY    SG_TOKEN_PREFIX "ffffffffffffffffffffffffffffffff"
#define TOK_GIT    SG_TOKEN_PREFIX "a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0"
#define TOK_SHORT  SG_TOKEN_PREFIX "5555555555555555aaaaaaaaaaaaaaaa"
#define TOK_OTHER  SG_TOKEN_PREFIX "deadbeefdeadbeefdeadbeefdeadbeef" /* another sandbox's */
#define MASKED     SG_TOKEN_PREFIX "********************************"

#define V_OPENAI "sk-openai-1234567890"
#define V_ANY    "any value & more=1"
#define V_GIT    "ghp_abcdef123456"
#define V_SHORT  "short" /* below SG_REFLECT_MIN_LEN */

typedef struct {
  const char *token, *name, *value;
  const char *hosts[3]; /* NULL-terminated */
} secret_spec;

static const secret_spec specs[] = {
    {TOK_OPENAI, "OPENAI_API_KEY", V_OPENAI, {"*.openai.com"}},
    {TOK_ANY, "ANYWHERE", V_ANY, {"*"}},
    {TOK_GIT, "GITHUB_TOKEN", V_GIT, {"github.com", "api.github.com"}},
    {TOK_SHORT, "SHORT", V_SHORT, {"*"}},
};

static char *copy_str(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  memcpy(p, s, n);
  return p;
}

/* The same open addressing on the token digest as view.c's index_secrets (static there, and
 * sg_view_find reads the slots): the first 8 bytes of the digest, linear probing. */
static void index_secrets(sg_view *v) {
  size_t n = 8;
  while (n < 2 * v->n_secrets)
    n <<= 1;
  v->n_slots = n;
  v->slots = calloc(n, sizeof(*v->slots));
  for (size_t k = 0; k < v->n_secrets; k++) {
    uint64_t h;
    memcpy(&h, v->secrets[k].digest, sizeof(h));
    size_t i = (size_t)h & (n - 1);
    while (v->slots[i] != 0)
      i = (i + 1) & (n - 1);
    v->slots[i] = (uint32_t)(k + 1);
  }
}

/* A view of |n| secrets as view.c builds one, with one reference (sg_view_unref frees it). */
static sg_view *view_new(const secret_spec *sp, size_t n) {
  sg_view *v = calloc(1, sizeof(*v));
  v->refs = 1;
  snprintf(v->sandbox_id, sizeof(v->sandbox_id), "11111111-2222-4333-8444-555555555555");
  snprintf(v->org_id, sizeof(v->org_id), "99999999-8888-4777-8666-555555555555");
  v->live = 1;
  v->any_host = 1;
  v->secrets = calloc(n, sizeof(*v->secrets));
  v->n_secrets = n;
  for (size_t i = 0; i < n; i++) {
    sg_view_secret *s = &v->secrets[i];
    sg_token_digest(sp[i].token, SG_TOKEN_LEN, s->digest);
    snprintf(s->store_id, sizeof(s->store_id), "aaaaaaaa-bbbb-4ccc-8ddd-%012zu", i);
    s->name = copy_str(sp[i].name);
    s->version = 1 + i;
    s->value_len = strlen(sp[i].value);
    s->value = (uint8_t *)copy_str(sp[i].value);
    while (sp[i].hosts[s->n_hosts] != NULL)
      s->n_hosts++;
    s->hosts = calloc(s->n_hosts, sizeof(char *));
    for (size_t h = 0; h < s->n_hosts; h++)
      s->hosts[h] = copy_str(sp[i].hosts[h]);
  }
  index_secrets(v);
  return v;
}

static sg_view *view;
static sg_subst s; /* zeroed: sg_subst_begin may be called on it */

static void setup(void) {
  view = view_new(specs, ARRAY_LEN(specs));
}

static void teardown(void) {
  sg_subst_end(&s);
  sg_view_unref(view);
}

TestSuite(subst, .init = setup, .fini = teardown);

/* ---- Helpers ------------------------------------------------------------------------------ */

static void begin(const char *host, const char *withhold, const char *target) {
  sg_subst_begin(&s, view, host, withhold, "GET", 3, target, strlen(target));
}

/* The header after substitution, or NULL; the caller frees it with free_text. */
static char *header(const char *name, const char *value, size_t *len) {
  return sg_subst_header(&s, name, strlen(name), value, strlen(value), len);
}

static void expect_header(const char *name, const char *value, const char *want) {
  size_t n;
  char *out = header(name, value, &n);
  cr_assert_not_null(out, "%s: %s was not substituted", name, value);
  cr_assert_eq(n, strlen(want), "%s: %s", name, out);
  cr_assert_str_eq(out, want);
  sg_subst_free_text(out, n);
}

static void expect_header_untouched(const char *name, const char *value) {
  size_t n = 0;
  char *out = header(name, value, &n);
  cr_assert_null(out, "%s: %s became %s", name, value, out);
}

static void expect_target(const char *target, const char *want) {
  size_t n;
  char *out = sg_subst_target(&s, target, strlen(target), &n);
  if (want == NULL) {
    cr_assert_null(out, "%s became %s", target, out);
    return;
  }
  cr_assert_not_null(out, "%s was not substituted", target);
  cr_assert_eq(n, strlen(want), "%s", out);
  cr_assert_str_eq(out, want);
  sg_subst_free_text(out, n);
}

/* The use recorded for |token|, or NULL. */
static const sg_subst_use *use_of(const char *token) {
  for (size_t i = 0; i < s.n_uses; i++)
    if (strcmp(s.uses[i].token, token) == 0)
      return &s.uses[i];
  return NULL;
}

static void expect_withheld(const char *token, const char *reason) {
  const sg_subst_use *u = use_of(token);
  cr_assert_not_null(u, "no use of %s", token);
  cr_assert(u->withheld);
  cr_assert_not(u->substituted);
  cr_assert_str_eq(u->reason, reason);
}

static void expect_substituted(const char *token, const char *name) {
  const sg_subst_use *u = use_of(token);
  cr_assert_not_null(u, "no use of %s", token);
  cr_assert(u->substituted);
  cr_assert_not(u->withheld);
  cr_assert_str_eq(u->secret->name, name);
}

/* "Basic " and the padded base64 of |plain|, as OpenSSL writes it. */
static void basic(const char *plain, char *out) {
  memcpy(out, "Basic ", 6);
  EVP_EncodeBlock((unsigned char *)out + 6, (const unsigned char *)plain, (int)strlen(plain));
}

/* ---- Headers ------------------------------------------------------------------------------ */

Test(subst, token_is_replaced_in_a_header_when_the_secrets_hosts_admit_the_host) {
  begin("api.openai.com", NULL, "/v1/chat/completions");
  expect_header("Authorization", "Bearer " TOK_OPENAI, "Bearer " V_OPENAI);
  expect_header("X-Api-Key", TOK_OPENAI, V_OPENAI);
  expect_header("x-both", TOK_OPENAI "," TOK_ANY, V_OPENAI "," V_ANY);
  expect_substituted(TOK_OPENAI, "OPENAI_API_KEY");
  expect_substituted(TOK_ANY, "ANYWHERE");
  cr_assert_eq(s.n_uses, 2, "one use per secret, however often it appears");
}

Test(subst, wildcard_admits_subdomains_but_not_the_domain_itself) {
  begin("a.b.openai.com", NULL, "/");
  expect_header("X-Api-Key", TOK_OPENAI, V_OPENAI);
  begin("openai.com", NULL, "/");
  expect_header_untouched("X-Api-Key", TOK_OPENAI);
  expect_withheld(TOK_OPENAI, "host not in the secret's allowed_hosts");
  begin("api.openai.com.evil.test", NULL, "/");
  expect_header_untouched("X-Api-Key", TOK_OPENAI);
  expect_withheld(TOK_OPENAI, "host not in the secret's allowed_hosts");
}

Test(subst, token_for_a_host_the_secret_does_not_admit_is_withheld_with_the_reason) {
  begin("api.openai.com", NULL, "/");
  expect_header_untouched("Authorization", "token " TOK_GIT);
  expect_withheld(TOK_GIT, "host not in the secret's allowed_hosts");
  /* In the same value, an admitted token is still replaced and the other left as it is. */
  expect_header("X-Keys", TOK_GIT " " TOK_OPENAI, TOK_GIT " " V_OPENAI);
  expect_substituted(TOK_OPENAI, "OPENAI_API_KEY");
}

Test(subst, withhold_leaves_every_token_untouched_and_says_why) {
  const char *why = "TLS SNI differs from the CONNECT host";
  begin("api.openai.com", why, "/");
  expect_header_untouched("Authorization", "Bearer " TOK_OPENAI);
  expect_header_untouched("X-Any", TOK_ANY);
  expect_target("/x?k=" TOK_ANY, NULL);
  expect_withheld(TOK_OPENAI, why);
  expect_withheld(TOK_ANY, why);
  cr_assert_eq(s.n_uses, 2);
}

Test(subst, token_of_another_sandbox_is_untouched_and_not_recorded) {
  begin("api.openai.com", NULL, "/");
  expect_header_untouched("Authorization", "Bearer " TOK_OTHER);
  expect_target("/x?k=" TOK_OTHER, NULL);
  cr_assert_eq(s.n_uses, 0);
  expect_header("X-Keys", TOK_OTHER TOK_OPENAI, TOK_OTHER V_OPENAI);
  cr_assert_eq(s.n_uses, 1);
}

Test(subst, header_without_a_token_returns_null) {
  char b[128];
  begin("api.openai.com", NULL, "/");
  expect_header_untouched("Content-Type", "application/json");
  expect_header_untouched("X-Almost", "osb_sealed_0123");
  expect_header_untouched("Authorization", "Bearer sk-not-a-token");
  basic("user:password", b);
  expect_header_untouched("Authorization", b);
  expect_header_untouched("Authorization", "Basic !!!not base64!!!");
  expect_header_untouched("Authorization", "");
  cr_assert_eq(s.n_uses, 0);
}

Test(subst, header_without_a_view_is_untouched) {
  sg_subst_begin(&s, NULL, "api.openai.com", NULL, "GET", 3, "/", 1);
  expect_header_untouched("Authorization", "Bearer " TOK_OPENAI);
  cr_assert_eq(s.n_uses, 0);
}

/* ---- Basic credentials ---------------------------------------------------------------- */

Test(subst, basic_credentials_are_decoded_substituted_and_encoded_again_padded) {
  /* User names of three lengths, so that the result has 0, 1 and 2 padding characters. */
  const char *users[] = {"x-access-token", "x-access-tokenA", "x-access-tokenAB"};
  begin("github.com", NULL, "/org/repo.git/info/refs?service=git-upload-pack");
  for (size_t i = 0; i < ARRAY_LEN(users); i++) {
    char plain[128], in[256], want[256];
    snprintf(plain, sizeof(plain), "%s:%s", users[i], TOK_GIT);
    basic(plain, in);
    snprintf(plain, sizeof(plain), "%s:%s", users[i], V_GIT);
    basic(plain, want);
    expect_header("Authorization", in, want);
    cr_assert_eq((strlen(want) - 6) % 4, 0, "padded");
  }
  expect_substituted(TOK_GIT, "GITHUB_TOKEN");
}

Test(subst, basic_scheme_is_matched_in_any_case_and_the_token_may_be_the_user) {
  char plain[128], in[256], want[256];
  begin("github.com", NULL, "/");
  snprintf(plain, sizeof(plain), "%s:x-oauth-basic", TOK_GIT);
  basic(plain, in);
  memcpy(in, "bASIC", 5);
  snprintf(plain, sizeof(plain), "%s:x-oauth-basic", V_GIT);
  basic(plain, want);
  expect_header("authorization", in, want);
}

Test(subst, basic_credentials_with_a_withheld_token_are_untouched) {
  char plain[128], in[256];
  begin("gitlab.com", NULL, "/");
  snprintf(plain, sizeof(plain), "git:%s", TOK_GIT);
  basic(plain, in);
  expect_header_untouched("Authorization", in);
  expect_withheld(TOK_GIT, "host not in the secret's allowed_hosts");
}

Test(subst, basic_is_decoded_only_in_authorization) {
  char plain[128], in[256];
  begin("github.com", NULL, "/");
  snprintf(plain, sizeof(plain), "git:%s", TOK_GIT);
  basic(plain, in);
  expect_header_untouched("X-Credentials", in);
  cr_assert_eq(s.n_uses, 0);
}

/* ---- Request targets ---------------------------------------------------------------------- */

Test(subst, value_in_the_query_is_percent_encoded) {
  begin("example.com", NULL, "/");
  expect_target("/v1/x?key=" TOK_ANY "&y=1", "/v1/x?key=any%20value%20%26%20more%3D1&y=1");
  /* Unreserved characters go as they are; a withheld token stays beside a replaced one. */
  expect_target("/?a=" TOK_GIT "&b=" TOK_ANY "&c=" TOK_OPENAI,
                "/?a=" TOK_GIT "&b=any%20value%20%26%20more%3D1&c=" TOK_OPENAI);
  begin("api.openai.com", NULL, "/");
  expect_target("/v1?k=" TOK_OPENAI, "/v1?k=sk-openai-1234567890");
}

Test(subst, path_part_of_the_target_is_never_substituted) {
  begin("example.com", NULL, "/");
  expect_target("/repos/" TOK_ANY "/x?k=" TOK_ANY,
                "/repos/" TOK_ANY "/x?k=any%20value%20%26%20more%3D1");
  expect_target("/repos/" TOK_ANY, NULL);
  expect_target("/repos/" TOK_ANY "?page=2", NULL);
  expect_target("https://example.com/" TOK_ANY "?q=" TOK_ANY,
                "https://example.com/" TOK_ANY "?q=any%20value%20%26%20more%3D1");
}

Test(subst, target_with_only_withheld_or_foreign_tokens_returns_null) {
  begin("example.com", NULL, "/");
  expect_target("/x?a=" TOK_GIT, NULL);
  expect_target("/x?a=" TOK_OTHER, NULL);
  expect_target("/x?a=1&b=2", NULL);
  expect_withheld(TOK_GIT, "host not in the secret's allowed_hosts");
}

/* ---- Bodies --------------------------------------------------------------------------------- */

Test(subst, lookup_replaces_tokens_in_a_scanned_body) {
  begin("api.openai.com", NULL, "/v1/chat/completions");
  const char *body = "{\"key\": \"" TOK_OPENAI "\", \"git\": \"" TOK_GIT "\"}";
  size_t n, count;
  char *out = sg_scan_replace_all(body, strlen(body), sg_subst_lookup, &s, &n, &count);
  cr_assert_eq(count, 1);
  cr_assert_str_eq(out, "{\"key\": \"" V_OPENAI "\", \"git\": \"" TOK_GIT "\"}");
  free(out);
  expect_substituted(TOK_OPENAI, "OPENAI_API_KEY");
  expect_withheld(TOK_GIT, "host not in the secret's allowed_hosts");
}

/* ---- What is kept for audit ------------------------------------------------------------- */

Test(subst, path_kept_for_audit_has_no_query_and_masks_tokens) {
  begin("api.openai.com", NULL, "/v1/" TOK_OPENAI "/items?key=" TOK_ANY "&x=1");
  cr_assert_str_eq(s.path, "/v1/" MASKED "/items");
  cr_assert_str_eq(s.method, "GET");
  begin("api.openai.com", NULL, "https://api.openai.com/" TOK_OTHER "?q=1");
  cr_assert_str_eq(s.path, "https://api.openai.com/" MASKED, "any token, not only the view's");
  begin("api.openai.com", NULL, "/plain/path");
  cr_assert_str_eq(s.path, "/plain/path");
  begin("api.openai.com", NULL, "?only=query");
  cr_assert_str_eq(s.path, "");
}

Test(subst, path_and_method_kept_for_audit_are_cut_to_their_size) {
  char target[600];
  memset(target, 'p', sizeof(target) - 1);
  target[0] = '/';
  target[sizeof(target) - 1] = '\0';
  /* A token across the cut: what is kept of it is masked too. */
  memcpy(target + SG_SUBST_PATH_MAX - 20, TOK_ANY, SG_TOKEN_LEN);
  sg_subst_begin(&s, view, "example.com", NULL, "VERYLONGMETHODNAME", 18, target, strlen(target));
  cr_assert_eq(strlen(s.path), SG_SUBST_PATH_MAX);
  cr_assert(memcmp(s.path + SG_SUBST_PATH_MAX - 20, MASKED, 20) == 0);
  cr_assert_null(strstr(s.path, "ffff"));
  cr_assert_str_eq(s.method, "VERYLONGMETHODN");
}

Test(subst, begin_forgets_the_previous_request) {
  begin("api.openai.com", NULL, "/a?k=v");
  expect_header("X-Api-Key", TOK_OPENAI, V_OPENAI);
  cr_assert_eq(s.n_uses, 1);
  begin("github.com", NULL, "/b");
  cr_assert_eq(s.n_uses, 0);
  cr_assert_str_eq(s.path, "/b");
  expect_header_untouched("X-Api-Key", TOK_OPENAI);
  expect_withheld(TOK_OPENAI, "host not in the secret's allowed_hosts");
}

/* ---- Audit events (counted: the writer is not running) ------------------------------------- */

Test(subst, audit_records_one_event_per_substituted_or_withheld_secret_once) {
  begin("api.openai.com", NULL, "/");
  expect_header("X-Keys", TOK_OPENAI TOK_OPENAI TOK_ANY TOK_GIT, V_OPENAI V_OPENAI V_ANY TOK_GIT);
  uint64_t before = sg_audit_dropped();
  sg_subst_audit(&s);
  cr_assert_eq(sg_audit_dropped() - before, 3, "two substituted, one withheld");
  sg_subst_audit(&s);
  cr_assert_eq(sg_audit_dropped() - before, 3, "recorded once");
}

Test(subst, request_without_tokens_records_no_event) {
  begin("api.openai.com", NULL, "/");
  expect_header_untouched("X-Other", TOK_OTHER);
  uint64_t before = sg_audit_dropped();
  sg_subst_audit(&s);
  cr_assert_eq(sg_audit_dropped(), before);
}

/* ---- The response's reflector ------------------------------------------------------------- */

struct sink {
  char buf[4096];
  size_t len;
};

static int sink_emit(void *arg, const char *data, size_t len) {
  struct sink *k = arg;
  cr_assert_leq(k->len + len, sizeof(k->buf));
  memcpy(k->buf + k->len, data, len);
  k->len += len;
  return 0;
}

static void reflect_body(const char *body, struct sink *k) {
  k->len = 0;
  cr_assert_eq(sg_redact_feed(&s.reflector, body, strlen(body)), 0);
  cr_assert_eq(sg_redact_finish(&s.reflector), 0);
  k->buf[k->len] = '\0';
}

Test(subst, reflector_is_armed_with_substituted_values_of_min_len_or_more_only) {
  begin("api.openai.com", NULL, "/");
  /* OPENAI and SHORT substituted, GIT withheld. */
  expect_header("X-Keys", TOK_OPENAI " " TOK_SHORT " " TOK_GIT, V_OPENAI " " V_SHORT " " TOK_GIT);
  struct sink k = {.len = 0};
  cr_assert(sg_subst_arm_reflector(&s, sink_emit, &k));
  reflect_body("echo: " V_OPENAI " " V_SHORT " " V_GIT " " V_ANY, &k);
  cr_assert_str_eq(k.buf, "echo: " TOK_OPENAI " " V_SHORT " " V_GIT " " V_ANY);
}

Test(subst, reflector_is_not_armed_when_only_short_values_were_substituted) {
  struct sink k = {.len = 0};
  begin("api.openai.com", NULL, "/");
  expect_header("X-Short", TOK_SHORT, V_SHORT);
  cr_assert_not(sg_subst_arm_reflector(&s, sink_emit, &k));
  begin("api.openai.com", NULL, "/");
  expect_header_untouched("X-Git", TOK_GIT);
  cr_assert_not(sg_subst_arm_reflector(&s, sink_emit, &k), "withheld values are not armed");
  begin("api.openai.com", NULL, "/");
  cr_assert_not(sg_subst_arm_reflector(&s, sink_emit, &k));
}

Test(subst, reflector_records_one_redacted_event_per_secret_echoed) {
  begin("example.com", NULL, "/");
  expect_header("X-Any", TOK_ANY, V_ANY);
  struct sink k = {.len = 0};
  cr_assert(sg_subst_arm_reflector(&s, sink_emit, &k));
  uint64_t before = sg_audit_dropped();
  reflect_body("nothing echoed", &k);
  cr_assert_eq(sg_audit_dropped(), before);
  reflect_body(V_ANY "," V_ANY, &k);
  cr_assert_str_eq(k.buf, TOK_ANY "," TOK_ANY);
  cr_assert_eq(sg_audit_dropped() - before, 1);
  size_t n;
  char *h = sg_redact_all(&s.reflector, "x " V_ANY, strlen("x " V_ANY), &n, NULL);
  cr_assert_str_eq(h, "x " TOK_ANY);
  free(h);
  cr_assert_eq(sg_audit_dropped() - before, 1, "still one for the request");
}

Test(subst, reflector_can_be_armed_again_for_the_next_response) {
  begin("example.com", NULL, "/");
  expect_header("X-Any", TOK_ANY, V_ANY);
  struct sink k = {.len = 0};
  cr_assert(sg_subst_arm_reflector(&s, sink_emit, &k));
  cr_assert_eq(sg_redact_feed(&s.reflector, "held any value", 14), 0);
  cr_assert(sg_subst_arm_reflector(&s, sink_emit, &k));
  reflect_body(V_ANY, &k);
  cr_assert_str_eq(k.buf, TOK_ANY, "the bytes held for the first response are gone");
}
