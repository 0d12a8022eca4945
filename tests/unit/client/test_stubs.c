/* The typed functions protoc-gen-sealgate generates (sealgate/v1/<file>.sg.h,
 * grpc/health/v1/health.sg.h). They are compiled here against a fake channel that records
 * what each function hands it, and checked against protoc-c's service descriptors, an
 * independent account of every method's path and response type.
 *
 * Each METHOD line below is also a compile-time check: with -Werror, the function must exist
 * with exactly the declared types to be assigned to the function pointer. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "sealgate/v1/audit.sg.h"
#include "sealgate/v1/sandbox.sg.h"
#include "sealgate/v1/secret.sg.h"
#include "sealgate/v1/secret_store.sg.h"
#include "grpc/health/v1/health.sg.h"

/* What the last call handed the channel. */
static struct {
  sg_channel *channel;
  const char *path;
  const ProtobufCMessage *request;
  const ProtobufCMessageDescriptor *response_type;
  ProtobufCMessage **response;
  const sg_call_options *options;
  sg_status *status;
  sg_stream *stream;
} seen;

/* What the fakes return, so that a test can tell it came back unchanged. */
#define FAKE_CODE SG_STATUS_DATA_LOSS
static int fake_stream;

int sg_channel_unary(sg_channel *channel, const char *path, const ProtobufCMessage *request,
                     const ProtobufCMessageDescriptor *response_type, ProtobufCMessage **response,
                     const sg_call_options *options, sg_status *status) {
  memset(&seen, 0, sizeof seen);
  seen.channel = channel;
  seen.path = path;
  seen.request = request;
  seen.response_type = response_type;
  seen.response = response;
  seen.options = options;
  seen.status = status;
  return FAKE_CODE;
}

sg_stream *sg_channel_stream_open(sg_channel *channel, const char *path,
                                  const ProtobufCMessage *request,
                                  const ProtobufCMessageDescriptor *response_type,
                                  const sg_call_options *options) {
  memset(&seen, 0, sizeof seen);
  seen.channel = channel;
  seen.path = path;
  seen.request = request;
  seen.response_type = response_type;
  seen.options = options;
  return (sg_stream *)&fake_stream;
}

int sg_stream_next(sg_stream *stream, ProtobufCMessage **message, sg_status *status) {
  memset(&seen, 0, sizeof seen);
  seen.stream = stream;
  seen.response = message;
  seen.status = status;
  return 1;
}

static int fake_channel;
#define CHANNEL ((sg_channel *)&fake_channel)

static void assert_path(const ProtobufCServiceDescriptor *service, unsigned method) {
  char want[256];
  snprintf(want, sizeof want, "/%s/%s", service->name, service->methods[method].name);
  cr_assert_str_eq(seen.path, want);
}

Test(stubs, a_unary_function_makes_its_call_with_its_arguments) {
  Sealgate__V1__CreateSecretStoreRequest request = SEALGATE__V1__CREATE_SECRET_STORE_REQUEST__INIT;
  Sealgate__V1__SecretStore *response = NULL;
  sg_call_options options = {.timeout_ms = 5};
  sg_status status;

  int code = sealgate_v1_secret_store_service_create_secret_store(CHANNEL, &request, &response,
                                                                  &options, &status);
  cr_assert_eq(code, FAKE_CODE, "the channel's status code is returned");
  cr_assert_eq(seen.channel, CHANNEL);
  cr_assert_str_eq(seen.path, "/sealgate.v1.SecretStoreService/CreateSecretStore");
  cr_assert_eq(seen.request, &request.base);
  cr_assert_eq(seen.response_type, &sealgate__v1__secret_store__descriptor);
  cr_assert_eq(seen.response, (ProtobufCMessage **)&response);
  cr_assert_eq(seen.options, &options);
  cr_assert_eq(seen.status, &status);
}

Test(stubs, a_server_streaming_function_opens_a_stream_and_its_next_reads_it) {
  Grpc__Health__V1__HealthCheckRequest request = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  sg_call_options options = {0};
  sg_stream *(*open)(sg_channel *, const Grpc__Health__V1__HealthCheckRequest *,
                     const sg_call_options *) = grpc_health_v1_health_watch;
  int (*next)(sg_stream *, Grpc__Health__V1__HealthCheckResponse **, sg_status *) =
      grpc_health_v1_health_watch_next;

  sg_stream *stream = open(CHANNEL, &request, &options);
  cr_assert_eq(stream, (sg_stream *)&fake_stream);
  cr_assert_eq(seen.channel, CHANNEL);
  cr_assert_str_eq(seen.path, "/grpc.health.v1.Health/Watch");
  cr_assert_eq(seen.request, &request.base);
  cr_assert_eq(seen.response_type, &grpc__health__v1__health_check_response__descriptor);
  cr_assert_eq(seen.options, &options);

  Grpc__Health__V1__HealthCheckResponse *message = NULL;
  sg_status status;
  cr_assert_eq(next(stream, &message, &status), 1, "sg_stream_next's result is returned");
  cr_assert_eq(seen.stream, stream);
  cr_assert_eq(seen.response, (ProtobufCMessage **)&message);
  cr_assert_eq(seen.status, &status);
}

/* Calls |fn| (a unary function taking In and returning Out) and checks the call against the
 * |index|th method of |service|; counts the methods checked. */
