/* Commands of the local process runtime: `/bin/sh -c COMMAND` in a sandbox's directory, with
 * the sandbox's environment and nothing of the server's, its output captured up to a cap, and
 * bounded in time. sg_proc_exec blocks until the command is over, so it runs in a work job
 * (runtime/work.h), never on an event loop.
 *
 * A command runs in a process group of its own, and the group is what ends it: on timeout, on
 * sg_proc_kill_tag, and also when the shell exits — a background process (`server &`) does not
 * outlive the command that started it, nor keep the call waiting on a pipe it inherited. A
 * process that leaves the group on purpose (setsid) escapes this; containing it takes a
 * cgroup or a VM, which is the job of the orchestrators that run sealgate with the local
 * runtime off. */
#ifndef SG_RUNTIME_PROC_H
#define SG_RUNTIME_PROC_H

#include <stddef.h>

typedef struct {
  const char *command; /* run as /bin/sh -c COMMAND */
  const char *cwd;     /* absolute directory */
  char *const *env;    /* NULL-terminated "NAME=value" list: the child's whole environment
                          (NULL: an empty one) */
  int timeout_ms;      /* > 0 */
  size_t max_output;   /* cap per stream, bytes (the server uses 1 MiB) */
  const char *tag;     /* a group the command belongs to (a sandbox id), for sg_proc_kill_tag;
                          NULL: none */
} sg_proc_spec;

typedef struct {
  int exit_code;   /* the exit status; 128+N when killed by signal N (the shell convention) */
  int timed_out;   /* 1: killed because the timeout passed */
  int killed;      /* 1: killed by sg_proc_kill_tag */
  char *out, *err; /* malloc'd, NUL-terminated, out_len/err_len bytes (may contain any bytes) */
  size_t out_len, err_len;
  int out_truncated, err_truncated; /* 1: more was written than max_output; the rest was
                                       discarded */
} sg_proc_result;

/* Runs |spec|'s command to its end and fills |r|. Returns 0, or -1 if the command could not
 * start (a bad spec, no /bin/sh, a |cwd| that is not a directory we may enter, no pipes or
 * processes left); |err| then says why and |r| holds nothing to free (sg_proc_result_free is
 * still safe). After 0 the caller owns |r|'s buffers. Once the shell has exited, output still
 * unread is collected for at most SG_PROC_DRAIN_MS. Blocks: call it from a work job. */
int sg_proc_exec(const sg_proc_spec *spec, sg_proc_result *r, char *err, size_t errlen);

#define SG_PROC_DRAIN_MS 250

/* Frees |r|'s buffers; |r| may be zeroed or already freed. */
void sg_proc_result_free(sg_proc_result *r);

/* SIGKILLs the process group of every command running, or about to start, under |tag| (that
 * tag, or one below it: "sandbox/3" is under "sandbox"); their
 * sg_proc_exec calls return with killed = 1 (exit_code 137). Commands started after this call
 * returns are not affected. Thread-safe; does not wait. */
void sg_proc_kill_tag(const char *tag);

/* For shutdown: SIGKILLs every command running, and every command started from now on dies at
 * its spawn (killed = 1). Thread-safe; does not wait. */
void sg_proc_kill_all(void);

#endif
