// Tensor lifetime, creation, properties, copying in and out, shape operations.
#include "pai.h"

#include <cstring>

using pai::tensor_result;

PAI_API void pai_tensor_dispose(Tensor t) { delete t; }

// ---- creation ------------------------------------------------------------------------

PAI_API Tensor pai_tensor_from_data(const void* data, const int64_t* shape, int32_t ndim, int32_t dtype,
                                    int32_t device_type, int32_t device_index) {
  return tensor_result([&] {
    auto cpu = at::from_blob(const_cast<void*>(data), pai::ints(shape, ndim),
                             at::TensorOptions().dtype(static_cast<at::ScalarType>(dtype)));
    auto dev = at::Device(static_cast<at::DeviceType>(device_type), static_cast<c10::DeviceIndex>(device_index));
    return dev.is_cpu() ? cpu.clone() : cpu.to(dev);
  });
}

#define PAI_FACTORY(name, call)                                                                  \
  PAI_API Tensor pai_##name(const int64_t* shape, int32_t ndim, int32_t dtype, int32_t device_type, \
                            int32_t device_index) {                                             \
    return tensor_result([&] { return call(pai::ints(shape, ndim), pai::options(dtype, device_type, device_index)); }); \
  }
PAI_FACTORY(zeros, at::zeros)
PAI_FACTORY(ones, at::ones)
PAI_FACTORY(empty, at::empty)

PAI_API Tensor pai_full(const int64_t* shape, int32_t ndim, double value, int32_t dtype, int32_t device_type,
                        int32_t device_index) {
  return tensor_result(
      [&] { return at::full(pai::ints(shape, ndim), value, pai::options(dtype, device_type, device_index)); });
}

PAI_API Tensor pai_arange(double start, double end, double step, int32_t dtype, int32_t device_type,
                          int32_t device_index) {
  return tensor_result([&] { return at::arange(start, end, step, pai::options(dtype, device_type, device_index)); });
}

// Random factories: drawn on the CPU (with the generator, or the global one when null), then
// moved to the device, so a seed gives the same values everywhere.
namespace {
at::TensorOptions cpu_options(int32_t dtype) { return at::TensorOptions().dtype(static_cast<at::ScalarType>(dtype)); }
at::Tensor to_device(at::Tensor t, int32_t device_type, int32_t device_index) {
  auto dev = at::Device(static_cast<at::DeviceType>(device_type), static_cast<c10::DeviceIndex>(device_index));
  return dev.is_cpu() ? t : t.to(dev);
}
}  // namespace

PAI_API Tensor pai_randn(const int64_t* shape, int32_t ndim, Generator g, int32_t dtype, int32_t device_type,
                         int32_t device_index) {
  return tensor_result([&] {
    return to_device(at::randn(pai::ints(shape, ndim), pai::gen(g), cpu_options(dtype)), device_type, device_index);
  });
}
PAI_API Tensor pai_rand(const int64_t* shape, int32_t ndim, Generator g, int32_t dtype, int32_t device_type,
                        int32_t device_index) {
  return tensor_result([&] {
    return to_device(at::rand(pai::ints(shape, ndim), pai::gen(g), cpu_options(dtype)), device_type, device_index);
  });
}
PAI_API Tensor pai_randint(int64_t low, int64_t high, const int64_t* shape, int32_t ndim, Generator g, int32_t dtype,
                           int32_t device_type, int32_t device_index) {
  return tensor_result([&] {
    return to_device(at::randint(low, high, pai::ints(shape, ndim), pai::gen(g), cpu_options(dtype)), device_type,
                     device_index);
  });
}
PAI_API Tensor pai_randperm(int64_t n, Generator g, int32_t device_type, int32_t device_index) {
  return tensor_result([&] {
    return to_device(at::randperm(n, pai::gen(g), cpu_options((int32_t)at::kLong)), device_type, device_index);
  });
}
// Elementwise Bernoulli with probabilities p (a tensor of the same shape).
PAI_API Tensor pai_bernoulli(Tensor p, Generator g) {
  return tensor_result([&] {
    auto cpu = p->device().is_cpu() ? *p : p->cpu();
    auto draw = at::bernoulli(cpu, pai::gen(g));
    return p->device().is_cpu() ? draw : draw.to(p->device());
  });
}
// Like pai_randn/pai_rand but with the shape, dtype and device of another tensor.
PAI_API Tensor pai_randn_like(Tensor t, Generator g) {
  return tensor_result([&] {
    auto cpu = at::randn(t->sizes(), pai::gen(g), cpu_options((int32_t)t->scalar_type()));
    return t->device().is_cpu() ? cpu : cpu.to(t->device());
  });
}
PAI_API Tensor pai_rand_like(Tensor t, Generator g) {
  return tensor_result([&] {
    auto cpu = at::rand(t->sizes(), pai::gen(g), cpu_options((int32_t)t->scalar_type()));
    return t->device().is_cpu() ? cpu : cpu.to(t->device());
  });
}

// ---- properties ----------------------------------------------------------------------

PAI_API int32_t pai_tensor_dim(Tensor t) { return pai::guarded([&] { return (int32_t)t->dim(); }, -1); }
PAI_API int32_t pai_tensor_shape(Tensor t, int64_t* out, int32_t capacity) {
  return pai::status_result([&] {
    TORCH_CHECK(capacity >= t->dim(), "shape buffer too small");
    for (int64_t i = 0; i < t->dim(); ++i) out[i] = t->size(i);
  });
}
PAI_API int64_t pai_tensor_numel(Tensor t) { return pai::guarded([&] { return (int64_t)t->numel(); }, (int64_t)-1); }
PAI_API int32_t pai_tensor_dtype(Tensor t) { return pai::guarded([&] { return (int32_t)t->scalar_type(); }, -1); }
PAI_API int32_t pai_tensor_device_type(Tensor t) { return pai::guarded([&] { return (int32_t)t->device().type(); }, -1); }
PAI_API int32_t pai_tensor_device_index(Tensor t) { return pai::guarded([&] { return (int32_t)t->device().index(); }, -1); }
PAI_API uint8_t pai_tensor_is_contiguous(Tensor t) { return pai::guarded([&] { return (uint8_t)t->is_contiguous(); }, (uint8_t)0); }

