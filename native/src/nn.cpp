// Neural-network functions: linear, convolution, pooling, normalization, activations, losses.
#include "pai.h"

#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

using pai::tensor_result;

PAI_API Tensor pai_linear(Tensor x, Tensor w, Tensor b) { return tensor_result([&] { return at::linear(*x, *w, pai::opt(b)); }); }

// Whether a float convolution of x by w may run channels-last: one group, no dilation. libtorch
// 1.13's channels-last convolution with a 1×1 kernel at stride 2 over 2 to 7 input channels
// computes wrong gradients and writes past its buffers (ours and PyTorch's alike; every other
// kernel, stride and channel count we tried agrees with the contiguous convolution), so a strided
// 1×1 kernel over a channel count that is not a multiple of 8 runs contiguous.
bool pai::conv_channels_last(const at::Tensor& x, const at::Tensor& w, const int64_t* stride, const int64_t* dilation,
                             int64_t groups) {
  const bool strided_point = w.size(2) == 1 && w.size(3) == 1 && (stride[0] > 1 || stride[1] > 1);
  return x.scalar_type() == at::kFloat && groups == 1 && dilation[0] == 1 && dilation[1] == 1 &&
         (!strided_point || x.size(1) % 8 == 0);
}

PAI_API Tensor pai_conv2d(Tensor x, Tensor w, Tensor b, const int64_t* stride, const int64_t* padding,
                          const int64_t* dilation, int64_t groups) {
  return tensor_result([&] {
    // A CPU convolution runs channels-last where its input is stored so (a model that converted
    // its input, see pai_channels_last) and libtorch's is right there, else contiguous: an input
    // stored otherwise (batch-innermost, an activation the sparse layers passed on) is made
    // contiguous by our transposes, as libtorch's own copy of it is slower.
    const bool cpu4 = x->dim() == 4 && x->device().is_cpu();
    const at::Tensor input = !cpu4 || (pai::stored_channels_last(*x) &&
                                       pai::conv_channels_last(*x, *w, stride, dilation, groups))
                                 ? *x
                                 : pai::stored_as(*x, pai::Storage::Contiguous);
    return at::conv2d(input, *w, pai::opt(b), pai::ints(stride, 2), pai::ints(padding, 2), pai::ints(dilation, 2), groups);
  });
}

// x stored channels-last where the CPU's dense float convolution is faster so (libtorch's oneDNN:
// residual networks' small convolutions; batch norm, ReLU, max pooling and residual sums keep that
// storage), else x itself: what a model whose convolutions gain from it applies to its input.
PAI_API Tensor pai_channels_last(Tensor x) {
  return tensor_result([&] {
    return x->dim() == 4 && x->device().is_cpu() && x->scalar_type() == at::kFloat
               ? pai::stored_as(*x, pai::Storage::ChannelsLast)
               : *x;
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

// Output row oy of a plane [H, W] (in: its first input row) over k × k windows, columns
// [first, wo): y the maximum, index (when not null) its plane position y·W + x. Sequential
// compare-and-select per window position (the first maximum wins, a NaN takes the window),
// written without branches.
template <class T>
inline void pool_row_generic(const T* in, T* y, int64_t* index, int64_t k, int64_t w, int64_t oy, int64_t wo,
                             int64_t first = 0) {
  for (int64_t ox = first; ox < wo; ++ox) {
    T m = in[ox * k];
    int64_t p = 0;
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < k; ++j) {
        const T v = in[i * w + ox * k + j];
        const bool take = v > m || v != v;
        m = take ? v : m;
        p = take ? i * k + j : p;
      }
    y[ox] = m;
    if (index) index[ox] = (oy * k + p / k) * w + ox * k + p % k;
  }
}

typedef float v8f __attribute__((vector_size(32), aligned(4)));
typedef int32_t v8i __attribute__((vector_size(32), aligned(4)));

// 2 × 2 windows of float, eight at a time: the even and odd columns of both rows are split out of
// 16 consecutive values, then selected in the same order as the generic loop.
__attribute__((target("avx2,fma"))) void pool_row_2x2(const float* in, float* y, int64_t* index, int64_t w,
                                                      int64_t oy, int64_t wo) {
  const v8i even{0, 2, 4, 6, 8, 10, 12, 14}, odd{1, 3, 5, 7, 9, 11, 13, 15};
  int64_t ox = 0;
  for (; ox + 8 <= wo && 2 * ox + 16 <= w; ox += 8) {
    const v8f a0 = *(const v8f*)(in + 2 * ox), a1 = *(const v8f*)(in + 2 * ox + 8);
    const v8f b0 = *(const v8f*)(in + w + 2 * ox), b1 = *(const v8f*)(in + w + 2 * ox + 8);
    const v8f c[4] = {__builtin_shuffle(a0, a1, even), __builtin_shuffle(a0, a1, odd),
                      __builtin_shuffle(b0, b1, even), __builtin_shuffle(b0, b1, odd)};
    v8f m = c[0];
    v8i p = {};
    for (int q = 1; q < 4; ++q) {
      const v8i take = (c[q] > m) | (c[q] != c[q]);
      m = take ? c[q] : m;
      p = take ? v8i{q, q, q, q, q, q, q, q} : p;
    }
    *(v8f*)(y + ox) = m;
    if (index)
      for (int l = 0; l < 8; ++l) index[ox + l] = (oy * 2 + (p[l] >> 1)) * w + 2 * (ox + l) + (p[l] & 1);
  }
  pool_row_generic(in, y, index, 2, w, oy, wo, ox);
}

template <class T>
void pool_row(const T* in, T* y, int64_t* index, int64_t k, int64_t w, int64_t oy, int64_t wo, bool) {
  pool_row_generic(in, y, index, k, w, oy, wo);
}
template <>
void pool_row<float>(const float* in, float* y, int64_t* index, int64_t k, int64_t w, int64_t oy, int64_t wo,
                     bool fast) {
  if (fast)
    pool_row_2x2(in, y, index, w, oy, wo);
  else
    pool_row_generic(in, y, index, k, w, oy, wo);
}

// Pools x (contiguous); index, when not null, receives each maximum's plane position.
void pool(const at::Tensor& x, at::Tensor& y, at::Tensor* index, int64_t k) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3), ho = h / k, wo = w / k;
  y = at::empty({n, c, ho, wo}, x.options());
  if (index) *index = at::empty({n, c, ho, wo}, x.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pai_max_pool", [&] {
    const scalar_t* px = x.data_ptr<scalar_t>();
    scalar_t* py = y.data_ptr<scalar_t>();
    int64_t* pi = index ? index->data_ptr<int64_t>() : nullptr;
    const bool fast = k == 2 && std::is_same_v<scalar_t, float> && pai::cpu_has_avx2_fma();
    at::parallel_for(0, n * c * ho, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, wo * k * k)),
                     [&](int64_t b, int64_t e) {
                       for (int64_t r = b; r < e; ++r) {
                         const int64_t plane = r / ho, oy = r % ho;
                         const scalar_t* in = px + (plane * h + oy * k) * w;
                         pool_row(in, py + r * wo, pi ? pi + r * wo : nullptr, k, w, oy, wo, fast);
                       }
                     });
  });
}

