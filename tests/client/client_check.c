/* End-to-end checks of libsealgate, the C client library, against real gRPC servers. It uses
 * only what an installed libsealgate offers: sealgate/channel.h and the typed functions
 * generated from proto/ (sealgate_v1_*, grpc_health_v1_*); for the test server's own
 * TestService, its protobuf-c messages are compiled in. tests/client/test_client.py starts
 * the servers (sealgate-test-server with its PostgreSQL, the grpc C++ health server of the
 * benchmark) and runs one command of this program per test:
 *
 *   scenario     every store and secret method, its successes and its errors
 *   concurrency  --threads x --calls calls on one channel, each answer checked against its call
 *   deadline     deadlines that pass, on a stream and on a unary call to a stopped server
 *   restart      calls that keep going while the driver restarts the server under them
 *   health       one Health/Check, its outcome given by --expect (TLS, silent peers)
 *   grpc-peer    what a plain grpc C++ server says to this client
 *   testservice  statuses, large messages, streams, cancellation, slow calls (the test server's
 *                sealgate.testing.v1.TestService)
 *   drain        a call made while the server drains (GOAWAY) goes out on the next connection
 *   goaway       the same against a hand-written HTTP/2 peer that closes as it answers
 *   close        sg_channel_free while other threads' calls are in flight
 *
 * Output: "ok  <check>[: <detail>]" on stdout for each check passed. The first failure prints
 * "FAIL <check>: <what was expected, what came back>" on stderr and exits 1; bad usage exits
 * 2. The interactive commands (deadline, restart, drain, goaway) print "ready <what>" and wait
 * for a line on stdin before going on.
 *
 * Every response is freed: the sanitizer build runs this under LeakSanitizer. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sealgate/sealgate.h"
#include "sealgate/v1/secret.sg.h"
#include "sealgate/v1/secret_store.sg.h"
#include "grpc/health/v1/health.sg.h"
#include "sealgate/testing/v1/test_service.pb-c.h"

/* A bound on every call that is not about deadlines: a hung server fails a check instead of
 * hanging the test. */
#define CALL_TIMEOUT_MS 10000
#define KIB             1024
#define MAX_PAGES       1000

typedef struct {
  const char *target, *key, *other_key, *org_id;
  const char *tls_ca, *server_name, *cert, *cert_key;
  const char *expect, *contains;
  long threads, calls, timeout_ms;
} config;

/* --- Reporting ----------------------------------------------------------------------------- */

static const char *current = "start";

static void begin(const char *check) {
  current = check;
}

/* Reports the current check as failed and exits 1. _exit: leak reports about the responses a
 * failed check still holds would only bury the message. */
__attribute__((format(printf, 1, 2), noreturn)) static void fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "FAIL %s: ", current);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  fflush(stdout);
  fflush(stderr);
  _exit(1);
}

__attribute__((format(printf, 1, 2))) static void pass(const char *fmt, ...) {
  printf("ok  %s", current);
  if (fmt != NULL && fmt[0] != '\0') {
    va_list ap;
    va_start(ap, fmt);
    fputs(": ", stdout);
    vprintf(fmt, ap);
    va_end(ap);
  }
  putchar('\n');
  fflush(stdout);
}

static const char *code_name(int code) {
  return sg_status_code_name(code);
}

static void free_msg(void *m) {
  if (m != NULL)
    protobuf_c_message_free_unpacked(m, NULL);
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The call |what| must have succeeded. */
static void check_ok(const char *what, int code, const sg_status *st, const void *resp) {
  if (code != SG_STATUS_OK || st->code != code)
    fail("%s: expected OK, got %s \"%s\"", what, code_name(code), st->message);
  if (resp == NULL)
    fail("%s: OK without a response message", what);
}

/* The call |what|, whose (empty) response its wrapper already freed, must have succeeded. */
static void want_done(const char *what, int code, const sg_status *st) {
  if (code != SG_STATUS_OK || st->code != code)
    fail("%s: expected OK, got %s \"%s\"", what, code_name(code), st->message);
}

/* The call |what| must have failed with |want|, no response, and a message that starts with
 * |starts| and contains |contains| (either may be NULL). */
static void check_error(const char *what, int code, const sg_status *st, const void *resp, int want,
                        const char *starts, const char *contains) {
  if (code != want || st->code != code)
    fail("%s: expected %s, got %s \"%s\"", what, code_name(want), code_name(code), st->message);
  if (resp != NULL)
    fail("%s: a response message came with %s", what, code_name(code));
  if (starts != NULL && strncmp(st->message, starts, strlen(starts)) != 0)
    fail("%s: the %s message should start with \"%s\": \"%s\"", what, code_name(code), starts,
         st->message);
  if (contains != NULL && strstr(st->message, contains) == NULL)
    fail("%s: the %s message should contain \"%s\": \"%s\"", what, code_name(code), contains,
         st->message);
}

/* The call is made before its response pointer is read: as plain function arguments, the two
 * would be evaluated in an unspecified order. */
#define WANT_OK(what, call, st, resp)                                                              \
  do {                                                                                             \
    int code_ = (call);                                                                            \
    check_ok((what), code_, (st), (resp));                                                         \
  } while (0)
#define WANT_ERROR(what, call, st, resp, want, starts, contains)                                   \
  do {                                                                                             \
    int code_ = (call);                                                                            \
    check_error((what), code_, (st), (resp), (want), (starts), (contains));                        \
  } while (0)

static void want_str(const char *what, const char *got, const char *want) {
  if (got == NULL || strcmp(got, want) != 0)
    fail("%s: expected \"%s\", got \"%s\"", what, want, got ? got : "(null)");
}

static int is_uuid(const char *s) {
  if (s == NULL || strlen(s) != 36)
    return 0;
  for (int i = 0; i < 36; i++) {
    int dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? s[i] != '-' : strchr("0123456789abcdef", s[i]) == NULL || s[i] == '\0')
      return 0;
  }
  return 1;
}

/* "2026-11-27T22:41:40Z": RFC 3339, UTC, whole seconds (SPEC §2). */
static int is_rfc3339_utc(const char *s) {
  static const char shape[] = "dddd-dd-ddTdd:dd:ddZ";
  if (s == NULL || strlen(s) != sizeof(shape) - 1)
    return 0;
  for (size_t i = 0; shape[i]; i++)
    if (shape[i] == 'd' ? s[i] < '0' || s[i] > '9' : s[i] != shape[i])
      return 0;
  return 1;
}

/* A name no earlier run used: |prefix|-<16 hex digits>. */
static void unique_name(char *out, size_t cap, const char *prefix) {
  static atomic_uint counter;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  unsigned n = atomic_fetch_add(&counter, 1);
  snprintf(out, cap, "%s-%08lx%04x%04x", prefix,
           (unsigned long)ts.tv_nsec ^ (unsigned long)ts.tv_sec, (unsigned)getpid() & 0xffff,
           n & 0xffff);
}

/* Reads one line from stdin (the driver's go-ahead); returns 0 at EOF. */
static int read_line(char *buf, size_t cap) {
  if (fgets(buf, (int)cap, stdin) == NULL)
    return 0;
  buf[strcspn(buf, "\n")] = '\0';
  return 1;
}

static void wait_for_go(const char *what) {
  printf("ready %s\n", what);
  fflush(stdout);
  char line[64];
  if (!read_line(line, sizeof(line)) || strcmp(line, "go") != 0)
    fail("waiting for the driver after \"ready %s\": stdin ended or said something else", what);
}

/* --- Channels and calls -------------------------------------------------------------------- */

/* A channel to cfg->target (TLS when a CA is given) whose calls carry |key| (NULL: none). */
static sg_channel *open_channel(const config *cfg, const char *key) {
  sg_channel_options o = {
      .target = cfg->target,
      .tls = cfg->tls_ca != NULL ? SG_TLS_ON : SG_TLS_OFF,
      .tls_ca_file = cfg->tls_ca,
      .tls_cert_file = cfg->cert,
      .tls_key_file = cfg->cert_key,
      .tls_server_name = cfg->server_name,
      .api_key = key,
      .connect_timeout_ms = 5000,
  };
  char err[256];
  sg_channel *ch = sg_channel_new(&o, err, sizeof(err));
  if (ch == NULL)
    fail("sg_channel_new(%s): %s", cfg->target, err);
  return ch;
}

/* Call options: the common bound, and |key| in place of the channel's when not NULL. */
static sg_call_options with_key(const char *key) {
  return (sg_call_options){.timeout_ms = CALL_TIMEOUT_MS, .api_key = key};
}

static int create_store(sg_channel *ch, const char *key, const char *name, char **hosts, size_t n,
                        Sealgate__V1__SecretStore **out, sg_status *st) {
  Sealgate__V1__CreateSecretStoreRequest req = SEALGATE__V1__CREATE_SECRET_STORE_REQUEST__INIT;
  req.name = (char *)name;
  req.n_egress_allowlist = n;
  req.egress_allowlist = hosts;
  sg_call_options o = with_key(key);
  return sealgate_v1_secret_store_service_create_secret_store(ch, &req, out, &o, st);
}

static int get_store(sg_channel *ch, const char *key, const char *id,
                     Sealgate__V1__SecretStore **out, sg_status *st) {
  Sealgate__V1__GetSecretStoreRequest req = SEALGATE__V1__GET_SECRET_STORE_REQUEST__INIT;
  req.store_id = (char *)id;
  sg_call_options o = with_key(key);
  return sealgate_v1_secret_store_service_get_secret_store(ch, &req, out, &o, st);
}

static int list_stores(sg_channel *ch, const char *key, int32_t page_size, const char *token,
                       Sealgate__V1__ListSecretStoresResponse **out, sg_status *st) {
  Sealgate__V1__ListSecretStoresRequest req = SEALGATE__V1__LIST_SECRET_STORES_REQUEST__INIT;
  req.page_size = page_size;
  req.page_token = (char *)token;
  sg_call_options o = with_key(key);
  return sealgate_v1_secret_store_service_list_secret_stores(ch, &req, out, &o, st);
}

