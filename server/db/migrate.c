#include "db/migrate.h"

#include <stdlib.h>
#include <string.h>

extern const unsigned char sg_migration_0001[];
extern const unsigned char sg_migration_0002[];
extern const unsigned char sg_migration_0003[];
extern const unsigned char sg_migration_0004[];

static const struct {
  int version;
  const char *name;
  const unsigned char *sql;
} migrations[] = {
    {1, "0001_init", sg_migration_0001},
    {2, "0002_sandboxes", sg_migration_0002},
    {3, "0003_audit", sg_migration_0003},
    {4, "0004_audit_changes", sg_migration_0004},
};

#define N_MIGRATIONS (sizeof(migrations) / sizeof(migrations[0]))

/* pg_advisory_lock key: "sealgate" in ASCII, so other applications' keys are unlikely. */
#define MIGRATE_LOCK "7308604897068083559"

int sg_schema_latest(void) {
  return migrations[N_MIGRATIONS - 1].version;
}

/* NOTICEs ("relation already exists, skipping") are not for the operator's terminal. */
static void quiet(void *arg, const char *message) {
  (void)arg;
  (void)message;
}

PGconn *sg_db_connect_blocking(const char *conninfo, char *err, size_t errlen) {
  const char *keys[] = {"dbname", "fallback_application_name", NULL};
  const char *values[] = {conninfo, "sealgate", NULL};
  PGconn *pg = PQconnectdbParams(keys, values, 1);
  if (pg != NULL && PQstatus(pg) == CONNECTION_OK) {
    PQsetNoticeProcessor(pg, quiet, NULL);
    return pg;
  }
  snprintf(err, errlen, "cannot connect to the database: %s",
           pg ? PQerrorMessage(pg) : "out of memory");
  err[strcspn(err, "\n")] = '\0';
  PQfinish(pg);
  return NULL;
}

PGconn *sg_db_connect_background(const char *conninfo, const char *app, char *err, size_t errlen) {
  const char *keys[] = {"dbname",
                        "fallback_application_name",
                        "connect_timeout",
                        "keepalives_idle",
                        "keepalives_interval",
                        "keepalives_count",
                        "tcp_user_timeout",
                        NULL};
  const char *values[] = {conninfo, app, "5", "5", "2", "2", "10000", NULL};
  PGconn *pg = PQconnectdbParams(keys, values, 1);
  if (pg != NULL && PQstatus(pg) == CONNECTION_OK) {
    PQsetNoticeProcessor(pg, quiet, NULL);
    return pg;
  }
  snprintf(err, errlen, "%s", pg ? PQerrorMessage(pg) : "out of memory");
  err[strcspn(err, "\n")] = '\0';
  PQfinish(pg);
  return NULL;
}

/* Runs |sql| (one or more statements); returns 0, or -1 with the server's message. */
static int run(PGconn *pg, const char *sql, const char *what, char *err, size_t errlen) {
  PGresult *res = PQexec(pg, sql);
  ExecStatusType st = PQresultStatus(res);
  int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
  if (!ok) {
    snprintf(err, errlen, "%s: %s", what, PQresultErrorMessage(res));
    err[strcspn(err, "\n")] = '\0';
  }
  PQclear(res);
  return ok ? 0 : -1;
}

int sg_schema_read(PGconn *pg, int *version, char *err, size_t errlen) {
  /* Two statements: PostgreSQL resolves every table a statement names before running any of
   * it, so one query cannot ask "does it exist, and if so what is in it". */
  PGresult *res = PQexec(pg, "SELECT to_regclass('sealgate_schema') IS NOT NULL");
  int ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
  int exists = ok && PQgetvalue(res, 0, 0)[0] == 't';
  if (ok && exists) {
    PQclear(res);
    res = PQexec(pg, "SELECT coalesce(max(version), 0) FROM sealgate_schema");
    ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
  }
  if (ok)
    *version = exists ? atoi(PQgetvalue(res, 0, 0)) : 0;
  else
    snprintf(err, errlen, "reading the schema version: %s", PQresultErrorMessage(res));
  PQclear(res);
  return ok ? 0 : -1;
}

static int migrate_locked(PGconn *pg, FILE *out, char *err, size_t errlen) {
  if (run(pg,
          "CREATE TABLE IF NOT EXISTS sealgate_schema (version integer PRIMARY KEY, "
          "applied_at timestamptz NOT NULL DEFAULT now())",
          "creating sealgate_schema", err, errlen) != 0)
    return -1;
  int current;
  if (sg_schema_read(pg, &current, err, errlen) != 0)
    return -1;
  if (current > sg_schema_latest()) {
    snprintf(err, errlen,
             "the database has schema version %d, newer than this sealgate knows (%d): "
             "upgrade sealgate",
             current, sg_schema_latest());
    return -1;
  }
  for (size_t i = 0; i < N_MIGRATIONS; i++) {
    if (migrations[i].version <= current)
      continue;
    char what[96], record[96];
    snprintf(what, sizeof(what), "migration %s", migrations[i].name);
    snprintf(record, sizeof(record), "INSERT INTO sealgate_schema (version) VALUES (%d)",
             migrations[i].version);
    if (run(pg, "BEGIN", what, err, errlen) != 0)
      return -1;
    if (run(pg, (const char *)migrations[i].sql, what, err, errlen) != 0 ||
        run(pg, record, what, err, errlen) != 0 || run(pg, "COMMIT", what, err, errlen) != 0) {
      PQclear(PQexec(pg, "ROLLBACK"));
      return -1;
    }
    fprintf(out, "applied migration %s\n", migrations[i].name);
  }
  if (current == sg_schema_latest())
    fprintf(out, "schema is up to date (version %d)\n", current);
  return 0;
}

int sg_migrate(PGconn *pg, FILE *out, char *err, size_t errlen) {
  if (run(pg, "SELECT pg_advisory_lock(" MIGRATE_LOCK ")", "taking the migration lock", err,
          errlen) != 0)
    return -1;
  int rv = migrate_locked(pg, out, err, errlen);
  PQclear(PQexec(pg, "SELECT pg_advisory_unlock(" MIGRATE_LOCK ")"));
  return rv;
}

int sg_schema_check(PGconn *pg, char *err, size_t errlen) {
  int version;
  if (sg_schema_read(pg, &version, err, errlen) != 0)
    return -1;
  if (version == sg_schema_latest())
    return 0;
  if (version < sg_schema_latest())
    snprintf(err, errlen,
             "the database has schema version %d, this sealgate needs %d: run `sealgate migrate "
             "--db ...` first",
             version, sg_schema_latest());
  else
    snprintf(err, errlen,
             "the database has schema version %d, newer than this sealgate knows (%d): "
             "upgrade sealgate",
             version, sg_schema_latest());
  return -1;
}