// ---- activations stored batch-innermost [C, H, W, N] ----
// The sparse layers may pass activations on stored so (a permuted view; see sparse.cpp). They are
// pooled as they are, one batch vector per window position, compared in the generic loop's order;
// which [C, Ho, Wo, N] keeps the winning position i·k + j within each window.

// Whether x is pooled in place of a copy to [N, C, H, W] (a window's positions fit in uint8).
bool pools_inner(const at::Tensor& x, int64_t k) { return x.size(0) > 1 && k * k <= 256 && pai::stored_batch_inner(x); }

// Output rows r = c·Ho + oy in [r0, r1): window(base, m, p) pools one window, its first position's
// batch vector at base (the others q = i·k + j at base + (i·W + j)·N), into m and its winners p.
template <class T, class Window>
PAI_INLINE void pool_inner_walk(const T* x, T* y, uint8_t* which, int64_t h, int64_t w,
                                                           int64_t ho, int64_t wo, int64_t n, int64_t k, int64_t r0,
                                                           int64_t r1, Window window) {
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t c = r / ho, oy = r % ho;
    for (int64_t ox = 0; ox < wo; ++ox)
      window(x + ((c * h + oy * k) * w + ox * k) * n, y + (r * wo + ox) * n,
             which ? which + (r * wo + ox) * n : nullptr);
  }
}

// Batch lanes [from, n) of one window, in the generic loop's order (first maximum wins, NaN takes it).
template <class T>
PAI_INLINE void pool_lanes(const T* base, T* m, uint8_t* p, int64_t w, int64_t n, int64_t k,
                                                      int64_t from) {
  std::copy(base + from, base + n, m + from);
  if (p) std::fill(p + from, p + n, uint8_t(0));
  for (int64_t q = 1; q < k * k; ++q) {
    const T* v = base + ((q / k) * w + q % k) * n;
#pragma omp simd
    for (int64_t b = from; b < n; ++b) {
      const bool take = v[b] > m[b] || v[b] != v[b];
      m[b] = take ? v[b] : m[b];
      if (p) p[b] = take ? (uint8_t)q : p[b];
    }
  }
}

template <class T>
void pool_inner_rows(const T* x, T* y, uint8_t* which, int64_t h, int64_t w, int64_t ho, int64_t wo, int64_t n,
                     int64_t k, int64_t r0, int64_t r1) {
  pool_inner_walk(x, y, which, h, w, ho, wo, n, k, r0, r1,
                  [&](const T* base, T* m, uint8_t* p) PAI_LAMBDA_INLINE { pool_lanes(base, m, p, w, n, k, 0); });
}

typedef uint8_t v8u8 __attribute__((vector_size(8), aligned(1)));
#define PAI_AVX512 __attribute__((target("avx2,fma,avx512f,avx512vl,avx512bw,avx512dq")))

// Batch lanes [b, b + 8) of one float window (the generic loop does not vectorize its uint8 winners
// next to float compares).
PAI_INLINE void pool_block8(const float* base, float* m, uint8_t* p, int64_t w, int64_t n, int64_t k, int64_t b) {
  v8f mv = *(const v8f*)(base + b);
  v8i pv = {};
  for (int64_t q = 1; q < k * k; ++q) {
    const v8f v = *(const v8f*)(base + ((q / k) * w + q % k) * n + b);
    const v8i take = (v > mv) | (v != v);
    mv = take ? v : mv;
    pv = take ? v8i{} + (int32_t)q : pv;
  }
  *(v8f*)(m + b) = mv;
  if (p) *(v8u8*)(p + b) = __builtin_convertvector(pv, v8u8);
}

