#include "runtime/proc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/mem.h"

/* Without a pidfd (a kernel before 5.3, or a seccomp filter), the shell's exit is noticed by
 * polling this often. */
#define SG_PROC_EXIT_POLL_MS 10

/* A command from just before its spawn until its shell is reaped, listed for sg_proc_kill_tag.
 * Its pid is a process group id only while the shell is unreaped (a zombie shell still holds
 * the id), so an entry leaves the list before the reap and no kill can reach a recycled id. */
typedef struct sg_proc_entry {
  struct sg_proc_entry *prev, *next;
  const char *tag;
  pid_t pgid; /* 0 until spawned */
  int killed;
} sg_proc_entry;

static pthread_mutex_t running_lock = PTHREAD_MUTEX_INITIALIZER;
static sg_proc_entry *running;
static int all_killed; /* sg_proc_kill_all: every command from now on dies at its spawn */

/* One output pipe, read into a buffer of at most |max| bytes. */
typedef struct {
  int fd; /* the read end, non-blocking; -1 once at EOF */
  char *buf;
  size_t len, cap, max;
  int truncated;
} sg_stream;

typedef struct {
  pid_t pid;
  int pidfd;           /* readable once the shell has exited; -1 without pidfd support */
  sg_stream stream[2]; /* stdout, stderr */
} sg_run;

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void close_fd(int *fd) {
  if (*fd >= 0)
    close(*fd);
  *fd = -1;
}

static void enlist(sg_proc_entry *e) {
  pthread_mutex_lock(&running_lock);
  e->killed = all_killed;
  e->prev = NULL;
  e->next = running;
  if (running != NULL)
    running->prev = e;
  running = e;
  pthread_mutex_unlock(&running_lock);
}

/* Takes |e| off the list; from then on only the caller signals its group. Returns whether
 * sg_proc_kill_tag reached it. */
static int delist(sg_proc_entry *e) {
  pthread_mutex_lock(&running_lock);
  if (e->prev != NULL)
    e->prev->next = e->next;
  else
    running = e->next;
  if (e->next != NULL)
    e->next->prev = e->prev;
  int killed = e->killed;
  pthread_mutex_unlock(&running_lock);
  return killed;
}

/* Records the spawned group, killing it at once if sg_proc_kill_tag came first. */
static void entry_started(sg_proc_entry *e, pid_t pgid) {
  pthread_mutex_lock(&running_lock);
  e->pgid = pgid;
  if (e->killed)
    kill(-pgid, SIGKILL);
  pthread_mutex_unlock(&running_lock);
}

void sg_proc_kill_tag(const char *tag) {
  if (tag == NULL)
    return;
  pthread_mutex_lock(&running_lock);
  size_t n = strlen(tag);
  for (sg_proc_entry *e = running; e != NULL; e = e->next) {
    /* |tag| itself, or a tag below it ("sandbox/3" under "sandbox"). */
    if (e->tag == NULL || strncmp(e->tag, tag, n) != 0 || (e->tag[n] != '\0' && e->tag[n] != '/'))
      continue;
    e->killed = 1;
    if (e->pgid > 0)
      kill(-e->pgid, SIGKILL);
  }
  pthread_mutex_unlock(&running_lock);
}

void sg_proc_kill_all(void) {
  pthread_mutex_lock(&running_lock);
  all_killed = 1;
  for (sg_proc_entry *e = running; e != NULL; e = e->next) {
    e->killed = 1;
    if (e->pgid > 0)
      kill(-e->pgid, SIGKILL);
  }
  pthread_mutex_unlock(&running_lock);
}

/* A pipe for one output stream: close-on-exec, the read end non-blocking for poll, and both
 * ends above 2, so that setting up the child's 0, 1 and 2 cannot overwrite either of them
 * (a daemon may have closed its own stdio). Returns 0 or -1 (errno set). */
