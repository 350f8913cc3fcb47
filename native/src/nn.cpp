// Neural-network functions: linear, convolution, pooling, normalization, activations, losses.
#include "pai.h"

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>

using pai::tensor_result;

PAI_API Tensor pai_linear(Tensor x, Tensor w, Tensor b) { return tensor_result([&] { return at::linear(*x, *w, pai::opt(b)); }); }

PAI_API Tensor pai_conv2d(Tensor x, Tensor w, Tensor b, const int64_t* stride, const int64_t* padding,
                          const int64_t* dilation, int64_t groups) {
  return tensor_result([&] {
    return at::conv2d(*x, *w, pai::opt(b), pai::ints(stride, 2), pai::ints(padding, 2), pai::ints(dilation, 2), groups);
  });
}

// Sliding blocks of [N, C, H, W] as columns [N, C·kh·kw, L] (torch.nn.functional.unfold):
// column l holds the input patch that output position l of a convolution with the same
// kernel, dilation, padding and stride multiplies, channel-major then kernel rows then columns.
PAI_API Tensor pai_unfold(Tensor x, const int64_t* kernel, const int64_t* dilation, const int64_t* padding,
                          const int64_t* stride) {
  return tensor_result([&] {
    TORCH_CHECK(x->dim() == 4, "unfold expects a 4-d input [N, C, H, W], got ", x->dim(), " dimensions");
    return at::im2col(*x, pai::ints(kernel, 2), pai::ints(dilation, 2), pai::ints(padding, 2), pai::ints(stride, 2));
  });
}

// Σᵢ Σₖ Gᵢₖ∘Gᵢₖ over the samples of a 2-d convolution and K output-gradient vectors stacked along
// the channels (grad_output [N, K·out, H', W'], vector-major), Gᵢₖ the weight gradient of sample i
// alone for vector k, from its input aᵢ: one batch-1 weight-gradient convolution per sample for all
// K vectors at once (libtorch's own backward kernel, so every stride, padding, dilation and group
// count it supports; the input's columns are formed once per sample, not once per vector), squared
// and accumulated in sample order, summed over the vectors at the end. Scratch: K weight-sized
// gradients.
PAI_API Tensor pai_conv2d_squared_sample_grads(Tensor input, Tensor grad_output, const int64_t* weight_shape,
                                               const int64_t* stride, const int64_t* padding, const int64_t* dilation,
                                               int64_t groups) {
  return tensor_result([&] {
    at::NoGradGuard no_grad;
    const at::Tensor a = input->detach().contiguous();
    at::Tensor d = grad_output->detach();
    TORCH_CHECK(a.dim() == 4 && d.dim() == 4 && a.size(0) == d.size(0),
                "per-sample conv gradients need an input [N, C, H, W] and an output gradient [N, out, H', W'] with the "
                "same N, got ",
                a.sizes(), " and ", d.sizes());
    const auto shape = pai::ints(weight_shape, 4);
    const int64_t out = shape[0];
    TORCH_CHECK(groups >= 1 && out % groups == 0 && d.size(1) % out == 0,
                "per-sample conv gradients: the output gradient's ", d.size(1),
                " channels are not a whole number of vectors of ", out, " output channels in ", groups, " groups");
    const int64_t vectors = d.size(1) / out;
    const int64_t n = d.size(0), h = d.size(2), w = d.size(3);
    // A grouped convolution takes its output channels group-major: [vectors, groups, out/groups]
    // becomes [groups, vectors, out/groups], so each group's channels stay together.
    if (vectors > 1 && groups > 1)
      d = d.view({n, vectors, groups, out / groups, h, w}).transpose(1, 2).reshape({n, vectors * out, h, w});
    d = d.contiguous();
    std::vector<int64_t> stacked(shape.begin(), shape.end());
    stacked[0] = vectors * out;
    // The weight gradient reads only the weight's shape; zeros keep its values defined regardless.
    const at::Tensor weight = at::zeros(stacked, a.options());
    at::Tensor sum = at::zeros(stacked, a.options());
    const std::vector<int64_t> no_output_padding{0, 0};
    for (int64_t i = 0; i < n; ++i) {
      auto grads = at::convolution_backward(d.narrow(0, i, 1), a.narrow(0, i, 1), weight, c10::nullopt,
                                            pai::ints(stride, 2), pai::ints(padding, 2), pai::ints(dilation, 2), false,
                                            no_output_padding, groups, {false, true, false});
      const at::Tensor& g = std::get<1>(grads);
      sum.addcmul_(g, g);
    }
    if (vectors == 1) return sum;
    return sum.view({groups, vectors, out / groups, shape[1], shape[2], shape[3]}).sum(1).reshape(shape);
  });
}