// The same for 16 lanes, with AVX-512 masks (GCC's vector extensions left 64-byte selects scalar).
PAI_AVX512 PAI_INLINE void pool_block16(const float* base, float* m, uint8_t* p, int64_t w, int64_t n, int64_t k,
                                        int64_t b) {
  __m512 mv = _mm512_loadu_ps(base + b);
  __m128i pv = _mm_setzero_si128();
  for (int64_t q = 1; q < k * k; ++q) {
    const __m512 v = _mm512_loadu_ps(base + ((q / k) * w + q % k) * n + b);
    const __mmask16 take = _mm512_cmp_ps_mask(v, mv, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    mv = _mm512_mask_blend_ps(take, mv, v);
    pv = _mm_mask_blend_epi8(take, pv, _mm_set1_epi8((char)q));
  }
  _mm512_storeu_ps(m + b, mv);
  if (p) _mm_storeu_si128((__m128i*)(p + b), pv);
}

// Every window of rows [r0, r1): blocks of 16 lanes (AVX-512), then of 8, then one lane at a time,
// so a batch that is not a multiple of the widest vector still runs the narrower paths. The
// AVX-512 window is a lambda of that target, not forced inline: its intrinsics cannot be inlined
// into a caller of another target.
__attribute__((target("avx2,fma"))) void pool_inner_rows_avx2(const float* x, float* y, uint8_t* which, int64_t h,
                                                             int64_t w, int64_t ho, int64_t wo, int64_t n, int64_t k,
                                                             int64_t r0, int64_t r1) {
  pool_inner_walk(x, y, which, h, w, ho, wo, n, k, r0, r1, [&](const float* base, float* m, uint8_t* p) PAI_LAMBDA_INLINE {
    int64_t b = 0;
    for (; b + 8 <= n; b += 8) pool_block8(base, m, p, w, n, k, b);
    pool_lanes(base, m, p, w, n, k, b);
  });
}

PAI_AVX512 void pool_inner_rows_avx512(const float* x, float* y, uint8_t* which, int64_t h, int64_t w, int64_t ho,
                                       int64_t wo, int64_t n, int64_t k, int64_t r0, int64_t r1) {
  pool_inner_walk(x, y, which, h, w, ho, wo, n, k, r0, r1, [&](const float* base, float* m, uint8_t* p) PAI_AVX512 {
    int64_t b = 0;
    for (; b + 16 <= n; b += 16) pool_block16(base, m, p, w, n, k, b);
    for (; b + 8 <= n; b += 8) pool_block8(base, m, p, w, n, k, b);
    pool_lanes(base, m, p, w, n, k, b);
  });
}

template <class T>
void pool_inner_run(const T* x, T* y, uint8_t* which, int64_t h, int64_t w, int64_t ho, int64_t wo, int64_t n,
                    int64_t k, int64_t r0, int64_t r1) {
  if constexpr (std::is_same_v<T, float>) {
    if (pai::cpu_has_avx512()) return pool_inner_rows_avx512(x, y, which, h, w, ho, wo, n, k, r0, r1);
    if (pai::cpu_has_avx2_fma()) return pool_inner_rows_avx2(x, y, which, h, w, ho, wo, n, k, r0, r1);
  }
  pool_inner_rows(x, y, which, h, w, ho, wo, n, k, r0, r1);
}

// Pools x stored batch-innermost into y stored so too; which, when not null, receives the winners.
void pool_inner(const at::Tensor& x, at::Tensor& y, at::Tensor* which, int64_t k) {
  const at::Tensor xs = x.movedim(0, -1);  // [C, H, W, N], contiguous
  const int64_t c = xs.size(0), h = xs.size(1), w = xs.size(2), n = xs.size(3), ho = h / k, wo = w / k;
  at::Tensor ys = at::empty({c, ho, wo, n}, x.options());
  if (which) *which = at::empty({c, ho, wo, n}, x.options().dtype(at::kByte));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pai_max_pool_inner", [&] {
    const scalar_t* px = xs.data_ptr<scalar_t>();
    scalar_t* py = ys.data_ptr<scalar_t>();
    uint8_t* pw = which ? which->data_ptr<uint8_t>() : nullptr;
    at::parallel_for(0, c * ho, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, wo * k * k * n)),
                     [&](int64_t b, int64_t e) { pool_inner_run(px, py, pw, h, w, ho, wo, n, k, b, e); });
  });
  y = ys.permute({3, 0, 1, 2});
}