/* UpdateSecretStore of |id| with the single mask path |path| (NULL: an empty mask). */
static int update_store(sg_channel *ch, const char *key, const char *id, const char *path,
                        const char *name, char **hosts, size_t n, Sealgate__V1__SecretStore **out,
                        sg_status *st) {
  Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
  char *paths[] = {(char *)path};
  mask.n_paths = path != NULL;
  mask.paths = paths;
  Sealgate__V1__UpdateSecretStoreRequest req = SEALGATE__V1__UPDATE_SECRET_STORE_REQUEST__INIT;
  req.store_id = (char *)id;
  req.name = (char *)name;
  req.n_egress_allowlist = n;
  req.egress_allowlist = hosts;
  req.update_mask = &mask;
  sg_call_options o = with_key(key);
  return sealgate_v1_secret_store_service_update_secret_store(ch, &req, out, &o, st);
}

static int delete_store(sg_channel *ch, const char *key, const char *id, sg_status *st) {
  Sealgate__V1__DeleteSecretStoreRequest req = SEALGATE__V1__DELETE_SECRET_STORE_REQUEST__INIT;
  req.store_id = (char *)id;
  sg_call_options o = with_key(key);
  Google__Protobuf__Empty *empty = NULL;
  int code = sealgate_v1_secret_store_service_delete_secret_store(ch, &req, &empty, &o, st);
  if (code == SG_STATUS_OK && empty == NULL)
    fail("DeleteSecretStore: OK without a response message");
  if (code != SG_STATUS_OK && empty != NULL)
    fail("DeleteSecretStore: a response message came with %s", code_name(code));
  free_msg(empty);
  return code;
}

static int set_secret(sg_channel *ch, const char *key, const char *store_id, const char *name,
                      const char *value, char **hosts, size_t n, Sealgate__V1__SecretEntry **out,
                      sg_status *st) {
  Sealgate__V1__SetSecretRequest req = SEALGATE__V1__SET_SECRET_REQUEST__INIT;
  req.store_id = (char *)store_id;
  req.name = (char *)name;
  req.value = (char *)value;
  req.n_allowed_hosts = n;
  req.allowed_hosts = hosts;
  sg_call_options o = with_key(key);
  return sealgate_v1_secret_service_set_secret(ch, &req, out, &o, st);
}

static int list_secrets(sg_channel *ch, const char *key, const char *store_id,
                        Sealgate__V1__ListSecretsResponse **out, sg_status *st) {
  Sealgate__V1__ListSecretsRequest req = SEALGATE__V1__LIST_SECRETS_REQUEST__INIT;
  req.store_id = (char *)store_id;
  sg_call_options o = with_key(key);
  return sealgate_v1_secret_service_list_secrets(ch, &req, out, &o, st);
}

static int delete_secret(sg_channel *ch, const char *key, const char *store_id, const char *name,
                         sg_status *st) {
  Sealgate__V1__DeleteSecretRequest req = SEALGATE__V1__DELETE_SECRET_REQUEST__INIT;
  req.store_id = (char *)store_id;
  req.name = (char *)name;
  sg_call_options o = with_key(key);
  Google__Protobuf__Empty *empty = NULL;
  int code = sealgate_v1_secret_service_delete_secret(ch, &req, &empty, &o, st);
  if (code == SG_STATUS_OK && empty == NULL)
    fail("DeleteSecret: OK without a response message");
  if (code != SG_STATUS_OK && empty != NULL)
    fail("DeleteSecret: a response message came with %s", code_name(code));
  free_msg(empty);
  return code;
}

/* The eight store and secret methods, by name, each called on |store_id| with |key| and its
 * response freed: for checks that every method gives the same error. */
static const char *const METHODS[] = {
    "CreateSecretStore", "ListSecretStores", "GetSecretStore", "UpdateSecretStore",
    "DeleteSecretStore", "SetSecret",        "ListSecrets",    "DeleteSecret",
};
#define N_METHODS (sizeof(METHODS) / sizeof(METHODS[0]))

static int call_method(size_t m, sg_channel *ch, const char *key, const char *store_id,
                       sg_status *st) {
  char name[64];
  unique_name(name, sizeof(name), "every-method");
  void *resp = NULL;
  int code;
  switch (m) {
  case 0:
    code = create_store(ch, key, name, NULL, 0, (Sealgate__V1__SecretStore **)&resp, st);
    break;
  case 1:
    code = list_stores(ch, key, 0, "", (Sealgate__V1__ListSecretStoresResponse **)&resp, st);
    break;
  case 2:
    code = get_store(ch, key, store_id, (Sealgate__V1__SecretStore **)&resp, st);
    break;
  case 3:
    code = update_store(ch, key, store_id, "name", name, NULL, 0,
                        (Sealgate__V1__SecretStore **)&resp, st);
    break;
  case 4:
    code = delete_store(ch, key, store_id, st);
    break;
  case 5:
    code = set_secret(ch, key, store_id, "TOKEN", "v", NULL, 0, (Sealgate__V1__SecretEntry **)&resp,
                      st);
    break;
  case 6:
    code = list_secrets(ch, key, store_id, (Sealgate__V1__ListSecretsResponse **)&resp, st);
    break;
  default:
    code = delete_secret(ch, key, store_id, "TOKEN", st);
    break;
  }
  if (code != SG_STATUS_OK && resp != NULL)
    fail("%s: a response message came with %s", METHODS[m], code_name(code));
  free_msg(resp);
  return code;
}

/* --- scenario: every store and secret method ----------------------------------------------- */

typedef struct {
  const config *cfg;
  sg_channel *ch;                   /* the organization's key on every call */
  Sealgate__V1__SecretStore *store; /* the store the scenario works on, as last seen */
  char other_store_id[64];          /* a store of the other organization */
} scenario;

static void want_store(const char *what, const Sealgate__V1__SecretStore *got,
                       const Sealgate__V1__SecretStore *want) {
  want_str(what, got->id, want->id);
  want_str(what, got->org_id, want->org_id);
  want_str(what, got->name, want->name);
  want_str(what, got->created_at, want->created_at);
  want_str(what, got->updated_at, want->updated_at);
  if (got->n_egress_allowlist != want->n_egress_allowlist)
    fail("%s: %zu egress_allowlist entries, expected %zu", what, got->n_egress_allowlist,
         want->n_egress_allowlist);
  for (size_t i = 0; i < got->n_egress_allowlist; i++)
    want_str(what, got->egress_allowlist[i], want->egress_allowlist[i]);
}

/* Replaces s->store with |fresh| (owned). */
static void keep_store(scenario *s, Sealgate__V1__SecretStore *fresh) {
  free_msg(s->store);
  s->store = fresh;
}

static void scenario_create(scenario *s) {
  sg_status st;
  Sealgate__V1__SecretStore *store = NULL;
  char name[64];
  unique_name(name, sizeof(name), "c-client");
  char *hosts[] = {"API.Example.com.", "*.openai.com"};

  begin("CreateSecretStore");
  WANT_OK("CreateSecretStore", create_store(s->ch, NULL, name, hosts, 2, &store, &st), &st, store);
  want_str("name", store->name, name);
  want_str("org_id", store->org_id, s->cfg->org_id);
  if (!is_uuid(store->id))
    fail("id \"%s\" is not a UUID", store->id);
  if (!is_rfc3339_utc(store->created_at) || !is_rfc3339_utc(store->updated_at))
    fail("created_at \"%s\" / updated_at \"%s\" are not RFC 3339 UTC", store->created_at,
         store->updated_at);
  if (store->n_egress_allowlist != 2)
    fail("egress_allowlist has %zu entries, expected 2", store->n_egress_allowlist);
  want_str("egress_allowlist[0] (normalized)", store->egress_allowlist[0], "api.example.com");
  want_str("egress_allowlist[1]", store->egress_allowlist[1], "*.openai.com");
  keep_store(s, store);
  pass("%s %s", store->id, store->name);

  begin("CreateSecretStore duplicate name: ALREADY_EXISTS");
  store = NULL;
  WANT_ERROR("CreateSecretStore", create_store(s->ch, NULL, name, NULL, 0, &store, &st), &st, store,
             SG_STATUS_ALREADY_EXISTS, NULL, NULL);
  pass("\"%s\"", st.message);

  begin("CreateSecretStore bad name: INVALID_ARGUMENT naming name");
  WANT_ERROR("CreateSecretStore", create_store(s->ch, NULL, "a b", NULL, 0, &store, &st), &st,
             store, SG_STATUS_INVALID_ARGUMENT, "name:", NULL);
  pass("\"%s\"", st.message);

  begin("CreateSecretStore bad host pattern: INVALID_ARGUMENT naming egress_allowlist[1]");
  char *bad_hosts[] = {"ok.example.com", "https://api.example.com/v1"};
  unique_name(name, sizeof(name), "c-badhost");
  WANT_ERROR("CreateSecretStore", create_store(s->ch, NULL, name, bad_hosts, 2, &store, &st), &st,
             store, SG_STATUS_INVALID_ARGUMENT, "egress_allowlist[1]:", NULL);
  pass("\"%s\"", st.message);
}

static void scenario_get(scenario *s) {
  sg_status st;
  Sealgate__V1__SecretStore *store = NULL;

  begin("GetSecretStore");
  WANT_OK("GetSecretStore", get_store(s->ch, NULL, s->store->id, &store, &st), &st, store);
  want_store("GetSecretStore", store, s->store);
  free_msg(store);
  pass(NULL);

  begin("GetSecretStore unknown id: NOT_FOUND");
  store = NULL;
  WANT_ERROR("GetSecretStore",
             get_store(s->ch, NULL, "5f0c2a9e-3b1d-4e6f-8a7c-9d0e1f2a3b4c", &store, &st), &st,
             store, SG_STATUS_NOT_FOUND, NULL, "not found");
  pass("\"%s\"", st.message);

  begin("GetSecretStore malformed id: INVALID_ARGUMENT naming store_id");
  WANT_ERROR("GetSecretStore", get_store(s->ch, NULL, "not an id", &store, &st), &st, store,
             SG_STATUS_INVALID_ARGUMENT, "store_id:", NULL);
  pass("\"%s\"", st.message);

  begin("GetSecretStore another organization's store: NOT_FOUND");
  WANT_ERROR("GetSecretStore", get_store(s->ch, NULL, s->other_store_id, &store, &st), &st, store,
             SG_STATUS_NOT_FOUND, NULL, "not found");
  pass("\"%s\"", st.message);
}

