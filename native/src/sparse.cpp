// Sparse kernels for masked layers on the CPU: a weight kept only where its mask is nonzero, held
// as compressed rows (row pointers, column indices, values), with the three products of training:
// the forward O = X·Wᵀ, the input gradient dX = dO·W, and the weight gradient at kept positions
// only (a sampled dense-dense product: never a dense dW).
//
// Activations are held batch-innermost (feature × batch, and [C, H, W, N] for images), so one
// kept weight multiplies a contiguous batch vector (the layout of SparseProp, Nikdan et al. 2023).
// A block of output values stays in registers while every kept weight that reaches it adds its
// share, and is stored once. Every output element (an output row, an input-gradient row, one kept
// weight's gradient) is computed by one thread in a fixed order, so results do not depend on the
// thread count. Scratch per call: the input, output and output-gradient transposed to that layout,
// each the size of the tensor it copies (the backward pass transposes the input again rather than
// keep a copy alive); no im2col buffer. Between sparse layers the transposes can be skipped: a layer
// may return its output as it computed it, stored batch-innermost behind a permuted view (libtorch's
// elementwise ops keep that layout), and a layer whose input arrives stored so reads it in place.
// Convolutions also run in the input's own layout, vectorized along image rows.
//
// The pattern is five int64 tensors built once from a mask (pai_sparse_pattern): row_ptr [rows+1],
// cols [nnz] (ascending within a row: row-major order, the order of masked_select), and its
// transpose for the input gradient: col_ptr [cols+1], col_rows [nnz], col_perm [nnz] (the row and
// the value index of each kept weight, column-major). A convolution's row is its flattened
// [in, kh, kw] kernel.
#include "pai.h"

#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

using pai::cpu_has_avx2_fma;
using pai::stored_batch_inner;
using pai::stored_channels_last;
using pai::status_result;
using pai::tensor_result;

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// ---- what the kernels share -------------------------------------------------------------------

// The pattern and the kept values, as every kernel reads them (see the top of this file).
template <class T>
struct PatternArgs {
  const int64_t* row_ptr;
  const int64_t* cols;
  const int64_t* col_ptr;
  const int64_t* col_rows;
  const int64_t* col_perm;
  const T* values;
};

// ---- linear: X [B, in] held as XT [in, B] ------------------------------------------------------

template <class T>
struct LinearArgs : PatternArgs<T> {
  int64_t rows;  // output features (the weight gradient's row walk)
  int64_t batch;
  const T* xt;   // [in, B]
  const T* got;  // dO transposed [out, B]
  T* out;        // OT [out, B] (forward), dXT [in, B] (input gradient), dvalues [nnz]
};

// ---- conv2d: X [N, C, H, W] held as XT [C, H, W, N], O as OT [O, Ho, Wo, N] ---------------------

template <class T>
struct ConvArgs : PatternArgs<T> {
  int64_t n, c, h, w;      // input
  int64_t o, ho, wo;       // output
  int64_t kh, kw, stride, pad_h, pad_w;
  const T* xt;   // [C, H, W, N]
  const T* got;  // dO as [O, Ho, Wo, N]
  T* out;        // OT (forward), dXT (input gradient), dvalues (weight gradient)
  const T* bias = nullptr;  // forward: [O], added to each output channel, or none
  int64_t pool = 0;         // conv_forward_pooled: the max pool's window and stride
};

// One kept weight's part in a walk over batch vectors: for m in [lo, hi] it adds w times the n
// values at src + off + m·step (off is only ever used with a valid m, so it may be negative).
template <class T>
struct Tap {
  T w;
  int64_t off, lo, hi;
};

// ---- the kernels, built for two vector widths ---------------------------------------------------
// sparse_kernels.h holds every kernel written over vec_t<T>; it is included once per width, each in
// its own namespace: 32-byte vectors (the AVX2/FMA build, and the portable one as SSE pairs) and
// 64-byte vectors (the AVX-512 build).

namespace v256 {
#define PAI_VECTOR_BYTES 32
#include "sparse_kernels.h"
#undef PAI_VECTOR_BYTES
}  // namespace v256

namespace v512 {
#define PAI_VECTOR_BYTES 64
#include "sparse_kernels.h"
#undef PAI_VECTOR_BYTES
}  // namespace v512

// ---- dispatch: the widest build of each kernel the CPU runs, unless a narrower one is chosen ----

// Vector paths: 0 portable, 1 AVX2/FMA, 2 AVX-512.
int cpu_vector_path() {
  static const int best = pai::cpu_has_avx512() ? 2 : cpu_has_avx2_fma() ? 1 : 0;
  return best;
}

// A narrower path chosen for the process (so that tests cover every build the CPU can run); -1: the widest.
std::atomic<int> chosen_path{-1};

int vector_path() {
  const int chosen = chosen_path.load();
  return chosen < 0 ? cpu_vector_path() : chosen;
}

// kernel##_run runs body (a kernel of sparse_kernels.h) over [0, total) with the widest build up to
// `widest`: the rows layout stops at AVX2, as 64-byte vectors leave the rows of small images
// (lenet5's 8 columns) to the scalar tail, measured several times slower.
#define PAI_DISPATCH(kernel, Args, body, widest)                                                       \
  template <class T>                                                                                   \
  __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma"))) void kernel##_avx512(         \
      const Args<T>& a, int64_t b, int64_t e) {                                                        \
    v512::body(a, b, e);                                                                               \
  }                                                                                                    \
  template <class T>                                                                                   \
  __attribute__((target("avx2,fma"))) void kernel##_avx2(const Args<T>& a, int64_t b, int64_t e) {     \
    v256::body(a, b, e);                                                                               \
  }                                                                                                    \
  template <class T>                                                                                   \
  void kernel##_portable(const Args<T>& a, int64_t b, int64_t e) {                                     \
    v256::body(a, b, e);                                                                               \
  }                                                                                                    \
  template <class T>                                                                                   \
  void kernel##_run(const Args<T>& a, int64_t total, int64_t grain) {                                  \
    const int path = std::min(vector_path(), widest);                                                  \
    at::parallel_for(0, total, grain, [&](int64_t b, int64_t e) {                                      \
      if constexpr (widest >= 2) {                                                                     \
        if (path == 2) return kernel##_avx512(a, b, e);                                                \
      }                                                                                                \
      if (path == 1)                                                                                   \
        kernel##_avx2(a, b, e);                                                                        \
      else                                                                                             \
        kernel##_portable(a, b, e);                                                                    \
    });                                                                                                \
  }

