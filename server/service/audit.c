/* sealgate.v1.AuditService (SPEC §2, §5): the egress proxy's decisions and the management
 * calls that changed something (service/change.h), in one trail. */
#include "service/audit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "db/pool.h"
#include "sealgate/v1/audit.pb-c.h"
#include "service/auth.h"
#include "service/common.h"
#include "service/queries.h"
#include "service/validate.h"

typedef Sealgate__V1__ListAuditEventsRequest list_request;

/* Fills |e| from row |row| of a result with AUDIT_* columns. */
static void event_from_row(sg_op *o, const PGresult *res, int row, Sealgate__V1__AuditEvent *e) {
  sealgate__v1__audit_event__init(e);
  e->id = sg_col(o->call, res, row, AUDIT_ID);
  e->time = sg_col(o->call, res, row, AUDIT_TIME);
  e->sandbox_id = sg_col(o->call, res, row, AUDIT_SANDBOX);
  e->store_id = sg_col(o->call, res, row, AUDIT_STORE);
  e->secret_name = sg_col(o->call, res, row, AUDIT_SECRET_NAME);
  e->secret_version = strtoull(PQgetvalue(res, row, AUDIT_SECRET_VERSION), NULL, 10);
  e->host = sg_col(o->call, res, row, AUDIT_HOST);
  e->method = sg_col(o->call, res, row, AUDIT_METHOD);
  e->path = sg_col(o->call, res, row, AUDIT_PATH);
  e->decision = sg_col(o->call, res, row, AUDIT_DECISION);
  e->reason = sg_col(o->call, res, row, AUDIT_REASON);
  e->actor = sg_col(o->call, res, row, AUDIT_ACTOR);
  e->action = sg_col(o->call, res, row, AUDIT_ACTION);
  e->actor_key_id = sg_col(o->call, res, row, AUDIT_ACTOR_KEY);
  e->resource = sg_col(o->call, res, row, AUDIT_RESOURCE);
}

static void listed(void *arg, PGresult *res) {
  sg_op *o = arg;
  if (!sg_page_check(o, res))
    return;
  const list_request *req = (const void *)o->req;
  int32_t page_size;
  sg_validate_page_size("page_size", req->page_size, &page_size, o->err, sizeof(o->err));
  int rows = PQntuples(res), shown = rows > page_size ? page_size : rows;
  Sealgate__V1__ListAuditEventsResponse out = SEALGATE__V1__LIST_AUDIT_EVENTS_RESPONSE__INIT;
  sg_arena *a = sg_call_arena(o->call);
  out.events = sg_arena_alloc(a, (size_t)shown * sizeof(*out.events));
  for (int i = 0; i < shown; i++) {
    Sealgate__V1__AuditEvent *e = sg_arena_alloc(a, sizeof(*e));
    event_from_row(o, res, i, e);
    out.events[out.n_events++] = e;
  }
  /* One row more than the page asked for means there is a next page. */
  if (rows > shown)
    out.next_page_token = sg_page_token_make(o, PQgetvalue(res, shown - 1, AUDIT_PAGE_KEY),
                                             PQgetvalue(res, shown - 1, AUDIT_ID));
  sg_call_reply(o->call, &out.base);
}

/* Checks the filters, each optional ("" for none), and sets |*by| to the AUDIT_BY_* bits of
 * those given. Returns 0, or -1 with a message naming the field in o->err. */
static int read_filters(sg_op *o, const list_request *req, int *by) {
  char *err = o->err;
  size_t len = sizeof(o->err);
  *by = 0;
  if (req->sandbox_id[0] != '\0') {
    if (sg_validate_uuid("sandbox_id", req->sandbox_id, err, len) != 0)
      return -1;
    *by |= AUDIT_BY_SANDBOX;
  }
  if (req->store_id[0] != '\0') {
    if (sg_validate_uuid("store_id", req->store_id, err, len) != 0)
      return -1;
    *by |= AUDIT_BY_STORE;
  }
  if (req->secret_name[0] != '\0') {
    if (sg_validate_secret_name("secret_name", req->secret_name, err, len) != 0)
      return -1;
    *by |= AUDIT_BY_SECRET;
  }
  if (req->since[0] != '\0' && sg_validate_time("since", req->since, err, len) != 0)
    return -1;
  /* Proxy decisions by default: a client written before management events existed sees
   * only the decisions it knows (SPEC §2). */
  if (req->kind[0] == '\0' || strcmp(req->kind, "proxy") == 0)
    *by += AUDIT_proxy * AUDIT_KIND_STRIDE;
  else if (strcmp(req->kind, "management") == 0)
    *by += AUDIT_mgmt * AUDIT_KIND_STRIDE;
  else if (strcmp(req->kind, "all") == 0)
    *by += AUDIT_all * AUDIT_KIND_STRIDE;
  else {
    snprintf(err, len, "kind: must be \"proxy\" (or empty), \"management\" or \"all\"");
    return -1;
  }
  return 0;
}

static void list_authed(sg_call *call, void *arg, const char *org) {
  (void)call;
  sg_op *o = arg;
  const list_request *req = (const void *)o->req;
  o->org = org;
  int by;
  if (read_filters(o, req, &by) != 0) {
    sg_op_invalid(o);
    return;
  }
  if (sg_page_params(o, req->page_size, req->page_token) != 0)
    return;
  o->values[4] = req->sandbox_id;
  o->values[5] = req->store_id;
  o->values[6] = req->secret_name;
  o->values[7] = req->since[0] != '\0' ? req->since : "-infinity";
  sg_db_exec(sg_db_local(), Q_AUDIT_LIST + by, o->values, NULL, NULL, listed, o);
}

static void list_events(sg_call *call, const ProtobufCMessage *req) {
  sg_auth(call, list_authed, sg_op_new(call, req, sizeof(sg_op)));
}

static const sg_method_impl methods[] = {
    {"ListAuditEvents", SG_METHOD_UNARY, list_events, NULL},
};

const sg_service sg_audit_service = {&sealgate__v1__audit_service__descriptor, methods,
                                     SG_ARRAY_LEN(methods), NULL};
