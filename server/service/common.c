#include "service/common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "crypto/token.h"
#include "db/pgtext.h"
#include "db/pool.h"
#include "google/protobuf/empty.pb-c.h"
#include "rpc/b64.h"
#include "service/validate.h"

int sg_db_check(sg_call *call, PGresult *res, const char *not_found, const char *already_exists) {
  if (res == NULL) {
    sg_call_finish(call, SG_STATUS_UNAVAILABLE, "database unavailable; retry later");
    return 0;
  }
  ExecStatusType st = PQresultStatus(res);
  if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
    return 1;
  const char *state = sg_db_sqlstate(res);
  if (strcmp(state, "22P02") == 0 && not_found != NULL) {
    sg_call_finish(call, SG_STATUS_NOT_FOUND, "%s", not_found);
    return 0;
  }
  if (strcmp(state, "23505") == 0 && already_exists != NULL) {
    sg_call_finish(call, SG_STATUS_ALREADY_EXISTS, "%s", already_exists);
    return 0;
  }
  /* The primary message names the constraint or the problem, never row values (those are in
   * DETAIL, which is not logged). */
  const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
  sg_log_begin(SG_LOG_ERROR, "db_error");
  sg_log_cstr("method", sg_call_path(call));
  sg_log_cstr("sqlstate", state);
  sg_log_cstr("error", primary ? primary : "");
  sg_log_end();
  /* A connection lost mid-query, a failover, a statement timeout: worth a retry. */
  if (strncmp(state, "08", 2) == 0 || strncmp(state, "57", 2) == 0 ||
      strcmp(state, "25006") == 0 /* read-only transaction: we reached a standby */)
    sg_call_finish(call, SG_STATUS_UNAVAILABLE, "database unavailable; retry later");
  else
    sg_call_finish(call, SG_STATUS_INTERNAL, "database error");
  return 0;
}

int sg_db_changed(const PGresult *res) {
  return res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0;
}

char *sg_col(sg_call *call, const PGresult *res, int row, int col) {
  const char *v = PQgetisnull(res, row, col) ? "" : PQgetvalue(res, row, col);
  return sg_arena_strndup(sg_call_arena(call), v, strlen(v));
}

int sg_col_array(sg_call *call, const PGresult *res, int row, int col, char ***items, size_t *n) {
  if (PQgetisnull(res, row, col)) {
    *items = NULL;
    *n = 0;
    return 0;
  }
  if (sg_pg_array_parse(sg_call_arena(call), PQgetvalue(res, row, col), items, n) != 0) {
    sg_call_finish(call, SG_STATUS_INTERNAL, "database error");
    return -1;
  }
  return 0;
}

void *sg_op_new(sg_call *call, const ProtobufCMessage *req, size_t size) {
  sg_op *o = sg_arena_zalloc(sg_call_arena(call), size);
  o->call = call;
  o->req = req;
  return o;
}

void sg_op_invalid(sg_op *o) {
  sg_call_finish(o->call, SG_STATUS_INVALID_ARGUMENT, "%s", o->err);
}

void sg_op_exec_on_store(sg_op *o, const char *store_id, const char *name, int stmt, sg_db_cb cb) {
  if (sg_validate_id("store_id", store_id, o->err, sizeof(o->err)) != 0 ||
      (name != NULL && sg_validate_secret_name("name", name, o->err, sizeof(o->err)) != 0)) {
    sg_op_invalid(o);
    return;
  }
  o->values[0] = store_id;
  o->values[1] = o->org;
  o->values[2] = name;
  sg_db_exec(sg_db_local(), stmt, o->values, NULL, NULL, cb, o);
}

void sg_op_reply_empty(sg_op *o, PGresult *res, const char *missing) {
  if (!sg_db_check(o->call, res, missing, NULL))
    return;
  if (PQntuples(res) == 0) {
    sg_call_finish(o->call, SG_STATUS_NOT_FOUND, "%s", missing);
    return;
  }
  Google__Protobuf__Empty empty = GOOGLE__PROTOBUF__EMPTY__INIT;
  sg_call_reply(o->call, &empty.base);
}

/* --- Page tokens (common.h) --- */

#define TOKEN_TAG "1|"

char *sg_page_token_make(sg_op *o, const char *key, const char *id) {
  char raw[160];
  int n = snprintf(raw, sizeof(raw), TOKEN_TAG "%s|%s", key, id);
  char *out = sg_arena_alloc(sg_call_arena(o->call), SG_B64_ENCODED_CAP((size_t)n));
  sg_b64_encode((const uint8_t *)raw, (size_t)n, out);
  return out;
}

/* Exactly "YYYY-MM-DD HH:MM:SS.ffffff" with every field in its range. */
static int token_time_ok(const char *t) {
  static const char shape[] = "dddd-dd-dd dd:dd:dd.dddddd";
  if (strlen(t) != sizeof(shape) - 1)
    return 0;
  for (size_t i = 0; shape[i]; i++)
    if (shape[i] == 'd' ? (t[i] < '0' || t[i] > '9') : t[i] != shape[i])
      return 0;
  int month = atoi(t + 5), day = atoi(t + 8), hour = atoi(t + 11), minute = atoi(t + 14),
      second = atoi(t + 17);
  return month >= 1 && month <= 12 && day >= 1 && day <= 31 && hour <= 23 && minute <= 59 &&
         second <= 59;
}

int sg_page_token_parse(sg_op *o, const char *token) {
  size_t len = strlen(token);
  if (len == 0) {
    o->values[1] = "-infinity";
    o->values[2] = "00000000-0000-0000-0000-000000000000";
    return 0;
  }
  uint8_t *raw = sg_arena_alloc(sg_call_arena(o->call), len / 4 * 3 + 3);
  size_t n;
  char *bar;
  if (len > 200 || sg_b64_decode(token, len, raw, &n) != 0)
    goto bad;
  raw[n] = '\0';
  if (strncmp((char *)raw, TOKEN_TAG, 2) != 0 || (bar = strchr((char *)raw + 2, '|')) == NULL)
    goto bad;
  *bar = '\0';
  o->values[1] = (char *)raw + 2;
  o->values[2] = bar + 1;
  if (!token_time_ok(o->values[1]) || !sg_uuid_is_canonical(o->values[2]))
    goto bad;
  return 0;
bad:
  snprintf(o->err, sizeof(o->err), "page_token: not a token this API returned");
  return -1;
}

int sg_page_params(sg_op *o, int32_t page_size, const char *page_token) {
  int32_t size;
  if (sg_validate_page_size("page_size", page_size, &size, o->err, sizeof(o->err)) != 0 ||
      sg_page_token_parse(o, page_token) != 0) {
    sg_op_invalid(o);
    return -1;
  }
  o->values[0] = o->org;
  o->values[3] = sg_arena_printf(sg_call_arena(o->call), "%d", size + 1);
  return 0;
}

int sg_page_check(sg_op *o, PGresult *res) {
  if (res != NULL && strncmp(sg_db_sqlstate(res), "22", 2) == 0) {
    sg_call_finish(o->call, SG_STATUS_INVALID_ARGUMENT,
                   "page_token: not a token this API returned");
    return 0;
  }
  return sg_db_check(o->call, res, NULL, NULL);
}