/* Every store id ListSecretStores shows in pages of |page_size|; |n| is set to their number. */
static char **list_all_store_ids(scenario *s, int32_t page_size, size_t *n) {
  char **ids = NULL, *token = strdup("");
  *n = 0;
  for (int page = 0;; page++) {
    if (page == MAX_PAGES)
      fail("ListSecretStores never ended after %d pages", MAX_PAGES);
    Sealgate__V1__ListSecretStoresResponse *resp = NULL;
    sg_status st;
    WANT_OK("ListSecretStores", list_stores(s->ch, NULL, page_size, token, &resp, &st), &st, resp);
    if (resp->n_secret_stores > (size_t)page_size)
      fail("a page of %zu stores, asked for %d", resp->n_secret_stores, page_size);
    ids = realloc(ids, (*n + resp->n_secret_stores + 1) * sizeof(*ids));
    for (size_t i = 0; i < resp->n_secret_stores; i++)
      ids[(*n)++] = strdup(resp->secret_stores[i]->id);
    free(token);
    token = strdup(resp->next_page_token ? resp->next_page_token : "");
    free_msg(resp);
    if (token[0] == '\0')
      break;
  }
  free(token);
  return ids;
}

static void scenario_list(scenario *s) {
  sg_status st;
  char name[64];
  char extra[2][64];
  for (int i = 0; i < 2; i++) {
    Sealgate__V1__SecretStore *store = NULL;
    unique_name(name, sizeof(name), "c-list");
    WANT_OK("CreateSecretStore", create_store(s->ch, NULL, name, NULL, 0, &store, &st), &st, store);
    snprintf(extra[i], sizeof(extra[i]), "%s", store->id);
    free_msg(store);
  }

  begin("ListSecretStores in pages of 1");
  size_t n;
  char **ids = list_all_store_ids(s, 1, &n);
  const char *want[] = {s->store->id, extra[0], extra[1]};
  for (size_t w = 0; w < 3; w++) {
    size_t seen = 0;
    for (size_t i = 0; i < n; i++)
      seen += strcmp(ids[i], want[w]) == 0;
    if (seen != 1)
      fail("store %s shows up %zu times, expected once", want[w], seen);
  }
  for (size_t i = 0; i < n; i++)
    if (strcmp(ids[i], s->other_store_id) == 0)
      fail("another organization's store %s is listed", s->other_store_id);
  for (size_t i = 0; i < n; i++)
    free(ids[i]);
  free(ids);
  pass("%zu stores, each once, none of the other organization's", n);

  for (int i = 0; i < 2; i++)
    if (delete_store(s->ch, NULL, extra[i], &st) != SG_STATUS_OK)
      fail("DeleteSecretStore %s: %s \"%s\"", extra[i], code_name(st.code), st.message);

  Sealgate__V1__ListSecretStoresResponse *resp = NULL;
  begin("ListSecretStores page_size 1001: INVALID_ARGUMENT naming page_size");
  WANT_ERROR("ListSecretStores", list_stores(s->ch, NULL, 1001, "", &resp, &st), &st, resp,
             SG_STATUS_INVALID_ARGUMENT, "page_size:", NULL);
  pass("\"%s\"", st.message);

  begin("ListSecretStores forged page_token: INVALID_ARGUMENT naming page_token");
  WANT_ERROR("ListSecretStores", list_stores(s->ch, NULL, 0, "bm90IGEgdG9rZW4", &resp, &st), &st,
             resp, SG_STATUS_INVALID_ARGUMENT, "page_token:", NULL);
  pass("\"%s\"", st.message);
}

static void scenario_update(scenario *s) {
  sg_status st;
  Sealgate__V1__SecretStore *store = NULL;
  char name[64];

  begin("UpdateSecretStore rename (mask: name)");
  unique_name(name, sizeof(name), "c-renamed");
  char *ignored[] = {"ignored.example.com"};
  WANT_OK("UpdateSecretStore",
          update_store(s->ch, NULL, s->store->id, "name", name, ignored, 1, &store, &st), &st,
          store);
  want_str("name", store->name, name);
  want_str("id", store->id, s->store->id);
  want_str("created_at", store->created_at, s->store->created_at);
  if (store->n_egress_allowlist != 2)
    fail("the allowlist changed without being in the mask: %zu entries", store->n_egress_allowlist);
  keep_store(s, store);
  pass("%s", name);

  begin("UpdateSecretStore clear allowlist (mask: egress_allowlist, empty list)");
  store = NULL;
  WANT_OK("UpdateSecretStore",
          update_store(s->ch, NULL, s->store->id, "egress_allowlist", "", NULL, 0, &store, &st),
          &st, store);
  if (store->n_egress_allowlist != 0)
    fail("%zu allowlist entries left", store->n_egress_allowlist);
  want_str("name (not in the mask)", store->name, s->store->name);
  keep_store(s, store);
  pass(NULL);

  begin("UpdateSecretStore unknown mask path: INVALID_ARGUMENT naming update_mask");
  store = NULL;
  WANT_ERROR("UpdateSecretStore",
             update_store(s->ch, NULL, s->store->id, "org_id", "x", NULL, 0, &store, &st), &st,
             store, SG_STATUS_INVALID_ARGUMENT, "update_mask:", NULL);
  pass("\"%s\"", st.message);

  begin("UpdateSecretStore empty mask: INVALID_ARGUMENT naming update_mask");
  WANT_ERROR("UpdateSecretStore",
             update_store(s->ch, NULL, s->store->id, NULL, "x", NULL, 0, &store, &st), &st, store,
             SG_STATUS_INVALID_ARGUMENT, "update_mask:", NULL);
  pass("\"%s\"", st.message);

  begin("UpdateSecretStore bad name: INVALID_ARGUMENT naming name");
  WANT_ERROR("UpdateSecretStore",
             update_store(s->ch, NULL, s->store->id, "name", "a/b", NULL, 0, &store, &st), &st,
             store, SG_STATUS_INVALID_ARGUMENT, "name:", NULL);
  pass("\"%s\"", st.message);

  begin("UpdateSecretStore rename onto a taken name: ALREADY_EXISTS");
  Sealgate__V1__SecretStore *other = NULL;
  unique_name(name, sizeof(name), "c-taken");
  WANT_OK("CreateSecretStore", create_store(s->ch, NULL, name, NULL, 0, &other, &st), &st, other);
  WANT_ERROR("UpdateSecretStore",
             update_store(s->ch, NULL, s->store->id, "name", name, NULL, 0, &store, &st), &st,
             store, SG_STATUS_ALREADY_EXISTS, NULL, NULL);
  pass("\"%s\"", st.message);
  if (delete_store(s->ch, NULL, other->id, &st) != SG_STATUS_OK)
    fail("DeleteSecretStore: %s \"%s\"", code_name(st.code), st.message);
  free_msg(other);

  begin("UpdateSecretStore unknown store: NOT_FOUND");
  WANT_ERROR("UpdateSecretStore",
             update_store(s->ch, NULL, "5f0c2a9e-3b1d-4e6f-8a7c-9d0e1f2a3b4c", "name", "x", NULL, 0,
                          &store, &st),
             &st, store, SG_STATUS_NOT_FOUND, NULL, "not found");
  pass("\"%s\"", st.message);
}

/* ListSecrets of the scenario's store must show exactly |names| at |versions|. */
static void want_secrets(scenario *s, const char *const *names, const uint64_t *versions,
                         size_t n) {
  sg_status st;
  Sealgate__V1__ListSecretsResponse *resp = NULL;
  WANT_OK("ListSecrets", list_secrets(s->ch, NULL, s->store->id, &resp, &st), &st, resp);
  if (resp->n_secrets != n)
    fail("ListSecrets: %zu secrets, expected %zu", resp->n_secrets, n);
  for (size_t i = 0; i < n; i++) {
    const Sealgate__V1__SecretEntry *e = NULL;
    for (size_t k = 0; k < resp->n_secrets; k++)
      if (strcmp(resp->secrets[k]->name, names[i]) == 0)
        e = resp->secrets[k];
    if (e == NULL)
      fail("ListSecrets: no secret %s", names[i]);
    if (e->version != versions[i])
      fail("ListSecrets: %s at version %llu, expected %llu", names[i],
           (unsigned long long)e->version, (unsigned long long)versions[i]);
    want_str("ListSecrets store_id", e->store_id, s->store->id);
  }
  free_msg(resp);
}