static int open_pipe(int *rd, int *wr) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0)
    return -1;
  for (int i = 0; i < 2; i++) {
    if (p[i] < 3) {
      int fd = fcntl(p[i], F_DUPFD_CLOEXEC, 3);
      close(p[i]);
      p[i] = fd;
    }
  }
  if (p[0] < 0 || p[1] < 0 || fcntl(p[0], F_SETFL, O_NONBLOCK) < 0) {
    int saved = errno;
    close_fd(&p[0]);
    close_fd(&p[1]);
    errno = saved;
    return -1;
  }
  *rd = p[0];
  *wr = p[1];
  return 0;
}

/* posix_spawn, not fork: the child shares nothing it could corrupt with the server's threads
 * before exec. The child gets a group of its own, stdin from /dev/null, the pipes as stdout
 * and stderr, no other descriptor, an empty signal mask and every signal at its default
 * action (the server ignores SIGPIPE and its workers block everything). Returns 0 or an
 * errno value. */
static int spawn_shell(const sg_proc_spec *spec, int out_fd, int err_fd, pid_t *pid) {
  static char *const no_env[] = {NULL};
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
  posix_spawn_file_actions_adddup2(&fa, err_fd, 2);
  posix_spawn_file_actions_addclosefrom_np(&fa, 3);
  posix_spawn_file_actions_addchdir_np(&fa, spec->cwd);
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  char *argv[] = {"sh", "-c", (char *)spec->command, NULL};
  int rv = posix_spawn(pid, "/bin/sh", &fa, &attr, argv, spec->env != NULL ? spec->env : no_env);
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&fa);
  return rv;
}

/* Makes room to read into, growing the buffer up to the cap. Returns the room (0: at the cap). */
static size_t stream_room(sg_stream *s) {
  if (s->len == s->cap && s->cap < s->max) {
    size_t cap = s->cap < 4096 ? 4096 : s->cap * 2;
    s->cap = cap < s->max ? cap : s->max;
    s->buf = sg_realloc(s->buf, s->cap);
  }
  return s->cap - s->len;
}

/* Reads what the pipe holds now. Past the cap, bytes are read and dropped, so the writer never
 * blocks on a full pipe. */
static void stream_read(sg_stream *s) {
  char scratch[16384];
  while (s->fd >= 0) {
    size_t room = stream_room(s);
    ssize_t n =
        room > 0 ? read(s->fd, s->buf + s->len, room) : read(s->fd, scratch, sizeof(scratch));
    if (n > 0 && room > 0)
      s->len += (size_t)n;
    else if (n > 0)
      s->truncated = 1;
    else if (n < 0 && errno == EINTR)
      continue;
    else if (n < 0 && errno == EAGAIN)
      return;
    else
      close_fd(&s->fd); /* EOF, or an error that ends the stream the same way */
  }
}

/* Hands the buffer to the caller, NUL-terminated. */
static char *stream_take(sg_stream *s, size_t *len, int *truncated) {
  char *buf = sg_realloc(s->buf, s->len + 1);
  buf[s->len] = '\0';
  *len = s->len;
  *truncated = s->truncated;
  s->buf = NULL;
  return buf;
}

/* Waits up to |timeout| ms for output (or for |pidfd|, if >= 0, to become readable) and reads
 * what came. */
static void poll_streams(sg_run *run, int timeout, int pidfd) {
  struct pollfd pfd[3];
  nfds_t n = 0;
  for (int i = 0; i < 2; i++) {
    if (run->stream[i].fd >= 0)
      pfd[n++] = (struct pollfd){.fd = run->stream[i].fd, .events = POLLIN};
  }
  if (pidfd >= 0)
    pfd[n++] = (struct pollfd){.fd = pidfd, .events = POLLIN};
  if (poll(pfd, n, timeout) <= 0)
    return; /* nothing yet, or EINTR: the caller checks its clock and comes back */
  for (int i = 0; i < 2; i++) {
    if (run->stream[i].fd >= 0)
      stream_read(&run->stream[i]);
  }
}