PAI_DISPATCH(linear_forward, LinearArgs, linear_gather<false>, 2)
PAI_DISPATCH(linear_input_grad, LinearArgs, linear_gather<true>, 2)
PAI_DISPATCH(linear_weight_grad, LinearArgs, linear_weight_grad, 2)
PAI_DISPATCH(conv_forward, ConvArgs, conv_forward, 2)
PAI_DISPATCH(conv_forward_pooled, ConvArgs, conv_forward_pooled, 2)
PAI_DISPATCH(conv_input_grad, ConvArgs, conv_input_grad, 2)
PAI_DISPATCH(conv_weight_grad, ConvArgs, conv_weight_grad, 2)
PAI_DISPATCH(rows_forward, ConvArgs, rows_forward, 1)
PAI_DISPATCH(rows_input_grad, ConvArgs, rows_input_grad, 1)
PAI_DISPATCH(rows_weight_grad, ConvArgs, rows_weight_grad, 1)

// Enough work per task that a thread's start costs little: about 32k multiply-adds.
int64_t grain_for(int64_t work_per_item) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, work_per_item)); }

// ---- transposes between the three storages of an activation ----------------------------------
// Contiguous [N, features]; batch-innermost [features, N]; and, for [N, C, H, W], channels-last
// [N, H, W, C], which libtorch's dense convolution runs fastest on this CPU. Any one to another is
// one pass of 2-d transposes over slabs of the tensor.

// b [cols, rows] = a [rows, cols] (rows lda apart in a, ldb apart in b), tiles of 16 columns of a
// (every row of a tile reads whole cache lines): libtorch copies a permuted tensor walking one side
// with a large stride, which cost as much as the sparse products on small images. Pure copies: the
// result does not depend on the build.
template <class T>
void transpose_portable(const T* __restrict a, int64_t lda, T* __restrict b, int64_t ldb, int64_t rows, int64_t cols,
                        int64_t t0, int64_t t1) {
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t j0 = t * 16, j1 = std::min(cols, j0 + 16);
    for (int64_t i0 = 0; i0 < rows; i0 += 16) {
      const int64_t i1 = std::min(rows, i0 + 16);
      for (int64_t j = j0; j < j1; ++j)
        for (int64_t i = i0; i < i1; ++i) b[j * ldb + i] = a[i * lda + j];
    }
  }
}

// A square block of one vector's lanes (8 floats or 4 doubles) through registers.
__attribute__((target("avx2,fma"))) inline void transpose_block(const float* a, int64_t lda, float* b, int64_t ldb) {
  __m256 r[8], t[8], s[8];
  for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(a + k * lda);
  for (int k = 0; k < 8; k += 2) {
    t[k] = _mm256_unpacklo_ps(r[k], r[k + 1]);
    t[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]);
  }
  for (int k = 0; k < 8; k += 4) {
    s[k] = _mm256_shuffle_ps(t[k], t[k + 2], _MM_SHUFFLE(1, 0, 1, 0));
    s[k + 1] = _mm256_shuffle_ps(t[k], t[k + 2], _MM_SHUFFLE(3, 2, 3, 2));
    s[k + 2] = _mm256_shuffle_ps(t[k + 1], t[k + 3], _MM_SHUFFLE(1, 0, 1, 0));
    s[k + 3] = _mm256_shuffle_ps(t[k + 1], t[k + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int k = 0; k < 4; ++k) {
    _mm256_storeu_ps(b + k * ldb, _mm256_permute2f128_ps(s[k], s[k + 4], 0x20));
    _mm256_storeu_ps(b + (k + 4) * ldb, _mm256_permute2f128_ps(s[k], s[k + 4], 0x31));
  }
}

__attribute__((target("avx2,fma"))) inline void transpose_block(const double* a, int64_t lda, double* b, int64_t ldb) {
  __m256d r[4];
  for (int k = 0; k < 4; ++k) r[k] = _mm256_loadu_pd(a + k * lda);
  const __m256d t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
  const __m256d t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
  _mm256_storeu_pd(b, _mm256_permute2f128_pd(t0, t2, 0x20));
  _mm256_storeu_pd(b + ldb, _mm256_permute2f128_pd(t1, t3, 0x20));
  _mm256_storeu_pd(b + 2 * ldb, _mm256_permute2f128_pd(t0, t2, 0x31));
  _mm256_storeu_pd(b + 3 * ldb, _mm256_permute2f128_pd(t1, t3, 0x31));
}

template <class T>
__attribute__((target("avx2,fma"))) void transpose_avx2(const T* __restrict a, int64_t lda, T* __restrict b,
                                                        int64_t ldb, int64_t rows, int64_t cols, int64_t t0,
                                                        int64_t t1) {
  constexpr int64_t L = 32 / sizeof(T);  // transpose_block's square
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t j0 = t * 16, j1 = std::min(cols, j0 + 16);
    int64_t i0 = 0;
    for (; i0 + L <= rows; i0 += L) {
      int64_t j = j0;
      for (; j + L <= j1; j += L) transpose_block(a + i0 * lda + j, lda, b + j * ldb + i0, ldb);
      for (; j < j1; ++j)
        for (int64_t i = i0; i < i0 + L; ++i) b[j * ldb + i] = a[i * lda + j];
    }
    for (int64_t j = j0; j < j1; ++j)
      for (int64_t i = i0; i < rows; ++i) b[j * ldb + i] = a[i * lda + j];
  }
}

