#include "service/local_runtime.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/file.h"
#include "core/log.h"
#include "core/mem.h"
#include "crypto/token.h"
#include "net/loop.h"
#include "runtime/dir.h"
#include "runtime/proc.h"
#include "runtime/work.h"

#define ERR_LEN          512
#define BUILD_TIMEOUT_MS (10 * 60 * 1000) /* one snapshot run_command */
#define CA_DIR           ".sealgate"
#define CA_NAME          "proxy-ca.pem"
#define BASE_PATH        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* printf into a new string (sg_malloc: aborts when memory runs out, as everywhere). */
static char *str_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *str_printf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *out = sg_malloc((size_t)n + 1);
  va_start(ap, fmt);
  vsnprintf(out, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return out;
}

static char *root;          /* the data dir */
static char *ca_pem;        /* written into every sandbox directory */
static atomic_int running;  /* RunCommand calls */
static atomic_int building; /* snapshot builds */

static int ensure_dir(const char *path, char *err, size_t errlen) {
  if (mkdir(path, 0700) != 0 && errno != EEXIST) {
    snprintf(err, errlen, "cannot create %.400s: %s", path, strerror(errno));
    return -1;
  }
  return 0;
}

int sg_local_runtime_init(const char *data_dir, const char *pem, char *err, size_t errlen) {
  static const char *const kinds[] = {"sandboxes", "checkpoints", "snapshots"};
  for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", data_dir, kinds[i]);
    if (ensure_dir(path, err, errlen) != 0)
      return -1;
  }
  /* Absolute: commands run with it as their working directory and HOME. */
  char *abs = realpath(data_dir, NULL);
  if (abs == NULL) {
    snprintf(err, errlen, "cannot resolve %.400s: %s", data_dir, strerror(errno));
    return -1;
  }
  root = abs;
  ca_pem = sg_strdup(pem);
  return 0;
}

int sg_local_runtime_on(void) {
  return root != NULL;
}

static char *path_of(const char *kind, const char *id) {
  return str_printf("%s/%s/%s", root, kind, id);
}

char *sg_local_runtime_ca_file(sg_arena *arena, const char *sandbox_id) {
  return sg_arena_printf(arena, "%s/sandboxes/%s/" CA_DIR "/" CA_NAME, root, sandbox_id);
}

