/* Helpers every sealgate.v1 handler uses: turning a database result into a gRPC status, and
 * reading rows into messages. */
#ifndef SG_SERVICE_COMMON_H
#define SG_SERVICE_COMMON_H

#include <libpq-fe.h>

#include "db/pool.h"
#include "rpc/call.h"

#define SG_OP_ERR_LEN    256
#define SG_OP_MAX_PARAMS 10

/* The state of one RPC between its database round trips, in the call's arena: the call, its
 * request, the caller's organization once authenticated, the parameters of the statement in
 * flight, and room for a validator's message. A handler that needs more embeds it first. */
typedef struct {
  sg_call *call;
  const ProtobufCMessage *req;
  const char *org;
  const char *values[SG_OP_MAX_PARAMS];
  int lengths[SG_OP_MAX_PARAMS], formats[SG_OP_MAX_PARAMS];
  char err[SG_OP_ERR_LEN];
} sg_op;

/* Allocates a zeroed struct of |size| bytes that begins with an sg_op, in the call's arena. */
void *sg_op_new(sg_call *call, const ProtobufCMessage *req, size_t size);

/* Finishes the call with INVALID_ARGUMENT and the message a validator left in o->err. */
void sg_op_invalid(sg_op *o);

/* The first step of most calls on one store: checks |store_id| (and |name| as a secret name
 * when it is not NULL), then runs |stmt| with $1 = store_id, $2 = the caller's organization
 * and $3 = name. Finishes the call with INVALID_ARGUMENT on a bad argument. */
void sg_op_exec_on_store(sg_op *o, const char *store_id, const char *name, int stmt, sg_db_cb cb);

/* For a statement that returns the row it changed: replies google.protobuf.Empty, or
 * NOT_FOUND with |missing| when no row was touched. */
void sg_op_reply_empty(sg_op *o, PGresult *res, const char *missing);

/* Returns 1 if |res| is a successful result. Otherwise finishes |call| and returns 0:
 * UNAVAILABLE when the database could not be reached (|res| NULL), NOT_FOUND with |not_found|
 * for a malformed id (SQLSTATE 22P02: "no such id" to the client, as for any unknown id),
 * ALREADY_EXISTS with |already_exists| for a unique violation (23505) when it is not NULL, and
 * INTERNAL ("database error", details only in the server's log) for anything else. */
int sg_db_check(sg_call *call, PGresult *res, const char *not_found, const char *already_exists);

/* Nonzero if |res| is a successful result with at least one row: a statement that returns
 * the rows it changed changed something. */
int sg_db_changed(const PGresult *res);

/* A text column of row |row|, copied into the call's arena ("" for NULL). */
char *sg_col(sg_call *call, const PGresult *res, int row, int col);

/* A text[] column, as strings in the call's arena. Returns 0, or -1 (finishing the call with
 * INTERNAL) if the database sent something that is not an array. */
int sg_col_array(sg_call *call, const PGresult *res, int row, int col, char ***items, size_t *n);

/* Keyset pagination over (created_at, id). A page token is base64 of "1|<created_at with
 * microseconds>|<id>" of the last row returned; the next page starts strictly after it, so
 * rows added meanwhile neither repeat nor push others out. |key| is the row's created_at as
 * "YYYY-MM-DD HH:MM:SS.ffffff". */
char *sg_page_token_make(sg_op *o, const char *key, const char *id);

/* Reads |token| ("" for the first page) into o->values[1] (created_at) and o->values[2] (id).
 * Returns 0, or -1 with a message naming page_token in o->err. */
int sg_page_token_parse(sg_op *o, const char *token);

/* The parameters of a keyset-paginated list: checks page_size and page_token, then sets $1 =
 * the caller's organization (o->org), $2 and $3 = where the page starts, $4 = one row more
 * than the page (to know whether another follows). Returns 0, or -1 after finishing the call
 * with INVALID_ARGUMENT. */
int sg_page_params(sg_op *o, int32_t page_size, const char *page_token);

/* Like sg_db_check for a list's result, and a page token that passed the shape checks but
 * names no real instant (February 30th: the database's data-exception class 22) is
 * INVALID_ARGUMENT. */
int sg_page_check(sg_op *o, PGresult *res);

#endif