// `count` transposes: slab s of b, at s·b_step, is [cols, rows] (rows ldb apart), the transpose of
// slab s of a, at s·a_step, [rows, cols] (rows lda apart).
struct Slabs {
  int64_t count, rows, cols, a_step, lda, b_step, ldb;
};

// out (already allocated) filled from x's storage by the transposes s.
void transpose_slabs(const at::Tensor& x, at::Tensor& out, const Slabs& s) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pai_transpose", [&] {
    const scalar_t* pa = x.data_ptr<scalar_t>();
    scalar_t* pb = out.data_ptr<scalar_t>();
    const int64_t tiles = (s.cols + 15) / 16;
    const bool avx2 = vector_path() >= 1;
    at::parallel_for(0, s.count * tiles, std::max<int64_t>(1, 32768 / std::max<int64_t>(1, s.rows * 16)),
                     [&](int64_t k0, int64_t k1) {
                       for (int64_t k = k0; k < k1;) {
                         const int64_t slab = k / tiles, t0 = k % tiles, t1 = std::min(tiles, t0 + (k1 - k));
                         const scalar_t* a = pa + slab * s.a_step;
                         scalar_t* b = pb + slab * s.b_step;
                         if (avx2)
                           transpose_avx2(a, s.lda, b, s.ldb, s.rows, s.cols, t0, t1);
                         else
                           transpose_portable(a, s.lda, b, s.ldb, s.rows, s.cols, t0, t1);
                         k += t1 - t0;
                       }
                     });
  });
}

// x viewed as [rows, cols], transposed into a contiguous [cols, rows]: a view when x is already
// stored that way (an activation a sparse layer passed on batch-innermost), else a new tensor.
at::Tensor transposed(const at::Tensor& x, int64_t rows, int64_t cols) {
  TORCH_CHECK(x.numel() == rows * cols, "sparse kernels: cannot view ", x.sizes(), " as [", rows, ", ", cols, "]");
  if (x.dim() >= 2 && x.size(0) == rows && stored_batch_inner(x)) return x.movedim(0, -1).reshape({cols, rows});
  at::Tensor b = at::empty({cols, rows}, x.options().memory_format(at::MemoryFormat::Contiguous));
  if (x.size(0) == rows && stored_channels_last(x)) {
    // [N, H·W, C] to [C, H·W, N]: one [N, C] slab per pixel.
    const int64_t c = x.size(1), hw = x.size(2) * x.size(3);
    transpose_slabs(x, b, {hw, rows, c, c, hw * c, rows, hw * rows});
    return b;
  }
  transpose_slabs(x.contiguous(), b, {1, rows, cols, 0, cols, 0, rows});
  return b;
}

// How x [N, ...] is stored, as far as the transposes go: batch-innermost needs N > 1 (a batch of
// one is contiguous either way); anything else they read through a contiguous copy.
pai::Storage storage_of(const at::Tensor& x) {
  if (x.is_contiguous()) return pai::Storage::Contiguous;
  if (x.dim() >= 2 && x.size(0) > 1 && stored_batch_inner(x)) return pai::Storage::BatchInner;
  if (stored_channels_last(x)) return pai::Storage::ChannelsLast;
  return pai::Storage::Contiguous;
}

bool stored_so(const at::Tensor& x, pai::Storage to) {
  switch (to) {
    case pai::Storage::BatchInner: return x.dim() >= 2 && stored_batch_inner(x);
    case pai::Storage::ChannelsLast: return x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast);
    default: return x.is_contiguous();
  }
}

// x [N, ...] copied to the storage `to` (batch-innermost: [..., N] in memory, behind an [N, ...]
// view; channels-last only for 4-d x); x itself when it is stored so already.
at::Tensor relayout(const at::Tensor& x, pai::Storage to) {
  if (stored_so(x, to)) return x;
  const pai::Storage from = storage_of(x);
  const int64_t n = x.size(0), features = x.numel() / std::max<int64_t>(1, n);
  switch (to) {
    case pai::Storage::BatchInner: {
      std::vector<int64_t> stored(x.sizes().begin() + 1, x.sizes().end());
      stored.push_back(n);
      return transposed(x, n, features).view(stored).movedim(-1, 0);
    }
    case pai::Storage::ChannelsLast: {
      TORCH_CHECK(x.dim() == 4, "channels-last storage is for [N, C, H, W] tensors, got ", x.sizes());
      at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::ChannelsLast));
      const int64_t c = x.size(1), hw = x.size(2) * x.size(3);
      if (from == pai::Storage::BatchInner)
        transpose_slabs(x, out, {hw, c, n, n, hw * n, c, hw * c});  // [C, H·W, N] to [N, H·W, C]
      else
        transpose_slabs(x.contiguous(), out, {n, c, hw, c * hw, hw, hw * c, c});  // [N, C, H·W] to [N, H·W, C]
      return out;
    }
    default: {
      if (from == pai::Storage::BatchInner)
        return transposed(x.movedim(0, -1).reshape({features, n}), features, n).view(x.sizes());
      if (from != pai::Storage::ChannelsLast) return x.contiguous();
      at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
      const int64_t c = x.size(1), hw = x.size(2) * x.size(3);
      transpose_slabs(x, out, {n, hw, c, hw * c, c, c * hw, hw});  // [N, H·W, C] to [N, C, H·W]
      return out;
    }
  }
}