static int exists(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* --- jobs ---------------------------------------------------------------------------------- */

typedef struct {
  char *a, *b; /* source and destination (or the one path a job works on) */
  char **commands;
  size_t n_commands;
  sg_runtime_done done;
  void *arg;
  char err[ERR_LEN];
  int failed;
} job;

static job *job_new(sg_runtime_done done, void *arg) {
  job *j = sg_calloc(1, sizeof(*j));
  j->done = done;
  j->arg = arg;
  return j;
}

static void job_free(job *j) {
  free(j->a);
  free(j->b);
  for (size_t i = 0; i < j->n_commands; i++)
    free(j->commands[i]);
  free(j->commands);
  free(j);
}

static void job_done(void *arg) {
  job *j = arg;
  if (j->done != NULL)
    j->done(j->arg, j->failed ? j->err : NULL);
  job_free(j);
}

static void submit(job *j, void (*work)(void *)) {
  sg_loop *loop = sg_loop_current();
  sg_work_submit(loop, work, job_done, j);
}

/* Writes DIR/.sealgate/proxy-ca.pem. The directory may come from a checkpoint or a snapshot,
 * i.e. from the sandbox: a .sealgate that is not a plain directory is replaced, and nothing
 * is followed through a symbolic link. */
static int write_ca(const char *dir, char *err, size_t errlen) {
  int top = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  struct stat st;
  if (top >= 0 && fstatat(top, CA_DIR, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode))
    unlinkat(top, CA_DIR, 0);
  if (top >= 0 && mkdirat(top, CA_DIR, 0700) != 0 && errno != EEXIST) {
    close(top);
    top = -1;
  }
  int sub = top < 0 ? -1 : openat(top, CA_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  int fd = sub < 0
               ? -1
               : openat(sub, CA_NAME, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
  size_t len = strlen(ca_pem);
  int rv = fd >= 0 && sg_write_all(fd, ca_pem, len) == 0 ? 0 : -1;
  if (rv != 0)
    snprintf(err, errlen, "cannot write the sandbox's CA file: %s", strerror(errno));
  if (fd >= 0)
    close(fd);
  if (sub >= 0)
    close(sub);
  if (top >= 0)
    close(top);
  return rv;
}

static void prepare_work(void *arg) {
  job *j = arg;
  int rv;
  if (j->a != NULL && exists(j->a))
    rv = sg_dir_copy(j->a, j->b, j->err, sizeof(j->err));
  else if ((rv = mkdir(j->b, 0700)) != 0)
    snprintf(j->err, sizeof(j->err), "cannot create the sandbox's directory: %s", strerror(errno));
  if (rv == 0)
    rv = write_ca(j->b, j->err, sizeof(j->err));
  j->failed = rv != 0;
}

void sg_local_runtime_prepare(const char *sandbox_id, const char *from_kind, const char *from_id,
                              sg_runtime_done done, void *arg) {
  job *j = job_new(done, arg);
  if (from_kind != NULL && from_id != NULL && from_id[0] != '\0')
    j->a = path_of(from_kind, from_id);
  j->b = path_of("sandboxes", sandbox_id);
  submit(j, prepare_work);
}

static void checkpoint_work(void *arg) {
  job *j = arg;
  if (exists(j->a))
    j->failed = sg_dir_copy(j->a, j->b, j->err, sizeof(j->err)) != 0;
}

void sg_local_runtime_checkpoint(const char *sandbox_id, const char *checkpoint_id,
                                 sg_runtime_done done, void *arg) {
  job *j = job_new(done, arg);
  j->a = path_of("sandboxes", sandbox_id);
  j->b = path_of("checkpoints", checkpoint_id);
  submit(j, checkpoint_work);
}

/* The last |max| bytes of |s|, printable ASCII only, for an error message. */
static void tail_of(const char *s, size_t len, size_t max, char *out, size_t outlen) {
  size_t from = len > max ? len - max : 0, o = 0;
  for (size_t i = from; i < len && o + 1 < outlen; i++)
    out[o++] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : ' ';
  out[o] = '\0';
}

static void build_work(void *arg) {
  job *j = arg;
  char tmp[4096];
  snprintf(tmp, sizeof(tmp), "%s.building", j->b);
  sg_dir_remove(tmp, j->err, sizeof(j->err)); /* left by a crash; absent is fine */
  if (mkdir(tmp, 0700) != 0) {
    snprintf(j->err, sizeof(j->err), "cannot create the snapshot's directory: %s", strerror(errno));
    j->failed = 1;
    return;
  }
  char home[4200];
  snprintf(home, sizeof(home), "HOME=%s", tmp);
  char *env[] = {BASE_PATH, home, NULL};
  for (size_t i = 0; i < j->n_commands; i++) {
    sg_proc_spec spec = {.command = j->commands[i],
                         .cwd = tmp,
                         .env = env,
                         .timeout_ms = BUILD_TIMEOUT_MS,
                         .max_output = 64 * 1024,
                         .tag = j->b};
    sg_proc_result r;
    char why[256];
    if (sg_proc_exec(&spec, &r, why, sizeof(why)) != 0) {
      sg_logf(SG_LOG_WARN, "snapshot_build", "image.run_commands[%zu] could not start: %s", i, why);
      snprintf(j->err, sizeof(j->err),
               "image.run_commands[%zu]: could not start (the server's log says why)", i);
      j->failed = 1;
    } else {
      if (r.exit_code != 0 || r.timed_out) {
        char tail[200];
        tail_of(r.err, r.err_len, 160, tail, sizeof(tail));
        snprintf(j->err, sizeof(j->err), "image.run_commands[%zu] %s %d; stderr ends: %s", i,
                 r.timed_out ? "timed out, status" : "exited with status", r.exit_code, tail);
        j->failed = 1;
      }
      sg_proc_result_free(&r);
    }
    if (j->failed) {
      char ignored[ERR_LEN];
      sg_dir_remove(tmp, ignored, sizeof(ignored));
      return;
    }
  }
  if (rename(tmp, j->b) != 0) {
    snprintf(j->err, sizeof(j->err), "cannot move the snapshot's directory into place: %s",
             strerror(errno));
    j->failed = 1;
  }
}

static void build_done(void *arg) {
  atomic_fetch_sub(&building, 1);
  job_done(arg);
}

int sg_local_runtime_build_snapshot(const char *snapshot_id, char *const *commands, size_t n,
                                    sg_runtime_done done, void *arg) {
  if (atomic_fetch_add(&building, 1) >= SG_BUILD_MAX_CONCURRENT) {
    atomic_fetch_sub(&building, 1);
    return -1;
  }
  job *j = job_new(done, arg);
  j->b = path_of("snapshots", snapshot_id);
  j->commands = sg_calloc(n > 0 ? n : 1, sizeof(char *));
  for (size_t i = 0; i < n; i++)
    j->commands[i] = sg_strdup(commands[i]);
  j->n_commands = n;
  sg_work_submit(sg_loop_current(), build_work, build_done, j);
  return 0;
}

/* Nobody waits for a removal: the job frees itself, so one still running at shutdown (when
 * completions to the stopped loops are dropped) leaves nothing behind. */
static void remove_work(void *arg) {
  job *j = arg;
  if (exists(j->a))
    sg_dir_remove(j->a, j->err, sizeof(j->err));
  job_free(j);
}

void sg_local_runtime_remove(const char *kind, const char *id) {
  if (strcmp(kind, "sandboxes") == 0)
    sg_proc_kill_tag(id);
  job *j = job_new(NULL, NULL);
  j->a = path_of(kind, id);
  sg_work_submit(sg_loop_current(), remove_work, NULL, j);
}

size_t sg_local_runtime_list_sandboxes(char ***ids) {
  char path[4096];
  snprintf(path, sizeof(path), "%s/sandboxes", root);
  *ids = NULL;
  DIR *d = opendir(path);
  if (d == NULL)
    return 0;
  size_t n = 0, cap = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (!sg_uuid_is_canonical(e->d_name))
      continue; /* anything else here is not ours to sweep */
    if (n == cap) {
      cap = cap ? 2 * cap : 16;
      *ids = sg_realloc(*ids, cap * sizeof(char *));
    }
    (*ids)[n++] = sg_strdup(e->d_name);
  }
  closedir(d);
  return n;
}

void sg_local_runtime_cancel(const char *tag) {
  sg_proc_kill_tag(tag);
}

/* --- RunCommand ---------------------------------------------------------------------------- */

/* |len| bytes of one output stream as valid UTF-8 (no NUL: protobuf strings end there), each
 * invalid byte and each NUL becoming U+FFFD, cut to SG_RUN_MAX_OUTPUT bytes (replacements can
 * make it longer than what was read), then a mark if it was cut here or by the runner
 * (|truncated|), then |note|. */
static char *utf8_clean(const char *s, size_t len, int truncated, const char *stream,
                        const char *note) {
  char *out = sg_malloc(len * 3 + 128), *o = out;
  const unsigned char *p = (const unsigned char *)s, *end = p + len;
  while (p < end) {
    unsigned c = *p;
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    int ok = n > 0 && c != 0 && (size_t)(end - p) >= n;
    unsigned cp = n == 1 ? c : n == 2 ? c & 0x1f : n == 3 ? c & 0x0f : c & 0x07;
    for (size_t i = 1; ok && i < n; i++) {
      ok = (p[i] & 0xc0) == 0x80;
      cp = cp << 6 | (p[i] & 0x3f);
    }
    /* No overlong forms, no surrogates, nothing past U+10FFFF. */
    if (ok && ((n == 2 && cp < 0x80) || (n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp < 0xe000))) ||
               (n == 4 && (cp < 0x10000 || cp > 0x10ffff))))
      ok = 0;
    if ((size_t)(o - out) + (ok ? n : 3) > SG_RUN_MAX_OUTPUT) {
      truncated = 1; /* the replacements made it longer than the cap */
      break;
    }
    if (ok) {
      memcpy(o, p, n);
      o += n;
      p += n;
    } else {
      memcpy(o, "\xef\xbf\xbd", 3);
      o += 3;
      p++;
    }
  }
  snprintf(o, 128, "%s%s%s%s", truncated ? "\n[sealgate: " : "", truncated ? stream : "",
           truncated ? " truncated at 1 MiB]\n" : "", note);
  return out;
}

