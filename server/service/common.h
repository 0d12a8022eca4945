/* Helpers every sealgate.v1 handler uses: turning a database result into a gRPC status, and
 * reading rows into messages. */
#ifndef SG_SERVICE_COMMON_H
#define SG_SERVICE_COMMON_H

#include <libpq-fe.h>

#include "rpc/call.h"

/* Returns 1 if |res| is a successful result. Otherwise finishes |call| and returns 0:
 * UNAVAILABLE when the database could not be reached (|res| NULL), NOT_FOUND with |not_found|
 * for a malformed id (SQLSTATE 22P02: "no such id" to the client, as for any unknown id),
 * ALREADY_EXISTS with |already_exists| for a unique violation (23505) when it is not NULL, and
 * INTERNAL ("database error", details only in the server's log) for anything else. */
int sg_db_check(sg_call *call, PGresult *res, const char *not_found, const char *already_exists);

/* A text column of row |row|, copied into the call's arena ("" for NULL). */
char *sg_col(sg_call *call, const PGresult *res, int row, int col);

/* A text[] column, as strings in the call's arena. Returns 0, or -1 (finishing the call with
 * INTERNAL) if the database sent something that is not an array. */
int sg_col_array(sg_call *call, const PGresult *res, int row, int col, char ***items, size_t *n);

#endif
