/* A stand-in for libFuzzer's main(), for builds without libFuzzer (gcc): runs each file given
 * on the command line, or each file of each directory given (dot files skipped, in name order),
 * once through the harness's LLVMFuzzerTestOneInput. A missing directory is not an error: a
 * harness may have no regressions yet. An invariant failure aborts, failing the test. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static int run_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    perror(path);
    return -1;
  }
  fuzz_buf b = {0};
  uint8_t chunk[4096];
  size_t n;
  while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
    fuzz_buf_add(&b, chunk, n);
  fclose(f);
  /* An exact-size copy, so ASan sees reads past the input as libFuzzer would show them. */
  uint8_t *copy = malloc(b.len ? b.len : 1);
  if (copy == NULL)
    abort();
  if (b.len > 0)
    memcpy(copy, b.data, b.len);
  LLVMFuzzerTestOneInput(copy, b.len);
  free(copy);
  fuzz_buf_free(&b);
  return 0;
}

static int by_name(const struct dirent **a, const struct dirent **b) {
  return strcmp((*a)->d_name, (*b)->d_name);
}

static int run_dir(const char *dir, size_t *count) {
  struct dirent **names;
  int n = scandir(dir, &names, NULL, by_name);
  if (n < 0)
    return 0;
  int rc = 0;
  for (int i = 0; i < n; i++) {
    char path[4096];
    if (names[i]->d_name[0] != '.' &&
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name) < (int)sizeof(path)) {
      struct stat st;
      if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
        if (run_file(path) != 0)
          rc = -1;
        (*count)++;
      }
    }
    free(names[i]);
  }
  free(names);
  return rc;
}

int main(int argc, char **argv) {
  size_t count = 0;
  int rc = 0;
  for (int i = 1; i < argc; i++) {
    struct stat st;
    if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
      if (run_dir(argv[i], &count) != 0)
        rc = 1;
    } else if (stat(argv[i], &st) == 0) {
      if (run_file(argv[i]) != 0)
        rc = 1;
      count++;
    }
  }
  printf("replayed %zu inputs\n", count);
  return rc;
}