// relayout as a differentiable op: the gradient goes back in the input's storage.
struct RelayoutFunction : public torch::autograd::Function<RelayoutFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, int64_t to) {
    ctx->saved_data["from"] = static_cast<int64_t>(storage_of(x));
    return relayout(x, static_cast<pai::Storage>(to));
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto from = static_cast<pai::Storage>(ctx->saved_data["from"].toInt());
    // With a graph of the gradient requested, libtorch's own (differentiable) copies.
    if (c10::GradMode::is_enabled())
      return {from == pai::Storage::BatchInner     ? grads[0].movedim(0, -1).contiguous().movedim(-1, 0)
              : from == pai::Storage::ChannelsLast ? grads[0].contiguous(at::MemoryFormat::ChannelsLast)
                                                   : grads[0].contiguous(),
              at::Tensor()};
    return {relayout(grads[0], from), at::Tensor()};
  }
};

// ---- checks ----------------------------------------------------------------------------------

struct Pattern {
  at::Tensor row_ptr, cols, col_ptr, col_rows, col_perm;
  int64_t rows() const { return row_ptr.numel() - 1; }
  int64_t width() const { return col_ptr.numel() - 1; }
  int64_t nnz() const { return cols.numel(); }
};

void check_pattern(const Pattern& p) {
  for (const at::Tensor* t : {&p.row_ptr, &p.cols, &p.col_ptr, &p.col_rows, &p.col_perm})
    TORCH_CHECK(t->defined() && t->scalar_type() == at::kLong && t->dim() == 1 && t->is_contiguous() &&
                    t->device().is_cpu(),
                "a sparse pattern is five contiguous 1-d int64 CPU tensors (build it with SparsePattern.FromMask)");
  TORCH_CHECK(p.row_ptr.numel() >= 1 && p.col_ptr.numel() >= 1 && p.col_rows.numel() == p.nnz() &&
                  p.col_perm.numel() == p.nnz() && p.row_ptr.data_ptr<int64_t>()[p.rows()] == p.nnz() &&
                  p.col_ptr.data_ptr<int64_t>()[p.width()] == p.nnz(),
              "inconsistent sparse pattern: its row pointers, columns and transpose disagree on the kept count");
}

void check_operands(const at::Tensor& x, const at::Tensor& values, const Pattern& p, const char* what) {
  TORCH_CHECK(x.device().is_cpu() && values.device().is_cpu(), what,
              ": the sparse kernels run on the CPU only; use the dense masked layer on other devices");
  TORCH_CHECK(x.scalar_type() == values.scalar_type() &&
                  (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble),
              what, ": input and values must both be float32 or both float64, got ", x.scalar_type(), " and ",
              values.scalar_type());
  TORCH_CHECK(values.dim() == 1 && values.numel() == p.nnz(), what, ": expected ", p.nnz(),
              " kept values (a 1-d tensor), got shape ", values.sizes());
}

Pattern pattern_of(const at::Tensor& row_ptr, const at::Tensor& cols, const at::Tensor& col_ptr,
                   const at::Tensor& col_rows, const at::Tensor& col_perm) {
  Pattern p{row_ptr, cols, col_ptr, col_rows, col_perm};
  check_pattern(p);
  return p;
}

template <class T>
void fill_pattern(PatternArgs<T>& a, const Pattern& p, const at::Tensor& values) {
  a.row_ptr = p.row_ptr.data_ptr<int64_t>();
  a.cols = p.cols.data_ptr<int64_t>();
  a.col_ptr = p.col_ptr.data_ptr<int64_t>();
  a.col_rows = p.col_rows.data_ptr<int64_t>();
  a.col_perm = p.col_perm.data_ptr<int64_t>();
  a.values = values.data_ptr<T>();
}

// What a backward pass needs from its forward: the input (undefined when the values need no
// gradient), the values and the pattern. The input itself is saved, not the forward's transposed
// or padded copy of it: the graph holds the input anyway, so the backward pass makes its copy again
// rather than keep a second one alive for the whole step (peak memory stays that of dense layers).
struct Saved {
  at::Tensor input, values;
  Pattern p;
};

void save_operands(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& values, const Pattern& p) {
  ctx->save_for_backward(
      {values.requires_grad() ? input : at::Tensor(), values, p.row_ptr, p.cols, p.col_ptr, p.col_rows, p.col_perm});
}

Saved restore_operands(AutogradContext* ctx, const char* what) {
  // Inside a custom backward, grad mode is on only when a graph of the gradient is requested.
  TORCH_CHECK(!c10::GradMode::is_enabled(), what,
              ": the sparse kernels have no second derivative; compute Hessian-based quantities on the dense "
              "masked layer");
  const auto saved = ctx->get_saved_variables();
  return Saved{saved[0], saved[1], Pattern{saved[2], saved[3], saved[4], saved[5], saved[6]}};
}

// ---- linear autograd function -----------------------------------------------------------------