static void scenario_secrets(scenario *s) {
  sg_status st;
  Sealgate__V1__SecretEntry *e = NULL;
  const char *id = s->store->id;
  char *hosts[] = {"api.example.com"};

  begin("SetSecret version 1");
  WANT_OK("SetSecret", set_secret(s->ch, NULL, id, "API_TOKEN", "v1", hosts, 1, &e, &st), &st, e);
  want_str("name", e->name, "API_TOKEN");
  want_str("store_id", e->store_id, id);
  if (e->version != 1 || e->n_allowed_hosts != 1 || !is_uuid(e->id) ||
      !is_rfc3339_utc(e->created_at))
    fail("version %llu, %zu allowed_hosts, id \"%s\", created_at \"%s\"",
         (unsigned long long)e->version, e->n_allowed_hosts, e->id, e->created_at);
  want_str("allowed_hosts[0]", e->allowed_hosts[0], "api.example.com");
  char first_id[64];
  snprintf(first_id, sizeof(first_id), "%s", e->id);
  free_msg(e);
  pass(NULL);

  begin("SetSecret again: version 2 of the same secret");
  e = NULL;
  WANT_OK("SetSecret", set_secret(s->ch, NULL, id, "API_TOKEN", "v2", NULL, 0, &e, &st), &st, e);
  if (e->version != 2)
    fail("version %llu, expected 2", (unsigned long long)e->version);
  want_str("id", e->id, first_id);
  free_msg(e);
  pass(NULL);

  /* 64 KiB is four HTTP/2 DATA frames of the default size: the request goes out in pieces. */
  begin("SetSecret 64 KiB value");
  char *big = malloc(64 * KIB + 2);
  memset(big, 'x', 64 * KIB + 1);
  big[64 * KIB] = '\0';
  e = NULL;
  WANT_OK("SetSecret", set_secret(s->ch, NULL, id, "BIG", big, NULL, 0, &e, &st), &st, e);
  free_msg(e);
  pass(NULL);

  begin("SetSecret 64 KiB + 1 value: INVALID_ARGUMENT naming value");
  big[64 * KIB] = 'x';
  big[64 * KIB + 1] = '\0';
  e = NULL;
  WANT_ERROR("SetSecret", set_secret(s->ch, NULL, id, "BIG", big, NULL, 0, &e, &st), &st, e,
             SG_STATUS_INVALID_ARGUMENT, "value:", NULL);
  free(big);
  pass("\"%s\"", st.message);

  begin("SetSecret empty value: INVALID_ARGUMENT naming value");
  WANT_ERROR("SetSecret", set_secret(s->ch, NULL, id, "API_TOKEN", "", NULL, 0, &e, &st), &st, e,
             SG_STATUS_INVALID_ARGUMENT, "value:", NULL);
  pass("\"%s\"", st.message);

  begin("SetSecret bad name: INVALID_ARGUMENT naming name");
  WANT_ERROR("SetSecret", set_secret(s->ch, NULL, id, "1TOKEN", "v", NULL, 0, &e, &st), &st, e,
             SG_STATUS_INVALID_ARGUMENT, "name:", NULL);
  pass("\"%s\"", st.message);

  begin("SetSecret IP literal host: INVALID_ARGUMENT naming allowed_hosts[0]");
  char *ip[] = {"10.0.0.1"};
  WANT_ERROR("SetSecret", set_secret(s->ch, NULL, id, "API_TOKEN", "v", ip, 1, &e, &st), &st, e,
             SG_STATUS_INVALID_ARGUMENT, "allowed_hosts[0]:", NULL);
  pass("\"%s\"", st.message);

  begin("SetSecret unknown store: NOT_FOUND");
  WANT_ERROR("SetSecret",
             set_secret(s->ch, NULL, "5f0c2a9e-3b1d-4e6f-8a7c-9d0e1f2a3b4c", "API_TOKEN", "v", NULL,
                        0, &e, &st),
             &st, e, SG_STATUS_NOT_FOUND, NULL, "not found");
  pass("\"%s\"", st.message);

  begin("ListSecrets: metadata of both secrets, no value field");
  const char *names[] = {"API_TOKEN", "BIG"};
  const uint64_t versions[] = {2, 1};
  want_secrets(s, names, versions, 2);
  if (protobuf_c_message_descriptor_get_field_by_name(&sealgate__v1__secret_entry__descriptor,
                                                      "value") != NULL)
    fail("SecretEntry has a value field");
  pass("API_TOKEN v2, BIG v1");

  begin("ListSecrets unknown store: NOT_FOUND");
  Sealgate__V1__ListSecretsResponse *list = NULL;
  WANT_ERROR("ListSecrets",
             list_secrets(s->ch, NULL, "5f0c2a9e-3b1d-4e6f-8a7c-9d0e1f2a3b4c", &list, &st), &st,
             list, SG_STATUS_NOT_FOUND, NULL, "not found");
  pass("\"%s\"", st.message);

  begin("DeleteSecret");
  want_done("DeleteSecret", delete_secret(s->ch, NULL, id, "API_TOKEN", &st), &st);
  want_secrets(s, names + 1, versions + 1, 1);
  pass(NULL);

  begin("DeleteSecret again: NOT_FOUND");
  WANT_ERROR("DeleteSecret", delete_secret(s->ch, NULL, id, "API_TOKEN", &st), &st, NULL,
             SG_STATUS_NOT_FOUND, NULL, "not found");
  pass("\"%s\"", st.message);

  begin("DeleteSecret bad name: INVALID_ARGUMENT naming name");
  WANT_ERROR("DeleteSecret", delete_secret(s->ch, NULL, id, "A-B", &st), &st, NULL,
             SG_STATUS_INVALID_ARGUMENT, "name:", NULL);
  pass("\"%s\"", st.message);
}

/* The scenario's store must be as last seen, with only BIG at version 1. */
static void want_unchanged(scenario *s) {
  sg_status st;
  Sealgate__V1__SecretStore *store = NULL;
  WANT_OK("GetSecretStore", get_store(s->ch, NULL, s->store->id, &store, &st), &st, store);
  want_store("GetSecretStore", store, s->store);
  free_msg(store);
  const char *names[] = {"BIG"};
  const uint64_t versions[] = {1};
  want_secrets(s, names, versions, 1);
}

static void scenario_auth(scenario *s) {
  sg_status st;
  const char *key = s->cfg->key;
  /* The right shape, one character off. */
  char typo[256];
  snprintf(typo, sizeof(typo), "%s", key);
  size_t last = strlen(typo) - 1;
  typo[last] = typo[last] == 'A' ? 'B' : 'A';

  begin("every method with a bad API key: UNAUTHENTICATED, nothing changed");
  for (size_t m = 0; m < N_METHODS; m++)
    WANT_ERROR(METHODS[m], call_method(m, s->ch, typo, s->store->id, &st), &st, NULL,
               SG_STATUS_UNAUTHENTICATED, NULL, NULL);
  want_unchanged(s);
  pass("\"%s\"", st.message);

  begin("every method without an API key: UNAUTHENTICATED, nothing changed");
  sg_channel *anon = open_channel(s->cfg, NULL);
  for (size_t m = 0; m < N_METHODS; m++)
    WANT_ERROR(METHODS[m], call_method(m, anon, NULL, s->store->id, &st), &st, NULL,
               SG_STATUS_UNAUTHENTICATED, NULL, NULL);
  sg_channel_free(anon);
  want_unchanged(s);
  pass("\"%s\"", st.message);

  /* CreateSecretStore and ListSecretStores name no store: they are the other organization's
   * own, and succeed. The others must say what they say of a store that does not exist at
   * all, word for word (the id aside): nothing tells the two apart. */
  begin("every store-scoped method with another organization's key: NOT_FOUND as for an unknown "
        "store, nothing changed");
  const char *unknown = "5f0c2a9e-3b1d-4e6f-8a7c-9d0e1f2a3b4c";
  for (size_t m = 2; m < N_METHODS; m++) {
    sg_status none;
    WANT_ERROR(METHODS[m], call_method(m, s->ch, NULL, unknown, &none), &none, NULL,
               SG_STATUS_NOT_FOUND, NULL, "not found");
    WANT_ERROR(METHODS[m], call_method(m, s->ch, s->cfg->other_key, s->store->id, &st), &st, NULL,
               SG_STATUS_NOT_FOUND, NULL, "not found");
    char *at = strstr(none.message, unknown);
    if (at != NULL)
      memcpy(at, s->store->id, strlen(unknown)); /* both ids are 36 characters */
    if (strcmp(none.message, st.message) != 0)
      fail("%s: \"%s\" for another organization's store, \"%s\" for an unknown one", METHODS[m],
           st.message, none.message);
  }
  want_unchanged(s);
  pass("\"%s\"", st.message);
}

static void scenario_delete(scenario *s) {
  sg_status st;
  const char *id = s->store->id;
  begin("DeleteSecretStore");
  want_done("DeleteSecretStore", delete_store(s->ch, NULL, id, &st), &st);
  pass(NULL);

  begin("after DeleteSecretStore every method on the store is NOT_FOUND");
  for (size_t m = 2; m < N_METHODS; m++)
    WANT_ERROR(METHODS[m], call_method(m, s->ch, NULL, id, &st), &st, NULL, SG_STATUS_NOT_FOUND,
               NULL, "not found");
  pass(NULL);
}

/* What the channel itself adds: metadata, unknown methods, the environment defaults. */
static void scenario_channel(scenario *s) {
  sg_status st;
  Sealgate__V1__ListSecretStoresResponse *resp = NULL;
  Sealgate__V1__ListSecretStoresRequest req = SEALGATE__V1__LIST_SECRET_STORES_REQUEST__INIT;

  begin("custom metadata (text and -bin) goes out with the call");
  const uint8_t raw[] = {0, 1, 2, 0xff, 0xfe};
  sg_metadata_entry md[] = {{"x-request-id", "client-check-1", 14}, {"x-trace-bin", raw, 5}};
  sg_call_options o = {.timeout_ms = CALL_TIMEOUT_MS, .metadata = md, .n_metadata = 2};
  WANT_OK("ListSecretStores",
          sealgate_v1_secret_store_service_list_secret_stores(s->ch, &req, &resp, &o, &st), &st,
          resp);
  free_msg(resp);
  pass(NULL);

  begin("reserved metadata is refused before sending: INVALID_ARGUMENT");
  sg_metadata_entry reserved[] = {{"grpc-timeout", "1S", 2}};
  o.metadata = reserved;
  o.n_metadata = 1;
  resp = NULL;
  WANT_ERROR("ListSecretStores",
             sealgate_v1_secret_store_service_list_secret_stores(s->ch, &req, &resp, &o, &st), &st,
             resp, SG_STATUS_INVALID_ARGUMENT, "metadata[0]", NULL);
  pass("\"%s\"", st.message);

  begin("a method the server does not have: UNIMPLEMENTED");
  ProtobufCMessage *any = NULL;
  sg_call_options plain = with_key(NULL);
  WANT_ERROR("sg_channel_unary",
             sg_channel_unary(s->ch, "/sealgate.v1.SecretStoreService/NoSuchMethod", &req.base,
                              &sealgate__v1__list_secret_stores_response__descriptor, &any, &plain,
                              &st),
             &st, any, SG_STATUS_UNIMPLEMENTED, NULL, NULL);
  pass("\"%s\"", st.message);

  begin("Health/Check: SERVING");
  Grpc__Health__V1__HealthCheckRequest hreq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  Grpc__Health__V1__HealthCheckResponse *hresp = NULL;
  WANT_OK("Health/Check", grpc_health_v1_health_check(s->ch, &hreq, &hresp, &plain, &st), &st,
          hresp);
  if (hresp->status != GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING)
    fail("status %d, expected SERVING", hresp->status);
  free_msg(hresp);
  pass(NULL);

  begin("SEALGATE_ADDR and SEALGATE_API_KEY from the environment (NULL options)");
  setenv("SEALGATE_ADDR", s->cfg->target, 1);
  setenv("SEALGATE_API_KEY", s->cfg->key, 1);
  char err[256];
  sg_channel *env_ch = sg_channel_new(NULL, err, sizeof(err));
  unsetenv("SEALGATE_ADDR");
  unsetenv("SEALGATE_API_KEY");
  if (env_ch == NULL)
    fail("sg_channel_new(NULL): %s", err);
  Sealgate__V1__SecretStore *store = NULL;
  WANT_OK("GetSecretStore", get_store(env_ch, NULL, s->store->id, &store, &st), &st, store);
  want_str("id", store->id, s->store->id);
  free_msg(store);
  sg_channel_free(env_ch);
  pass(NULL);
}