// ---- copying out ---------------------------------------------------------------------

// Copies the tensor's elements (row-major, as its own dtype) into dst of nbytes bytes.
PAI_API int32_t pai_tensor_copy_to(Tensor t, void* dst, int64_t nbytes) {
  return pai::status_result([&] {
    auto c = t->detach().to(at::kCPU).contiguous();
    int64_t need = c.numel() * (int64_t)c.element_size();
    TORCH_CHECK(nbytes == need, "copy_to: destination holds ", nbytes, " bytes but the tensor has ", need);
    if (need > 0) std::memcpy(dst, c.data_ptr(), (size_t)need);
  });
}
PAI_API double pai_tensor_item_double(Tensor t) { return pai::guarded([&] { return t->item<double>(); }, 0.0); }
PAI_API int64_t pai_tensor_item_long(Tensor t) { return pai::guarded([&] { return t->item<int64_t>(); }, (int64_t)0); }

// ---- conversion ----------------------------------------------------------------------

PAI_API Tensor pai_to_dtype(Tensor t, int32_t dtype) {
  return tensor_result([&] { return t->to(static_cast<at::ScalarType>(dtype)); });
}
PAI_API Tensor pai_to_device(Tensor t, int32_t device_type, int32_t device_index) {
  return tensor_result([&] {
    return t->to(at::Device(static_cast<at::DeviceType>(device_type), static_cast<c10::DeviceIndex>(device_index)));
  });
}
PAI_API Tensor pai_clone(Tensor t) { return tensor_result([&] { return t->clone(); }); }
PAI_API Tensor pai_contiguous(Tensor t) { return tensor_result([&] { return t->contiguous(); }); }
// A new handle to the same tensor (shares storage and autograd identity).
PAI_API Tensor pai_alias(Tensor t) { return tensor_result([&] { return *t; }); }

// ---- shape ---------------------------------------------------------------------------

PAI_API Tensor pai_view(Tensor t, const int64_t* shape, int32_t n) {
  return tensor_result([&] { return t->view(pai::ints(shape, n)); });
}
PAI_API Tensor pai_reshape(Tensor t, const int64_t* shape, int32_t n) {
  return tensor_result([&] { return t->reshape(pai::ints(shape, n)); });
}
PAI_API Tensor pai_expand(Tensor t, const int64_t* shape, int32_t n) {
  return tensor_result([&] { return t->expand(pai::ints(shape, n)); });
}
PAI_API Tensor pai_permute(Tensor t, const int64_t* dims, int32_t n) {
  return tensor_result([&] { return t->permute(pai::ints(dims, n)); });
}
PAI_API Tensor pai_transpose(Tensor t, int64_t a, int64_t b) { return tensor_result([&] { return t->transpose(a, b); }); }
PAI_API Tensor pai_flatten(Tensor t, int64_t start, int64_t end) { return tensor_result([&] { return t->flatten(start, end); }); }
PAI_API Tensor pai_unsqueeze(Tensor t, int64_t dim) { return tensor_result([&] { return t->unsqueeze(dim); }); }
PAI_API Tensor pai_squeeze(Tensor t, int64_t dim) { return tensor_result([&] { return t->squeeze(dim); }); }
PAI_API Tensor pai_narrow(Tensor t, int64_t dim, int64_t start, int64_t length) {
  return tensor_result([&] { return t->narrow(dim, start, length); });
}
PAI_API Tensor pai_select(Tensor t, int64_t dim, int64_t index) { return tensor_result([&] { return t->select(dim, index); }); }
PAI_API Tensor pai_flip(Tensor t, const int64_t* dims, int32_t n) {
  return tensor_result([&] { return t->flip(pai::ints(dims, n)); });
}
PAI_API Tensor pai_cat(const Tensor* ts, int32_t n, int64_t dim) {
  return tensor_result([&] { return at::cat(pai::tensor_list(ts, n), dim); });
}
PAI_API Tensor pai_stack(const Tensor* ts, int32_t n, int64_t dim) {
  return tensor_result([&] { return at::stack(pai::tensor_list(ts, n), dim); });
}
PAI_API Tensor pai_index_select(Tensor t, int64_t dim, Tensor index) {
  return tensor_result([&] { return t->index_select(dim, *index); });
}
PAI_API Tensor pai_gather(Tensor t, int64_t dim, Tensor index) { return tensor_result([&] { return t->gather(dim, *index); }); }
PAI_API Tensor pai_scatter(Tensor t, int64_t dim, Tensor index, Tensor src) {
  return tensor_result([&] { return t->scatter(dim, *index, *src); });
}
PAI_API Tensor pai_masked_select(Tensor t, Tensor mask) { return tensor_result([&] { return t->masked_select(*mask); }); }
// Zero padding of the last dimensions: pads = (left, right, top, bottom, ...), as torch.nn.functional.pad.
PAI_API Tensor pai_constant_pad(Tensor t, const int64_t* pads, int32_t n, double value) {
  return tensor_result([&] { return at::constant_pad_nd(*t, pai::ints(pads, n), value); });
}