/* Whether the shell has exited, without reaping it: its zombie keeps the group id reserved. */
static int shell_exited(const sg_run *run) {
  siginfo_t si;
  memset(&si, 0, sizeof(si));
  if (waitid(P_PID, (id_t)run->pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0)
    return errno != EINTR; /* ECHILD: reaped behind our back (SIGCHLD ignored); it is gone */
  return si.si_pid != 0;
}

/* Reads output until the shell exits (returns 1) or |deadline| passes (returns 0). */
static int wait_exit(sg_run *run, int64_t deadline) {
  while (!shell_exited(run)) {
    int64_t left = deadline - now_ms();
    if (left <= 0)
      return 0;
    if (run->pidfd < 0 && left > SG_PROC_EXIT_POLL_MS)
      left = SG_PROC_EXIT_POLL_MS;
    poll_streams(run, (int)left, run->pidfd);
  }
  return 1;
}

/* Reads what is left in the pipes until both are at EOF or |deadline| passes: a process that
 * left the group keeps its copy of a pipe open, and is not waited for. */
static void drain(sg_run *run, int64_t deadline) {
  while (run->stream[0].fd >= 0 || run->stream[1].fd >= 0) {
    int64_t left = deadline - now_ms();
    if (left <= 0)
      return;
    poll_streams(run, (int)left, -1);
  }
}

static int reap(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

/* Runs the spawned command to its end: until the shell exits or the timeout, then kills the
 * group (background processes included), reaps the shell and collects the rest of the output. */
static void supervise(sg_run *run, const sg_proc_spec *spec, sg_proc_entry *entry,
                      sg_proc_result *r) {
  int exited = wait_exit(run, now_ms() + spec->timeout_ms);
  int by_tag = delist(entry);
  kill(-run->pid, SIGKILL);
  int status = reap(run->pid);
  /* A shell that exited on its own just before the kill reports its own status. */
  int sigkilled = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
  r->killed = by_tag && sigkilled;
  r->timed_out = !exited && !r->killed && sigkilled;
  r->exit_code = WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
  drain(run, now_ms() + SG_PROC_DRAIN_MS);
  r->out = stream_take(&run->stream[0], &r->out_len, &r->out_truncated);
  r->err = stream_take(&run->stream[1], &r->err_len, &r->err_truncated);
}

static int fail(char *err, size_t errlen, const char *what, const char *detail) {
  snprintf(err, errlen, "%s: %s", what, detail);
  return -1;
}

int sg_proc_exec(const sg_proc_spec *spec, sg_proc_result *r, char *err, size_t errlen) {
  memset(r, 0, sizeof(*r));
  if (spec->command == NULL || spec->cwd == NULL || spec->cwd[0] != '/' || spec->timeout_ms <= 0)
    return fail(err, errlen, "invalid command", "needs a command, an absolute cwd, a timeout");
  sg_run run = {.pidfd = -1};
  for (int i = 0; i < 2; i++)
    run.stream[i] = (sg_stream){.fd = -1, .max = spec->max_output};
  int out_w = -1, err_w = -1;
  if (open_pipe(&run.stream[0].fd, &out_w) < 0 || open_pipe(&run.stream[1].fd, &err_w) < 0) {
    int saved = errno;
    close_fd(&run.stream[0].fd);
    close_fd(&out_w);
    return fail(err, errlen, "cannot create a pipe", strerror(saved));
  }
  sg_proc_entry entry = {.tag = spec->tag};
  enlist(&entry);
  int rv = spawn_shell(spec, out_w, err_w, &run.pid);
  close_fd(&out_w);
  close_fd(&err_w);
  if (rv != 0) {
    delist(&entry);
    close_fd(&run.stream[0].fd);
    close_fd(&run.stream[1].fd);
    snprintf(err, errlen, "cannot run /bin/sh in %s: %s", spec->cwd, strerror(rv));
    return -1;
  }
  entry_started(&entry, run.pid);
  run.pidfd = pidfd_open(run.pid, 0);
  supervise(&run, spec, &entry, r);
  close_fd(&run.pidfd);
  close_fd(&run.stream[0].fd);
  close_fd(&run.stream[1].fd);
  return 0;
}

void sg_proc_result_free(sg_proc_result *r) {
  free(r->out);
  free(r->err);
  r->out = r->err = NULL;
  r->out_len = r->err_len = 0;
}
