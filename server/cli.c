#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>
#include <openssl/crypto.h>

#include "core/flags.h"
#include "core/mem.h"
#include "crypto/apikey.h"
#include "crypto/keys.h"
#include "db/migrate.h"
#include "db/pgtext.h"

/* Parses |argv| against |flags|; prints usage on --help. Returns -1 to go on, else the exit
 * status to return. */
static int parse(const char *usage, const sg_flag *flags, size_t n, int argc, char **argv,
                 sg_positionals *pos, size_t want_pos) {
  char err[512];
  int rv = sg_flags_parse(flags, n, argc, argv, pos, err, sizeof(err));
  if (rv == SG_FLAGS_HELP) {
    printf("usage: %s\n\nflags:\n", usage);
    sg_flags_usage(stdout, flags, n);
    return 0;
  }
  if (rv != SG_FLAGS_OK) {
    fprintf(stderr, "sealgate: %s\nusage: %s\n", err, usage);
    return 2;
  }
  if (pos != NULL && pos->n != want_pos) {
    fprintf(stderr, "sealgate: expected %zu argument%s\nusage: %s\n", want_pos,
            want_pos == 1 ? "" : "s", usage);
    return 2;
  }
  return -1;
}

static PGconn *connect_or_say(const char *db) {
  char err[512];
  if (db == NULL) {
    fprintf(stderr, "sealgate: --db is required (a PostgreSQL connection string)\n");
    return NULL;
  }
  PGconn *pg = sg_db_connect_blocking(db, err, sizeof(err));
  if (pg == NULL)
    fprintf(stderr, "sealgate: %s\n", err);
  return pg;
}

/* Runs a parameterized statement; returns the result, or NULL after printing the error. */
static PGresult *query(PGconn *pg, const char *sql, int n, const char *const *values,
                       const int *lengths, const int *formats) {
  PGresult *res = PQexecParams(pg, sql, n, NULL, values, lengths, formats, 0);
  ExecStatusType st = PQresultStatus(res);
  if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
    return res;
  fprintf(stderr, "sealgate: database error: %s", PQresultErrorMessage(res));
  PQclear(res);
  return NULL;
}

/* --- migrate ------------------------------------------------------------------------------- */

int sg_cli_migrate(int argc, char **argv) {
  const char *db = NULL;
  const sg_flag flags[] = {{"db", SG_FLAG_STR, &db, 0, 0, "CONNINFO", "PostgreSQL connection"}};
  int rv = parse("sealgate migrate --db CONNINFO", flags, 1, argc, argv, NULL, 0);
  if (rv >= 0)
    return rv;
  PGconn *pg = connect_or_say(db);
  if (pg == NULL)
    return 1;
  char err[512];
  rv = sg_migrate(pg, stdout, err, sizeof(err));
  PQfinish(pg);
  if (rv != 0) {
    fprintf(stderr, "sealgate: %s\n", err);
    return 1;
  }
  return 0;
}

/* --- admin --------------------------------------------------------------------------------- */

/* Creates an API key for |org_id| and prints it (once: only its digest is stored). */
static int issue_key(PGconn *pg, const char *org_id, const char *org_name, int json) {
  char key[SG_API_KEY_LEN + 1], prefix[SG_API_KEY_SHOWN + 1];
  uint8_t digest[SG_API_DIGEST_LEN];
  if (sg_api_key_generate(key) != 0) {
    fprintf(stderr, "sealgate: no randomness for a key\n");
    return 1;
  }
  sg_api_key_digest(key, SG_API_KEY_LEN, digest);
  memcpy(prefix, key, SG_API_KEY_SHOWN);
  prefix[SG_API_KEY_SHOWN] = '\0';
  const char *values[] = {org_id, (const char *)digest, prefix};
  const int lengths[] = {0, SG_API_DIGEST_LEN, 0}, formats[] = {0, 1, 0};
  PGresult *res = query(pg, "INSERT INTO api_keys (org_id, digest, prefix) VALUES ($1, $2, $3)", 3,
                        values, lengths, formats);
  if (res == NULL) {
    OPENSSL_cleanse(key, sizeof(key));
    return 1;
  }
  PQclear(res);
  if (json)
    printf("{\"org_id\": \"%s\", \"api_key\": \"%s\"}\n", org_id, key);
  else if (org_name != NULL)
    printf("organization %s (%s)\napi key: %s\n(shown once: keep it now; sealgate stores only "
           "its digest)\n",
           org_id, org_name, key);
  else
    printf("api key: %s\n(shown once: keep it now; sealgate stores only its digest)\n", key);
  OPENSSL_cleanse(key, sizeof(key));
  return 0;
}