// Input rows r = c·H + yy in [r0, r1) of the gradient: each position takes its window's output
// gradient where it won (position(dx, g, p, q): its batch vector, the window's gradient and winners,
// and its own place q in the window), zero elsewhere and in the rows and columns no window covers.
template <class T, class Position>
PAI_INLINE void unpool_inner_walk(const T* g, const uint8_t* which, T* dx, int64_t h,
                                                             int64_t w, int64_t ho, int64_t wo, int64_t n, int64_t k,
                                                             int64_t r0, int64_t r1, Position position) {
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t c = r / h, yy = r % h, oy = yy / k;
    for (int64_t xx = 0; xx < w; ++xx) {
      T* dv = dx + (r * w + xx) * n;
      const int64_t ox = xx / k;
      if (oy >= ho || ox >= wo) {
        std::fill(dv, dv + n, T(0));
        continue;
      }
      const int64_t at = ((c * ho + oy) * wo + ox) * n;
      position(dv, g + at, which + at, (int32_t)((yy % k) * k + xx % k));
    }
  }
}

template <class T>
void unpool_inner_rows(const T* g, const uint8_t* which, T* dx, int64_t h, int64_t w, int64_t ho, int64_t wo,
                       int64_t n, int64_t k, int64_t r0, int64_t r1) {
  unpool_inner_walk(g, which, dx, h, w, ho, wo, n, k, r0, r1,
                    [&](T* dv, const T* gv, const uint8_t* p, int32_t q) PAI_LAMBDA_INLINE {
#pragma omp simd
                      for (int64_t b = 0; b < n; ++b) dv[b] = p[b] == q ? gv[b] : T(0);
                    });
}

// Batch lanes [b, b + 8) and [b, b + 16) of one position's gradient.
PAI_INLINE void unpool_block8(float* dv, const float* gv, const uint8_t* p, int32_t q, int64_t b) {
  const v8i pv = __builtin_convertvector(*(const v8u8*)(p + b), v8i);
  *(v8f*)(dv + b) = pv == q ? *(const v8f*)(gv + b) : v8f{};
}

PAI_AVX512 PAI_INLINE void unpool_block16(float* dv, const float* gv, const uint8_t* p, int32_t q, int64_t b) {
  const __mmask16 hit = _mm_cmpeq_epi8_mask(_mm_loadu_si128((const __m128i*)(p + b)), _mm_set1_epi8((char)q));
  _mm512_storeu_ps(dv + b, _mm512_maskz_loadu_ps(hit, gv + b));
}

__attribute__((target("avx2,fma"))) void unpool_inner_rows_avx2(const float* g, const uint8_t* which, float* dx,
                                                               int64_t h, int64_t w, int64_t ho, int64_t wo, int64_t n,
                                                               int64_t k, int64_t r0, int64_t r1) {
  unpool_inner_walk(g, which, dx, h, w, ho, wo, n, k, r0, r1,
                    [&](float* dv, const float* gv, const uint8_t* p, int32_t q) PAI_LAMBDA_INLINE {
                      int64_t b = 0;
                      for (; b + 8 <= n; b += 8) unpool_block8(dv, gv, p, q, b);
                      for (; b < n; ++b) dv[b] = p[b] == q ? gv[b] : 0.0f;
                    });
}

PAI_AVX512 void unpool_inner_rows_avx512(const float* g, const uint8_t* which, float* dx, int64_t h, int64_t w,
                                         int64_t ho, int64_t wo, int64_t n, int64_t k, int64_t r0, int64_t r1) {
  unpool_inner_walk(g, which, dx, h, w, ho, wo, n, k, r0, r1,
                    [&](float* dv, const float* gv, const uint8_t* p, int32_t q) PAI_AVX512 {
                      int64_t b = 0;
                      for (; b + 16 <= n; b += 16) unpool_block16(dv, gv, p, q, b);
                      for (; b + 8 <= n; b += 8) unpool_block8(dv, gv, p, q, b);
                      for (; b < n; ++b) dv[b] = p[b] == q ? gv[b] : 0.0f;
                    });
}

template <class T>
void unpool_inner_run(const T* g, const uint8_t* which, T* dx, int64_t h, int64_t w, int64_t ho, int64_t wo, int64_t n,
                      int64_t k, int64_t r0, int64_t r1) {
  if constexpr (std::is_same_v<T, float>) {
    if (pai::cpu_has_avx512()) return unpool_inner_rows_avx512(g, which, dx, h, w, ho, wo, n, k, r0, r1);
    if (pai::cpu_has_avx2_fma()) return unpool_inner_rows_avx2(g, which, dx, h, w, ho, wo, n, k, r0, r1);
  }
  unpool_inner_rows(g, which, dx, h, w, ho, wo, n, k, r0, r1);
}

