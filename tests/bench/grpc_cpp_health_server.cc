// Reference server for tests/bench/grpc_core.sh: grpc.health.v1.Health/Check
// on grpc C++ (Debian's libgrpc++), using the *callback* API
// (CallbackService + ServerUnaryReactor), which is the API grpc recommends
// for new C++ servers and the one the grpcxx benchmark table compares against.
//
// Usage: grpc_cpp_health_server HOST:PORT
//   Listens with insecure (cleartext h2c) credentials, prints "listening
//   HOST:PORT" on stdout once the server has started and runs until SIGINT or
//   SIGTERM.
//
// Threading: grpc defaults, nothing tuned. With the callback API the handlers
// run inline on grpc's own polling/executor threads (the EventEngine/iomgr
// thread pool, which grpc sizes from the number of cores); no
// completion-queue threads are managed here and no sync-server thread pool
// options (SetSyncServerOption / ResourceQuota) are set. Server-side logging
// is off, as in a default grpc C++ server.
//
// Built by grpc_core.sh with:
//   protoc --cpp_out --grpc_out (grpc_cpp_plugin) of
//   /usr/share/grpc-proto/grpc/health/v1/health.proto, then
//   g++ -O2 ... $(pkg-config --cflags --libs grpc++ protobuf)

#include <csignal>
#include <cstdio>
#include <memory>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "grpc/health/v1/health.grpc.pb.h"

using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

namespace {

class HealthService final : public Health::CallbackService {
 public:
  grpc::ServerUnaryReactor *Check(grpc::CallbackServerContext *ctx,
                                  const HealthCheckRequest * /*request*/,
                                  HealthCheckResponse *response) override {
    response->set_status(HealthCheckResponse::SERVING);
    grpc::ServerUnaryReactor *reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
  // Watch is left to the generated default (UNIMPLEMENTED); the benchmark
  // only calls Check.
};

volatile std::sig_atomic_t g_stop = 0;

void on_signal(int) { g_stop = 1; }

}  // namespace

int main(int argc, char **argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s HOST:PORT\n", argv[0]);
    return 2;
  }
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);

  HealthService service;
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(argv[1], grpc::InsecureServerCredentials(),
                           &bound_port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || bound_port == 0) {
    std::fprintf(stderr, "cannot listen on %s\n", argv[1]);
    return 1;
  }
  std::printf("listening %s\n", argv[1]);
  std::fflush(stdout);

  // Signal handlers cannot call Shutdown(); poll the flag instead.
  while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  server->Shutdown(std::chrono::system_clock::now() +
                   std::chrono::seconds(2));
  server->Wait();
  return 0;
}
