#include "service/common.h"

#include <string.h>

#include "core/log.h"
#include "db/pgtext.h"
#include "db/pool.h"
#include "google/protobuf/empty.pb-c.h"
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