namespace {
// libtorch 1.13 accepts a max-pooling window that lies entirely in the padding (possible with
// dilation > 1): its output is -inf and its backward writes outside the gradient buffer,
// corrupting the heap (reproduced with python3-torch 1.13 as well). Reject such windows.
void check_pool_windows(int64_t input, int64_t output, int64_t kernel, int64_t stride, int64_t padding,
                        int64_t dilation, const char* axis) {
  for (int64_t o = 0; o < output; ++o) {
    int64_t start = o * stride - padding;
    bool inside = false;
    for (int64_t j = 0; j < kernel && !inside; ++j) inside = start + j * dilation >= 0 && start + j * dilation < input;
    TORCH_CHECK(inside, "max_pool2d: output ", o, " along ", axis, " has a window (kernel ", kernel, ", stride ",
                stride, ", padding ", padding, ", dilation ", dilation, ") that lies entirely in the padding of an input of size ",
                input, "; reduce the padding or the dilation");
  }
}
}  // namespace

namespace {
// Max pooling over non-overlapping square windows (stride = kernel, no padding or dilation) of a
// CPU [N, C, H, W]: libtorch 1.13's kernel branches on every comparison and took a third of a
// sparse LeNet-5 step. Same result: the first maximum of a window in row-major order, a NaN taking
// the window. The index kept for the backward pass is the one libtorch keeps (y·W + x within the
// plane), and the backward pass scatters with a differentiable op, so gradients of gradients
// (Hessian-vector products) flow as through libtorch's pooling.
template <int K, class T>
void pool_rows(const T* x, T* y, uint8_t* at, int64_t k_, int64_t h, int64_t w, int64_t ho, int64_t wo, int64_t begin,
               int64_t end) {
  const int64_t k = K > 0 ? K : k_;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t plane = r / ho, oy = r % ho;
    const T* in = x + (plane * h + oy * k) * w;
#pragma omp simd
    for (int64_t ox = 0; ox < wo; ++ox) {
      T m = in[ox * k];
      uint8_t p = 0;
      for (int64_t i = 0; i < k; ++i)
        for (int64_t j = 0; j < k; ++j) {
          const T v = in[i * w + ox * k + j];
          const bool take = v > m || v != v;
          m = take ? v : m;
          p = take ? (uint8_t)(i * k + j) : p;
        }
      y[r * wo + ox] = m;
      if (at) at[r * wo + ox] = p;
    }
  }
}

// Pools x (contiguous), and when `at` is defined the window position of each maximum.
void pool(const at::Tensor& x, at::Tensor& y, at::Tensor* at, int64_t k) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3), ho = h / k, wo = w / k;
  y = at::empty({n, c, ho, wo}, x.options());
  if (at) *at = at::empty({n, c, ho, wo}, x.options().dtype(at::kByte));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pai_max_pool", [&] {
    const scalar_t* px = x.data_ptr<scalar_t>();
    scalar_t* py = y.data_ptr<scalar_t>();
    uint8_t* pa = at ? at->data_ptr<uint8_t>() : nullptr;
    at::parallel_for(0, n * c * ho, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, wo * k * k)),
                     [&](int64_t b, int64_t e) {
                       if (k == 2)
                         pool_rows<2>(px, py, pa, k, h, w, ho, wo, b, e);
                       else
                         pool_rows<0>(px, py, pa, k, h, w, ho, wo, b, e);
                     });
  });
}

struct MaxPoolFunction : public torch::autograd::Function<MaxPoolFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, int64_t k) {
    const at::Tensor x = input.contiguous();
    at::Tensor y, where;
    pool(x, y, &where, k);
    // The plane index y·W + x of each maximum, from its window position.
    const int64_t w = x.size(3), ho = y.size(2), wo = y.size(3);
    const auto longs = x.options().dtype(at::kLong);
    const at::Tensor oy = at::arange(ho, longs).view({ho, 1}), ox = at::arange(wo, longs).view({1, wo});
    const at::Tensor p = where.to(at::kLong);
    const at::Tensor index = (oy * k + p.div(k, "floor")) * w + ox * k + p.remainder(k);
    ctx->save_for_backward({index});
    ctx->saved_data["shape"] = x.sizes().vec();
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const at::Tensor index = ctx->get_saved_variables()[0];
    const auto shape = ctx->saved_data["shape"].toIntVector();
    const int64_t planes = shape[0] * shape[1];
    const at::Tensor g = grads[0].contiguous().view({planes, -1});
    const at::Tensor dx = at::zeros({planes, shape[2] * shape[3]}, g.options()).scatter(1, index.view({planes, -1}), g);
    return {dx.view(shape), at::Tensor()};
  }
};

bool pools_fast(const at::Tensor& x, const int64_t* kernel, const int64_t* stride, const int64_t* padding,
                const int64_t* dilation, bool ceil_mode) {
  const int64_t k = kernel[0];
  return x.device().is_cpu() && x.dim() == 4 && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble) &&
         k >= 1 && k * k <= 255 && kernel[1] == k && stride[0] == k && stride[1] == k && padding[0] == 0 &&
         padding[1] == 0 && dilation[0] == 1 && dilation[1] == 1 && !ceil_mode && x.size(2) >= k && x.size(3) >= k;
}
}  // namespace