#define METHOD(service, index, fn, In, Out)                                                        \
  do {                                                                                             \
    int (*typed)(sg_channel *, const In *, Out **, const sg_call_options *, sg_status *) = fn;     \
    In request;                                                                                    \
    memset(&request, 0, sizeof request);                                                           \
    Out *response = NULL;                                                                          \
    sg_status status;                                                                              \
    cr_assert_eq(typed(CHANNEL, &request, &response, NULL, &status), FAKE_CODE);                   \
    cr_assert_eq(seen.request, &request.base);                                                     \
    assert_path(&(service), (index));                                                              \
    cr_assert_eq(seen.response_type, (service).methods[index].output,                              \
                 #fn " reads the wrong type");                                                     \
    checked++;                                                                                     \
  } while (0)

Test(stubs, every_unary_method_has_a_function_with_its_path_and_response_type) {
  const ProtobufCServiceDescriptor *stores = &sealgate__v1__secret_store_service__descriptor;
  const ProtobufCServiceDescriptor *secrets = &sealgate__v1__secret_service__descriptor;
  const ProtobufCServiceDescriptor *sandboxes = &sealgate__v1__sandbox_service__descriptor;
  const ProtobufCServiceDescriptor *audit = &sealgate__v1__audit_service__descriptor;
  unsigned checked = 0;

  METHOD(*stores, 0, sealgate_v1_secret_store_service_create_secret_store,
         Sealgate__V1__CreateSecretStoreRequest, Sealgate__V1__SecretStore);
  METHOD(*stores, 1, sealgate_v1_secret_store_service_list_secret_stores,
         Sealgate__V1__ListSecretStoresRequest, Sealgate__V1__ListSecretStoresResponse);
  METHOD(*stores, 2, sealgate_v1_secret_store_service_get_secret_store,
         Sealgate__V1__GetSecretStoreRequest, Sealgate__V1__SecretStore);
  METHOD(*stores, 3, sealgate_v1_secret_store_service_update_secret_store,
         Sealgate__V1__UpdateSecretStoreRequest, Sealgate__V1__SecretStore);
  METHOD(*stores, 4, sealgate_v1_secret_store_service_delete_secret_store,
         Sealgate__V1__DeleteSecretStoreRequest, Google__Protobuf__Empty);
  cr_assert_eq(checked, stores->n_methods, "a SecretStoreService method is not checked here");

  checked = 0;
  METHOD(*secrets, 0, sealgate_v1_secret_service_set_secret, Sealgate__V1__SetSecretRequest,
         Sealgate__V1__SecretEntry);
  METHOD(*secrets, 1, sealgate_v1_secret_service_list_secrets, Sealgate__V1__ListSecretsRequest,
         Sealgate__V1__ListSecretsResponse);
  METHOD(*secrets, 2, sealgate_v1_secret_service_delete_secret, Sealgate__V1__DeleteSecretRequest,
         Google__Protobuf__Empty);
  cr_assert_eq(checked, secrets->n_methods, "a SecretService method is not checked here");

  checked = 0;
  METHOD(*sandboxes, 0, sealgate_v1_sandbox_service_create_sandbox,
         Sealgate__V1__CreateSandboxRequest, Sealgate__V1__Sandbox);
  METHOD(*sandboxes, 1, sealgate_v1_sandbox_service_get_sandbox, Sealgate__V1__GetSandboxRequest,
         Sealgate__V1__Sandbox);
  METHOD(*sandboxes, 2, sealgate_v1_sandbox_service_list_sandboxes,
         Sealgate__V1__ListSandboxesRequest, Sealgate__V1__ListSandboxesResponse);
  METHOD(*sandboxes, 3, sealgate_v1_sandbox_service_delete_sandbox,
         Sealgate__V1__DeleteSandboxRequest, Google__Protobuf__Empty);
  METHOD(*sandboxes, 4, sealgate_v1_sandbox_service_create_checkpoint,
         Sealgate__V1__CreateCheckpointRequest, Sealgate__V1__Checkpoint);
  METHOD(*sandboxes, 5, sealgate_v1_sandbox_service_create_sandbox_from_checkpoint,
         Sealgate__V1__CreateSandboxFromCheckpointRequest, Sealgate__V1__Sandbox);
  METHOD(*sandboxes, 6, sealgate_v1_sandbox_service_create_snapshot,
         Sealgate__V1__CreateSnapshotRequest, Sealgate__V1__Snapshot);
  METHOD(*sandboxes, 7, sealgate_v1_sandbox_service_get_snapshot, Sealgate__V1__GetSnapshotRequest,
         Sealgate__V1__Snapshot);
  METHOD(*sandboxes, 8, sealgate_v1_sandbox_service_list_snapshots,
         Sealgate__V1__ListSnapshotsRequest, Sealgate__V1__ListSnapshotsResponse);
  METHOD(*sandboxes, 9, sealgate_v1_sandbox_service_delete_snapshot,
         Sealgate__V1__DeleteSnapshotRequest, Google__Protobuf__Empty);
  METHOD(*sandboxes, 10, sealgate_v1_sandbox_service_get_allowed_hosts,
         Sealgate__V1__GetAllowedHostsRequest, Sealgate__V1__GetAllowedHostsResponse);
  METHOD(*sandboxes, 11, sealgate_v1_sandbox_service_run_command, Sealgate__V1__RunCommandRequest,
         Sealgate__V1__RunCommandResponse);
  cr_assert_eq(checked, sandboxes->n_methods, "a SandboxService method is not checked here");

  checked = 0;
  METHOD(*audit, 0, sealgate_v1_audit_service_list_audit_events,
         Sealgate__V1__ListAuditEventsRequest, Sealgate__V1__ListAuditEventsResponse);
  cr_assert_eq(checked, audit->n_methods, "an AuditService method is not checked here");

  checked = 0;
  METHOD(grpc__health__v1__health__descriptor, 0, grpc_health_v1_health_check,
         Grpc__Health__V1__HealthCheckRequest, Grpc__Health__V1__HealthCheckResponse);
  cr_assert_eq(checked, 1);
}
