/* Sandbox directories: a copy keeps the tree (nested directories, modes, symbolic links as
 * links) and skips what cannot be copied; a removal takes everything below the path, and
 * nothing a symbolic link points to, whatever the modes and the depth. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/dir.h"

static char base[] = "/tmp/sg-dir-XXXXXX";
static char err[512];

static void setup(void) {
  cr_assert_not_null(mkdtemp(base));
}

static void teardown(void) {
  char e[512];
  cr_assert_eq(sg_dir_remove(base, e, sizeof(e)), 0, "%s", e);
}

TestSuite(dir, .init = setup, .fini = teardown, .timeout = 60);

/* |base|/|rel| */
static const char *at(const char *rel) {
  static char bufs[4][PATH_MAX];
  static int next;
  char *p = bufs[next++ % 4];
  snprintf(p, PATH_MAX, "%s/%s", base, rel);
  return p;
}

static void make_dir(const char *rel, mode_t mode) {
  cr_assert_eq(mkdir(at(rel), mode), 0, "mkdir %s: %s", rel, strerror(errno));
  cr_assert_eq(chmod(at(rel), mode), 0); /* past the umask */
}

static void make_file(const char *rel, const char *text, mode_t mode) {
  FILE *f = fopen(at(rel), "w");
  cr_assert_not_null(f, "%s: %s", rel, strerror(errno));
  fputs(text, f);
  fclose(f);
  cr_assert_eq(chmod(at(rel), mode), 0);
}

static void assert_file(const char *rel, const char *text, mode_t mode) {
  struct stat st;
  cr_assert_eq(lstat(at(rel), &st), 0, "%s: %s", rel, strerror(errno));
  cr_assert(S_ISREG(st.st_mode), "%s", rel);
  cr_assert_eq(st.st_mode & 07777, mode, "%s: %o", rel, (unsigned)(st.st_mode & 07777));
  char buf[256] = "";
  FILE *f = fopen(at(rel), "r");
  cr_assert_not_null(f);
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  cr_assert_str_eq(buf, text);
}

static void assert_mode(const char *rel, mode_t mode) {
  struct stat st;
  cr_assert_eq(lstat(at(rel), &st), 0, "%s: %s", rel, strerror(errno));
  cr_assert_eq(st.st_mode & 07777, mode, "%s: %o", rel, (unsigned)(st.st_mode & 07777));
}

static void assert_link(const char *rel, const char *target) {
  char buf[PATH_MAX];
  ssize_t n = readlink(at(rel), buf, sizeof(buf) - 1);
  cr_assert_geq(n, 0, "%s: %s", rel, strerror(errno));
  buf[n] = '\0';
  cr_assert_str_eq(buf, target);
}

static int exists(const char *rel) {
  struct stat st;
  return lstat(at(rel), &st) == 0;
}

/* Builds src/: nested directories, files of modes 0600 and 0755, links (relative, absolute,
 * dangling), a read-only directory, a FIFO. */
static void make_tree(void) {
  make_dir("src", 0755);
  make_dir("src/a", 0755);
  make_dir("src/a/b", 0700);
  make_dir("src/a/b/c", 0755);
  make_file("src/a/b/c/secret.txt", "deep\n", 0600);
  make_file("src/a/run.sh", "#!/bin/sh\necho hi\n", 0755);
  make_file("src/empty", "", 0644);
  cr_assert_eq(symlink("a/run.sh", at("src/link")), 0);
  cr_assert_eq(symlink("/etc/passwd", at("src/a/outside")), 0);
  cr_assert_eq(symlink("/nonexistent/sg", at("src/dangling")), 0);
  make_dir("src/ro", 0755);
  make_file("src/ro/file", "ro\n", 0444);
  cr_assert_eq(chmod(at("src/ro"), 0555), 0);
  cr_assert_eq(mkfifo(at("src/fifo"), 0600), 0);
}

Test(dir, copy_keeps_the_tree) {
  make_tree();
  cr_assert_eq(sg_dir_copy(at("src"), at("dst"), err, sizeof(err)), 0, "%s", err);
  assert_mode("dst", 0755);
  assert_mode("dst/a/b", 0700);
  assert_file("dst/a/b/c/secret.txt", "deep\n", 0600);
  assert_file("dst/a/run.sh", "#!/bin/sh\necho hi\n", 0755);
  assert_file("dst/empty", "", 0644);
  assert_link("dst/link", "a/run.sh");
  assert_link("dst/a/outside", "/etc/passwd");
  assert_link("dst/dangling", "/nonexistent/sg");
  assert_mode("dst/ro", 0555);
  assert_file("dst/ro/file", "ro\n", 0444);
  cr_assert(!exists("dst/fifo"), "FIFOs are skipped");
  /* The source is untouched. */
  assert_file("src/a/b/c/secret.txt", "deep\n", 0600);
}

Test(dir, copy_keeps_modification_times) {
  make_dir("src", 0755);
  make_file("src/old", "x", 0644);
  struct timespec times[2] = {{.tv_sec = 1000000000}, {.tv_sec = 1000000000}};
  cr_assert_eq(utimensat(AT_FDCWD, at("src/old"), times, 0), 0);
  cr_assert_eq(sg_dir_copy(at("src"), at("dst"), err, sizeof(err)), 0, "%s", err);
  struct stat st;
  cr_assert_eq(stat(at("dst/old"), &st), 0);
  cr_assert_eq(st.st_mtim.tv_sec, 1000000000);
}

