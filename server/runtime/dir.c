#include "runtime/dir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/mem.h"

/* A removal holds one descriptor per level down to this depth; deeper directories are moved
 * up to the top of the tree and removed from there on a later pass, so any depth is removed
 * with a bounded number of descriptors. */
#define SG_DIR_REMOVE_DEPTH 32

/* The modes a copy keeps: permission bits and the sticky bit, not set-user/group-ID. */
#define SG_DIR_COPY_MODE 01777

#define SG_DIR_OPEN (O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)

/* One walk: the path of the directory being visited (for messages only: the walk itself goes
 * through descriptors), where to report, and for a removal its top directory. */
typedef struct {
  char path[PATH_MAX];
  size_t len;
  char *err;
  size_t errlen;
  int root;       /* removal: the top directory, where too deep subtrees are moved */
  unsigned moved; /* removal: names given to moved subtrees so far */
  int again;      /* removal: a subtree was moved, another pass is needed */
} sg_walk;

typedef struct {
  char **name;
  size_t n;
} sg_names;

static void walk_init(sg_walk *w, const char *path, char *err, size_t errlen) {
  snprintf(w->path, sizeof(w->path), "%s", path);
  w->len = strlen(w->path);
  w->err = err;
  w->errlen = errlen;
  w->root = -1;
  w->moved = 0;
  w->again = 0;
}

/* Appends "/name" to the path in messages; returns the length to give walk_pop. */
static size_t walk_push(sg_walk *w, const char *name) {
  size_t old = w->len;
  snprintf(w->path + old, sizeof(w->path) - old, "/%s", name);
  w->len = strlen(w->path);
  return old;
}

static void walk_pop(sg_walk *w, size_t len) {
  w->len = len;
  w->path[len] = '\0';
}

/* Reports "|what| PATH/|name|: strerror(errno)" and returns -1. */
static int walk_fail(sg_walk *w, const char *what, const char *name) {
  int saved = errno;
  if (w->err != NULL && w->errlen > 0)
    snprintf(w->err, w->errlen, "%s %s%s%s: %s", what, w->path, name[0] != '\0' ? "/" : "", name,
             strerror(saved));
  return -1;
}

static void names_free(sg_names *names) {
  for (size_t i = 0; i < names->n; i++)
    free(names->name[i]);
  free(names->name);
  names->name = NULL;
  names->n = 0;
}

/* Lists the directory |fd| (without "." and ".."), reading it whole before anything in it
 * changes and without holding a descriptor beyond the call. Returns 0 or -1 (errno set). */
static int list_dir(int fd, sg_names *out) {
  out->name = NULL;
  out->n = 0;
  int own = openat(fd, ".", SG_DIR_OPEN); /* a fresh offset, unlike dup */
  DIR *d = own >= 0 ? fdopendir(own) : NULL;
  if (d == NULL) {
    if (own >= 0)
      close(own);
    return -1;
  }
  size_t cap = 0;
  struct dirent *de;
  while ((errno = 0, de = readdir(d)) != NULL) {
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
      continue;
    if (out->n == cap) {
      cap = cap == 0 ? 16 : cap * 2;
      out->name = sg_realloc(out->name, cap * sizeof(*out->name));
    }
    out->name[out->n++] = sg_strdup(de->d_name);
  }
  int saved = errno;
  closedir(d);
  if (saved != 0)
    names_free(out);
  errno = saved;
  return saved != 0 ? -1 : 0;
}

/* ---- Copy ---- */

static int copy_tree(sg_walk *w, int sfd, int dfd, int depth);

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t m = write(fd, p, n);
    if (m < 0 && errno == EINTR)
      continue;
    if (m < 0)
      return -1;
    p += m;
    n -= (size_t)m;
  }
  return 0;
}

/* Copies bytes from |in| to |out|: in the kernel where it can (and as a reflink on file systems
 * that share extents), else through a buffer. Returns 0 or -1 (errno set). */
static int copy_bytes(int in, int out) {
  ssize_t n;
  while ((n = copy_file_range(in, NULL, out, NULL, 1 << 30, 0)) != 0) {
    if (n > 0 || errno == EINTR)
      continue;
    if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
      return -1;
    break; /* not between these two files: copy through a buffer from where it stopped */
  }
  if (n == 0)
    return 0;
  char buf[65536];
  while ((n = read(in, buf, sizeof(buf))) != 0) {
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 || write_all(out, buf, (size_t)n) < 0)
      return -1;
  }
  return 0;
}

/* Gives the copy |dfd| the mode and modification time of |st|. */
static int copy_attrs(int dfd, const struct stat *st) {
  struct timespec times[2] = {st->st_atim, st->st_mtim};
  if (fchmod(dfd, st->st_mode & SG_DIR_COPY_MODE) < 0)
    return -1;
  return futimens(dfd, times);
}

