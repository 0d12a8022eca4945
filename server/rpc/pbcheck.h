/* A check of protobuf wire bytes before protobuf-c unpacks them: every string field, at any
 * depth, must be valid UTF-8 (proto3 requires it) and hold no NUL byte. protobuf-c hands
 * strings to C as NUL-terminated char *, so a NUL inside one would silently cut it short —
 * a name, a host pattern or a secret value would be stored as something else than what the
 * client sent, and checked as something else too. */
#ifndef SG_RPC_PBCHECK_H
#define SG_RPC_PBCHECK_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

/* Returns 0 if every string field of the message |desc| encoded in |data| is valid UTF-8
 * without NUL, or -1 with the offending field's path written to |where| ("name",
 * "egress_allowlist[2]", "image.run_commands[0]"). Malformed wire data is left for
 * protobuf-c to refuse (it returns 0 then). */
int sg_pb_check_strings(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                        char *where, size_t cap);

#endif