struct MaxPoolFunction : public torch::autograd::Function<MaxPoolFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, int64_t k) {
    ctx->saved_data["shape"] = input.sizes().vec();
    ctx->saved_data["k"] = k;
    if (pools_inner(input, k)) {
      at::Tensor y, which;
      pool_inner(input, y, &which, k);
      ctx->save_for_backward({which});
      ctx->saved_data["inner"] = true;
      return y;
    }
    ctx->saved_data["inner"] = false;
    const at::Tensor x = input.contiguous();
    at::Tensor y, index;
    pool(x, y, &index, k);
    ctx->save_for_backward({index});
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto shape = ctx->saved_data["shape"].toIntVector();
    const int64_t k = ctx->saved_data["k"].toInt(), planes = shape[0] * shape[1], plane = shape[2] * shape[3];
    const bool inner = ctx->saved_data["inner"].toBool();
    at::Tensor index = ctx->get_saved_variables()[0];
    if (inner && !c10::GradMode::is_enabled()) {
      const at::Tensor& which = index;
      const int64_t c = shape[1], h = shape[2], w = shape[3], ho = which.size(1), wo = which.size(2), n = shape[0];
      const at::Tensor g = grads[0].movedim(0, -1).contiguous();  // a view when it came batch-innermost
      at::Tensor dx = at::empty({c, h, w, n}, g.options());
      AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "pai_max_pool_inner_backward", [&] {
        const scalar_t* pg = g.data_ptr<scalar_t>();
        const uint8_t* pw = which.data_ptr<uint8_t>();
        scalar_t* pd = dx.data_ptr<scalar_t>();
        at::parallel_for(0, c * h, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, w * n)),
                         [&](int64_t b, int64_t e) { unpool_inner_run(pg, pw, pd, h, w, ho, wo, n, k, b, e); });
      });
      return {dx.permute({3, 0, 1, 2}), at::Tensor()};
    }
    if (inner) {  // the plane positions libtorch's index holds, for the differentiable scatter below
      const at::Tensor q = index.permute({3, 0, 1, 2}).to(at::kLong);
      const at::Tensor oy = at::arange(q.size(2), q.options()).view({1, 1, -1, 1});
      const at::Tensor ox = at::arange(q.size(3), q.options()).view({1, 1, 1, -1});
      index = ((oy * k + q.div(k, "floor")) * shape[3] + ox * k + q.remainder(k)).contiguous();
    }
    const at::Tensor g = grads[0].contiguous().view({planes, -1});
    // With a graph of the gradient requested, a differentiable scatter; otherwise a plain loop.
    if (c10::GradMode::is_enabled())
      return {at::zeros({planes, plane}, g.options()).scatter(1, index.view({planes, -1}), g).view(shape),
              at::Tensor()};
    at::Tensor dx = at::zeros({planes, plane}, g.options());
    const int64_t outputs = g.size(1);
    AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "pai_max_pool_backward", [&] {
      const scalar_t* pg = g.data_ptr<scalar_t>();
      const int64_t* pi = index.data_ptr<int64_t>();
      scalar_t* pd = dx.data_ptr<scalar_t>();
      at::parallel_for(0, planes, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, plane)), [&](int64_t b, int64_t e) {
        for (int64_t q = b; q < e; ++q)
          for (int64_t o = 0; o < outputs; ++o) pd[q * plane + pi[q * outputs + o]] = pg[q * outputs + o];
      });
    });
    return {dx.view(shape), at::Tensor()};
  }
};

// ---- batch norm of activations stored batch-innermost [C, H, W, N] ----
// libtorch's batch norm copies such a tensor to [N, C, H, W] first (1.6× slower forward, 1.75×
// forward + backward on [128, 16, 32, 32]); stored so, each channel's values are one contiguous run,
// which suits batch norm best. Statistics as libtorch's: the biased variance normalizes, the
// unbiased one enters the running variance. Sums run in double, one channel per task in a fixed
// order, so the result does not depend on the thread count.

// Whether pai_batch_norm normalizes x in its batch-innermost storage: a CPU float tensor [N, C, ...]
// (N > 1) stored so, with an affine weight and bias, and running statistics unless training.
bool normalizes_inner(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, const at::Tensor& rm,
                      const at::Tensor& rv, bool training) {
  const auto ok = [&](const at::Tensor& t) {
    return t.defined() && t.dim() == 1 && t.size(0) == x.size(1) && t.scalar_type() == x.scalar_type() &&
           t.device().is_cpu();
  };
  return x.dim() >= 3 && x.size(0) > 1 && x.device().is_cpu() &&
         (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble) && pai::stored_batch_inner(x) && ok(w) &&
         ok(b) && (training ? (rm.defined() == rv.defined() && (!rm.defined() || (ok(rm) && ok(rv)))) : ok(rm) && ok(rv));
}

// Σ x and Σ (x − x0)² over one channel's m values (x0 its first value, which keeps the squares small).
template <class T>
PAI_INLINE void channel_moments(const T* x, int64_t m, double& sum, double& shifted_squares) {
  const double x0 = x[0];
  double s = 0, q = 0;
#pragma omp simd reduction(+ : s, q)
  for (int64_t i = 0; i < m; ++i) {
    const double d = (double)x[i] - x0;
    s += d;
    q += d * d;
  }
  sum = s + x0 * (double)m;
  shifted_squares = q;
}

// One normalized value, x·scale + shift. The backward pass of batch norm + ReLU recomputes it from
// the saved input to know where the ReLU passed the gradient: both passes use this one expression.
template <class T>
PAI_INLINE T bn_value(T x, T scale, T shift) {
  return x * scale + shift;
}
// max(z, 0) as libtorch's ReLU: a NaN stays NaN.
template <class T>
PAI_INLINE T rectified(T z) {
  return z < T(0) ? T(0) : z;
}
// The output gradient where the ReLU passed it and 0 where it clipped (z ≤ 0), as libtorch's
// threshold_backward: a NaN z passes the gradient. A mask on the bits rather than a conditional,
// which GCC does not vectorize beside the double sums of channel_grad_sums.
template <bool Relu, class T>
PAI_INLINE T passed(T dy, T x, T scale, T shift) {
  if constexpr (Relu) {
    using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
    static_assert(sizeof(Bits) == sizeof(T));
    Bits bits;
    std::memcpy(&bits, &dy, sizeof(T));
    bits &= -(Bits) !(bn_value(x, scale, shift) <= T(0));
    T g;
    std::memcpy(&g, &bits, sizeof(T));
    return g;
  } else {
    return dy;
  }
}