static void cmd_scenario(const config *cfg) {
  if (cfg->key == NULL || cfg->other_key == NULL || cfg->org_id == NULL)
    fail("scenario needs --key, --other-key and --org-id");
  scenario s = {.cfg = cfg, .ch = open_channel(cfg, cfg->key)};

  begin("CreateSecretStore with the other organization's key (per-call api_key)");
  sg_status st;
  Sealgate__V1__SecretStore *other = NULL;
  char name[64];
  unique_name(name, sizeof(name), "c-other");
  WANT_OK("CreateSecretStore", create_store(s.ch, cfg->other_key, name, NULL, 0, &other, &st), &st,
          other);
  if (strcmp(other->org_id, cfg->org_id) == 0)
    fail("the store belongs to the channel's organization %s", other->org_id);
  snprintf(s.other_store_id, sizeof(s.other_store_id), "%s", other->id);
  free_msg(other);
  pass("%s", s.other_store_id);

  scenario_create(&s);
  scenario_get(&s);
  scenario_list(&s);
  scenario_update(&s);
  scenario_secrets(&s);
  scenario_auth(&s);
  scenario_channel(&s);
  scenario_delete(&s);

  begin("the other organization's store is untouched");
  WANT_OK("GetSecretStore", get_store(s.ch, cfg->other_key, s.other_store_id, &other, &st), &st,
          other);
  free_msg(other);
  if (delete_store(s.ch, cfg->other_key, s.other_store_id, &st) != SG_STATUS_OK)
    fail("DeleteSecretStore: %s \"%s\"", code_name(st.code), st.message);
  pass(NULL);

  keep_store(&s, NULL);
  sg_channel_free(s.ch);
  printf("scenario passed\n");
}

/* --- concurrency: many threads, one channel ------------------------------------------------- */

typedef struct {
  sg_channel *ch;
  int index;
  long calls;
  char store_id[64], store_name[64], secret[48];
  long done;       /* calls answered correctly */
  char error[768]; /* the first wrong answer */
} worker;

/* Thread |w->index| reads its own store and, every tenth call, sets its own secret: a response
 * that belonged to another thread's call shows up as a wrong id, name or version. */
static void *concurrency_worker(void *arg) {
  worker *w = arg;
  uint64_t version = 0;
  for (long i = 0; i < w->calls; i++) {
    sg_status st;
    if (i % 10 == 9) {
      Sealgate__V1__SecretEntry *e = NULL;
      char value[64];
      snprintf(value, sizeof(value), "thread %d call %ld", w->index, i);
      if (set_secret(w->ch, NULL, w->store_id, w->secret, value, NULL, 0, &e, &st) != 0) {
        snprintf(w->error, sizeof(w->error), "call %ld SetSecret: %s \"%s\"", i, code_name(st.code),
                 st.message);
        return NULL;
      }
      version++;
      int right = strcmp(e->store_id, w->store_id) == 0 && strcmp(e->name, w->secret) == 0 &&
                  e->version == version;
      if (!right)
        snprintf(w->error, sizeof(w->error),
                 "call %ld SetSecret %s v%llu on %s came back as %s v%llu on %s", i, w->secret,
                 (unsigned long long)version, w->store_id, e->name, (unsigned long long)e->version,
                 e->store_id);
      free_msg(e);
      if (!right)
        return NULL;
    } else {
      Sealgate__V1__SecretStore *store = NULL;
      if (get_store(w->ch, NULL, w->store_id, &store, &st) != 0) {
        snprintf(w->error, sizeof(w->error), "call %ld GetSecretStore: %s \"%s\"", i,
                 code_name(st.code), st.message);
        return NULL;
      }
      int right = strcmp(store->id, w->store_id) == 0 && strcmp(store->name, w->store_name) == 0;
      if (!right)
        snprintf(w->error, sizeof(w->error), "call %ld GetSecretStore %s (%s) came back as %s (%s)",
                 i, w->store_id, w->store_name, store->id, store->name);
      free_msg(store);
      if (!right)
        return NULL;
    }
    w->done++;
  }
  return NULL;
}

static void cmd_concurrency(const config *cfg) {
  long n = cfg->threads > 0 ? cfg->threads : 8, calls = cfg->calls > 0 ? cfg->calls : 1000;
  sg_channel *ch = open_channel(cfg, cfg->key);
  worker *w = calloc((size_t)n, sizeof(*w));
  pthread_t *tid = calloc((size_t)n, sizeof(*tid));
  sg_status st;

  begin("a store per thread");
  for (long t = 0; t < n; t++) {
    Sealgate__V1__SecretStore *store = NULL;
    w[t] = (worker){.ch = ch, .index = (int)t, .calls = calls};
    unique_name(w[t].store_name, sizeof(w[t].store_name), "conc");
    snprintf(w[t].secret, sizeof(w[t].secret), "SECRET_OF_THREAD_%ld", t);
    WANT_OK("CreateSecretStore", create_store(ch, NULL, w[t].store_name, NULL, 0, &store, &st), &st,
            store);
    snprintf(w[t].store_id, sizeof(w[t].store_id), "%s", store->id);
    free_msg(store);
  }
  pass("%ld stores", n);

  char check[128];
  snprintf(check, sizeof(check),
           "%ld threads x %ld calls on one channel, every answer the right one", n, calls);
  begin(check);
  int64_t t0 = now_ms();
  for (long t = 0; t < n; t++)
    if (pthread_create(&tid[t], NULL, concurrency_worker, &w[t]) != 0)
      fail("pthread_create: %s", strerror(errno));
  for (long t = 0; t < n; t++)
    pthread_join(tid[t], NULL);
  int64_t elapsed = now_ms() - t0;
  for (long t = 0; t < n; t++)
    if (w[t].done != calls)
      fail("thread %ld: %ld of %ld calls right; %s", t, w[t].done, calls, w[t].error);
  pass("%ld calls in %lld ms", n * calls, (long long)elapsed);

  begin("the versions the threads saw are the stored ones");
  for (long t = 0; t < n; t++) {
    Sealgate__V1__ListSecretsResponse *resp = NULL;
    WANT_OK("ListSecrets", list_secrets(ch, NULL, w[t].store_id, &resp, &st), &st, resp);
    if (resp->n_secrets != 1 || strcmp(resp->secrets[0]->name, w[t].secret) != 0 ||
        resp->secrets[0]->version != (uint64_t)(calls / 10))
      fail("store of thread %ld: %zu secrets, the first %s v%llu; expected %s v%ld", t,
           resp->n_secrets, resp->n_secrets ? resp->secrets[0]->name : "-",
           resp->n_secrets ? (unsigned long long)resp->secrets[0]->version : 0ULL, w[t].secret,
           calls / 10);
    free_msg(resp);
    if (delete_store(ch, NULL, w[t].store_id, &st) != SG_STATUS_OK)
      fail("DeleteSecretStore: %s \"%s\"", code_name(st.code), st.message);
  }
  pass("v%ld in each store", calls / 10);
  free(w);
  free(tid);
  sg_channel_free(ch);
}

/* --- deadline -------------------------------------------------------------------------------- */

/* The call took |ms| for a deadline of |deadline| ms: not before it, not long after. */
static void want_on_time(int64_t ms, long deadline) {
  if (ms < deadline - 5 || ms > deadline + 3000)
    fail("ended after %lld ms for a deadline of %ld ms", (long long)ms, deadline);
}

static void cmd_deadline(const config *cfg) {
  sg_channel *ch = open_channel(cfg, cfg->key);
  sg_status st;
  Grpc__Health__V1__HealthCheckRequest hreq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  Grpc__Health__V1__HealthCheckResponse *h = NULL;

  /* Watch never ends by itself: only its deadline stops it. */
  begin("Health/Watch with a 500 ms deadline: SERVING, then DEADLINE_EXCEEDED");
  sg_call_options half_second = {.timeout_ms = 500};
  int64_t t0 = now_ms();
  sg_stream *watch = grpc_health_v1_health_watch(ch, &hreq, &half_second);
  if (grpc_health_v1_health_watch_next(watch, &h, &st) != 1)
    fail("no first message: %s \"%s\"", code_name(st.code), st.message);
  if (h->status != GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING)
    fail("first message: status %d, expected SERVING", h->status);
  free_msg(h);
  h = NULL;
  if (grpc_health_v1_health_watch_next(watch, &h, &st) != 0 || h != NULL)
    fail("a second message before the deadline");
  /* The server keeps the deadline too (grpc-timeout), and resets a stream whose response has
   * begun when it passes: whichever side sees it first, the outcome is DEADLINE_EXCEEDED. */
  if (st.code != SG_STATUS_DEADLINE_EXCEEDED)
    fail("expected DEADLINE_EXCEEDED, got %s \"%s\" %.3f ms after the start of a 500 ms "
         "deadline",
         code_name(st.code), st.message, (double)(now_us() - t0 * 1000) / 1000);
  want_on_time(now_ms() - t0, 500);
  if (grpc_health_v1_health_watch_next(watch, &h, &st) != 0 ||
      st.code != SG_STATUS_DEADLINE_EXCEEDED)
    fail("reading the ended stream again: %s", code_name(st.code));
  sg_stream_free(watch);
  pass("after %lld ms: \"%s\"", (long long)(now_ms() - t0), st.message);

  begin("a store to read");
  Sealgate__V1__SecretStore *store = NULL;
  char name[64];
  unique_name(name, sizeof(name), "deadline");
  WANT_OK("CreateSecretStore", create_store(ch, NULL, name, NULL, 0, &store, &st), &st, store);
  char id[64];
  snprintf(id, sizeof(id), "%s", store->id);
  free_msg(store);
  pass("%s", id);

  /* The driver stops the server (SIGSTOP): the connection stays up, nothing answers. */
  wait_for_go("to stop the server");
  Sealgate__V1__GetSecretStoreRequest req = SEALGATE__V1__GET_SECRET_STORE_REQUEST__INIT;
  req.store_id = id;
  const struct {
    const char *check;
    sg_call_options o;
  } unary[] = {
      {"GetSecretStore with a 300 ms deadline, server stopped: DEADLINE_EXCEEDED",
       {.timeout_ms = 300}},
      {"the same with retry on: DEADLINE_EXCEEDED, not retried", {.timeout_ms = 300, .retry = 1}},
  };
  for (size_t i = 0; i < sizeof(unary) / sizeof(unary[0]); i++) {
    begin(unary[i].check);
    store = NULL;
    t0 = now_ms();
    int code =
        sealgate_v1_secret_store_service_get_secret_store(ch, &req, &store, &unary[i].o, &st);
    int64_t took = now_ms() - t0;
    WANT_ERROR("GetSecretStore", code, &st, store, SG_STATUS_DEADLINE_EXCEEDED, NULL, NULL);
    want_on_time(took, 300);
    pass("after %lld ms: \"%s\"", (long long)took, st.message);
  }

  begin("Health/Watch with a 300 ms deadline, server stopped: DEADLINE_EXCEEDED");
  sg_call_options short_wait = {.timeout_ms = 300};
  t0 = now_ms();
  watch = grpc_health_v1_health_watch(ch, &hreq, &short_wait);
  h = NULL;
  if (grpc_health_v1_health_watch_next(watch, &h, &st) != 0 || h != NULL)
    fail("a message from a stopped server");
  WANT_ERROR("Health/Watch", st.code, &st, NULL, SG_STATUS_DEADLINE_EXCEEDED, NULL, NULL);
  want_on_time(now_ms() - t0, 300);
  sg_stream_free(watch);
  pass(NULL);

  wait_for_go("to resume the server");
  begin("the channel works again after its calls' deadlines passed");
  store = NULL;
  WANT_OK("GetSecretStore", get_store(ch, NULL, id, &store, &st), &st, store);
  want_str("id", store->id, id);
  free_msg(store);
  WANT_OK("Health/Check", grpc_health_v1_health_check(ch, &hreq, &h, &half_second, &st), &st, h);
  free_msg(h);
  if (delete_store(ch, NULL, id, &st) != SG_STATUS_OK)
    fail("DeleteSecretStore: %s \"%s\"", code_name(st.code), st.message);
  pass(NULL);
  sg_channel_free(ch);
}

