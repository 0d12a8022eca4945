/* The command-line jobs besides `serve`: `migrate`, `admin ...` and `rotate-root-key`. Each
 * takes the words after its own name, talks to PostgreSQL with blocking libpq (no event loop
 * is running), and returns the process exit status: 0 done, 1 failed, 2 bad usage. */
#ifndef SG_CLI_H
#define SG_CLI_H

int sg_cli_migrate(int argc, char **argv);
int sg_cli_admin(int argc, char **argv);
int sg_cli_rotate_root_key(int argc, char **argv);

#endif