// y = x·scale + shift over one channel, rectified with Relu.
template <bool Relu, class T>
PAI_INLINE void channel_affine(const T* x, T* y, int64_t m, T scale, T shift) {
#pragma omp simd
  for (int64_t i = 0; i < m; ++i) {
    const T z = bn_value(x[i], scale, shift);
    y[i] = Relu ? rectified(z) : z;
  }
}

// Σ g and Σ g·(x − mean) over one channel, g the output gradient the ReLU (with Relu) passed;
// scale and shift are the forward's.
template <bool Relu, class T>
PAI_INLINE void channel_grad_sums(const T* dy, const T* x, int64_t m, double mean, T scale, T shift, double& sdy,
                                  double& sdyx) {
  double s = 0, t = 0;
#pragma omp simd reduction(+ : s, t)
  for (int64_t i = 0; i < m; ++i) {
    const double g = (double)passed<Relu>(dy[i], x[i], scale, shift);
    s += g;
    t += g * ((double)x[i] - mean);
  }
  sdy = s;
  sdyx = t;
}

// dx = a·g + b·x + c over one channel, g as in channel_grad_sums.
template <bool Relu, class T>
PAI_INLINE void channel_grad_input(const T* dy, const T* x, T* dx, int64_t m, T a, T b, T c, T scale, T shift) {
#pragma omp simd
  for (int64_t i = 0; i < m; ++i) dx[i] = a * passed<Relu>(dy[i], x[i], scale, shift) + b * x[i] + c;
}

template <class T>
void bn_moments_portable(const T* x, int64_t m, double& s, double& q) { channel_moments(x, m, s, q); }
template <class T>
__attribute__((target("avx2,fma"))) void bn_moments_avx2(const T* x, int64_t m, double& s, double& q) {
  channel_moments(x, m, s, q);
}
template <bool Relu, class T>
void bn_affine_portable(const T* x, T* y, int64_t m, T a, T b) { channel_affine<Relu>(x, y, m, a, b); }
template <bool Relu, class T>
__attribute__((target("avx2,fma"))) void bn_affine_avx2(const T* x, T* y, int64_t m, T a, T b) {
  channel_affine<Relu>(x, y, m, a, b);
}
template <bool Relu, class T>
void bn_grad_sums_portable(const T* dy, const T* x, int64_t m, double mean, T scale, T shift, double& s, double& t) {
  channel_grad_sums<Relu>(dy, x, m, mean, scale, shift, s, t);
}
template <bool Relu, class T>
__attribute__((target("avx2,fma"))) void bn_grad_sums_avx2(const T* dy, const T* x, int64_t m, double mean, T scale,
                                                           T shift, double& s, double& t) {
  channel_grad_sums<Relu>(dy, x, m, mean, scale, shift, s, t);
}
template <bool Relu, class T>
void bn_grad_input_portable(const T* dy, const T* x, T* dx, int64_t m, T a, T b, T c, T scale, T shift) {
  channel_grad_input<Relu>(dy, x, dx, m, a, b, c, scale, shift);
}
template <bool Relu, class T>
__attribute__((target("avx2,fma"))) void bn_grad_input_avx2(const T* dy, const T* x, T* dx, int64_t m, T a, T b, T c,
                                                            T scale, T shift) {
  channel_grad_input<Relu>(dy, x, dx, m, a, b, c, scale, shift);
}

// A channel's map as the forward pass applies it: y = x·scale + shift.
template <class T>
void channel_map(double w, double b, double mean, double invstd, T& scale, T& shift) {
  const double s = w * invstd;
  scale = (T)s;
  shift = (T)(b - mean * s);
}

// Channels per task: enough values that a thread's start costs little.
int64_t channel_grain(int64_t m) { return std::max<int64_t>(1, 65536 / std::max<int64_t>(1, m)); }