/* --- restart: calls across server restarts -------------------------------------------------- */

typedef struct {
  sg_channel *ch;
  const char *store_id;
  int retry; /* 1: every call must succeed; 0: OK or UNAVAILABLE, nothing else */
  atomic_int *stop;
  long ok, unavailable, slowest_ms;
  char error[768];
} restart_worker;

#define RESTART_BOUND_MS 120000 /* a driver that never says "stop" */

static void *restart_loop(void *arg) {
  restart_worker *w = arg;
  /* With retry: attempts enough to outlast a restart, within a deadline that still ends a
   * stuck call. */
  sg_call_options o = {.timeout_ms = 20000, .retry = w->retry, .max_attempts = 1000};
  Sealgate__V1__GetSecretStoreRequest req = SEALGATE__V1__GET_SECRET_STORE_REQUEST__INIT;
  req.store_id = (char *)w->store_id;
  int64_t start = now_ms();
  while (!atomic_load(w->stop) && now_ms() - start < RESTART_BOUND_MS) {
    Sealgate__V1__SecretStore *store = NULL;
    sg_status st;
    int64_t t0 = now_ms();
    int code = sealgate_v1_secret_store_service_get_secret_store(w->ch, &req, &store, &o, &st);
    int64_t took = now_ms() - t0;
    if (took > w->slowest_ms)
      w->slowest_ms = took;
    if (code == SG_STATUS_OK && strcmp(store->id, w->store_id) == 0) {
      w->ok++;
    } else if (code == SG_STATUS_UNAVAILABLE && !w->retry) {
      w->unavailable++;
      struct timespec pause = {0, 20 * 1000000}; /* the caller's own backoff */
      nanosleep(&pause, NULL);
    } else {
      snprintf(w->error, sizeof(w->error), "call %ld (retry %s): %s \"%s\"%s after %lld ms",
               w->ok + w->unavailable + 1, w->retry ? "on" : "off", code_name(code), st.message,
               code == SG_STATUS_OK ? " with another store" : "", (long long)took);
      free_msg(store);
      return NULL;
    }
    free_msg(store);
  }
  return NULL;
}

static void cmd_restart(const config *cfg) {
  long n = cfg->threads > 0 ? cfg->threads : 4;
  sg_channel *ch = open_channel(cfg, cfg->key);
  sg_status st;
  begin("a store to read");
  Sealgate__V1__SecretStore *store = NULL;
  char name[64];
  unique_name(name, sizeof(name), "restart");
  WANT_OK("CreateSecretStore", create_store(ch, NULL, name, NULL, 0, &store, &st), &st, store);
  pass("%s", store->id);

  /* Thread 0 goes without retry: its calls may fail UNAVAILABLE while the server is away, and
   * must work again, on their own, once it is back. The others retry and must never fail. */
  atomic_int stop = 0;
  restart_worker *w = calloc((size_t)n, sizeof(*w));
  pthread_t *tid = calloc((size_t)n, sizeof(*tid));
  for (long t = 0; t < n; t++) {
    w[t] = (restart_worker){.ch = ch, .store_id = store->id, .retry = t > 0, .stop = &stop};
    if (pthread_create(&tid[t], NULL, restart_loop, &w[t]) != 0)
      fail("pthread_create: %s", strerror(errno));
  }
  printf("ready to restart the server\n");
  fflush(stdout);
  char line[64];
  int told = read_line(line, sizeof(line)) && strcmp(line, "stop") == 0;
  atomic_store(&stop, 1);
  for (long t = 0; t < n; t++)
    pthread_join(tid[t], NULL);
  if (!told)
    fail("stdin ended without \"stop\"");

  char check[160];
  snprintf(check, sizeof(check), "%ld threads calling through the restarts, %ld of them with retry",
           n, n - 1);
  begin(check);
  long ok = 0, unavailable = 0, slowest = 0;
  for (long t = 0; t < n; t++) {
    if (w[t].error[0] != '\0')
      fail("thread %ld: %s", t, w[t].error);
    if (w[t].ok == 0)
      fail("thread %ld made no successful call", t);
    ok += w[t].ok;
    unavailable += w[t].unavailable;
    if (t > 0 && w[t].slowest_ms > slowest)
      slowest = w[t].slowest_ms;
  }
  pass("%ld calls OK; without retry %ld OK and %ld UNAVAILABLE; slowest call with retry %ld ms", ok,
       w[0].ok, unavailable, slowest);

  begin("after the restarts a call without retry succeeds");
  Sealgate__V1__SecretStore *again = NULL;
  WANT_OK("GetSecretStore", get_store(ch, NULL, store->id, &again, &st), &st, again);
  free_msg(again);
  if (delete_store(ch, NULL, store->id, &st) != SG_STATUS_OK)
    fail("DeleteSecretStore: %s \"%s\"", code_name(st.code), st.message);
  pass(NULL);
  free_msg(store);
  free(w);
  free(tid);
  sg_channel_free(ch);
}

/* --- health: one Health/Check, outcome as told ---------------------------------------------- */

static int parse_code(const char *name) {
  for (int c = 0; c <= 16; c++)
    if (strcmp(sg_status_code_name(c), name) == 0)
      return c;
  fail("unknown status code name \"%s\"", name);
}

static void cmd_health(const config *cfg) {
  int want = parse_code(cfg->expect ? cfg->expect : "OK");
  sg_channel *ch = open_channel(cfg, NULL);
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  Grpc__Health__V1__HealthCheckResponse *resp = NULL;
  long timeout = cfg->timeout_ms > 0 ? cfg->timeout_ms : CALL_TIMEOUT_MS;
  sg_call_options o = {.timeout_ms = timeout};
  sg_status st;
  begin("Health/Check");
  int64_t t0 = now_ms();
  int code = grpc_health_v1_health_check(ch, &req, &resp, &o, &st);
  int64_t took = now_ms() - t0;
  if (want == SG_STATUS_OK) {
    WANT_OK("Health/Check", code, &st, resp);
    if (resp->status != GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING)
      fail("status %d, expected SERVING", resp->status);
    free_msg(resp);
    pass("SERVING");
  } else {
    WANT_ERROR("Health/Check", code, &st, resp, want, NULL, cfg->contains);
    if (want == SG_STATUS_DEADLINE_EXCEEDED)
      want_on_time(took, timeout);
    pass("%s \"%s\" after %lld ms", code_name(code), st.message, (long long)took);
  }
  sg_channel_free(ch);
}

/* --- grpc-peer: a gRPC server this client did not come from -------------------------------- */

typedef struct {
  sg_channel *ch;
  long calls, serving;
  char error[768];
} check_worker;

static void *check_loop(void *arg) {
  check_worker *w = arg;
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  sg_call_options o = {.timeout_ms = CALL_TIMEOUT_MS};
  for (long i = 0; i < w->calls; i++) {
    Grpc__Health__V1__HealthCheckResponse *resp = NULL;
    sg_status st;
    if (grpc_health_v1_health_check(w->ch, &req, &resp, &o, &st) != SG_STATUS_OK) {
      snprintf(w->error, sizeof(w->error), "call %ld: %s \"%s\"", i, code_name(st.code),
               st.message);
      return NULL;
    }
    w->serving += resp->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    free_msg(resp);
  }
  return NULL;
}

