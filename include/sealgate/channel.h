/* A sealgate channel: one HTTP/2 connection to a sealgate server (TLS, or cleartext h2c), shared
 * by every thread of the process that makes calls on it. Calls are multiplexed as HTTP/2
 * streams; an I/O thread owned by the channel does all socket work, so a call blocks only the
 * thread that makes it.
 *
 * The typed functions generated from proto/ (sealgate/v1/<file>.sg.h, e.g.
 * sealgate_v1_secret_store_service_create_secret_store) are thin wrappers over
 * sg_channel_unary and sg_channel_stream_open. Every call reports a gRPC status; a function
 * that returns an int returns the status code (0 = SG_STATUS_OK).
 *
 * Thread safety: a channel may be used by any number of threads at once. A stream (server
 * streaming) belongs to the thread that reads it.
 *
 * Options left at zero (or a NULL options pointer) take their values from the environment:
 * SEALGATE_ADDR, SEALGATE_API_KEY, SEALGATE_TLS ("1") and SEALGATE_TLS_CA. */
#ifndef SEALGATE_CHANNEL_H
#define SEALGATE_CHANNEL_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "sealgate/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sg_channel sg_channel;
typedef struct sg_stream sg_stream;

/* sg_channel_options.tls */
enum {
  SG_TLS_FROM_ENV = 0, /* TLS when $SEALGATE_TLS is "1" or $SEALGATE_TLS_CA is set */
  SG_TLS_ON = 1,       /* TLS with ALPN h2; the server's certificate and host name verified */
  SG_TLS_OFF = 2,      /* cleartext HTTP/2 (h2c), whatever the environment says */
};

typedef struct {
  /* "host:port" ("[v6]:port"); NULL: $SEALGATE_ADDR, else "127.0.0.1:50051". */
  const char *target;
  int tls;                     /* SG_TLS_FROM_ENV, SG_TLS_ON or SG_TLS_OFF */
  const char *tls_ca_file;     /* CA bundle to trust; NULL: $SEALGATE_TLS_CA, else the system's */
  const char *tls_cert_file;   /* client certificate (mutual TLS); NULL: none */
  const char *tls_key_file;    /* its key */
  const char *tls_server_name; /* the name to verify (and send as SNI); NULL: the target's host */
  /* The API key sent as "authorization: Bearer <key>" on every call; NULL: $SEALGATE_API_KEY
   * (when that is unset too, calls go without one). */
  const char *api_key;
  int64_t connect_timeout_ms; /* name resolution + TCP + TLS handshake; 0: 10 seconds */
} sg_channel_options;

/* One metadata entry. Names are lower-case; a name ending in "-bin" carries raw bytes (sent
 * base64-encoded). */
typedef struct {
  const char *name;
  const void *value;
  size_t len;
} sg_metadata_entry;

typedef struct {
  /* The call's deadline, sent as grpc-timeout and enforced here; 0: none. */
  int64_t timeout_ms;
  /* Retry a call that ends UNAVAILABLE (server restarting, connection lost, database down),
   * with exponential backoff and full jitter, within the deadline. Only for calls that are safe
   * to repeat. */
  int retry;
  int max_attempts;    /* with retry: 0 means until the deadline (5 attempts without one) */
  const char *api_key; /* overrides the channel's */
  const sg_metadata_entry *metadata;
  size_t n_metadata;
} sg_call_options;

/* A call's outcome: a gRPC status code and its message ("" for none). */
typedef struct {
  int code;
  char message[512];
} sg_status;

/* Creates a channel. It connects on the first call (and again after losing the connection).
 * Returns NULL with a message in |err| for options that cannot work (a target that is not
 * host:port, an unreadable CA file, a certificate without its key). */
sg_channel *sg_channel_new(const sg_channel_options *options, char *err, size_t errlen);

/* Ends every call in flight with CANCELLED, closes the connections and frees the channel. A call
 * made after it ends CANCELLED too. Streams still open stay readable (they report CANCELLED)
 * and are freed with sg_stream_free as usual; the channel's memory goes with the last of them. */
void sg_channel_free(sg_channel *channel);

/* Makes a unary call to |path| ("/package.Service/Method"; copied). On SG_STATUS_OK, |*response| is
 * a message of type |response_type| that the caller frees with
 * protobuf_c_message_free_unpacked(*response, NULL); otherwise it is NULL. |options| may be
 * NULL. Returns status->code. */
int sg_channel_unary(sg_channel *channel, const char *path, const ProtobufCMessage *request,
                     const ProtobufCMessageDescriptor *response_type, ProtobufCMessage **response,
                     const sg_call_options *options, sg_status *status);

/* Starts a server-streaming call. Returns the stream (never NULL); its outcome comes from
 * sg_stream_next. */
sg_stream *sg_channel_stream_open(sg_channel *channel, const char *path,
                                  const ProtobufCMessage *request,
                                  const ProtobufCMessageDescriptor *response_type,
                                  const sg_call_options *options);

/* Waits for the stream's next message. Returns 1 with |*message| set (freed by the caller with
 * protobuf_c_message_free_unpacked), or 0 when the stream has ended, with |status| filled in
 * (SG_STATUS_OK for a clean end); every later call returns 0 with the same status. */
int sg_stream_next(sg_stream *stream, ProtobufCMessage **message, sg_status *status);

/* Cancels the stream if it is still running and frees it, without waiting. */
void sg_stream_free(sg_stream *stream);

#ifdef __cplusplus
}
#endif

#endif