static int create_org(int argc, char **argv) {
  const char *db = NULL;
  int json = 0;
  sg_positionals pos = {0};
  const sg_flag flags[] = {
      {"db", SG_FLAG_STR, &db, 0, 0, "CONNINFO", "PostgreSQL connection"},
      {"json", SG_FLAG_BOOL, &json, 0, 0, NULL, "print {\"org_id\": ..., \"api_key\": ...}"},
  };
  int rv =
      parse("sealgate admin create-org NAME --db CONNINFO [--json]", flags, 2, argc, argv, &pos, 1);
  if (rv >= 0)
    return rv;
  const char *name = pos.args[0];
  size_t len = strlen(name);
  if (len == 0 || len > 128) {
    fprintf(stderr, "sealgate: NAME: must be 1-128 characters\n");
    return 2;
  }
  PGconn *pg = connect_or_say(db);
  if (pg == NULL)
    return 1;
  const char *values[] = {name};
  PGresult *res =
      query(pg, "INSERT INTO organizations (name) VALUES ($1) RETURNING id", 1, values, NULL, NULL);
  rv = 1;
  if (res != NULL) {
    rv = issue_key(pg, PQgetvalue(res, 0, 0), name, json);
    PQclear(res);
  }
  PQfinish(pg);
  free(pos.args);
  return rv;
}

static int create_api_key(int argc, char **argv) {
  const char *db = NULL;
  int json = 0;
  sg_positionals pos = {0};
  const sg_flag flags[] = {
      {"db", SG_FLAG_STR, &db, 0, 0, "CONNINFO", "PostgreSQL connection"},
      {"json", SG_FLAG_BOOL, &json, 0, 0, NULL, "print {\"org_id\": ..., \"api_key\": ...}"},
  };
  int rv = parse("sealgate admin create-api-key ORG_ID --db CONNINFO [--json]", flags, 2, argc,
                 argv, &pos, 1);
  if (rv >= 0)
    return rv;
  PGconn *pg = connect_or_say(db);
  if (pg == NULL)
    return 1;
  const char *values[] = {pos.args[0]};
  PGresult *res = PQexecParams(pg, "SELECT id FROM organizations WHERE id::text = lower($1)", 1,
                               NULL, values, NULL, NULL, 0);
  if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
    fprintf(stderr, "sealgate: no organization with id %s\n", pos.args[0]);
    rv = 1;
  } else {
    rv = issue_key(pg, PQgetvalue(res, 0, 0), NULL, json);
  }
  PQclear(res);
  PQfinish(pg);
  free(pos.args);
  return rv;
}

/* Revokes by the prefix an operator sees ("osk_" + 8) or by the whole key. */
static int revoke_api_key(int argc, char **argv) {
  const char *db = NULL;
  sg_positionals pos = {0};
  const sg_flag flags[] = {{"db", SG_FLAG_STR, &db, 0, 0, "CONNINFO", "PostgreSQL connection"}};
  int rv = parse("sealgate admin revoke-api-key KEY_PREFIX --db CONNINFO", flags, 1, argc, argv,
                 &pos, 1);
  if (rv >= 0)
    return rv;
  const char *arg = pos.args[0];
  size_t len = strlen(arg);
  if (len != SG_API_KEY_SHOWN && sg_api_key_check(arg, len) != 0) {
    fprintf(stderr,
            "sealgate: KEY_PREFIX: give the %d-character prefix sealgate showed "
            "(osk_ and 8 more) or the whole key\n",
            SG_API_KEY_SHOWN);
    free(pos.args);
    return 2;
  }
  PGconn *pg = connect_or_say(db);
  if (pg == NULL) {
    free(pos.args);
    return 1;
  }
  PGresult *res;
  if (len == SG_API_KEY_SHOWN) {
    const char *values[] = {arg};
    /* A prefix that names more than one key revokes none: ask for the whole key. */
    res = query(pg,
                "WITH k AS (SELECT id FROM api_keys WHERE prefix = $1 AND revoked_at IS NULL) "
                "UPDATE api_keys SET revoked_at = clock_timestamp() "
                "WHERE id IN (SELECT id FROM k) AND (SELECT count(*) FROM k) = 1 RETURNING id",
                1, values, NULL, NULL);
  } else {
    uint8_t digest[SG_API_DIGEST_LEN];
    sg_api_key_digest(arg, len, digest);
    const char *values[] = {(const char *)digest};
    const int lengths[] = {SG_API_DIGEST_LEN}, formats[] = {1};
    res = query(pg,
                "UPDATE api_keys SET revoked_at = clock_timestamp() "
                "WHERE digest = $1 AND revoked_at IS NULL RETURNING id",
                1, values, lengths, formats);
  }
  rv = 1;
  if (res != NULL && PQntuples(res) == 1) {
    printf("revoked api key %.*s... (stops working on every node within %d seconds)\n",
           SG_API_KEY_SHOWN, arg, 5);
    rv = 0;
  } else if (res != NULL) {
    fprintf(stderr,
            "sealgate: no single active key matches %.*s (unknown, already revoked, or the "
            "prefix is shared: give the whole key)\n",
            SG_API_KEY_SHOWN, arg);
  }
  PQclear(res);
  PQfinish(pg);
  free(pos.args);
  return rv;
}