PAI_API Tensor pai_max_pool2d(Tensor x, const int64_t* kernel, const int64_t* stride, const int64_t* padding,
                              const int64_t* dilation, uint8_t ceil_mode) {
  return tensor_result([&] {
    if (pools_fast(*x, kernel, stride, padding, dilation, ceil_mode != 0)) {
      if (x->requires_grad() && c10::GradMode::is_enabled()) return MaxPoolFunction::apply(*x, kernel[0]);
      at::Tensor y;
      pool(x->contiguous(), y, nullptr, kernel[0]);
      return y;
    }
    auto y = at::max_pool2d(*x, pai::ints(kernel, 2), pai::ints(stride, 2), pai::ints(padding, 2),
                            pai::ints(dilation, 2), ceil_mode != 0);
    check_pool_windows(x->size(-2), y.size(-2), kernel[0], stride[0], padding[0], dilation[0], "height");
    check_pool_windows(x->size(-1), y.size(-1), kernel[1], stride[1], padding[1], dilation[1], "width");
    return y;
  });
}
PAI_API Tensor pai_avg_pool2d(Tensor x, const int64_t* kernel, const int64_t* stride, const int64_t* padding,
                              uint8_t ceil_mode, uint8_t count_include_pad) {
  return tensor_result([&] {
    return at::avg_pool2d(*x, pai::ints(kernel, 2), pai::ints(stride, 2), pai::ints(padding, 2), ceil_mode != 0,
                          count_include_pad != 0);
  });
}
PAI_API Tensor pai_adaptive_avg_pool2d(Tensor x, const int64_t* output_size) {
  return tensor_result([&] { return at::adaptive_avg_pool2d(*x, pai::ints(output_size, 2)); });
}

// Functional batch norm. In training mode the running statistics (when given) are updated in
// place with the given momentum, as torch.nn.functional.batch_norm does.
PAI_API Tensor pai_batch_norm(Tensor x, Tensor weight, Tensor bias, Tensor running_mean, Tensor running_var,
                              uint8_t training, double momentum, double eps) {
  return tensor_result([&] {
    return at::batch_norm(*x, pai::opt(weight), pai::opt(bias), pai::opt(running_mean), pai::opt(running_var),
                          training != 0, momentum, eps, /*cudnn_enabled=*/true);
  });
}
PAI_API Tensor pai_layer_norm(Tensor x, const int64_t* normalized_shape, int32_t n, Tensor weight, Tensor bias,
                              double eps) {
  return tensor_result(
      [&] { return at::layer_norm(*x, pai::ints(normalized_shape, n), pai::opt(weight), pai::opt(bias), eps); });
}

// Inverted dropout with a seeded generator (null: the global one). Identity when not training.
PAI_API Tensor pai_dropout(Tensor x, double p, uint8_t training, Generator g) {
  return tensor_result([&] {
    TORCH_CHECK(p >= 0.0 && p < 1.0, "dropout probability must lie in [0, 1), got ", p);
    if (training == 0 || p == 0.0) return *x;
    auto keep = at::empty(x->sizes(), x->options().device(at::kCPU)).bernoulli_(1.0 - p, pai::gen(g));
    if (!x->device().is_cpu()) keep = keep.to(x->device());
    return *x * keep / (1.0 - p);
  });
}

PAI_API Tensor pai_relu(Tensor x) { return tensor_result([&] { return at::relu(*x); }); }
// approximate: 0 = exact (erf), 1 = tanh approximation.
PAI_API Tensor pai_gelu(Tensor x, int32_t approximate) {
  return tensor_result([&] { return at::gelu(*x, approximate == 1 ? "tanh" : "none"); });
}
PAI_API Tensor pai_softmax(Tensor x, int64_t dim) { return tensor_result([&] { return at::softmax(*x, dim); }); }
PAI_API Tensor pai_log_softmax(Tensor x, int64_t dim) { return tensor_result([&] { return at::log_softmax(*x, dim); }); }

// reduction: 0 none, 1 mean, 2 sum (at::Reduction).
PAI_API Tensor pai_cross_entropy(Tensor logits, Tensor target, int64_t reduction, double label_smoothing) {
  return tensor_result([&] {
    return at::cross_entropy_loss(*logits, *target, {}, reduction, /*ignore_index=*/-100, label_smoothing);
  });
}
PAI_API Tensor pai_nll_loss(Tensor log_probs, Tensor target, int64_t reduction) {
  return tensor_result([&] { return at::nll_loss(*log_probs, *target, {}, reduction, -100); });
}
PAI_API Tensor pai_mse_loss(Tensor input, Tensor target, int64_t reduction) {
  return tensor_result([&] { return at::mse_loss(*input, *target, reduction); });
}