struct SparseLinearFunction : public torch::autograd::Function<SparseLinearFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& values,
                            const at::Tensor& row_ptr, const at::Tensor& cols, const at::Tensor& col_ptr,
                            const at::Tensor& col_rows, const at::Tensor& col_perm, bool keep_inner) {
    const Pattern p = pattern_of(row_ptr, cols, col_ptr, col_rows, col_perm);
    check_operands(x, values, p, "sparse linear");
    TORCH_CHECK(x.dim() == 2 && x.size(1) == p.width(), "sparse linear: expected an input [batch, ", p.width(),
                "], got ", x.sizes());
    const int64_t batch = x.size(0), rows = p.rows();
    const at::Tensor xt = transposed(x, batch, p.width());
    at::Tensor ot = at::empty({rows, batch}, x.options());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparse_linear_forward", [&] {
      LinearArgs<scalar_t> a{};
      fill_pattern<scalar_t>(a, p, values);
      a.batch = batch;
      a.xt = xt.data_ptr<scalar_t>();
      a.out = ot.data_ptr<scalar_t>();
      const int64_t avg = std::max<int64_t>(1, p.nnz() / std::max<int64_t>(1, rows)) * batch;
      linear_forward_run(a, rows, grain_for(avg));
    });
    save_operands(ctx, x, values, p);
    ctx->saved_data["batch"] = batch;
    ctx->saved_data["storage"] = static_cast<int64_t>(storage_of(x));
    return keep_inner ? ot.t() : transposed(ot, rows, batch);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const Saved s = restore_operands(ctx, "sparse linear");
    const at::Tensor& values = s.values;
    const Pattern& p = s.p;
    const int64_t batch = ctx->saved_data["batch"].toInt(), rows = p.rows(), width = p.width();
    const at::Tensor got = transposed(grads[0], batch, rows);
    at::Tensor dx, dvalues;
    AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "sparse_linear_backward", [&] {
      LinearArgs<scalar_t> a{};
      fill_pattern<scalar_t>(a, p, values);
      a.rows = rows;
      a.batch = batch;
      a.got = got.data_ptr<scalar_t>();
      if (ctx->needs_input_grad(0)) {
        at::Tensor dxt = at::empty({width, batch}, values.options());
        a.out = dxt.data_ptr<scalar_t>();
        const int64_t avg = std::max<int64_t>(1, p.nnz() / std::max<int64_t>(1, width)) * batch;
        linear_input_grad_run(a, width, grain_for(avg));
        dx = relayout(dxt.t(), static_cast<pai::Storage>(ctx->saved_data["storage"].toInt()));
      }
      if (ctx->needs_input_grad(1)) {
        dvalues = at::empty({p.nnz()}, values.options());
        const at::Tensor xt = transposed(s.input, batch, width);
        a.xt = xt.data_ptr<scalar_t>();
        a.out = dvalues.data_ptr<scalar_t>();
        linear_weight_grad_run(a, p.nnz(), grain_for(batch));
      }
    });
    return {dx, dvalues, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// ---- conv2d autograd function -----------------------------------------------------------------

template <class T>
ConvArgs<T> conv_args(const Pattern& p, const at::Tensor& values, at::IntArrayRef input, at::IntArrayRef kernel,
                      int64_t stride, int64_t pad_h, int64_t pad_w) {
  ConvArgs<T> a{};
  fill_pattern<T>(a, p, values);
  a.n = input[0];
  a.c = input[1];
  a.h = input[2];
  a.w = input[3];
  a.o = p.rows();
  a.kh = kernel[0];
  a.kw = kernel[1];
  a.stride = stride;
  a.pad_h = pad_h;
  a.pad_w = pad_w;
  a.ho = (a.h + 2 * pad_h - a.kh) / stride + 1;
  a.wo = (a.w + 2 * pad_w - a.kw) / stride + 1;
  return a;
}

// The input as a layout's kernels read it: [C, H, W, N] (0) or zero-padded [N, C, H + 2p, W + 2p] (1).
at::Tensor conv_input(const at::Tensor& x, int64_t layout, int64_t pad_h, int64_t pad_w) {
  return layout == 0 ? transposed(x, x.size(0), x.size(1) * x.size(2) * x.size(3))
                     : at::constant_pad_nd(x, {pad_w, pad_w, pad_h, pad_h}, 0).contiguous();
}

// The rows layout's input gradient reads the output gradient dO [N, O, Ho, Wo] placed at rows
// kh − 1 − p + y·s and columns kw − 1 − p + x·s of zeros [N, O, H + kh − 1, W + kw − 1] (outputs
// that would land outside only ever saw padding, and are left out).
template <class T>
at::Tensor dilated_gradient(const at::Tensor& got, const ConvArgs<T>& a) {
  at::Tensor g = at::zeros({a.n, a.o, a.h + a.kh - 1, a.w + a.kw - 1}, got.options());
  // The outputs [first, first + count) whose place top + y·s lies in [0, size).
  const auto span = [&](int64_t top, int64_t size, int64_t outputs, int64_t& first, int64_t& count) {
    first = top >= 0 ? 0 : (-top + a.stride - 1) / a.stride;
    const int64_t last = size - 1 - top < 0 ? -1 : std::min(outputs - 1, (size - 1 - top) / a.stride);
    count = std::max<int64_t>(0, last - first + 1);
  };
  int64_t y0, ny, x0, nx;
  span(a.kh - 1 - a.pad_h, a.h + a.kh - 1, a.ho, y0, ny);
  span(a.kw - 1 - a.pad_w, a.w + a.kw - 1, a.wo, x0, nx);
  if (ny > 0 && nx > 0) {
    const int64_t top = a.kh - 1 - a.pad_h + y0 * a.stride, left = a.kw - 1 - a.pad_w + x0 * a.stride;
    g.slice(2, top, top + (ny - 1) * a.stride + 1, a.stride)
        .slice(3, left, left + (nx - 1) * a.stride + 1, a.stride)
        .copy_(got.slice(2, y0, y0 + ny).slice(3, x0, x0 + nx));
  }
  return g;
}

// Checks a sparse convolution's operands; returns its bias, contiguous (undefined when none).
at::Tensor checked_conv(const at::Tensor& x, const at::Tensor& values, const c10::optional<at::Tensor>& bias,
                        const Pattern& p, int64_t kh, int64_t kw, int64_t stride, int64_t pad_h, int64_t pad_w) {
  check_operands(x, values, p, "sparse conv2d");
  TORCH_CHECK(kh >= 1 && kw >= 1 && stride >= 1 && pad_h >= 0 && pad_w >= 0,
              "sparse conv2d: kernel and stride must be positive and padding non-negative");
  TORCH_CHECK(x.dim() == 4 && x.size(1) * kh * kw == p.width(), "sparse conv2d: expected an input [N, ",
              p.width() / (kh * kw), ", H, W] for a ", kh, "x", kw, " kernel, got ", x.sizes());
  TORCH_CHECK(x.size(2) + 2 * pad_h >= kh && x.size(3) + 2 * pad_w >= kw, "sparse conv2d: the padded input ",
              x.sizes(), " is smaller than the ", kh, "x", kw, " kernel");
  if (!bias || !bias->defined()) return at::Tensor();
  TORCH_CHECK(bias->dim() == 1 && bias->size(0) == p.rows() && bias->scalar_type() == values.scalar_type() &&
                  bias->device() == values.device(),
              "sparse conv2d: expected a bias [", p.rows(), "] of the values' dtype and device, got ", bias->sizes(),
              " ", bias->scalar_type());
  return bias->contiguous();
}

// Two layouts, chosen by the caller (by measurement: neither wins everywhere):
//   0 (batch-innermost): input and gradients transposed to [C, H, W, N], one kept weight times a
//     batch vector (times the output row at stride 1); best for small images and large batches.
//   1 (rows): the tensors as they are, [N, C, H, W], one kept weight times an image row; no
//     transposes, best for large images.
// The weight gradient reads the input as the forward did: transposed (0) or zero-padded (1).
struct SparseConv2dFunction : public torch::autograd::Function<SparseConv2dFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& values,
                            const c10::optional<at::Tensor>& bias, const at::Tensor& row_ptr, const at::Tensor& cols,
                            const at::Tensor& col_ptr, const at::Tensor& col_rows, const at::Tensor& col_perm,
                            int64_t kh, int64_t kw, int64_t stride, int64_t pad_h, int64_t pad_w, int64_t layout,
                            bool keep_inner) {
    const Pattern p = pattern_of(row_ptr, cols, col_ptr, col_rows, col_perm);
    TORCH_CHECK(layout == 0 || layout == 1, "sparse conv2d: layout is 0 (batch-innermost) or 1 (rows), got ", layout);
    const at::Tensor b = checked_conv(x, values, bias, p, kh, kw, stride, pad_h, pad_w);
    const std::vector<int64_t> kernel{kh, kw};
    const at::Tensor xin = conv_input(x, layout, pad_h, pad_w);
    at::Tensor out;
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparse_conv2d_forward", [&] {
      auto a = conv_args<scalar_t>(p, values, x.sizes(), kernel, stride, pad_h, pad_w);
      a.xt = xin.data_ptr<scalar_t>();
      if (b.defined()) a.bias = b.data_ptr<scalar_t>();
      const int64_t per_row = std::max<int64_t>(1, p.nnz() / std::max<int64_t>(1, a.o));
      if (layout == 0) {
        at::Tensor ot = at::empty({a.o, a.ho, a.wo, a.n}, x.options());
        a.out = ot.data_ptr<scalar_t>();
        conv_forward_run(a, a.o * a.ho, grain_for(per_row * a.wo * a.n));
        out = keep_inner ? ot.permute({3, 0, 1, 2}) : transposed(ot, a.o * a.ho * a.wo, a.n).view({a.n, a.o, a.ho, a.wo});
      } else {
        out = at::empty({a.n, a.o, a.ho, a.wo}, x.options());
        a.out = out.data_ptr<scalar_t>();
        rows_forward_run(a, a.n * a.o, grain_for(per_row * a.ho * a.wo));
      }
    });
    save_operands(ctx, x, values, p);
    ctx->saved_data["shape"] = x.sizes().vec();
    ctx->saved_data["kernel"] = kernel;
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = std::vector<int64_t>{pad_h, pad_w};
    ctx->saved_data["layout"] = layout;
    ctx->saved_data["storage"] = static_cast<int64_t>(storage_of(x));
    ctx->saved_data["bias"] = b.defined();
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const Saved s = restore_operands(ctx, "sparse conv2d");
    const at::Tensor& values = s.values;
    const Pattern& p = s.p;
    const auto shape = ctx->saved_data["shape"].toIntVector();
    const auto kernel = ctx->saved_data["kernel"].toIntVector();
    const auto padding = ctx->saved_data["padding"].toIntVector();
    const int64_t stride = ctx->saved_data["stride"].toInt(), layout = ctx->saved_data["layout"].toInt();
    const int64_t n = shape[0], out_features = grads[0].numel() / std::max<int64_t>(1, n);
    const at::Tensor got = layout == 0 ? transposed(grads[0], n, out_features) : grads[0].contiguous();
    at::Tensor dx, dvalues;
    AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "sparse_conv2d_backward", [&] {
      auto a = conv_args<scalar_t>(p, values, shape, kernel, stride, padding[0], padding[1]);
      a.got = got.data_ptr<scalar_t>();
      if (ctx->needs_input_grad(0)) {
        const int64_t per_plane = std::max<int64_t>(1, p.nnz() / std::max<int64_t>(1, a.c)) * a.ho * a.wo;
        if (layout == 0) {
          at::Tensor dxt = at::empty({a.c, a.h, a.w, a.n}, values.options());
          a.out = dxt.data_ptr<scalar_t>();
          conv_input_grad_run(a, a.c * a.h, grain_for(per_plane * a.n / std::max<int64_t>(1, a.h)));
          // the input's gradient stored as the input was
          dx = relayout(dxt.permute({3, 0, 1, 2}), static_cast<pai::Storage>(ctx->saved_data["storage"].toInt()));
        } else {
          const at::Tensor dilated = dilated_gradient(got, a);
          dx = at::empty({a.n, a.c, a.h, a.w}, values.options());
          a.got = dilated.data_ptr<scalar_t>();
          a.out = dx.data_ptr<scalar_t>();
          rows_input_grad_run(a, a.n * a.c, grain_for(per_plane));
          a.got = got.data_ptr<scalar_t>();
        }
      }
      if (ctx->needs_input_grad(1)) {
        dvalues = at::empty({p.nnz()}, values.options());
        const at::Tensor xin = conv_input(s.input, layout, padding[0], padding[1]);
        a.xt = xin.data_ptr<scalar_t>();
        a.out = dvalues.data_ptr<scalar_t>();
        if (layout == 0)
          conv_weight_grad_run(a, p.nnz(), grain_for(a.ho * a.wo * a.n));
        else
          rows_weight_grad_run(a, p.nnz(), grain_for(a.ho * a.wo * a.n));
      }
    });
    std::vector<at::Tensor> result(16);
    result[0] = dx;
    result[1] = dvalues;
    // the bias's gradient, as the separate addition's backward would sum it (an absent bias is no
    // autograd input, so edge 2 is then the pattern's, which never needs one)
    if (ctx->saved_data["bias"].toBool() && ctx->needs_input_grad(2)) result[2] = grads[0].sum({0, 2, 3});
    return result;
  }
};

}  // namespace

