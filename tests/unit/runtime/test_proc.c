/* Commands run the way RunCommand runs them: /bin/sh -c in a directory, with an environment of
 * their own, output captured per stream up to a cap, ended by a timeout or by their sandbox's
 * tag, and nothing of them left behind (no process, no zombie, no descriptor of ours). */
#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "runtime/proc.h"

static char *env_default[] = {"PATH=/usr/bin:/bin", NULL};

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static sg_proc_spec spec_of(const char *command) {
  return (sg_proc_spec){.command = command,
                        .cwd = "/",
                        .env = env_default,
                        .timeout_ms = 20000,
                        .max_output = 1 << 20};
}

/* Runs |spec| and asserts that it started. */
static sg_proc_result run_spec(const sg_proc_spec *spec) {
  sg_proc_result r;
  char err[256] = "";
  cr_assert_eq(sg_proc_exec(spec, &r, err, sizeof(err)), 0, "%s", err);
  return r;
}

static sg_proc_result run(const char *command) {
  sg_proc_spec spec = spec_of(command);
  return run_spec(&spec);
}

/* Whether process |pid| is gone (or a zombie nobody of ours will reap). */
static int process_gone(pid_t pid) {
  char path[64], stat[512] = "";
  snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return 1;
  size_t n = fread(stat, 1, sizeof(stat) - 1, f);
  fclose(f);
  stat[n] = '\0';
  const char *paren = strrchr(stat, ')');
  return paren != NULL && (paren[2] == 'Z' || paren[2] == 'X');
}

static int wait_gone(pid_t pid, double seconds) {
  for (double end = now_s() + seconds; now_s() < end; usleep(20000)) {
    if (process_gone(pid))
      return 1;
  }
  return 0;
}

Test(proc, exit_status_zero) {
  sg_proc_result r = run("exit 0");
  cr_assert_eq(r.exit_code, 0);
  cr_assert_eq(r.timed_out, 0);
  cr_assert_eq(r.killed, 0);
  cr_assert_eq(r.out_len, 0);
  cr_assert_str_eq(r.out, "");
  sg_proc_result_free(&r);
}

Test(proc, exit_status_three) {
  sg_proc_result r = run("exit 3");
  cr_assert_eq(r.exit_code, 3);
  sg_proc_result_free(&r);
}

Test(proc, killed_by_signal_is_128_plus_signal) {
  sg_proc_result r = run("kill -9 $$");
  cr_assert_eq(r.exit_code, 128 + 9);
  cr_assert_eq(r.timed_out, 0);
  cr_assert_eq(r.killed, 0);
  sg_proc_result_free(&r);
}

Test(proc, stdout_and_stderr_are_separate) {
  sg_proc_result r = run("echo to-out; echo to-err >&2; printf more");
  cr_assert_str_eq(r.out, "to-out\nmore");
  cr_assert_eq(r.out_len, 11);
  cr_assert_str_eq(r.err, "to-err\n");
  cr_assert_eq(r.err_len, 7);
  cr_assert_eq(r.out_truncated, 0);
  cr_assert_eq(r.err_truncated, 0);
  sg_proc_result_free(&r);
}

Test(proc, output_may_hold_any_byte) {
  sg_proc_result r = run("printf 'a\\000b\\377'");
  cr_assert_eq(r.out_len, 4);
  cr_assert_eq(memcmp(r.out, "a\0b\377", 4), 0);
  cr_assert_eq(r.out[4], '\0');
  sg_proc_result_free(&r);
}

Test(proc, environment_is_exactly_the_given_one) {
  setenv("SG_PARENT_ONLY", "leaked", 1);
  char *env[] = {"SG_VAR=hello world", "PATH=/usr/bin:/bin", NULL};
  sg_proc_spec spec = spec_of("echo \"[$SG_VAR]\"; echo \"[${SG_PARENT_ONLY-unset}]\"; env");
  spec.env = env;
  sg_proc_result r = run_spec(&spec);
  cr_assert(strncmp(r.out, "[hello world]\n[unset]\n", 22) == 0, "%s", r.out);
  cr_assert_not_null(strstr(r.out, "\nSG_VAR=hello world\n"), "%s", r.out);
  cr_assert_null(strstr(r.out, "SG_PARENT_ONLY"), "%s", r.out);
  cr_assert_null(strstr(r.out, "HOME="), "%s", r.out);
  sg_proc_result_free(&r);
}

Test(proc, null_environment_is_empty) {
  setenv("SG_PARENT_ONLY", "leaked", 1);
  sg_proc_spec spec = spec_of("echo \"[${SG_PARENT_ONLY-unset}]\"");
  spec.env = NULL;
  sg_proc_result r = run_spec(&spec);
  cr_assert_str_eq(r.out, "[unset]\n");
  sg_proc_result_free(&r);
}

