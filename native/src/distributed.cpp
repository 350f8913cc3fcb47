// Distributed data parallelism on libtorch's own c10d: a TCPStore rendezvous, process groups
// (Gloo on CPU; NCCL when the shim is compiled against a libtorch with CUDA and NCCL headers),
// and the collectives the trainer needs (allreduce, broadcast, barrier). Every collective waits
// for its completion, so a failure (a lost peer, the group's timeout) is reported by the call
// that hit it, through the usual error channel.
//
// PAI_WITH_GLOO / PAI_WITH_NCCL are set by CMake when the headers are found; without them the
// functions still exist and report how to build with the backend.
#include "pai.h"

#if defined(PAI_WITH_GLOO) || defined(PAI_WITH_NCCL)
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/version.h>
#endif
#ifdef PAI_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef PAI_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <stdexcept>

#if defined(PAI_WITH_GLOO) || defined(PAI_WITH_NCCL)
namespace {
// libtorch 2.x split the collectives into c10d::Backend (which Gloo and NCCL implement);
// in 1.13 the backends are ProcessGroups themselves. Both expose the same virtual collectives.
#if TORCH_VERSION_MAJOR >= 2
using BackendBase = c10d::Backend;
#else
using BackendBase = c10d::ProcessGroup;
#endif

struct Group {
  c10::intrusive_ptr<BackendBase> backend;
  std::chrono::milliseconds timeout;
};

c10d::ReduceOp reduce_op(int32_t op) {
  switch (op) {
    case 0: return c10d::ReduceOp::SUM;
    case 1: return c10d::ReduceOp::MIN;
    case 2: return c10d::ReduceOp::MAX;
    default: throw std::invalid_argument("unknown reduce operation " + std::to_string(op) + " (0 sum, 1 min, 2 max)");
  }
}

Group* group(void* g) {
  if (!g) throw std::invalid_argument("null process group");
  return static_cast<Group*>(g);
}

// Runs collective once per tensor: a list given to one call means one tensor per device, all
// reduced together. The calls are issued first and waited for after, so the backend can overlap them.
template <class Collective>
void per_tensor(const std::vector<at::Tensor>& list, Collective collective) {
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  for (auto& t : list) {
    std::vector<at::Tensor> one{t};
    works.push_back(collective(one));
  }
  for (auto& w : works) w->wait();
}

c10::intrusive_ptr<c10d::Store>& store(void* s) {
  if (!s) throw std::invalid_argument("null store");
  return *static_cast<c10::intrusive_ptr<c10d::Store>*>(s);
}
}  // namespace
#endif

#define PAI_NO_C10D "this libpai_torch was built without c10d headers (Gloo); on Debian install libgloo-dev and rebuild"

// ---- TCPStore --------------------------------------------------------------------------------

// The rendezvous store. The server (rank 0) listens on port and, when waitWorkers, waits until
// worldSize clients (itself included) have connected; clients retry until the timeout.
PAI_API void* pai_dist_store_new(const char* host, int32_t port, uint8_t is_server, int32_t world_size,
                                 uint8_t wait_workers, int64_t timeout_ms) {
  return pai::guarded(
      [&]() -> void* {
#if defined(PAI_WITH_GLOO) || defined(PAI_WITH_NCCL)
        if (port < 0 || port > 65535) throw std::invalid_argument("port " + std::to_string(port) + " is outside 0..65535");
        c10d::TCPStoreOptions o;
        o.port = static_cast<std::uint16_t>(port);
        o.isServer = is_server != 0;
        if (world_size > 0) o.numWorkers = static_cast<size_t>(world_size);
        o.waitWorkers = wait_workers != 0;
        o.timeout = std::chrono::milliseconds(timeout_ms);
        return new c10::intrusive_ptr<c10d::Store>(c10::make_intrusive<c10d::TCPStore>(std::string(host), o));
#else
        throw std::runtime_error(PAI_NO_C10D);
#endif
      },
      static_cast<void*>(nullptr));
}

PAI_API void pai_dist_store_dispose(void* s) {
#if defined(PAI_WITH_GLOO) || defined(PAI_WITH_NCCL)
  delete static_cast<c10::intrusive_ptr<c10d::Store>*>(s);
#endif
}

// Atomically adds delta to a counter key and returns the new value (delta 0 reads it).
PAI_API int64_t pai_dist_store_add(void* s, const char* key, int64_t delta) {
  return pai::guarded(
      [&]() -> int64_t {
#if defined(PAI_WITH_GLOO) || defined(PAI_WITH_NCCL)
        return store(s)->add(key, delta);
#else
        throw std::runtime_error(PAI_NO_C10D);
#endif
      },
      (int64_t)-1);
}

// ---- process groups -------------------------------------------------------------------------

PAI_API uint8_t pai_dist_has_gloo() {
#ifdef PAI_WITH_GLOO
  return 1;
#else
  return 0;
#endif
}