at::Tensor pai::stored_as(const at::Tensor& x, pai::Storage to) {
  if (stored_so(x, to)) return x;
  if (x.dim() < 2 || x.size(0) < 2 || !x.device().is_cpu() ||
      (x.scalar_type() != at::kFloat && x.scalar_type() != at::kDouble) ||
      (to == pai::Storage::ChannelsLast && x.dim() != 4))
    return to == pai::Storage::BatchInner ? x
           : to == pai::Storage::ChannelsLast && x.dim() == 4 ? x.contiguous(at::MemoryFormat::ChannelsLast)
                                                               : x.contiguous();
  if (x.requires_grad() && c10::GradMode::is_enabled())
    return RelayoutFunction::apply(x, static_cast<int64_t>(to));
  return relayout(x, to);
}

// The pattern of a mask [rows, ...] (nonzero = kept; the trailing dimensions form a row): five new
// int64 handles in results: row_ptr, cols, col_ptr, col_rows, col_perm (see the top of this file).
PAI_API int32_t pai_sparse_pattern(Tensor mask, Tensor* results) {
  return status_result([&] {
    TORCH_CHECK(mask->dim() >= 2, "a sparse pattern needs a mask of a weight [out, in, ...], got shape ",
                mask->sizes());
    TORCH_CHECK(mask->device().is_cpu(), "a sparse pattern is built from a CPU mask");
    const int64_t rows = mask->size(0), width = rows == 0 ? 0 : mask->numel() / rows;
    const at::Tensor kept = mask->ne(0).reshape({rows, width}).contiguous();
    const bool* m = kept.data_ptr<bool>();
    const auto longs = at::TensorOptions().dtype(at::kLong);
    at::Tensor row_ptr = at::empty({rows + 1}, longs), col_ptr = at::zeros({width + 1}, longs);
    int64_t* rp = row_ptr.data_ptr<int64_t>();
    int64_t* cp = col_ptr.data_ptr<int64_t>();
    rp[0] = 0;
    for (int64_t o = 0; o < rows; ++o) {
      int64_t count = 0;
      for (int64_t i = 0; i < width; ++i)
        if (m[o * width + i]) {
          ++count;
          ++cp[i + 1];
        }
      rp[o + 1] = rp[o] + count;
    }
    for (int64_t i = 0; i < width; ++i) cp[i + 1] += cp[i];
    const int64_t nnz = rp[rows];
    at::Tensor cols = at::empty({nnz}, longs), col_rows = at::empty({nnz}, longs), col_perm = at::empty({nnz}, longs);
    int64_t* cs = cols.data_ptr<int64_t>();
    int64_t* cr = col_rows.data_ptr<int64_t>();
    int64_t* cq = col_perm.data_ptr<int64_t>();
    std::vector<int64_t> next(cp, cp + width);
    int64_t k = 0;
    for (int64_t o = 0; o < rows; ++o)
      for (int64_t i = 0; i < width; ++i)
        if (m[o * width + i]) {
          cs[k] = i;
          const int64_t e = next[(size_t)i]++;
          cr[e] = o;
          cq[e] = k;
          ++k;
        }
    at::Tensor out[5] = {row_ptr, cols, col_ptr, col_rows, col_perm};
    for (int q = 0; q < 5; ++q) results[q] = new at::Tensor(std::move(out[q]));
  });
}