typedef struct {
  char *sandbox_id, *tag, *dir, *command;
  char **env;
  int timeout_s;
  sg_run_done done;
  void *arg;
  sg_run_output out;
  char err[ERR_LEN];
  int failed;
} run_job;

static void run_work(void *arg) {
  run_job *j = arg;
  sg_proc_spec spec = {.command = j->command,
                       .cwd = j->dir,
                       .env = j->env,
                       .timeout_ms = j->timeout_s * 1000,
                       .max_output = SG_RUN_MAX_OUTPUT,
                       .tag = j->tag};
  sg_proc_result r;
  char why[256];
  /* A cwd that leads out of the sandbox's directory through a link made in it is refused.
   * (Not a boundary against the command itself, which runs as the server's user: see
   * --local-runtime in the README.) */
  char *base = path_of("sandboxes", j->sandbox_id);
  char *real = realpath(j->dir, NULL), *real_base = realpath(base, NULL);
  size_t n = real_base ? strlen(real_base) : 0;
  struct stat st;
  int inside = real != NULL && real_base != NULL && strncmp(real, real_base, n) == 0 &&
               (real[n] == '\0' || real[n] == '/') && stat(real, &st) == 0 && S_ISDIR(st.st_mode);
  int sandbox_gone = real_base == NULL;
  free(base);
  free(real);
  free(real_base);
  if (!inside) {
    snprintf(j->err, sizeof(j->err), "%s",
             sandbox_gone ? "the sandbox has no directory on this node"
                          : "cwd: no such directory in the sandbox");
    j->failed = 1;
    return;
  }
  if (sg_proc_exec(&spec, &r, why, sizeof(why)) != 0) {
    /* The reason names server paths: for the log, not the client. */
    sg_logf(SG_LOG_WARN, "run_command", "sandbox %s: the command could not start: %s",
            j->sandbox_id, why);
    snprintf(j->err, sizeof(j->err), "the command could not start (the server's log says why)");
    j->failed = 1;
    return;
  }
  char note[128] = "";
  j->out.exit_code = r.exit_code;
  if (r.timed_out) {
    j->out.exit_code = 124;
    snprintf(note, sizeof(note), "\n[sealgate: killed after the %d s timeout]\n", j->timeout_s);
  } else if (r.killed) {
    j->out.exit_code = 137;
    snprintf(note, sizeof(note), "\n[sealgate: killed: the sandbox ended]\n");
  }
  j->out.out = utf8_clean(r.out, r.out_len, r.out_truncated, "stdout", "");
  j->out.err = utf8_clean(r.err, r.err_len, r.err_truncated, "stderr", note);
  sg_proc_result_free(&r);
}

