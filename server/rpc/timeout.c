#include "rpc/timeout.h"

#include <stdio.h>

static const struct {
  char unit;
  int64_t ns;
} units[] = {
    {'n', 1LL},
    {'u', 1000LL},
    {'m', 1000000LL},
    {'S', 1000000000LL},
    {'M', 60 * 1000000000LL},
    {'H', 3600 * 1000000000LL},
};

int sg_timeout_parse(const char *s, size_t len, int64_t *ns) {
  if (len < 2 || len > SG_TIMEOUT_MAX_LEN)
    return -1;
  int64_t value = 0;
  for (size_t i = 0; i + 1 < len; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    value = value * 10 + (s[i] - '0'); /* 8 digits cannot overflow */
  }
  for (size_t u = 0; u < sizeof(units) / sizeof(units[0]); u++) {
    if (units[u].unit != s[len - 1])
      continue;
    *ns = value > INT64_MAX / units[u].ns ? INT64_MAX : value * units[u].ns;
    return 0;
  }
  return -1;
}

size_t sg_timeout_format(int64_t ns, char out[SG_TIMEOUT_MAX_LEN + 1]) {
  if (ns < 1)
    ns = 1;
  size_t u = 0;
  int64_t v = ns;
  while (v > 99999999 && u + 1 < sizeof(units) / sizeof(units[0])) {
    u++;
    v = ns / units[u].ns + (ns % units[u].ns != 0); /* round up */
  }
  if (v > 99999999)
    v = 99999999;
  return (size_t)snprintf(out, SG_TIMEOUT_MAX_LEN + 1, "%lld%c", (long long)v, units[u].unit);
}
