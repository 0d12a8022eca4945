/* PostgreSQL's text forms for the types sealgate passes as text: arrays of text and bytea in
 * hex. Results are read in text format; these helpers turn them into C values in an arena. */
#ifndef SG_DB_PGTEXT_H
#define SG_DB_PGTEXT_H

#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"

/* Writes a text[] literal ({"a","b"}) for |n| strings, quoting and escaping each. */
char *sg_pg_array(sg_arena *arena, char *const *items, size_t n);

/* Parses a text[] value as PostgreSQL prints it ({a,"b c",NULL}; NULL elements become ""),
 * one dimension. Returns 0, or -1 if the text is not such an array. */
int sg_pg_array_parse(sg_arena *arena, const char *text, char ***items, size_t *n);

/* Decodes a bytea in hex output format ("\x0a1b..."). Returns 0, or -1 if malformed. */
int sg_pg_bytea_parse(sg_arena *arena, const char *text, uint8_t **out, size_t *len);

#endif
