/* Command-line flags, described by a table. Each flag `--some-name` also reads the
 * environment variable SEALGATE_SOME_NAME (SPEC §6); the command line wins over the
 * environment, the environment over the default already stored in the destination. */
#ifndef SG_CORE_FLAGS_H
#define SG_CORE_FLAGS_H

#include <stddef.h>
#include <stdio.h>

typedef enum {
  SG_FLAG_STR,   /* dst: const char ** */
  SG_FLAG_INT,   /* dst: long long *, bounded by min..max */
  SG_FLAG_BYTES, /* dst: long long *, accepts suffixes KiB, MiB, GiB; bounded by min..max */
  SG_FLAG_BOOL,  /* dst: int *; "--flag", "--flag=true|false|1|0" */
  SG_FLAG_LIST,  /* dst: sg_strlist *; repeatable; from the environment: comma-separated */
} sg_flag_type;

typedef struct {
  const char **items;
  size_t n;
} sg_strlist;

typedef struct {
  const char *name; /* without the leading dashes */
  sg_flag_type type;
  void *dst;
  long long min, max;
  const char *metavar;
  const char *help;
  int no_env; /* 1: the command line only (a flag that means something only to one command) */
} sg_flag;

typedef struct {
  char **args; /* positional arguments, in order */
  size_t n;
} sg_positionals;

enum {
  SG_FLAGS_OK = 0,
  SG_FLAGS_HELP = 1,   /* --help or -h was given */
  SG_FLAGS_ERROR = -1, /* |err| says which flag and why */
};

/* Parses |argv| (without the command words) against |flags|. Strings point into argv or the
 * environment; lists are allocated and live until exit. Returns SG_FLAGS_OK, SG_FLAGS_HELP, or
 * SG_FLAGS_ERROR with a message naming the flag in |err|. */
int sg_flags_parse(const sg_flag *flags, size_t n, int argc, char **argv, sg_positionals *pos,
                   char *err, size_t errlen);

/* Prints one line per flag: name, metavar, environment variable and help. */
void sg_flags_usage(FILE *out, const sg_flag *flags, size_t n);

/* Parses a byte size such as "4194304", "4MiB" or "64KiB". Returns 0 or -1. */
int sg_flags_parse_bytes(const char *s, long long *out);

#endif
