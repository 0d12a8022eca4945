/* Monotonic time for durations, deadlines and timeouts. */
#ifndef SG_CORE_CLOCK_H
#define SG_CORE_CLOCK_H

#include <stdint.h>
#include <time.h>

/* CLOCK_MONOTONIC in nanoseconds (a vDSO read, no system call). */
static inline int64_t sg_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#endif