static void run_done(void *arg) {
  run_job *j = arg;
  atomic_fetch_sub(&running, 1);
  j->done(j->arg, j->failed ? NULL : &j->out, j->failed ? j->err : NULL);
  free(j->out.out);
  free(j->out.err);
  for (size_t i = 0; j->env[i] != NULL; i++)
    free(j->env[i]);
  free(j->env);
  free(j->sandbox_id);
  free(j->tag);
  free(j->dir);
  free(j->command);
  free(j);
}

int sg_local_runtime_run(const char *sandbox_id, const char *cwd, char *const *env,
                         const char *command, int timeout_s, sg_run_done done, void *arg,
                         char tag[SG_RUN_TAG_LEN]) {
  static atomic_ullong runs;
  if (atomic_fetch_add(&running, 1) >= SG_RUN_MAX_CONCURRENT) {
    atomic_fetch_sub(&running, 1);
    return -1;
  }
  run_job *j = sg_calloc(1, sizeof(*j));
  j->sandbox_id = sg_strdup(sandbox_id);
  /* Under the sandbox's tag, so that deleting the sandbox kills it too. */
  snprintf(tag, SG_RUN_TAG_LEN, "%s/%llu", sandbox_id,
           (unsigned long long)atomic_fetch_add(&runs, 1));
  j->tag = sg_strdup(tag);
  char *base = path_of("sandboxes", sandbox_id);
  if (cwd != NULL && cwd[0] != '\0') {
    j->dir = str_printf("%s/%s", base, cwd);
    free(base);
  } else {
    j->dir = base;
  }
  size_t n = 0;
  while (env[n] != NULL)
    n++;
  j->env = sg_calloc(n + 3, sizeof(char *));
  j->env[0] = sg_strdup(BASE_PATH);
  j->env[1] = str_printf("HOME=%s/sandboxes/%s", root, sandbox_id);
  for (size_t i = 0; i < n; i++)
    j->env[i + 2] = sg_strdup(env[i]);
  j->command = sg_strdup(command);
  j->timeout_s = timeout_s;
  j->done = done;
  j->arg = arg;
  sg_work_submit(sg_loop_current(), run_work, run_done, j);
  return 0;
}