// x [batch, in] (or [..., in]) times the sparse weight [out, in] transposed, plus bias: [..., out].
// batch_innermost (2-d inputs only): the result is returned as it was computed, stored [out, batch]
// (a transposed view), for a next layer that reads it so; an input stored so is read without a copy,
// and its gradient is returned stored so too.
PAI_API Tensor pai_sparse_linear(Tensor x, Tensor values, Tensor row_ptr, Tensor cols, Tensor col_ptr, Tensor col_rows,
                                 Tensor col_perm, Tensor bias, uint8_t batch_innermost) {
  return tensor_result([&] {
    TORCH_CHECK(x->dim() >= 1, "sparse linear: the input needs at least one dimension");
    std::vector<int64_t> shape(x->sizes().begin(), x->sizes().end());
    const at::Tensor flat = x->reshape({-1, shape.back()});
    at::Tensor y = SparseLinearFunction::apply(flat, *values, *row_ptr, *cols, *col_ptr, *col_rows, *col_perm,
                                               batch_innermost != 0 && x->dim() == 2);
    shape.back() = y.size(1);
    if (x->dim() != 2) y = y.reshape(shape);
    return bias ? y + *bias : y;
  });
}

// 2-d convolution of x [N, C, H, W] with the sparse weight [out, C, kh, kw] (dilation 1, one group);
// layout 0: batch-innermost, 1: rows (see SparseConv2dFunction). batch_innermost (layout 0 only):
// the result is returned stored [O, Ho, Wo, N] (a permuted view), as for pai_sparse_linear.
PAI_API Tensor pai_sparse_conv2d(Tensor x, Tensor values, Tensor row_ptr, Tensor cols, Tensor col_ptr, Tensor col_rows,
                                 Tensor col_perm, const int64_t* kernel, const int64_t* stride, const int64_t* padding,
                                 int32_t layout, Tensor bias, uint8_t batch_innermost) {
  return tensor_result([&] {
    TORCH_CHECK(stride[0] == stride[1], "sparse conv2d: only equal strides along height and width are supported, got ",
                stride[0], " and ", stride[1]);
    const c10::optional<at::Tensor> b = bias ? c10::optional<at::Tensor>(*bias) : c10::nullopt;
    return SparseConv2dFunction::apply(*x, *values, b, *row_ptr, *cols, *col_ptr, *col_rows, *col_perm, kernel[0],
                                       kernel[1], stride[0], padding[0], padding[1], layout,
                                       batch_innermost != 0 && layout == 0);
  });
}