int sg_cli_admin(int argc, char **argv) {
  static const char usage[] =
      "usage: sealgate admin COMMAND [flags]\n\n"
      "commands:\n"
      "  create-org NAME --db CONNINFO [--json]    a new organization and its first API key\n"
      "  create-api-key ORG_ID --db CONNINFO        another API key for an organization\n"
      "  revoke-api-key KEY_PREFIX --db CONNINFO    revoke a key by its shown prefix\n";
  if (argc < 1 || strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0) {
    fputs(usage, argc < 1 ? stderr : stdout);
    return argc < 1 ? 2 : 0;
  }
  if (strcmp(argv[0], "create-org") == 0)
    return create_org(argc - 1, argv + 1);
  if (strcmp(argv[0], "create-api-key") == 0)
    return create_api_key(argc - 1, argv + 1);
  if (strcmp(argv[0], "revoke-api-key") == 0)
    return revoke_api_key(argc - 1, argv + 1);
  fprintf(stderr, "sealgate: unknown admin command \"%s\"\n\n%s", argv[0], usage);
  return 2;
}

/* --- rotate-root-key ----------------------------------------------------------------------- */

/* Wraps every organization's data key for the new root key too. Each organization is its own
 * statement, so the job can be stopped at any point and run again: it picks up the
 * organizations still missing a new wrapping. Nodes keep serving throughout: each reads the
 * wrapping of its own root key. */
