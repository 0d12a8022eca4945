/* The sealgate server with the test service added: `sealgate-test-server serve [flags]`. */
#include <stdio.h>
#include <string.h>

#include "serve.h"
#include "test_service.h"

extern const unsigned char sg_test_descriptor_set[];
extern const size_t sg_test_descriptor_set_len;

int main(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "serve") != 0) {
    fprintf(stderr, "usage: sealgate-test-server serve [flags]\n");
    return 2;
  }
  const sg_service *services[] = {&sg_test_service};
  sg_serve_extras extras = {services, 1, sg_test_descriptor_set, sg_test_descriptor_set_len};
  return sg_serve_main(argc - 2, argv + 2, &extras);
}