Test(proc, runs_in_cwd) {
  char dir[] = "/tmp/sg-proc-cwd-XXXXXX";
  cr_assert_not_null(mkdtemp(dir));
  char *real = realpath(dir, NULL);
  sg_proc_spec spec = spec_of("pwd -P; echo x > here");
  spec.cwd = dir;
  sg_proc_result r = run_spec(&spec);
  char want[PATH_MAX + 2];
  snprintf(want, sizeof(want), "%s\n", real);
  cr_assert_str_eq(r.out, want);
  char file[PATH_MAX];
  snprintf(file, sizeof(file), "%s/here", dir);
  cr_assert_eq(access(file, F_OK), 0);
  unlink(file);
  rmdir(dir);
  free(real);
  sg_proc_result_free(&r);
}

Test(proc, missing_cwd_fails_to_start) {
  sg_proc_spec spec = spec_of("true");
  spec.cwd = "/nonexistent/sg-proc";
  sg_proc_result r;
  char err[256] = "";
  cr_assert_eq(sg_proc_exec(&spec, &r, err, sizeof(err)), -1);
  cr_assert_not_null(strstr(err, "/nonexistent/sg-proc"), "%s", err);
  cr_assert_null(r.out);
  sg_proc_result_free(&r);
}

Test(proc, invalid_spec_fails) {
  sg_proc_spec spec = spec_of("true");
  spec.timeout_ms = 0;
  sg_proc_result r;
  char err[256] = "";
  cr_assert_eq(sg_proc_exec(&spec, &r, err, sizeof(err)), -1);
  cr_assert_neq(err[0], '\0');
  spec = spec_of("true");
  spec.cwd = "relative";
  cr_assert_eq(sg_proc_exec(&spec, &r, err, sizeof(err)), -1);
}

Test(proc, stdin_is_dev_null) {
  sg_proc_result r = run("cat; echo done");
  cr_assert_str_eq(r.out, "done\n");
  sg_proc_result_free(&r);
}

Test(proc, timeout_kills_the_command) {
  sg_proc_spec spec = spec_of("echo started; sleep 30");
  spec.timeout_ms = 300;
  double t0 = now_s();
  sg_proc_result r = run_spec(&spec);
  double took = now_s() - t0;
  cr_assert_eq(r.timed_out, 1);
  cr_assert_eq(r.killed, 0);
  cr_assert_eq(r.exit_code, 128 + SIGKILL);
  cr_assert_str_eq(r.out, "started\n"); /* output before the timeout is kept */
  cr_assert_lt(took, 10.0, "took %.1f s", took);
  sg_proc_result_free(&r);
}

Test(proc, timeout_kills_the_whole_group) {
  sg_proc_spec spec = spec_of("sleep 30 & echo $!; wait");
  spec.timeout_ms = 300;
  sg_proc_result r = run_spec(&spec);
  cr_assert_eq(r.timed_out, 1);
  pid_t bg = (pid_t)atoi(r.out);
  cr_assert_gt(bg, 0);
  cr_assert(wait_gone(bg, 10.0), "background sleep %d survived the timeout", (int)bg);
  sg_proc_result_free(&r);
}

Test(proc, background_child_does_not_keep_the_call_waiting) {
  double t0 = now_s();
  sg_proc_result r = run("sleep 30 & echo $!");
  double took = now_s() - t0;
  cr_assert_lt(took, 10.0, "took %.1f s", took);
  cr_assert_eq(r.exit_code, 0);
  cr_assert_eq(r.timed_out, 0);
  pid_t bg = (pid_t)atoi(r.out);
  cr_assert_gt(bg, 0);
  cr_assert(wait_gone(bg, 10.0), "background sleep %d outlived its command", (int)bg);
  sg_proc_result_free(&r);
}

Test(proc, detached_background_child_is_killed_too) {
  /* Not holding the pipes, it would not delay the call, but it must not outlive it either. */
  sg_proc_result r = run("sleep 30 >/dev/null 2>&1 & echo $!");
  pid_t bg = (pid_t)atoi(r.out);
  cr_assert_gt(bg, 0);
  cr_assert(wait_gone(bg, 10.0));
  sg_proc_result_free(&r);
}

Test(proc, output_beyond_the_cap_is_discarded) {
  sg_proc_spec spec =
      spec_of("head -c 3000000 /dev/zero; head -c 3000000 /dev/zero >&2; echo finished >&2");
  spec.max_output = 1 << 20;
  sg_proc_result r = run_spec(&spec);
  cr_assert_eq(r.exit_code, 0); /* the writer never blocked on a full pipe */
  cr_assert_eq(r.timed_out, 0);
  cr_assert_eq(r.out_len, 1 << 20);
  cr_assert_eq(r.err_len, 1 << 20);
  cr_assert_eq(r.out_truncated, 1);
  cr_assert_eq(r.err_truncated, 1);
  cr_assert_eq(r.out[0], '\0');
  sg_proc_result_free(&r);
}