static int rewrap(PGconn *pg, const sg_root_key *old, const sg_root_key *new_key,
                  long long max_orgs, long long *done) {
  const char *sel[] = {old->id, new_key->id};
  for (;;) {
    PGresult *res =
        query(pg,
              "SELECT k.org_id, k.dek_id, k.wrapped FROM org_keys k WHERE k.root_key_id = $1 "
              "AND NOT EXISTS (SELECT 1 FROM org_keys n WHERE n.org_id = k.org_id "
              "AND n.root_key_id = $2) ORDER BY k.org_id LIMIT 100",
              2, sel, NULL, NULL);
    if (res == NULL)
      return 1;
    int rows = PQntuples(res);
    for (int i = 0; i < rows && (max_orgs == 0 || *done < max_orgs); i++) {
      const char *org = PQgetvalue(res, i, 0);
      sg_arena *a = sg_arena_new();
      uint8_t *wrapped, dek[SG_KEY_LEN], rewrapped[SG_WRAPPED_DEK_LEN];
      size_t len;
      int ok = sg_pg_bytea_parse(a, PQgetvalue(res, i, 2), &wrapped, &len) == 0 &&
               sg_dek_unwrap(old, org, wrapped, len, dek) == 0;
      if (ok)
        ok = sg_dek_wrap(new_key, org, dek, rewrapped) == 0;
      OPENSSL_cleanse(dek, sizeof(dek));
      sg_arena_free(a);
      if (!ok) {
        fprintf(stderr,
                "sealgate: organization %s: its data key does not open with the old root key "
                "(tampered, or another key): stopping\n",
                org);
        PQclear(res);
        return 1;
      }
      const char *values[] = {org, new_key->id, PQgetvalue(res, i, 1), (const char *)rewrapped};
      const int lengths[] = {0, 0, 0, SG_WRAPPED_DEK_LEN}, formats[] = {0, 0, 0, 1};
      PGresult *ins = query(pg,
                            "INSERT INTO org_keys (org_id, root_key_id, dek_id, wrapped) "
                            "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                            4, values, lengths, formats);
      if (ins == NULL) {
        PQclear(res);
        return 1;
      }
      PQclear(ins);
      (*done)++;
    }
    PQclear(res);
    if (rows == 0 || (max_orgs != 0 && *done >= max_orgs))
      return 0;
  }
}

static long long count(PGconn *pg, const char *sql, const char *a, const char *b) {
  const char *values[] = {a, b};
  PGresult *res = query(pg, sql, 2, values, NULL, NULL);
  long long n = res ? atoll(PQgetvalue(res, 0, 0)) : -1;
  PQclear(res);
  return n;
}

int sg_cli_rotate_root_key(int argc, char **argv) {
  const char *db = NULL, *old_file = NULL, *new_file = NULL;
  long long max_orgs = 0;
  int retire = 0;
  const sg_flag flags[] = {
      {"db", SG_FLAG_STR, &db, 0, 0, "CONNINFO", "PostgreSQL connection"},
      {"root-key-file", SG_FLAG_STR, &old_file, 0, 0, "FILE", "the root key in use now"},
      {"new-root-key-file", SG_FLAG_STR, &new_file, 0, 0, "FILE", "the root key to move to"},
      {"max-orgs", SG_FLAG_INT, &max_orgs, 0, 1LL << 40, "N",
       "re-wrap at most N organizations this run (0: all); run again to go on"},
      {"retire-old", SG_FLAG_BOOL, &retire, 0, 0, NULL,
       "after every node runs the new key: delete the old key's wrappings"},
  };
  int rv = parse("sealgate rotate-root-key --db CONNINFO --root-key-file OLD "
                 "--new-root-key-file NEW [--max-orgs N] [--retire-old]",
                 flags, SG_ARRAY_LEN(flags), argc, argv, NULL, 0);
  if (rv >= 0)
    return rv;
  if (old_file == NULL || new_file == NULL) {
    fprintf(stderr, "sealgate: --root-key-file and --new-root-key-file are required\n");
    return 2;
  }
  /* Both keys in the secure heap (locked, not dumped) when main() set one up. */
  sg_root_key *old = OPENSSL_secure_zalloc(sizeof(*old));
  sg_root_key *new_key = OPENSSL_secure_zalloc(sizeof(*new_key));
  if (old == NULL || new_key == NULL) {
    fprintf(stderr, "sealgate: out of memory\n");
    OPENSSL_secure_free(old);
    OPENSSL_secure_free(new_key);
    return 1;
  }
  char err[512];
  if (sg_root_key_load(old_file, old, err, sizeof(err)) != 0 ||
      sg_root_key_load(new_file, new_key, err, sizeof(err)) != 0) {
    fprintf(stderr, "sealgate: %s\n", err);
    sg_root_key_clear(old);
    OPENSSL_secure_clear_free(old, sizeof(*old));
    OPENSSL_secure_clear_free(new_key, sizeof(*new_key));
    return 1;
  }
  rv = 1;
  PGconn *pg = NULL;
  if (strcmp(old->id, new_key->id) == 0) {
    fprintf(stderr, "sealgate: the old and the new root key are the same key\n");
  } else if ((pg = connect_or_say(db)) != NULL) {
    long long done = 0;
    rv = rewrap(pg, old, new_key, max_orgs, &done);
    long long left = count(pg,
                           "SELECT count(*) FROM org_keys k WHERE k.root_key_id = $1 AND NOT "
                           "EXISTS (SELECT 1 FROM org_keys n WHERE n.org_id = k.org_id AND "
                           "n.root_key_id = $2)",
                           old->id, new_key->id);
    printf("root key %s -> %s: re-wrapped %lld organization data keys, %lld left\n", old->id,
           new_key->id, done, left);
    if (rv == 0 && retire) {
      if (left != 0) {
        fprintf(stderr,
                "sealgate: --retire-old: %lld organizations are not re-wrapped yet; "
                "nothing deleted\n",
                left);
        rv = 1;
      } else {
        const char *values[] = {old->id, new_key->id};
        PGresult *res = query(pg,
                              "DELETE FROM org_keys k WHERE k.root_key_id = $1 AND EXISTS "
                              "(SELECT 1 FROM org_keys n WHERE n.org_id = k.org_id AND "
                              "n.root_key_id = $2)",
                              2, values, NULL, NULL);
        if (res == NULL)
          rv = 1;
        else
          printf("retired the old root key: deleted %s wrappings\n", PQcmdTuples(res));
        PQclear(res);
      }
    }
    PQfinish(pg);
  }
  sg_root_key_clear(old);
  sg_root_key_clear(new_key);
  OPENSSL_secure_clear_free(old, sizeof(*old));
  OPENSSL_secure_clear_free(new_key, sizeof(*new_key));
  return rv;
}