static void cmd_grpc_peer(const config *cfg) {
  sg_channel *ch = open_channel(cfg, NULL);
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  Grpc__Health__V1__HealthCheckResponse *resp = NULL;
  sg_call_options o = {.timeout_ms = CALL_TIMEOUT_MS};
  sg_status st;

  begin("Health/Check: SERVING");
  WANT_OK("Health/Check", grpc_health_v1_health_check(ch, &req, &resp, &o, &st), &st, resp);
  if (resp->status != GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING)
    fail("status %d, expected SERVING", resp->status);
  free_msg(resp);
  pass(NULL);

  begin("Health/Check with metadata and an API key: SERVING");
  const uint8_t raw[] = {0, 0xff, 0x10};
  sg_metadata_entry md[] = {{"x-request-id", "client-check", 12}, {"x-trace-bin", raw, 3}};
  sg_call_options with_md = {
      .timeout_ms = CALL_TIMEOUT_MS, .api_key = "osk_ignored", .metadata = md, .n_metadata = 2};
  resp = NULL;
  WANT_OK("Health/Check", grpc_health_v1_health_check(ch, &req, &resp, &with_md, &st), &st, resp);
  free_msg(resp);
  pass(NULL);

  /* The server leaves Watch to grpc's generated default. */
  begin("Health/Watch: the stream ends UNIMPLEMENTED");
  sg_stream *watch = grpc_health_v1_health_watch(ch, &req, &o);
  resp = NULL;
  if (grpc_health_v1_health_watch_next(watch, &resp, &st) != 0 || resp != NULL)
    fail("a Watch message from a server without Watch");
  WANT_ERROR("Health/Watch", st.code, &st, NULL, SG_STATUS_UNIMPLEMENTED, NULL, NULL);
  sg_stream_free(watch);
  pass("\"%s\"", st.message);

  begin("a sealgate method on a plain gRPC server: UNIMPLEMENTED");
  Sealgate__V1__GetSecretStoreRequest get = SEALGATE__V1__GET_SECRET_STORE_REQUEST__INIT;
  get.store_id = "5f0c2a9e-3b1d-4e6f-8a7c-9d0e1f2a3b4c";
  Sealgate__V1__SecretStore *store = NULL;
  WANT_ERROR("GetSecretStore",
             sealgate_v1_secret_store_service_get_secret_store(ch, &get, &store, &o, &st), &st,
             store, SG_STATUS_UNIMPLEMENTED, NULL, NULL);
  pass("\"%s\"", st.message);

  long n = cfg->threads > 0 ? cfg->threads : 8, calls = cfg->calls > 0 ? cfg->calls : 250;
  char check[128];
  snprintf(check, sizeof(check), "%ld threads x %ld Health/Check on one channel: all SERVING", n,
           calls);
  begin(check);
  check_worker *w = calloc((size_t)n, sizeof(*w));
  pthread_t *tid = calloc((size_t)n, sizeof(*tid));
  for (long t = 0; t < n; t++) {
    w[t] = (check_worker){.ch = ch, .calls = calls};
    if (pthread_create(&tid[t], NULL, check_loop, &w[t]) != 0)
      fail("pthread_create: %s", strerror(errno));
  }
  for (long t = 0; t < n; t++)
    pthread_join(tid[t], NULL);
  for (long t = 0; t < n; t++)
    if (w[t].serving != calls)
      fail("thread %ld: %ld of %ld SERVING; %s", t, w[t].serving, calls, w[t].error);
  free(w);
  free(tid);
  pass(NULL);
  sg_channel_free(ch);
}

/* --- testservice: what only a test server can make happen ---------------------------------- */

/* sealgate.testing.v1.TestService (tests/proto) is on the test server only: its messages are
 * compiled in here, and its calls go through sg_channel_unary and sg_channel_stream_open, as a
 * program calls a service the library has no typed functions for. */
#define TEST_UNARY  "/sealgate.testing.v1.TestService/UnaryCall"
#define TEST_STREAM "/sealgate.testing.v1.TestService/StreamingCall"

typedef Sealgate__Testing__V1__TestRequest test_request;
typedef Sealgate__Testing__V1__TestResponse test_response;

static int test_unary(sg_channel *ch, const test_request *req, test_response **resp,
                      const sg_call_options *o, sg_status *st) {
  return sg_channel_unary(ch, TEST_UNARY, &req->base,
                          &sealgate__testing__v1__test_response__descriptor,
                          (ProtobufCMessage **)resp, o, st);
}

static sg_stream *test_stream(sg_channel *ch, const test_request *req, const sg_call_options *o) {
  return sg_channel_stream_open(ch, TEST_STREAM, &req->base,
                                &sealgate__testing__v1__test_response__descriptor, o);
}

static int test_next(sg_stream *stream, test_response **resp, sg_status *st) {
  return sg_stream_next(stream, (ProtobufCMessage **)resp, st);
}

/* Reads a StreamingCall to its end: |count| responses echoing |message| with indexes 0, 1, ...
 * and |size| bytes of payload each, then OK. Returns 0, or -1 with |err| saying what differed. */
static int read_stream(sg_stream *stream, const char *message, int count, size_t size, char *err,
                       size_t errlen) {
  test_response *r = NULL;
  sg_status st;
  int i = 0;
  for (; test_next(stream, &r, &st) == 1; i++) {
    int right =
        i < count && r->index == i && strcmp(r->message, message) == 0 && r->payload.len == size;
    if (!right)
      snprintf(err, errlen, "response %d: index %d, message \"%.40s\", %zu bytes", i, r->index,
               r->message, r->payload.len);
    free_msg(r);
    if (!right)
      return -1;
  }
  if (st.code != SG_STATUS_OK || i != count) {
    snprintf(err, errlen, "%d of %d responses, then %s \"%s\"", i, count, code_name(st.code),
             st.message);
    return -1;
  }
  return 0;
}

typedef struct {
  sg_channel *ch;
  int index, streams;
  char error[768];
} stream_worker;

static void *stream_loop(void *arg) {
  stream_worker *w = arg;
  char message[32];
  snprintf(message, sizeof(message), "stream of thread %d", w->index);
  test_request req = SEALGATE__TESTING__V1__TEST_REQUEST__INIT;
  req.message = message;
  req.count = 50;
  req.response_size = 1000 + w->index;
  sg_call_options o = {.timeout_ms = CALL_TIMEOUT_MS};
  for (int i = 0; i < w->streams && w->error[0] == '\0'; i++) {
    sg_stream *stream = test_stream(w->ch, &req, &o);
    read_stream(stream, message, req.count, (size_t)req.response_size, w->error, sizeof(w->error));
    sg_stream_free(stream);
  }
  return NULL;
}

static void cmd_testservice(const config *cfg) {
  sg_channel *ch = open_channel(cfg, NULL);
  sg_call_options o = {.timeout_ms = CALL_TIMEOUT_MS};
  sg_status st;
  test_request req = SEALGATE__TESTING__V1__TEST_REQUEST__INIT;
  test_response *r = NULL;

  begin("UnaryCall echoes its message");
  req.message = "h\xc3\xa9llo, \xe4\xb8\x96\xe7\x95\x8c";
  WANT_OK("UnaryCall", test_unary(ch, &req, &r, &o, &st), &st, r);
  want_str("message", r->message, req.message);
  free_msg(r);
  pass(NULL);

  /* grpc-message is percent-encoded on the wire: the text comes back byte for byte. */
  begin("every status code comes back with its message as sent");
  Sealgate__Testing__V1__EchoStatus echo = SEALGATE__TESTING__V1__ECHO_STATUS__INIT;
  req.response_status = &echo;
  for (int code = 1; code <= 16; code++) {
    char text[160];
    snprintf(text, sizeof(text), "code %d: 100%% na\xc3\xafve \"quoted\" %%41 \\ end", code);
    echo.code = code;
    echo.message = text;
    r = NULL;
    WANT_ERROR("UnaryCall", test_unary(ch, &req, &r, &o, &st), &st, r, code, NULL, NULL);
    want_str("status message", st.message, text);
  }
  req.response_status = NULL;
  pass("1..16");

  begin("a 3 MiB response, three times the stream window");
  req.response_size = 3 << 20;
  r = NULL;
  WANT_OK("UnaryCall", test_unary(ch, &req, &r, &o, &st), &st, r);
  if (r->payload.len != (size_t)req.response_size)
    fail("%zu payload bytes, expected %d", r->payload.len, req.response_size);
  for (size_t i = 0; i < r->payload.len; i++)
    if (r->payload.data[i] != 'x')
      fail("payload byte %zu is %#x", i, r->payload.data[i]);
  free_msg(r);
  req.response_size = 0;
  pass(NULL);

  begin("a 3 MiB request");
  uint8_t *payload = calloc(5 << 20, 1);
  req.payload.data = payload;
  req.payload.len = 3 << 20;
  r = NULL;
  WANT_OK("UnaryCall", test_unary(ch, &req, &r, &o, &st), &st, r);
  free_msg(r);
  pass(NULL);

  begin("a request over the server's 4 MiB limit: RESOURCE_EXHAUSTED");
  req.payload.len = 5 << 20;
  WANT_ERROR("UnaryCall", test_unary(ch, &req, &r, &o, &st), &st, r, SG_STATUS_RESOURCE_EXHAUSTED,
             NULL, NULL);
  req.payload.len = 0;
  req.payload.data = NULL;
  free(payload);
  pass("\"%s\"", st.message);

  char err[768];
  begin("StreamingCall: 5 responses in order, then OK");
  req.message = "five";
  req.count = 5;
  req.interval_ms = 20;
  sg_stream *stream = test_stream(ch, &req, &o);
  if (read_stream(stream, "five", 5, 0, err, sizeof(err)) != 0)
    fail("%s", err);
  sg_stream_free(stream);
  pass(NULL);

  begin("StreamingCall ending ABORTED: no response, the status and its message");
  echo.code = SG_STATUS_ABORTED;
  echo.message = "aborted on purpose";
  req.response_status = &echo;
  stream = test_stream(ch, &req, &o);
  r = NULL;
  if (test_next(stream, &r, &st) != 0 || r != NULL)
    fail("a response from a call that fails");
  WANT_ERROR("StreamingCall", st.code, &st, NULL, SG_STATUS_ABORTED, "aborted on purpose", NULL);
  sg_stream_free(stream);
  req.response_status = NULL;
  pass(NULL);

  begin("a stream freed before its end is cancelled; the channel goes on");
  req.message = "long";
  req.count = 1000;
  req.interval_ms = 10;
  stream = test_stream(ch, &req, &o);
  for (int i = 0; i < 2; i++) {
    r = NULL;
    if (test_next(stream, &r, &st) != 1)
      fail("response %d: %s \"%s\"", i, code_name(st.code), st.message);
    free_msg(r);
  }
  sg_stream_free(stream);
  req.count = 0;
  req.interval_ms = 0;
  r = NULL;
  WANT_OK("UnaryCall", test_unary(ch, &req, &r, &o, &st), &st, r);
  free_msg(r);
  pass(NULL);

  begin("8 threads x 20 streams of 50 responses on one channel, each in order");
  stream_worker w[8];
  pthread_t tid[8];
  for (int t = 0; t < 8; t++) {
    w[t] = (stream_worker){.ch = ch, .index = t, .streams = 20};
    if (pthread_create(&tid[t], NULL, stream_loop, &w[t]) != 0)
      fail("pthread_create: %s", strerror(errno));
  }
  for (int t = 0; t < 8; t++)
    pthread_join(tid[t], NULL);
  for (int t = 0; t < 8; t++)
    if (w[t].error[0] != '\0')
      fail("thread %d: %s", t, w[t].error);
  pass(NULL);

  begin("a call slower than its 300 ms deadline: DEADLINE_EXCEEDED");
  req.delay_ms = 3000;
  sg_call_options short_wait = {.timeout_ms = 300};
  r = NULL;
  int64_t t0 = now_ms();
  WANT_ERROR("UnaryCall", test_unary(ch, &req, &r, &short_wait, &st), &st, r,
             SG_STATUS_DEADLINE_EXCEEDED, NULL, NULL);
  want_on_time(now_ms() - t0, 300);
  pass("after %lld ms", (long long)(now_ms() - t0));

  begin("a slow call within its deadline: OK");
  req.delay_ms = 200;
  r = NULL;
  WANT_OK("UnaryCall", test_unary(ch, &req, &r, &o, &st), &st, r);
  free_msg(r);
  pass(NULL);
  sg_channel_free(ch);
}

