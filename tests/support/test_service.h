/* sealgate.testing.v1.TestService: a slow, failing, streaming, metadata-echoing service for
 * the end-to-end tests, which also records audit events through the server's real writer
 * (see tests/proto/sealgate/testing/v1/test_service.proto). */
#ifndef SG_TEST_SERVICE_H
#define SG_TEST_SERVICE_H

#include "rpc/call.h"

extern const sg_service sg_test_service;

#endif