static int copy_file(sg_walk *w, int sfd, int dfd, const char *name) {
  /* O_NONBLOCK: if the file was swapped for a FIFO since it was looked at, opening it must
   * not wait for a writer. */
  int in = openat(sfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (in < 0)
    return errno == ENOENT ? 0 : walk_fail(w, "cannot open", name);
  struct stat st;
  int rv = 0;
  if (fstat(in, &st) < 0) {
    rv = walk_fail(w, "cannot stat", name);
  } else if (S_ISREG(st.st_mode)) {
    int out = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (out < 0)
      rv = walk_fail(w, "cannot create the copy of", name);
    else if (copy_bytes(in, out) < 0 || copy_attrs(out, &st) < 0)
      rv = walk_fail(w, "cannot copy", name);
    if (out >= 0)
      close(out);
  }
  close(in);
  return rv;
}

static int copy_link(sg_walk *w, int sfd, int dfd, const char *name) {
  char target[PATH_MAX];
  ssize_t n = readlinkat(sfd, name, target, sizeof(target));
  if (n < 0)
    return errno == ENOENT ? 0 : walk_fail(w, "cannot read the link", name);
  if ((size_t)n == sizeof(target)) {
    errno = ENAMETOOLONG;
    return walk_fail(w, "cannot read the link", name);
  }
  target[n] = '\0';
  if (symlinkat(target, dfd, name) < 0)
    return walk_fail(w, "cannot create the copy of", name);
  return 0;
}

/* Fills the directory |dfd| with a copy of |sfd|'s contents, then gives it |sfd|'s mode and
 * time (last: a read-only directory can only be made so once it is full). */
static int copy_dir(sg_walk *w, int sfd, int dfd, int depth) {
  struct stat st;
  if (fstat(sfd, &st) < 0)
    return walk_fail(w, "cannot stat", "");
  if (copy_tree(w, sfd, dfd, depth) < 0)
    return -1;
  if (copy_attrs(dfd, &st) < 0)
    return walk_fail(w, "cannot set the mode of", "");
  return 0;
}

static int copy_subdir(sg_walk *w, int sfd, int dfd, const char *name, int depth) {
  if (depth >= SG_DIR_COPY_MAX_DEPTH) {
    errno = ELOOP;
    return walk_fail(w, "too deep to copy:", name);
  }
  int in = openat(sfd, name, SG_DIR_OPEN);
  if (in < 0)
    return errno == ENOENT ? 0 : walk_fail(w, "cannot open", name);
  int out = -1, rv = -1;
  if (mkdirat(dfd, name, S_IRWXU) < 0 || (out = openat(dfd, name, SG_DIR_OPEN)) < 0) {
    walk_fail(w, "cannot create the copy of", name);
  } else {
    size_t len = walk_push(w, name);
    rv = copy_dir(w, in, out, depth + 1);
    walk_pop(w, len);
  }
  if (out >= 0)
    close(out);
  close(in);
  return rv;
}

static int copy_entry(sg_walk *w, int sfd, int dfd, const char *name, int depth) {
  struct stat st;
  if (fstatat(sfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
    return errno == ENOENT ? 0 : walk_fail(w, "cannot stat", name); /* gone meanwhile */
  if (S_ISDIR(st.st_mode))
    return copy_subdir(w, sfd, dfd, name, depth);
  if (S_ISREG(st.st_mode))
    return copy_file(w, sfd, dfd, name);
  if (S_ISLNK(st.st_mode))
    return copy_link(w, sfd, dfd, name);
  return 0; /* a socket, FIFO or device: skipped (dir.h) */
}

static int copy_tree(sg_walk *w, int sfd, int dfd, int depth) {
  sg_names names;
  if (list_dir(sfd, &names) < 0)
    return walk_fail(w, "cannot read", "");
  int rv = 0;
  for (size_t i = 0; i < names.n && rv == 0; i++)
    rv = copy_entry(w, sfd, dfd, names.name[i], depth);
  names_free(&names);
  return rv;
}

/* Reports "|what| |path|: strerror(errno)" and returns -1. */
static int report(char *err, size_t errlen, const char *what, const char *path) {
  if (err != NULL && errlen > 0)
    snprintf(err, errlen, "%s %s: %s", what, path, strerror(errno));
  return -1;
}

/* Copies the open directory |in| into |dst|, just created. */
static int copy_root(sg_walk *w, int in, const char *dst) {
  int out = open(dst, SG_DIR_OPEN);
  if (out < 0)
    return report(w->err, w->errlen, "cannot open", dst);
  int rv = copy_dir(w, in, out, 0);
  close(out);
  return rv;
}

int sg_dir_copy(const char *src, const char *dst, char *err, size_t errlen) {
  int in = open(src, SG_DIR_OPEN);
  if (in < 0)
    return report(err, errlen, "cannot open", src);
  if (mkdir(dst, S_IRWXU) < 0) {
    report(err, errlen, "cannot create", dst);
    close(in);
    return -1;
  }
  sg_walk *w = sg_malloc(sizeof(*w)); /* PATH_MAX: too large for a worker's stack frames */
  walk_init(w, src, err, errlen);
  int rv = copy_root(w, in, dst);
  free(w);
  close(in);
  if (rv < 0)
    sg_dir_remove(dst, NULL, 0);
  return rv;
}

/* ---- Removal ---- */

static int remove_tree(sg_walk *w, int fd, int depth);

/* Opens the directory |name| in |dirfd| and gives its owner rwx on it, which removing its
 * entries needs (a sandbox may have made it read-only, as Go's module cache does). */
static int open_for_removal(int dirfd, const char *name) {
  int fd = openat(dirfd, name, SG_DIR_OPEN);
  if (fd < 0 && errno == EACCES && fchmodat(dirfd, name, S_IRWXU, AT_SYMLINK_NOFOLLOW) == 0)
    fd = openat(dirfd, name, SG_DIR_OPEN);
  struct stat st;
  if (fd >= 0 && fstat(fd, &st) == 0 && (st.st_mode & S_IRWXU) != S_IRWXU)
    fchmod(fd, (st.st_mode & 07777) | S_IRWXU); /* if this fails, the unlinks say why */
  return fd;
}

/* Moves the directory |name| in |dirfd| to the top of the tree under a fresh name, for a later
 * pass to remove. */
static int move_up(sg_walk *w, int dirfd, const char *name) {
  char fresh[32];
  for (;;) {
    snprintf(fresh, sizeof(fresh), ".sg-deep-%u", w->moved++);
    if (renameat2(dirfd, name, w->root, fresh, RENAME_NOREPLACE) == 0) {
      w->again = 1;
      return 0;
    }
    if (errno != EEXIST)
      return walk_fail(w, "cannot move up", name);
  }
}

static int remove_subdir(sg_walk *w, int dirfd, const char *name, int depth) {
  int fd = open_for_removal(dirfd, name);
  if (fd < 0)
    return errno == ENOENT ? 0 : walk_fail(w, "cannot open", name);
  int rv;
  if (depth + 1 >= SG_DIR_REMOVE_DEPTH) {
    close(fd);
    return move_up(w, dirfd, name);
  }
  size_t len = walk_push(w, name);
  rv = remove_tree(w, fd, depth + 1);
  walk_pop(w, len);
  close(fd);
  if (rv == 0 && unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
    rv = walk_fail(w, "cannot remove", name);
  return rv;
}

static int remove_entry(sg_walk *w, int dirfd, const char *name, int depth) {
  if (unlinkat(dirfd, name, 0) == 0 || errno == ENOENT)
    return 0;
  if (errno == EISDIR)
    return remove_subdir(w, dirfd, name, depth);
  return walk_fail(w, "cannot remove", name);
}

static int remove_tree(sg_walk *w, int fd, int depth) {
  sg_names names;
  if (list_dir(fd, &names) < 0)
    return walk_fail(w, "cannot read", "");
  int rv = 0;
  for (size_t i = 0; i < names.n && rv == 0; i++)
    rv = remove_entry(w, fd, names.name[i], depth);
  names_free(&names);
  return rv;
}

/* Empties the directory |root|, pass after pass while subtrees too deep were moved up. */
static int remove_contents(sg_walk *w, int root) {
  w->root = root;
  do {
    w->again = 0;
    if (remove_tree(w, root, 0) < 0)
      return -1;
  } while (w->again);
  return 0;
}

int sg_dir_remove(const char *path, char *err, size_t errlen) {
  sg_walk *w = sg_malloc(sizeof(*w));
  walk_init(w, path, err, errlen);
  int rv = 0;
  if (unlink(path) == 0 || errno == ENOENT) {
    rv = 0;
  } else if (errno != EISDIR) {
    rv = walk_fail(w, "cannot remove", "");
  } else {
    int fd = open_for_removal(AT_FDCWD, path);
    if (fd < 0)
      rv = errno == ENOENT ? 0 : walk_fail(w, "cannot open", "");
    else
      rv = remove_contents(w, fd);
    if (fd >= 0)
      close(fd);
    if (rv == 0 && fd >= 0 && rmdir(path) < 0 && errno != ENOENT)
      rv = walk_fail(w, "cannot remove", "");
  }
  free(w);
  return rv;
}