/* --- drain: a call made while the server drains goes out on the next connection ------------- */

/* A call made on a thread of its own: UnaryCall with `message` and `delay_ms`, or Health/Check
 * when `message` is NULL. */
typedef struct {
  sg_channel *ch;
  const char *message;
  int delay_ms;
  int code;
  sg_status st;
  int64_t took_ms;
} bg_call;

static void *bg_call_run(void *arg) {
  bg_call *c = arg;
  sg_call_options o = {.timeout_ms = CALL_TIMEOUT_MS};
  int64_t t0 = now_ms();
  if (c->message != NULL) {
    test_request req = SEALGATE__TESTING__V1__TEST_REQUEST__INIT;
    req.message = (char *)c->message;
    req.delay_ms = c->delay_ms;
    test_response *r = NULL;
    c->code = test_unary(c->ch, &req, &r, &o, &c->st);
    free_msg(r);
  } else {
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    Grpc__Health__V1__HealthCheckResponse *h = NULL;
    c->code = grpc_health_v1_health_check(c->ch, &req, &h, &o, &c->st);
    free_msg(h);
  }
  c->took_ms = now_ms() - t0;
  return NULL;
}

static void start_bg_call(pthread_t *tid, bg_call *c) {
  if (pthread_create(tid, NULL, bg_call_run, c) != 0)
    fail("pthread_create: %s", strerror(errno));
}

static void cmd_drain(const config *cfg) {
  sg_channel *ch = open_channel(cfg, NULL);
  sg_call_options o = {.timeout_ms = CALL_TIMEOUT_MS};
  Grpc__Health__V1__HealthCheckRequest hreq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  Grpc__Health__V1__HealthCheckResponse *h = NULL;
  sg_status st;
  begin("connected");
  WANT_OK("Health/Check", grpc_health_v1_health_check(ch, &hreq, &h, &o, &st), &st, h);
  free_msg(h);
  pass(NULL);

  /* A call that takes 2.5 s is in flight when the driver sends SIGTERM: the server says
   * GOAWAY, lets it finish, then closes the connection and exits, and the driver starts
   * another server on the port. */
  bg_call slow = {.ch = ch, .message = "in flight", .delay_ms = 2500};
  pthread_t tid;
  start_bg_call(&tid, &slow);
  struct timespec pause = {0, 300 * 1000000};
  nanosleep(&pause, NULL);
  wait_for_go("to stop the server");

  /* GOAWAY has come: this call waits for a connection while the old one drains. */
  begin("a call made while the server drains reaches the next server");
  /* Time for the drain, the next server's start and the backoff between attempts. */
  sg_call_options retry = {.timeout_ms = 20000, .retry = 1, .max_attempts = 1000};
  h = NULL;
  int64_t t0 = now_ms();
  WANT_OK("Health/Check", grpc_health_v1_health_check(ch, &hreq, &h, &retry, &st), &st, h);
  free_msg(h);
  int64_t took = now_ms() - t0;
  pthread_join(tid, NULL);
  pass("after %lld ms", (long long)took);

  begin("the call in flight during the drain finished OK");
  check_ok("UnaryCall", slow.code, &slow.st, "");
  pass(NULL);
  sg_channel_free(ch);
}

/* --- goaway: a call queued behind a GOAWAY ------------------------------------------------ */

/* The driver (a hand-written HTTP/2 peer) takes call A, says GOAWAY, and only after call B has
 * been made answers A and closes the connection, answer and close arriving together. B was
 * never sent on that connection: it must go out on a new one. */
static void cmd_goaway(const config *cfg) {
  sg_channel *ch = open_channel(cfg, NULL);
  bg_call a = {.ch = ch};
  pthread_t tid;
  start_bg_call(&tid, &a);
  wait_for_go("for the GOAWAY");

  begin("a call made after a GOAWAY goes out on a new connection");
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  Grpc__Health__V1__HealthCheckResponse *h = NULL;
  sg_call_options o = {.timeout_ms = 5000};
  sg_status st;
  int64_t t0 = now_ms();
  WANT_OK("Health/Check", grpc_health_v1_health_check(ch, &req, &h, &o, &st), &st, h);
  free_msg(h);
  pass("after %lld ms", (long long)(now_ms() - t0));

  begin("the call in flight at the GOAWAY finished OK");
  pthread_join(tid, NULL);
  check_ok("Health/Check", a.code, &a.st, "");
  pass(NULL);
  sg_channel_free(ch);
}

/* --- close: sg_channel_free with calls in flight ------------------------------------------- */

/* channel.h: sg_channel_free "ends every call in flight with CANCELLED". */
static void cmd_close(const config *cfg) {
  begin("sg_channel_free ends the calls in flight with CANCELLED");
  sg_channel *ch = open_channel(cfg, NULL);
  bg_call calls[4];
  pthread_t tid[4];
  for (int i = 0; i < 4; i++) {
    calls[i] = (bg_call){.ch = ch, .message = "never answered", .delay_ms = 5000, .code = -1};
    start_bg_call(&tid[i], &calls[i]);
  }
  struct timespec pause = {0, 300 * 1000000};
  nanosleep(&pause, NULL);
  sg_channel_free(ch);
  for (int i = 0; i < 4; i++)
    pthread_join(tid[i], NULL);
  for (int i = 0; i < 4; i++) {
    check_error("UnaryCall", calls[i].code, &calls[i].st, NULL, SG_STATUS_CANCELLED, NULL, NULL);
    if (calls[i].took_ms > 3000)
      fail("call %d ended after %lld ms, not when the channel was freed", i,
           (long long)calls[i].took_ms);
  }
  pass("\"%s\"", calls[0].st.message);
}

/* --- main ---------------------------------------------------------------------------------- */

static __attribute__((noreturn)) void usage(const char *why) {
  fprintf(stderr,
          "client_check: %s\n"
          "usage: client_check "
          "scenario|concurrency|deadline|restart|health|grpc-peer|testservice|drain|goaway|close\n"
          "  --target HOST:PORT [--key K] [--other-key K] [--org-id ID]\n"
          "  [--tls-ca F] [--server-name N] [--cert F --cert-key F]\n"
          "  [--threads N] [--calls N] [--timeout-ms N] [--expect CODE] [--contains TEXT]\n",
          why);
  exit(2);
}

static long parse_long(const char *s) {
  char *end;
  long v = strtol(s, &end, 10);
  if (*s == '\0' || *end != '\0' || v < 0)
    usage("not a number");
  return v;
}

static void parse(config *cfg, int argc, char **argv) {
  const struct {
    const char *flag;
    const char **text;
    long *number;
  } flags[] = {
      {"--target", &cfg->target, NULL},
      {"--key", &cfg->key, NULL},
      {"--other-key", &cfg->other_key, NULL},
      {"--org-id", &cfg->org_id, NULL},
      {"--tls-ca", &cfg->tls_ca, NULL},
      {"--server-name", &cfg->server_name, NULL},
      {"--cert", &cfg->cert, NULL},
      {"--cert-key", &cfg->cert_key, NULL},
      {"--expect", &cfg->expect, NULL},
      {"--contains", &cfg->contains, NULL},
      {"--threads", NULL, &cfg->threads},
      {"--calls", NULL, &cfg->calls},
      {"--timeout-ms", NULL, &cfg->timeout_ms},
  };
  for (int i = 2; i < argc; i += 2) {
    size_t f = 0;
    while (f < sizeof(flags) / sizeof(flags[0]) && strcmp(argv[i], flags[f].flag) != 0)
      f++;
    if (f == sizeof(flags) / sizeof(flags[0]) || i + 1 >= argc)
      usage(argv[i]);
    if (flags[f].text)
      *flags[f].text = argv[i + 1];
    else
      *flags[f].number = parse_long(argv[i + 1]);
  }
  if (cfg->target == NULL)
    usage("--target is required");
}

int main(int argc, char **argv) {
  if (argc < 2)
    usage("no command");
  /* Every setting comes from the command line: the channel's environment fallbacks would
   * otherwise give the no-key checks a key. */
  unsetenv("SEALGATE_ADDR");
  unsetenv("SEALGATE_API_KEY");
  unsetenv("SEALGATE_TLS");
  unsetenv("SEALGATE_TLS_CA");
  config cfg = {0};
  parse(&cfg, argc, argv);
  printf("libsealgate %s\n", sealgate_version());
  const char *cmd = argv[1];
  if (strcmp(cmd, "scenario") == 0)
    cmd_scenario(&cfg);
  else if (strcmp(cmd, "concurrency") == 0)
    cmd_concurrency(&cfg);
  else if (strcmp(cmd, "deadline") == 0)
    cmd_deadline(&cfg);
  else if (strcmp(cmd, "restart") == 0)
    cmd_restart(&cfg);
  else if (strcmp(cmd, "health") == 0)
    cmd_health(&cfg);
  else if (strcmp(cmd, "grpc-peer") == 0)
    cmd_grpc_peer(&cfg);
  else if (strcmp(cmd, "testservice") == 0)
    cmd_testservice(&cfg);
  else if (strcmp(cmd, "drain") == 0)
    cmd_drain(&cfg);
  else if (strcmp(cmd, "goaway") == 0)
    cmd_goaway(&cfg);
  else if (strcmp(cmd, "close") == 0)
    cmd_close(&cfg);
  else
    usage("unknown command");
  return 0;
}