// y = batch norm of x (stored batch-innermost), rectified when relu, returned in the same storage;
// mean and invstd [C] (double) are the statistics it normalized with, which the backward pass reads.
// In training mode the running statistics, when given, are updated in place.
void batch_norm_inner(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, const at::Tensor& rm,
                      const at::Tensor& rv, bool training, double momentum, double eps, bool relu, at::Tensor& y,
                      at::Tensor& mean, at::Tensor& invstd) {
  const at::Tensor xc = x.movedim(0, -1);  // [C, ..., N], contiguous
  const int64_t channels = x.size(1), m = x.numel() / channels;
  const bool avx2 = pai::cpu_has_avx2_fma();
  at::Tensor yc = at::empty_like(xc);
  const auto dopt = x.options().dtype(at::kDouble);
  at::Tensor unbiased;
  if (training) {
    mean = at::empty({channels}, dopt);
    invstd = at::empty({channels}, dopt);
    unbiased = at::empty({channels}, dopt);
  } else {
    mean = rm.to(at::kDouble, /*non_blocking=*/false, /*copy=*/true);
    invstd = (rv.to(at::kDouble) + eps).rsqrt();
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pai_batch_norm_inner", [&] {
    const scalar_t* px = xc.data_ptr<scalar_t>();
    const scalar_t* pw = w.data_ptr<scalar_t>();
    const scalar_t* pb = b.data_ptr<scalar_t>();
    scalar_t* py = yc.data_ptr<scalar_t>();
    double* pm = mean.data_ptr<double>();
    double* pi = invstd.data_ptr<double>();
    double* pu = training ? unbiased.data_ptr<double>() : nullptr;
    const auto affine = avx2 ? (relu ? bn_affine_avx2<true, scalar_t> : bn_affine_avx2<false, scalar_t>)
                             : (relu ? bn_affine_portable<true, scalar_t> : bn_affine_portable<false, scalar_t>);
    at::parallel_for(0, channels, channel_grain(m), [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        const scalar_t* xs = px + c * m;
        if (training) {
          double s, q;
          if (avx2)
            bn_moments_avx2(xs, m, s, q);
          else
            bn_moments_portable(xs, m, s, q);
          const double mu = s / (double)m, d = mu - (double)xs[0];
          const double var = std::max(0.0, q / (double)m - d * d);
          pm[c] = mu;
          pi[c] = 1.0 / std::sqrt(var + eps);
          pu[c] = m > 1 ? var * (double)m / (double)(m - 1) : var;
        }
        scalar_t scale, shift;
        channel_map((double)pw[c], (double)pb[c], pm[c], pi[c], scale, shift);
        affine(xs, py + c * m, m, scale, shift);
      }
    });
  });
  if (training && rm.defined() && rm.numel() > 0) {
    at::NoGradGuard no_grad;
    rm.mul_(1 - momentum).add_(mean.to(rm.scalar_type()), momentum);
    rv.mul_(1 - momentum).add_(unbiased.to(rv.scalar_type()), momentum);
  }
  y = yc.movedim(-1, 0);
}

// Batch norm, and with relu the ReLU after it, as one autograd function. It saves the input, not the
// rectified output: where the ReLU passed the gradient is recomputed from the input, so the ReLU
// costs no pass of its own, forward or backward.
struct BatchNormInnerFunction : public torch::autograd::Function<BatchNormInnerFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            const at::Tensor& b, const at::Tensor& rm, const at::Tensor& rv, bool training,
                            double momentum, double eps, bool relu) {
    at::Tensor y, mean, invstd;
    batch_norm_inner(x, w, b, rm, rv, training, momentum, eps, relu, y, mean, invstd);
    ctx->save_for_backward({x, w, b, mean, invstd});
    ctx->saved_data["training"] = training;
    ctx->saved_data["relu"] = relu;
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    // Inside a custom backward, grad mode is on only when a graph of the gradient is requested.
    TORCH_CHECK(!c10::GradMode::is_enabled(),
                "batch norm of an activation stored batch-innermost (after a sparse layer) has no second "
                "derivative; compute Hessian-based quantities on the dense masked model");
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1], &b = saved[2], &mean = saved[3], &invstd = saved[4];
    const bool training = ctx->saved_data["training"].toBool(), relu = ctx->saved_data["relu"].toBool();
    const at::Tensor xc = x.movedim(0, -1);
    const at::Tensor gc = pai::stored_as(grads[0], pai::Storage::BatchInner).movedim(0, -1);  // a view when it came so
    const int64_t channels = x.size(1), m = x.numel() / channels;
    const bool avx2 = pai::cpu_has_avx2_fma();
    const auto dopt = x.options().dtype(at::kDouble);
    at::Tensor dxc = at::empty_like(xc), sdy = at::empty({channels}, dopt), sdyx = at::empty({channels}, dopt);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pai_batch_norm_inner_backward", [&] {
      const scalar_t* px = xc.data_ptr<scalar_t>();
      const scalar_t* pg = gc.data_ptr<scalar_t>();
      const scalar_t* pw = w.data_ptr<scalar_t>();
      const scalar_t* pb = b.data_ptr<scalar_t>();
      scalar_t* pd = dxc.data_ptr<scalar_t>();
      const double* pm = mean.data_ptr<double>();
      const double* pi = invstd.data_ptr<double>();
      double* ps = sdy.data_ptr<double>();
      double* pt = sdyx.data_ptr<double>();
      const auto sums = avx2 ? (relu ? bn_grad_sums_avx2<true, scalar_t> : bn_grad_sums_avx2<false, scalar_t>)
                             : (relu ? bn_grad_sums_portable<true, scalar_t> : bn_grad_sums_portable<false, scalar_t>);
      const auto input = avx2
                             ? (relu ? bn_grad_input_avx2<true, scalar_t> : bn_grad_input_avx2<false, scalar_t>)
                             : (relu ? bn_grad_input_portable<true, scalar_t> : bn_grad_input_portable<false, scalar_t>);
      at::parallel_for(0, channels, channel_grain(m), [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c) {
          const scalar_t* xs = px + c * m;
          const scalar_t* gs = pg + c * m;
          scalar_t scale, shift;
          channel_map((double)pw[c], (double)pb[c], pm[c], pi[c], scale, shift);
          sums(gs, xs, m, pm[c], scale, shift, ps[c], pt[c]);
          // Training: dx = γ·invstd·(g − Σg/m − (x − μ)·invstd²·Σg(x − μ)/m); eval: dx = γ·invstd·g.
          const double a = (double)pw[c] * pi[c];
          const double k = training ? pi[c] * pi[c] * pt[c] / (double)m : 0.0;
          const double offset = training ? a * (k * pm[c] - ps[c] / (double)m) : 0.0;
          input(gs, xs, pd + c * m, m, (scalar_t)a, (scalar_t)(-a * k), (scalar_t)offset, scale, shift);
        }
      });
    });
    const at::Tensor dw = (sdyx * invstd).to(x.scalar_type()), db = sdy.to(x.scalar_type());
    return {dxc.movedim(-1, 0), dw,          db,          at::Tensor(), at::Tensor(),
            at::Tensor(),       at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

bool pools_fast(const at::Tensor& x, const int64_t* kernel, const int64_t* stride, const int64_t* padding,
                const int64_t* dilation, bool ceil_mode) {
  const int64_t k = kernel[0];
  return x.device().is_cpu() && x.dim() == 4 && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble) &&
         k >= 1 && kernel[1] == k && stride[0] == k && stride[1] == k && padding[0] == 0 &&
         padding[1] == 0 && dilation[0] == 1 && dilation[1] == 1 && !ceil_mode && x.size(2) >= k && x.size(3) >= k;
}
}  // namespace

