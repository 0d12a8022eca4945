/* gRPC server reflection, v1 and v1alpha (grpc/doc/server-reflection.md), from a descriptor
 * set compiled into the binary (protoc --include_imports --descriptor_set_out). grpcurl,
 * ghz and Postman use it to call sealgate without .proto files. */
#ifndef SG_SERVICE_REFLECTION_H
#define SG_SERVICE_REFLECTION_H

#include <stddef.h>
#include <stdint.h>

#include "rpc/router.h"

/* Indexes |set| (a serialized google.protobuf.FileDescriptorSet, which must outlive the
 * server) by file name and symbol. ListServices answers with the services of |router|.
 * Returns 0, or -1 if the set does not parse. */
int sg_reflection_init(const uint8_t *set, size_t len, const sg_router *router);

/* Releases the index (for tests and clean exits). */
void sg_reflection_cleanup(void);

extern const sg_service sg_reflection_v1_service;
extern const sg_service sg_reflection_v1alpha_service;

#endif
