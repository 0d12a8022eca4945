/* The local process runtime (SPEC §5, `serve --local-runtime`): every sandbox gets a working
 * directory under the data dir, where RunCommand runs `/bin/sh -c COMMAND` with the sandbox's
 * sealed env. Checkpoints copy that directory; forks and snapshot-based sandboxes start from
 * the copy; CreateSnapshot runs the image's run_commands once into a template directory.
 *
 *   DATA_DIR/sandboxes/<sandbox id>/       working directory (its CA file in .sealgate/)
 *   DATA_DIR/checkpoints/<checkpoint id>/  copy made by CreateCheckpoint
 *   DATA_DIR/snapshots/<snapshot id>/      template made by CreateSnapshot
 *
 * Everything that touches the file system or waits for a process runs on worker threads
 * (runtime/work.h); completions come back on the calling loop's thread. Ids must be canonical
 * UUIDs (they become path components). */
#ifndef SG_SERVICE_LOCAL_RUNTIME_H
#define SG_SERVICE_LOCAL_RUNTIME_H

#include <stddef.h>

#include "core/arena.h"

#define SG_RUN_MAX_OUTPUT       (1 << 20) /* per stream */
#define SG_RUN_MAX_CONCURRENT   16        /* RunCommand calls at once, per process */
#define SG_BUILD_MAX_CONCURRENT 4         /* snapshot builds at once, per process */
#define SG_RUN_TAG_LEN          64        /* "<sandbox id>/<n>" */

/* Turns the runtime on, rooted at |data_dir| (which exists), with the proxy CA's PEM that every
 * sandbox directory gets a copy of. Returns 0, or -1 with a message in |err|. */
int sg_local_runtime_init(const char *data_dir, const char *ca_pem, char *err, size_t errlen);

/* Nonzero once sg_local_runtime_init succeeded. */
int sg_local_runtime_on(void);

/* Where a sandbox's CA file is (inside its directory), in |arena|. */
char *sg_local_runtime_ca_file(sg_arena *arena, const char *sandbox_id);

/* Completion of a job: |err| is NULL on success, else a message for the client (no secrets:
 * file-system errors only). */
typedef void (*sg_runtime_done)(void *arg, const char *err);

/* Creates a sandbox's directory: a copy of |from_kind| ("snapshots" or "checkpoints") entry
 * |from_id| when that exists here, else empty; then writes its CA file. */
void sg_local_runtime_prepare(const char *sandbox_id, const char *from_kind, const char *from_id,
                              sg_runtime_done done, void *arg);

/* Copies a sandbox's directory to a checkpoint's (nothing when the sandbox has none here). */
void sg_local_runtime_checkpoint(const char *sandbox_id, const char *checkpoint_id,
                                 sg_runtime_done done, void *arg);

/* Runs |n| commands one after another in a new template directory for snapshot |snapshot_id|,
 * stopping at the first that fails (its exit status and the end of its stderr in the error).
 * Returns -1 without calling |done| when SG_BUILD_MAX_CONCURRENT builds are running already
 * (with the RunCommand cap, this keeps the work pool's threads for short jobs). */
int sg_local_runtime_build_snapshot(const char *snapshot_id, char *const *commands, size_t n,
                                    sg_runtime_done done, void *arg);

/* Kills a sandbox's running commands and removes |kind|'s directory |id| in the background
 * ("sandboxes", "checkpoints" or "snapshots"). */
void sg_local_runtime_remove(const char *kind, const char *id);

typedef struct {
  int exit_code;   /* 124 when the timeout killed it, 137 when the sandbox ended under it */
  char *out, *err; /* valid UTF-8, truncation and kills marked at the end */
} sg_run_output;

/* Runs `/bin/sh -c |command|` in the sandbox's directory (or |cwd| inside it: a relative path
 * without ".."), with exactly |env| ("NAME=value", NULL-terminated) plus PATH and HOME, for at
 * most |timeout_s| seconds. |tag| receives the name it runs under, for
 * sg_local_runtime_cancel. |done| gets the output (NULL on failure, then |err| says why); it
 * is valid only during the callback. Returns -1 without calling |done| when
 * SG_RUN_MAX_CONCURRENT commands are already running. */
typedef void (*sg_run_done)(void *arg, const sg_run_output *out, const char *err);
int sg_local_runtime_run(const char *sandbox_id, const char *cwd, char *const *env,
                         const char *command, int timeout_s, sg_run_done done, void *arg,
                         char tag[SG_RUN_TAG_LEN]);

/* Kills the command sg_local_runtime_run started under |tag| (a cancelled call's). */
void sg_local_runtime_cancel(const char *tag);

/* The sandbox directories present here, for the sweep of ended sandboxes: ids, malloc'd, in
 * |*ids| (free each and the array). Blocking: call from a worker job. */
size_t sg_local_runtime_list_sandboxes(char ***ids);

#endif