namespace pai {
template <class T>
void max_pool_row(const T* x, T* y, int64_t w, int64_t n, int64_t k) {
  pool_inner_run(x, y, nullptr, k, w, 1, w / k, n, k, 0, 1);
}
template void max_pool_row<float>(const float*, float*, int64_t, int64_t, int64_t);
template void max_pool_row<double>(const double*, double*, int64_t, int64_t, int64_t);
}  // namespace pai

PAI_API Tensor pai_max_pool2d(Tensor x, const int64_t* kernel, const int64_t* stride, const int64_t* padding,
                              const int64_t* dilation, uint8_t ceil_mode) {
  return tensor_result([&] {
    if (pools_fast(*x, kernel, stride, padding, dilation, ceil_mode != 0)) {
      // Channels-last x [N, C, H, W] is pooled by the batch-innermost code with batch and channels
      // swapped: its view [C, N, H, W] is stored [N, H, W, C], batch-innermost (no copy).
      const bool channels_last = pai::stored_channels_last(*x);
      const at::Tensor in = channels_last ? x->permute({1, 0, 2, 3}) : *x;
      at::Tensor y;
      if (in.requires_grad() && c10::GradMode::is_enabled())
        y = MaxPoolFunction::apply(in, kernel[0]);
      else if (pools_inner(in, kernel[0]))
        pool_inner(in, y, nullptr, kernel[0]);
      else
        pool(in.contiguous(), y, nullptr, kernel[0]);
      return channels_last ? y.permute({1, 0, 2, 3}) : y;
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

namespace {
// Batch norm of x, rectified when relu: an activation stored batch-innermost by the code above, any
// other by libtorch's batch norm (and ReLU).
at::Tensor normalized(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, const at::Tensor& rm,
                      const at::Tensor& rv, bool training, double momentum, double eps, bool relu) {
  if (normalizes_inner(x, w, b, rm, rv, training)) {
    if (c10::GradMode::is_enabled() && (x.requires_grad() || w.requires_grad() || b.requires_grad())) {
      // A custom function's arguments must be defined: empty tensors stand for no running statistics.
      const auto none = at::empty({0}, x.options());
      return BatchNormInnerFunction::apply(x, w, b, rm.defined() ? rm : none, rv.defined() ? rv : none, training,
                                           momentum, eps, relu);
    }
    at::Tensor y, mean, invstd;
    batch_norm_inner(x, w, b, rm, rv, training, momentum, eps, relu, y, mean, invstd);
    return y;
  }
  const at::Tensor y = at::batch_norm(x, w, b, rm, rv, training, momentum, eps, /*cudnn_enabled=*/true);
  return relu ? at::relu(y) : y;
}
}  // namespace

// Functional batch norm. In training mode the running statistics (when given) are updated in
// place with the given momentum, as torch.nn.functional.batch_norm does.
PAI_API Tensor pai_batch_norm(Tensor x, Tensor weight, Tensor bias, Tensor running_mean, Tensor running_var,
                              uint8_t training, double momentum, double eps) {
  return tensor_result([&] {
    return normalized(*x, pai::opt(weight), pai::opt(bias), pai::opt(running_mean), pai::opt(running_var),
                      training != 0, momentum, eps, /*relu=*/false);
  });
}
// ReLU of pai_batch_norm, in one pass over an activation stored batch-innermost.
PAI_API Tensor pai_batch_norm_relu(Tensor x, Tensor weight, Tensor bias, Tensor running_mean, Tensor running_var,
                                   uint8_t training, double momentum, double eps) {
  return tensor_result([&] {
    return normalized(*x, pai::opt(weight), pai::opt(bias), pai::opt(running_mean), pai::opt(running_var),
                      training != 0, momentum, eps, /*relu=*/true);
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
