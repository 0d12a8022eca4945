#include "sealgate/sealgate.h"

const char *sealgate_version(void) {
  return SG_VERSION;
}
