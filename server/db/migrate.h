/* Versioned schema migrations (server/db/migrations/NNNN_*.sql, compiled into the binary).
 * `sealgate migrate` applies the pending ones, each in its own transaction, under an advisory
 * lock so that concurrent runs (several nodes starting at once) take turns; running it again
 * changes nothing. `sealgate serve` refuses a database whose version is not exactly its own.
 * These functions block: they are for the command line and start-up, never for a loop. */
#ifndef SG_DB_MIGRATE_H
#define SG_DB_MIGRATE_H

#include <stddef.h>
#include <stdio.h>

#include <libpq-fe.h>

/* The schema version this binary was built for (its newest migration). */
int sg_schema_latest(void);

/* Connects, blocking. Returns the connection, or NULL with libpq's message in |err|. */
PGconn *sg_db_connect_blocking(const char *conninfo, char *err, size_t errlen);

/* Connects, blocking, for a thread of its own that holds the connection for long
 * (db/notify.c, db/audit_writer.c): |app| names it in pg_stat_activity, connecting gives up
 * after 5 s per host, and TCP keepalives plus a user timeout notice a peer that vanished (a
 * failover, a cut cable) within about 10 s, also in the middle of a query. Returns the
 * connection, or NULL with libpq's message (first line) in |err|. */
PGconn *sg_db_connect_background(const char *conninfo, const char *app, char *err, size_t errlen);

/* Reads the database's schema version into |*version| (0 if sealgate never migrated it).
 * Returns 0, or -1 with a message in |err|. */
int sg_schema_read(PGconn *pg, int *version, char *err, size_t errlen);

/* Applies every pending migration, telling |out| about each. Returns 0, or -1 with a message
 * in |err| (a migration failed and was rolled back, or the database is newer than this
 * binary). */
int sg_migrate(PGconn *pg, FILE *out, char *err, size_t errlen);

/* Start-up check for `serve`: returns 0 if the schema is this binary's version, else -1 with
 * a message saying what to do. */
int sg_schema_check(PGconn *pg, char *err, size_t errlen);

#endif