// The batch-innermost sparse convolution followed by max pooling of pool × pool windows, stride
// pool (floor), as evaluation runs LeNet-5: each row of windows is pooled from scratch as its output
// rows are computed, so the unpooled output is never written out. The same values as
// pai_sparse_conv2d (layout 0) then pai_max_pool2d; no gradient, so only where none is needed.
// Returns [N, O, Ho / pool, Wo / pool] stored batch-innermost.
PAI_API Tensor pai_sparse_conv2d_max_pool(Tensor x, Tensor values, Tensor row_ptr, Tensor cols, Tensor col_ptr,
                                          Tensor col_rows, Tensor col_perm, const int64_t* kernel,
                                          const int64_t* stride, const int64_t* padding, Tensor bias, int64_t pool) {
  return tensor_result([&] {
    TORCH_CHECK(stride[0] == stride[1], "sparse conv2d: only equal strides along height and width are supported, got ",
                stride[0], " and ", stride[1]);
    const bool grads = c10::GradMode::is_enabled() &&
                       (x->requires_grad() || values->requires_grad() || (bias && bias->requires_grad()));
    TORCH_CHECK(!grads, "sparse conv2d with max pooling computes no gradient: call it without gradients (evaluation), "
                        "or the sparse conv2d and max pooling apart");
    const Pattern p = pattern_of(*row_ptr, *cols, *col_ptr, *col_rows, *col_perm);
    const c10::optional<at::Tensor> given = bias ? c10::optional<at::Tensor>(*bias) : c10::nullopt;
    const at::Tensor b = checked_conv(*x, *values, given, p, kernel[0], kernel[1], stride[0], padding[0], padding[1]);
    at::Tensor out;
    AT_DISPATCH_FLOATING_TYPES(x->scalar_type(), "sparse_conv2d_max_pool", [&] {
      auto a = conv_args<scalar_t>(p, *values, x->sizes(), {kernel[0], kernel[1]}, stride[0], padding[0], padding[1]);
      TORCH_CHECK(pool >= 1 && a.ho >= pool && a.wo >= pool, "sparse conv2d with max pooling: a ", pool, "x", pool,
                  " window does not fit the ", a.ho, "x", a.wo, " output");
      const at::Tensor xin = conv_input(*x, 0, padding[0], padding[1]);
      a.xt = xin.data_ptr<scalar_t>();
      if (b.defined()) a.bias = b.data_ptr<scalar_t>();
      a.pool = pool;
      at::Tensor ot = at::empty({a.o, a.ho / pool, a.wo / pool, a.n}, x->options());
      a.out = ot.data_ptr<scalar_t>();
      const int64_t per_row = std::max<int64_t>(1, p.nnz() / std::max<int64_t>(1, a.o));
      conv_forward_pooled_run(a, a.o * (a.ho / pool), grain_for(per_row * pool * a.wo * a.n));
      out = ot.permute({3, 0, 1, 2});
    });
    return out;
  });
}

// x stored as `like` is: batch-innermost when like [N, ...] (N > 1) is stored so, channels-last when
// like is, else contiguous; x itself when it already is (see pai::stored_as). Before an elementwise
// op of the two: a sum of tensors stored differently walks one of them with a large stride.
PAI_API Tensor pai_stored_like(Tensor x, Tensor like) {
  return tensor_result([&] {
    TORCH_CHECK(x->sizes() == like->sizes(), "stored_like: the shapes differ, ", x->sizes(), " and ", like->sizes());
    return pai::stored_as(*x, storage_of(*like));
  });
}

// The kernels' revision: raised whenever a change makes a kernel faster or slower, so that layout
// choices timed on an older library (and cached by the host) are measured anew.
PAI_API int32_t pai_sparse_revision() { return 7; }

// The vector path the kernels run (0 portable, 1 AVX2/FMA, 2 AVX-512), and the widest this CPU has.
PAI_API int32_t pai_sparse_vector_path() { return pai::guarded([] { return vector_path(); }, 0); }
PAI_API int32_t pai_sparse_cpu_vector_path() { return pai::guarded([] { return cpu_vector_path(); }, 0); }

// Chooses the vector path process-wide (-1: the widest the CPU has; a wider one is refused).
PAI_API int32_t pai_sparse_set_vector_path(int32_t path) {
  return status_result([&] {
    TORCH_CHECK(path >= -1 && path <= 2, "the sparse kernels' vector path is -1 (the widest), 0 (portable), 1 (AVX2/FMA) or 2 (AVX-512), got ", path);
    TORCH_CHECK(path <= cpu_vector_path(), "this CPU lacks ", path == 2 ? "AVX-512 (F, VL, BW, DQ)" : "AVX2/FMA",
                ": the sparse kernels can run up to their ", cpu_vector_path() == 1 ? "AVX2/FMA" : "portable", " build");
    chosen_path.store(path);
  });
}