Test(proc, output_exactly_at_the_cap_is_not_truncated) {
  sg_proc_spec spec = spec_of("head -c 1000 /dev/zero");
  spec.max_output = 1000;
  sg_proc_result r = run_spec(&spec);
  cr_assert_eq(r.out_len, 1000);
  cr_assert_eq(r.out_truncated, 0);
  sg_proc_result_free(&r);
}

Test(proc, zero_cap_keeps_nothing) {
  sg_proc_spec spec = spec_of("echo hello");
  spec.max_output = 0;
  sg_proc_result r = run_spec(&spec);
  cr_assert_eq(r.out_len, 0);
  cr_assert_str_eq(r.out, "");
  cr_assert_eq(r.out_truncated, 1);
  sg_proc_result_free(&r);
}

Test(proc, no_descriptor_leaks_into_the_child) {
  /* A descriptor without close-on-exec, as a library might leave one. */
  int fds[2];
  cr_assert_eq(pipe(fds), 0);
  sg_proc_result r = run("ls /proc/self/fd");
  cr_assert_str_eq(r.out, "0\n1\n2\n3\n", "%s", r.out); /* 3: the directory ls reads */
  close(fds[0]);
  close(fds[1]);
  sg_proc_result_free(&r);
}

/* The hexadecimal signal set after |field| in |status| (a /proc/PID/status text). */
static unsigned long long sigset_field(const char *status, const char *field) {
  const char *p = strstr(status, field);
  cr_assert_not_null(p, "%s", status);
  return strtoull(p + strlen(field), NULL, 16);
}

Test(proc, signal_mask_and_dispositions_are_reset) {
  signal(SIGPIPE, SIG_IGN);
  signal(SIGUSR1, SIG_IGN);
  sigset_t block;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  sigaddset(&block, SIGINT);
  pthread_sigmask(SIG_BLOCK, &block, NULL);
  sg_proc_result r = run("cat /proc/self/status");
  cr_assert_eq(sigset_field(r.out, "\nSigBlk:"), 0);
  /* Signals 32 and 33 are glibc's own (thread cancellation, set*id), which its posix_spawn
   * leaves ignored; a glibc program installs its handlers for them when it needs them, and
   * others cannot name them (SIGRTMIN is 34). Bit N-1 stands for signal N. */
  unsigned long long glibc_reserved = 3ULL << 31;
  cr_assert_eq(sigset_field(r.out, "\nSigIgn:") & ~glibc_reserved, 0, "%s", r.out);
  sg_proc_result_free(&r);
}

Test(proc, no_zombie_is_left) {
  sg_proc_result r = run("sleep 0.1 & true");
  sg_proc_result_free(&r);
  r = run("exit 1");
  sg_proc_result_free(&r);
  errno = 0;
  cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1);
  cr_assert_eq(errno, ECHILD);
}

typedef struct {
  const char *command;
  const char *tag;
  sg_proc_result r;
  int rv;
  atomic_int done;
} tagged_run;

static void *tagged_main(void *arg) {
  tagged_run *t = arg;
  sg_proc_spec spec = spec_of(t->command);
  spec.tag = t->tag;
  spec.timeout_ms = 60000;
  char err[256];
  t->rv = sg_proc_exec(&spec, &t->r, err, sizeof(err)); /* asserted on the test's thread */
  atomic_store(&t->done, 1);
  return NULL;
}

Test(proc, kill_tag_from_another_thread) {
  tagged_run victim = {.command = "sleep 30 & sleep 30", .tag = "sandbox-1"};
  tagged_run bystander = {.command = "sleep 1; echo survived", .tag = "sandbox-2"};
  pthread_t tv, tb;
  double t0 = now_s();
  pthread_create(&tv, NULL, tagged_main, &victim);
  pthread_create(&tb, NULL, tagged_main, &bystander);
  /* A kill before the command registers misses it: repeat until it lands. */
  while (!atomic_load(&victim.done) && now_s() - t0 < 20.0) {
    sg_proc_kill_tag("sandbox-1");
    usleep(20000);
  }
  pthread_join(tv, NULL);
  pthread_join(tb, NULL);
  cr_assert_lt(now_s() - t0, 10.0);
  cr_assert_eq(victim.rv, 0);
  cr_assert_eq(bystander.rv, 0);
  cr_assert_eq(victim.r.killed, 1);
  cr_assert_eq(victim.r.timed_out, 0);
  cr_assert_eq(victim.r.exit_code, 128 + SIGKILL);
  cr_assert_eq(bystander.r.killed, 0);
  cr_assert_eq(bystander.r.exit_code, 0);
  cr_assert_str_eq(bystander.r.out, "survived\n");
  sg_proc_result_free(&victim.r);
  sg_proc_result_free(&bystander.r);
}

Test(proc, kill_tag_with_nothing_running_is_harmless) {
  sg_proc_kill_tag("nobody");
  sg_proc_kill_tag(NULL);
  sg_proc_result r = run("echo ok");
  cr_assert_eq(r.killed, 0);
  sg_proc_result_free(&r);
}