Test(dir, copy_drops_setuid) {
  make_dir("src", 0755);
  make_file("src/tool", "x", 04755);
  cr_assert_eq(sg_dir_copy(at("src"), at("dst"), err, sizeof(err)), 0, "%s", err);
  assert_mode("dst/tool", 0755);
}

Test(dir, copy_refuses_an_existing_destination) {
  make_dir("src", 0755);
  make_dir("dst", 0755);
  make_file("dst/keep", "k", 0644);
  cr_assert_eq(sg_dir_copy(at("src"), at("dst"), err, sizeof(err)), -1);
  cr_assert_not_null(strstr(err, "dst"), "%s", err);
  assert_file("dst/keep", "k", 0644); /* not ours to remove */
}

Test(dir, copy_of_a_missing_source_fails) {
  cr_assert_eq(sg_dir_copy(at("nothing"), at("dst"), err, sizeof(err)), -1);
  cr_assert(!exists("dst"));
}

Test(dir, copy_of_a_symlinked_source_fails) {
  make_dir("src", 0755);
  cr_assert_eq(symlink("src", at("via")), 0);
  cr_assert_eq(sg_dir_copy(at("via"), at("dst"), err, sizeof(err)), -1);
  cr_assert(!exists("dst"));
}

/* Builds |depth| nested directories "d" below |rel| with a file at the bottom. */
static void make_deep(const char *rel, int depth) {
  int fd = open(at(rel), O_RDONLY | O_DIRECTORY);
  cr_assert_geq(fd, 0);
  for (int i = 0; i < depth; i++) {
    cr_assert_eq(mkdirat(fd, "d", 0755), 0);
    int next = openat(fd, "d", O_RDONLY | O_DIRECTORY);
    cr_assert_geq(next, 0);
    close(fd);
    fd = next;
  }
  int f = openat(fd, "bottom", O_WRONLY | O_CREAT, 0600);
  cr_assert_geq(f, 0);
  close(f);
  close(fd);
}

Test(dir, failed_copy_removes_the_partial_destination) {
  make_dir("src", 0755);
  make_file("src/first", "x", 0644);
  make_deep("src", SG_DIR_COPY_MAX_DEPTH + 2);
  cr_assert_eq(sg_dir_copy(at("src"), at("dst"), err, sizeof(err)), -1);
  cr_assert_not_null(strstr(err, "too deep"), "%s", err);
  cr_assert(!exists("dst"));
}

Test(dir, remove_takes_the_whole_tree) {
  make_tree();
  cr_assert_eq(sg_dir_remove(at("src"), err, sizeof(err)), 0, "%s", err);
  cr_assert(!exists("src"));
}

Test(dir, remove_never_follows_links_out_of_the_tree) {
  make_dir("outside", 0755);
  make_file("outside/precious", "p", 0644);
  make_dir("tree", 0755);
  cr_assert_eq(symlink(at("outside"), at("tree/to-dir")), 0);
  cr_assert_eq(symlink(at("outside/precious"), at("tree/to-file")), 0);
  cr_assert_eq(sg_dir_remove(at("tree"), err, sizeof(err)), 0, "%s", err);
  cr_assert(!exists("tree"));
  assert_file("outside/precious", "p", 0644);
}

Test(dir, remove_of_a_link_removes_only_the_link) {
  make_dir("outside", 0755);
  make_file("outside/precious", "p", 0644);
  cr_assert_eq(symlink(at("outside"), at("link")), 0);
  cr_assert_eq(sg_dir_remove(at("link"), err, sizeof(err)), 0, "%s", err);
  cr_assert(!exists("link"));
  assert_file("outside/precious", "p", 0644);
}

Test(dir, remove_handles_directories_without_permissions) {
  make_dir("tree", 0755);
  make_dir("tree/locked", 0755);
  make_file("tree/locked/f", "x", 0444);
  make_dir("tree/locked/inner", 0755);
  cr_assert_eq(chmod(at("tree/locked/inner"), 0), 0);
  cr_assert_eq(chmod(at("tree/locked"), 0555), 0);
  cr_assert_eq(sg_dir_remove(at("tree"), err, sizeof(err)), 0, "%s", err);
  cr_assert(!exists("tree"));
}

Test(dir, remove_handles_any_depth) {
  make_dir("tree", 0755);
  make_deep("tree", 300);
  cr_assert_eq(sg_dir_remove(at("tree"), err, sizeof(err)), 0, "%s", err);
  cr_assert(!exists("tree"));
}

Test(dir, remove_of_a_missing_path_succeeds) {
  cr_assert_eq(sg_dir_remove(at("nothing"), err, sizeof(err)), 0, "%s", err);
}

Test(dir, remove_of_a_file_removes_it) {
  make_file("file", "x", 0644);
  cr_assert_eq(sg_dir_remove(at("file"), err, sizeof(err)), 0, "%s", err);
  cr_assert(!exists("file"));
}

Test(dir, remove_handles_trees_deeper_than_path_max) {
  make_dir("tree", 0755);
  make_deep("tree", PATH_MAX / 2 + 10); /* "d/" per level */
  cr_assert_eq(sg_dir_remove(at("tree"), err, sizeof(err)), 0, "%s", err);
  cr_assert(!exists("tree"));
}
