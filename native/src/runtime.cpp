// Errors, version, threads, global seed, generators, devices (the CPU allocator: allocator.cpp).
#include "pai.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <cstdlib>
#include <torch/version.h>

namespace {
thread_local std::string last_error;
thread_local bool has_error = false;

// A libtorch built on OpenBLAS (Debian's, through libblas.so.3) runs its matrix products on
// OpenBLAS's own thread pool, sized by the core count whatever at::set_num_threads says: with two
// one-thread workers on two cores that is four busy threads. Size that pool too, when this process
// has OpenBLAS loaded (PyTorch's wheels use MKL, which at::set_num_threads already sizes).
//
// Calls use(fn) with OpenBLAS's function `symbol` of type Fn when this process has OpenBLAS loaded
// and it has that function; returns whether it did.
template <typename Fn, typename Use>
bool with_openblas(const char* symbol, Use use) {
  void* lib = dlopen("libopenblas.so.0", RTLD_LAZY | RTLD_NOLOAD);
  if (!lib) return false;
  auto fn = reinterpret_cast<Fn>(dlsym(lib, symbol));
  if (fn) use(fn);
  dlclose(lib);
  return fn != nullptr;
}

void set_blas_threads(int32_t n) {
  with_openblas<void (*)(int)>("openblas_set_num_threads", [&](auto set) { set(n); });
}

}  // namespace

namespace pai {
void set_error(const char* message) {
  last_error = message ? message : "";
  has_error = true;
}
std::vector<at::Tensor> tensor_list(const Tensor* handles, int32_t n) {
  std::vector<at::Tensor> list;
  list.reserve(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) list.push_back(opt(handles[i]));
  return list;
}
}  // namespace pai

PAI_API const char* pai_last_error() { return has_error ? last_error.c_str() : nullptr; }
PAI_API void pai_clear_error() {
  has_error = false;
  last_error.clear();
}

PAI_API const char* pai_torch_version() { return TORCH_VERSION; }

PAI_API int32_t pai_get_num_threads() { return pai::guarded([] { return (int32_t)at::get_num_threads(); }, -1); }
PAI_API int32_t pai_set_num_threads(int32_t n) {
  return pai::status_result([&] {
    at::set_num_threads(n);
    set_blas_threads(n);
  });
}
// OpenBLAS's pool size (what pai_set_num_threads set, or OPENBLAS_NUM_THREADS, or the core count),
// when this process has OpenBLAS loaded; 0 otherwise.
PAI_API int32_t pai_blas_num_threads() {
  int32_t n = 0;
  with_openblas<int (*)()>("openblas_get_num_threads", [&](auto get) { n = get(); });
  return n;
}
// The C environment as this process's libraries read it: libgomp and OpenBLAS read their wait
// settings (OMP_WAIT_POLICY, OPENBLAS_THREAD_TIMEOUT) from it once, when loaded with this shim, so
// this shows what they run with. The pointer is the environment's own: copy it before any setenv.
PAI_API const char* pai_getenv(const char* name) { return name ? std::getenv(name) : nullptr; }
PAI_API int32_t pai_get_num_interop_threads() {
  return pai::guarded([] { return (int32_t)at::get_num_interop_threads(); }, -1);
}
PAI_API const char* pai_parallel_info() {
  static thread_local std::string info;
  info = pai::guarded([] { return at::get_parallel_info(); }, std::string());
  return info.c_str();
}

PAI_API int32_t pai_manual_seed(uint64_t seed) {
  return pai::status_result([&] { at::manual_seed(seed); });
}

PAI_API uint8_t pai_cuda_is_available() {
  return pai::guarded([] { return (uint8_t)at::hasCUDA(); }, (uint8_t)0);
}
PAI_API int32_t pai_cuda_device_count() {
  return pai::guarded([] { return (int32_t)at::detail::getCUDAHooks().getNumGPUs(); }, 0);
}
// The CUDA runtime's and cuDNN's versions as libtorch's CUDA hooks report them (e.g. 12040 and
// 90100); 0 when this libtorch has no CUDA (the CPU hooks throw, which is not an error here).
PAI_API int64_t pai_cuda_runtime_version() {
  try {
    return at::hasCUDA() ? (int64_t)at::detail::getCUDAHooks().versionCUDART() : 0;
  } catch (...) {
    return 0;
  }
}
PAI_API int64_t pai_cudnn_version() {
  try {
    return at::globalContext().hasCuDNN() ? (int64_t)at::detail::getCUDAHooks().versionCuDNN() : 0;
  } catch (...) {
    return 0;
  }
}

// Seeded CPU generators. Random tensors for any device are drawn on the CPU with such a
// generator and then moved, so a seed gives the same numbers on every device.
PAI_API Generator pai_generator_new(uint64_t seed) {
  return pai::guarded([&] { return new at::Generator(at::make_generator<at::CPUGeneratorImpl>(seed)); },
                      static_cast<Generator>(nullptr));
}
PAI_API void pai_generator_dispose(Generator g) { delete g; }
PAI_API uint64_t pai_generator_initial_seed(Generator g) {
  return pai::guarded([&] { return g->current_seed(); }, (uint64_t)0);
}
