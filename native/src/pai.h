// Shared conventions of the C ABI (docs/architecture.md §3):
//  * every exported function catches all exceptions, stores the message in a thread-local
//    and returns null/default; .NET reads it with pai_last_error() and throws;
//  * tensors are opaque heap handles (at::Tensor*); every call returns a NEW handle that the
//    caller owns and frees with pai_tensor_dispose; inputs are never consumed;
//  * an undefined tensor is returned as null (with no error set);
//  * bool is one byte (uint8_t); arrays are pointer + length.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <cstdint>
#include <string>
#include <utility>

#define PAI_API extern "C" __attribute__((visibility("default")))

typedef at::Tensor* Tensor;
typedef at::Generator* Generator;

namespace pai {

void set_error(const char* message);

// Runs f; on any exception records the message and returns fallback.
template <class F, class R>
inline R guarded(F&& f, R fallback) {
  try {
    return f();
  } catch (const c10::Error& e) {
    set_error(e.what_without_backtrace());
  } catch (const std::exception& e) {
    set_error(e.what());
  } catch (...) {
    set_error("unknown native exception in libpai_torch");
  }
  return fallback;
}

// Runs f returning an at::Tensor and hands it out as a new handle (null when undefined).
template <class F>
inline Tensor tensor_result(F&& f) {
  return guarded(
      [&]() -> Tensor {
        at::Tensor t = f();
        return t.defined() ? new at::Tensor(std::move(t)) : nullptr;
      },
      static_cast<Tensor>(nullptr));
}

// Runs f returning nothing; returns 0 on success, -1 on error.
template <class F>
inline int32_t status_result(F&& f) {
  return guarded(
      [&]() -> int32_t {
        f();
        return 0;
      },
      -1);
}

// Null handle -> undefined tensor (optional arguments such as a missing bias).
inline at::Tensor opt(Tensor t) { return t ? *t : at::Tensor(); }

inline at::IntArrayRef ints(const int64_t* p, int32_t n) { return at::IntArrayRef(p, static_cast<size_t>(n)); }

inline at::TensorOptions options(int32_t dtype, int32_t device_type, int32_t device_index) {
  return at::TensorOptions()
      .dtype(static_cast<at::ScalarType>(dtype))
      .device(at::Device(static_cast<at::DeviceType>(device_type), static_cast<c10::DeviceIndex>(device_index)));
}

inline c10::optional<at::Generator> gen(Generator g) {
  return g ? c10::optional<at::Generator>(*g) : c10::nullopt;
}

std::vector<at::Tensor> tensor_list(const Tensor* handles, int32_t n);

// Inlined into the caller, so that a helper or a lambda inside a kernel built for a vector extension
// (`target(...)`) is compiled (and rounded) as that caller.
#define PAI_INLINE inline __attribute__((always_inline))
#define PAI_LAMBDA_INLINE __attribute__((always_inline))

// Whether x [N, ...] is stored batch-innermost: its memory is [..., N], as the sparse layers may
// pass activations on (a permuted view; see sparse.cpp).
inline bool stored_batch_inner(const at::Tensor& x) { return x.dim() >= 2 && x.movedim(0, -1).is_contiguous(); }

// Whether a 4-d x is stored channels-last ([N, H, W, C] in memory) and not also contiguous (images
// of one channel or one pixel are both).
inline bool stored_channels_last(const at::Tensor& x) {
  return x.dim() == 4 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

// How an activation x [N, ...] is laid out in memory: contiguous; batch-innermost ([..., N], as the
// sparse layers pass activations on); or, for [N, C, H, W], channels-last ([N, H, W, C], which
// libtorch's dense convolution runs fastest on the CPU).
enum class Storage : int64_t { Contiguous = 0, BatchInner = 1, ChannelsLast = 2 };

// x copied to the storage `to` by the sparse kernels' transposes where it is not stored so already
// (libtorch's copy of a permuted tensor walks one side with a large stride, several times slower);
// differentiable, the gradient going back in x's storage. Batch 1 and tensors the transposes do not
// handle (other devices, integers) stay as they are for batch-innermost, else libtorch copies them.
// Defined in sparse.cpp.
at::Tensor stored_as(const at::Tensor& x, Storage to);

// Whether a CPU convolution of x by the weight w runs channels-last (defined in nn.cpp).
bool conv_channels_last(const at::Tensor& x, const at::Tensor& w, const int64_t* stride, const int64_t* dilation,
                        int64_t groups);

// One row of max-pooling windows: the k rows x [k, W, N] of an activation stored batch-innermost
// pooled by k × k windows, stride k, into y [W / k, N], exactly as max pooling pools such an
// activation (the sparse convolution pools its output rows as it computes them). Defined in nn.cpp
// for float and double.
template <class T>
void max_pool_row(const T* x, T* y, int64_t w, int64_t n, int64_t k);

// True when the CPU has AVX2 and FMA: the kernels built for them (`target("avx2,fma")`) may run.
inline bool cpu_has_avx2_fma() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
}

// True when the CPU (and the OS) run AVX-512 F, VL, BW and DQ: the kernels built for them may run.
inline bool cpu_has_avx512() {
  static const bool has = [] {
    __builtin_cpu_init();
    return cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
  }();
  return has;
}

}  // namespace pai
