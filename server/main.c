/* sealgate: the secrets gateway. One binary, one command word per job. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "core/secure.h"
#include "serve.h"

#ifndef SG_VERSION
#define SG_VERSION "dev"
#endif

static void usage(FILE *out) {
  fprintf(out, "usage: sealgate COMMAND [flags]\n\n"
               "commands:\n"
               "  serve            run the gateway (sealgate serve --help for its flags)\n"
               "  migrate          create or upgrade the database schema\n"
               "  admin            organizations and API keys (sealgate admin --help)\n"
               "  rotate-root-key  wrap every data key for a new root key\n"
               "  version          print the version\n");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "serve") == 0)
    return sg_serve_main(argc - 2, argv + 2, NULL);
  if (strcmp(cmd, "migrate") == 0)
    return sg_cli_migrate(argc - 2, argv + 2);
  if (strcmp(cmd, "admin") == 0)
    return sg_cli_admin(argc - 2, argv + 2);
  if (strcmp(cmd, "rotate-root-key") == 0) {
    char why[200];
    if (sg_secure_process(why, sizeof(why)) != SG_SECURE_OK)
      fprintf(stderr, "sealgate: warning: %s\n", why);
    return sg_cli_rotate_root_key(argc - 2, argv + 2);
  }
  if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
    printf("sealgate %s\n", SG_VERSION);
    return 0;
  }
  if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
    usage(stdout);
    return 0;
  }
  fprintf(stderr, "sealgate: unknown command \"%s\"\n\n", cmd);
  usage(stderr);
  return 2;
}