PAI_API uint8_t pai_dist_has_nccl() {
#ifdef PAI_WITH_NCCL
  return 1;
#else
  return 0;
#endif
}

// A Gloo group over the store. hostname: the address this rank's Gloo device binds to (null:
// resolve this machine's host name, loopback when it does not resolve); interface_name, when
// given, binds to that network interface instead (as GLOO_SOCKET_IFNAME does in PyTorch).
PAI_API void* pai_dist_gloo_new(void* s, int32_t rank, int32_t size, int64_t timeout_ms, const char* hostname,
                                const char* interface_name) {
  return pai::guarded(
      [&]() -> void* {
#ifdef PAI_WITH_GLOO
        auto timeout = std::chrono::milliseconds(timeout_ms);
        auto options = c10d::ProcessGroupGloo::Options::create(timeout);
        if (interface_name && *interface_name)
          options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(interface_name));
        else if (hostname && *hostname)
          options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(hostname));
        else
          options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
        options->threads = 2;
        auto backend = c10::make_intrusive<c10d::ProcessGroupGloo>(store(s), rank, size, options);
        return new Group{backend, timeout};
#else
        throw std::runtime_error(PAI_NO_C10D);
#endif
      },
      static_cast<void*>(nullptr));
}

// An NCCL group (CUDA tensors only). Available when the shim was compiled against a CUDA
// libtorch whose NCCL headers were found.
PAI_API void* pai_dist_nccl_new(void* s, int32_t rank, int32_t size, int64_t timeout_ms) {
  return pai::guarded(
      [&]() -> void* {
#ifdef PAI_WITH_NCCL
        auto timeout = std::chrono::milliseconds(timeout_ms);
        auto options = c10d::ProcessGroupNCCL::Options::create();
        options->timeout = timeout;
        auto backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(store(s), rank, size, options);
        return new Group{backend, timeout};
#else
        throw std::runtime_error(
            "this libpai_torch was built without NCCL: build it against a CUDA libtorch whose NCCL headers are "
            "installed (LIBTORCH=/path/to/libtorch dotnet build), or use the Gloo backend");
#endif
      },
      static_cast<void*>(nullptr));
}

PAI_API void pai_dist_group_dispose(void* g) {
#if defined(PAI_WITH_GLOO) || defined(PAI_WITH_NCCL)
  delete static_cast<Group*>(g);
#endif
}

// What get reads from the group's backend, or -1 where that fails.
template <class Get>
static int32_t group_number(void* g, Get get) {
  return pai::guarded(
      [&]() -> int32_t {
#if defined(PAI_WITH_GLOO) || defined(PAI_WITH_NCCL)
        return get(*group(g)->backend);
#else
        throw std::runtime_error(PAI_NO_C10D);
#endif
      },
      -1);
}

PAI_API int32_t pai_dist_group_rank(void* g) {
  return group_number(g, [](auto& backend) { return backend.getRank(); });
}

PAI_API int32_t pai_dist_group_size(void* g) {
  return group_number(g, [](auto& backend) { return backend.getSize(); });
}

// ---- collectives (in place, blocking) ---------------------------------------------------------

// Reduces each tensor across the group in place (op: 0 sum, 1 min, 2 max). Tensors must be
// contiguous and have the same shapes and dtypes on every rank.
PAI_API int32_t pai_dist_allreduce_(void* g, const Tensor* tensors, int32_t n, int32_t op) {
  return pai::status_result([&] {
#if defined(PAI_WITH_GLOO) || defined(PAI_WITH_NCCL)
    auto list = pai::tensor_list(tensors, n);
    c10d::AllreduceOptions o;
    o.reduceOp = reduce_op(op);
    o.timeout = group(g)->timeout;
    per_tensor(list, [&](std::vector<at::Tensor>& one) { return group(g)->backend->allreduce(one, o); });
#else
    throw std::runtime_error(PAI_NO_C10D);
#endif
  });
}

// Overwrites each tensor with root's copy, in place.
PAI_API int32_t pai_dist_broadcast_(void* g, const Tensor* tensors, int32_t n, int32_t root) {
  return pai::status_result([&] {
#if defined(PAI_WITH_GLOO) || defined(PAI_WITH_NCCL)
    auto list = pai::tensor_list(tensors, n);
    c10d::BroadcastOptions o;
    o.rootRank = root;
    o.timeout = group(g)->timeout;
    per_tensor(list, [&](std::vector<at::Tensor>& one) { return group(g)->backend->broadcast(one, o); });
#else
    throw std::runtime_error(PAI_NO_C10D);
#endif
  });
}

// Returns when every rank of the group has called it (or fails at the group's timeout).
PAI_API int32_t pai_dist_barrier(void* g) {
  return pai::status_result([&] {
#if defined(PAI_WITH_GLOO) || defined(PAI_WITH_NCCL)
    c10d::BarrierOptions o;
    o.timeout = group(g)->timeout;
    group(g)->backend->barrier(o)->wait();
#else
    throw std::runtime_error(PAI_NO_C10D);
#endif
  });
}
