/* Sandbox working directories: copying one (checkpoints, forks, sandboxes from a snapshot) and
 * removing one. Both block: call them from a work job (runtime/work.h).
 *
 * The trees are written by the sandboxes' own commands, which may still be running (or have
 * escaped the kill), so neither function trusts a path inside them: every step goes through a
 * directory descriptor (openat, O_NOFOLLOW), and a directory swapped for a symbolic link
 * mid-walk fails the step instead of leading the walk out of the tree. */
#ifndef SG_RUNTIME_DIR_H
#define SG_RUNTIME_DIR_H

#include <stddef.h>

/* A copy gives up on trees nested deeper than this (it holds two descriptors per level). */
#define SG_DIR_COPY_MAX_DEPTH 128

/* Copies the directory |src| to |dst|, which must not exist yet (its parent must). Copied:
 * directories and regular files, each with its permission bits, sticky bit and modification
 * time, and symbolic links, as links (never followed; their targets unchanged, even when they
 * point outside the tree). Skipped: sockets, FIFOs and device nodes, which a sandbox leaves
 * behind from servers it ran and which a copy cannot meaningfully reproduce. Dropped:
 * set-user- and set-group-ID bits, which would lend the server's identity to whoever runs the
 * copy. Hard links become separate files; owners are the server's. An entry that vanishes
 * while the copy runs is skipped. Returns 0, or -1 with |err| naming the failing path and why;
 * |dst| is then removed again (unless it existed before the call). */
int sg_dir_copy(const char *src, const char *dst, char *err, size_t errlen);

/* Removes |path| and everything below it without following any symbolic link (a link is
 * removed, not what it points to), including directories whose modes forbid it to their owner
 * (chmod -R a-w) and trees nested deeper than PATH_MAX allows naming. A |path| that does not
 * exist is not an error, so a removal can be retried. Returns 0, or -1 with |err| naming the
 * failing path and why. */
int sg_dir_remove(const char *path, char *err, size_t errlen);

#endif
