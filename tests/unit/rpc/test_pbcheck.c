/* The wire-level string check that runs before protobuf-c unpacks a request. */
#include <criterion/criterion.h>
#include <string.h>

#include "rpc/pbcheck.h"
#include "sealgate/v1/sandbox.pb-c.h"
#include "sealgate/v1/secret_store.pb-c.h"

static char where[96];

static int check_store(const char *name, char **hosts, size_t n_hosts) {
  Sealgate__V1__CreateSecretStoreRequest req = SEALGATE__V1__CREATE_SECRET_STORE_REQUEST__INIT;
  req.name = (char *)name;
  req.egress_allowlist = hosts;
  req.n_egress_allowlist = n_hosts;
  uint8_t buf[512];
  size_t len = protobuf_c_message_pack(&req.base, buf);
  return sg_pb_check_strings(&sealgate__v1__create_secret_store_request__descriptor, buf, len,
                             where, sizeof(where));
}

/* Packs a message whose first string field is |name| of |n| bytes (NULs allowed), by hand. */
static size_t raw_field(uint8_t *buf, unsigned field, const char *bytes, size_t n) {
  buf[0] = (uint8_t)(field << 3 | 2);
  buf[1] = (uint8_t)n;
  memcpy(buf + 2, bytes, n);
  return n + 2;
}

Test(pbcheck, plain_utf8_strings_pass) {
  char *hosts[] = {"api.anthropic.com", "*.openai.com"};
  cr_assert_eq(check_store("caf\xc3\xa9 \xe2\x98\xba \xf0\x9f\x98\x88", hosts, 2), 0);
}

Test(pbcheck, a_nul_in_a_string_field_is_refused_with_its_name) {
  uint8_t buf[32];
  size_t len = raw_field(buf, 1, "ab\0cd", 5);
  cr_assert_eq(sg_pb_check_strings(&sealgate__v1__create_secret_store_request__descriptor, buf, len,
                                   where, sizeof(where)),
               -1);
  cr_assert_str_eq(where, "name");
}

Test(pbcheck, a_repeated_field_is_named_with_the_index_of_the_bad_element) {
  uint8_t buf[64];
  size_t len = raw_field(buf, 2, "a.com", 5);
  len += raw_field(buf + len, 2, "b.com", 5);
  len += raw_field(buf + len, 2, "c\0.com", 6);
  cr_assert_eq(sg_pb_check_strings(&sealgate__v1__create_secret_store_request__descriptor, buf, len,
                                   where, sizeof(where)),
               -1);
  cr_assert_str_eq(where, "egress_allowlist[2]");
}

Test(pbcheck, invalid_utf8_is_refused) {
  const char *bad[] = {"\xc3",
                       "\xc3\x28",
                       "\xe2\x82",
                       "\xc0\xaf" /* overlong */,
                       "\xed\xa0\x80" /* surrogate */,
                       "\xf4\x90\x80\x80" /* > U+10FFFF */,
                       "\xff"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    uint8_t buf[32];
    size_t len = raw_field(buf, 1, bad[i], strlen(bad[i]));
    cr_assert_eq(sg_pb_check_strings(&sealgate__v1__create_secret_store_request__descriptor, buf,
                                     len, where, sizeof(where)),
                 -1, "accepted case %zu", i);
  }
}

Test(pbcheck, strings_inside_nested_messages_and_maps_are_checked) {
  /* CreateSandboxRequest.env is a map<string,string>: entries are nested messages. */
  uint8_t entry[32], buf[64];
  size_t elen = raw_field(entry, 1, "KEY", 3);
  elen += raw_field(entry + elen, 2, "v\0x", 3);
  buf[0] = 4 << 3 | 2;
  buf[1] = (uint8_t)elen;
  memcpy(buf + 2, entry, elen);
  cr_assert_eq(sg_pb_check_strings(&sealgate__v1__create_sandbox_request__descriptor, buf, elen + 2,
                                   where, sizeof(where)),
               -1);
  cr_assert_str_eq(where, "env[0].value");
}

Test(pbcheck, unknown_fields_are_not_judged) {
  /* Field 9 is not in CreateSnapshotRequest: its bytes are nobody's string. */
  uint8_t buf[32];
  size_t len = raw_field(buf, 9, "\0\xff\0", 3);
  cr_assert_eq(sg_pb_check_strings(&sealgate__v1__create_snapshot_request__descriptor, buf, len,
                                   where, sizeof(where)),
               0);
}

Test(pbcheck, malformed_wire_data_is_left_to_protobuf_c) {
  uint8_t buf[] = {1 << 3 | 2, 50, 'a'}; /* length past the end */
  cr_assert_eq(sg_pb_check_strings(&sealgate__v1__create_secret_store_request__descriptor, buf,
                                   sizeof(buf), where, sizeof(where)),
               0);
}
