// Sparse kernels for masked layers on the CPU: a weight kept only where its mask is nonzero, held
// as compressed rows (row pointers, column indices, values), with the three products of training:
// the forward O = X·Wᵀ, the input gradient dX = dO·W, and the weight gradient at kept positions
// only (a sampled dense-dense product: never a dense dW).
//
// Activations are held batch-innermost (feature × batch, and [C, H, W, N] for images), so one
// kept weight multiplies a contiguous batch vector (the layout of SparseProp, Nikdan et al. 2023).
// Every output element (an output row, an input-gradient row, one kept weight's gradient) is
// computed by one thread in a fixed order, so results do not depend on the thread count.
// Scratch per call: the input, output and output-gradient transposed to that layout, each the
// size of the tensor it copies (the transposed input is kept until the backward pass); no im2col
// buffer. Convolutions also run in the input's own layout, vectorized over image rows.
//
// The pattern is five int64 tensors built once from a mask (pai_sparse_pattern): row_ptr [rows+1],
// cols [nnz] (ascending within a row: row-major order, the order of masked_select), and its
// transpose for the input gradient: col_ptr [cols+1], col_rows [nnz], col_perm [nnz] (the row and
// the value index of each kept weight, column-major). A convolution's row is its flattened
// [in, kh, kw] kernel.
#include "pai.h"

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <atomic>

using pai::status_result;
using pai::tensor_result;

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// ---- vector primitives (inlined into both the AVX2/FMA and the portable kernels) ----------------

#define PAI_INLINE inline __attribute__((always_inline))
// For lambdas inside kernels: inlined into the AVX2/FMA build that calls them, so their arithmetic
// is compiled (and rounded) as the caller's.
#define PAI_LAMBDA_INLINE __attribute__((always_inline))

// y[0..n) += w·x[0..n)
template <class T>
PAI_INLINE void axpy(T* __restrict y, T w, const T* __restrict x, int64_t n) {
#pragma omp simd
  for (int64_t b = 0; b < n; ++b) y[b] += w * x[b];
}

// y[0..n) += w0·x0 + w1·x1 + w2·x2 + w3·x3: four kept weights per pass over y.
template <class T>
PAI_INLINE void axpy4(T* __restrict y, T w0, const T* __restrict x0, T w1, const T* __restrict x1, T w2,
                      const T* __restrict x2, T w3, const T* __restrict x3, int64_t n) {
#pragma omp simd
  for (int64_t b = 0; b < n; ++b) y[b] += (w0 * x0[b] + w1 * x1[b]) + (w2 * x2[b] + w3 * x3[b]);
}

template <class T>
PAI_INLINE T dot(const T* __restrict a, const T* __restrict b, int64_t n) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// y[q] += w·x[q·s] for q in [0, n).
template <class T>
PAI_INLINE void axpy_strided(T* __restrict y, T w, const T* __restrict x, int64_t s, int64_t n) {
#pragma omp simd
  for (int64_t q = 0; q < n; ++q) y[q] += w * x[q * s];
}
// y[q·s] += w·x[q] for q in [0, n).
template <class T>
PAI_INLINE void axpy_scatter(T* __restrict y, T w, const T* __restrict x, int64_t s, int64_t n) {
#pragma omp simd
  for (int64_t q = 0; q < n; ++q) y[q * s] += w * x[q];
}
template <class T>
PAI_INLINE T dot_strided(const T* __restrict a, const T* __restrict b, int64_t s, int64_t n) {
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t q = 0; q < n; ++q) acc += a[q] * b[q * s];
  return acc;
}

template <class T>
PAI_INLINE void zero(T* y, int64_t n) {
  std::fill(y, y + n, T(0));
}

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

// One gather over the compressed pattern, rows r in [begin, end) of a.out, each zeroed and then
// summed four kept weights per pass in the pattern's order:
//   forward (ToInput false): OT[o] = Σ_k values[k]·XT[cols[k]], over row o of the pattern;
//   input gradient (ToInput true): dXT[i] = Σ over kept (o, i) of values·dOT[o], over column i of
//   the transposed pattern (col_perm gives each entry's value, col_rows its output row).
template <bool ToInput, class T>
PAI_INLINE void linear_gather(const LinearArgs<T>& a, int64_t begin, int64_t end) {
  const int64_t n = a.batch;
  const int64_t* ptr = ToInput ? a.col_ptr : a.row_ptr;
  const int64_t* source = ToInput ? a.col_rows : a.cols;
  const T* src = ToInput ? a.got : a.xt;
  const auto value = [&](int64_t e) PAI_LAMBDA_INLINE { return ToInput ? a.values[a.col_perm[e]] : a.values[e]; };
  const auto vec = [&](int64_t e) PAI_LAMBDA_INLINE { return src + source[e] * n; };
  for (int64_t r = begin; r < end; ++r) {
    T* y = a.out + r * n;
    zero(y, n);
    int64_t e = ptr[r];
    const int64_t stop = ptr[r + 1];
    for (; e + 4 <= stop; e += 4)
      axpy4(y, value(e), vec(e), value(e + 1), vec(e + 1), value(e + 2), vec(e + 2), value(e + 3), vec(e + 3), n);
    for (; e < stop; ++e) axpy(y, value(e), vec(e), n);
  }
}

// Calls f(k, o) for kept weights k in [begin, end), o the pattern row holding k: the weight
// gradients' walk (one output element per kept weight).
template <class F>
PAI_INLINE void for_kept(const int64_t* row_ptr, int64_t rows, int64_t begin, int64_t end, F f) {
  int64_t o = std::upper_bound(row_ptr, row_ptr + rows + 1, begin) - row_ptr - 1;
  for (int64_t k = begin; k < end; ++k) {
    while (row_ptr[o + 1] <= k) ++o;
    f(k, o);
  }
}

// dvalues[k] = dOT[row(k)]·XT[cols[k]] for kept weights k in [begin, end).
template <class T>
PAI_INLINE void linear_weight_grad(const LinearArgs<T>& a, int64_t begin, int64_t end) {
  const int64_t n = a.batch;
  for_kept(a.row_ptr, a.rows, begin, end,
           [&](int64_t k, int64_t o) PAI_LAMBDA_INLINE { a.out[k] = dot(a.got + o * n, a.xt + a.cols[k] * n, n); });
}

// ---- conv2d: X [N, C, H, W] held as XT [C, H, W, N], O as OT [O, Ho, Wo, N] ---------------------

template <class T>
struct ConvArgs : PatternArgs<T> {
  int64_t n, c, h, w;      // input
  int64_t o, ho, wo;       // output
  int64_t kh, kw, stride, pad_h, pad_w;
  const T* xt;   // [C, H, W, N]
  const T* got;  // dO as [O, Ho, Wo, N]
  T* out;        // OT (forward), dXT (input gradient), dvalues (weight gradient)
};

// The output columns x whose input column x·s + j − p lies inside [0, w): [lo, hi] (empty: lo > hi).
PAI_INLINE void valid_range(int64_t j, int64_t stride, int64_t pad, int64_t w, int64_t wo, int64_t& lo, int64_t& hi) {
  const int64_t first = pad - j;  // x·s ≥ pad − j
  lo = first <= 0 ? 0 : (first + stride - 1) / stride;
  const int64_t last = w - 1 + pad - j;  // x·s ≤ w − 1 + pad − j
  hi = last < 0 ? -1 : std::min(wo - 1, last / stride);
}

// count runs of n values: y[q·ys + b] += w·x[q·xs + b] (b < n, q < count); at stride 1 the runs
// are adjacent on both sides (ys = xs = n) and go as one vector.
template <class T>
PAI_INLINE void axpy_runs(T* __restrict y, int64_t ys, T w, const T* __restrict x, int64_t xs, int64_t count, int64_t n,
                          int64_t stride) {
  if (stride == 1) {
    axpy(y, w, x, count * n);
  } else {
    for (int64_t q = 0; q < count; ++q) axpy(y + q * ys, w, x + q * xs, n);
  }
}

// s += Σ over the same runs of g·x, in run order.
template <class T>
PAI_INLINE void dot_runs(T& s, const T* __restrict g, int64_t gs, const T* __restrict x, int64_t xs, int64_t count,
                         int64_t n, int64_t stride) {
  if (stride == 1) {
    s += dot(g, x, count * n);
  } else {
    for (int64_t q = 0; q < count; ++q) s += dot(g + q * gs, x + q * xs, n);
  }
}

// Adds w·(input row c, yy, shifted by kernel column j) to one output row, over its valid columns.
template <class T>
PAI_INLINE void conv_row_axpy(T* __restrict out_row, T wgt, const T* __restrict in_row, int64_t j, const ConvArgs<T>& a) {
  int64_t lo, hi;
  valid_range(j, a.stride, a.pad_w, a.w, a.wo, lo, hi);
  if (lo > hi) return;
  const int64_t n = a.n;
  axpy_runs(out_row + lo * n, n, wgt, in_row + (lo * a.stride + j - a.pad_w) * n, a.stride * n, hi - lo + 1, n,
            a.stride);
}

// Output rows r = o·Ho + y in [begin, end): OT[o, y] = Σ over kept (c, i, j) of w·XT[c, y·s + i − p].
template <class T>
PAI_INLINE void conv_forward(const ConvArgs<T>& a, int64_t begin, int64_t end) {
  const int64_t row_len = a.wo * a.n, kk = a.kh * a.kw;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t o = r / a.ho, y = r % a.ho;
    T* out_row = a.out + r * row_len;
    zero(out_row, row_len);
    for (int64_t k = a.row_ptr[o]; k < a.row_ptr[o + 1]; ++k) {
      const int64_t col = a.cols[k], c = col / kk, i = (col % kk) / a.kw, j = col % a.kw;
      const int64_t yy = y * a.stride + i - a.pad_h;
      if (yy < 0 || yy >= a.h) continue;
      conv_row_axpy(out_row, a.values[k], a.xt + (c * a.h + yy) * a.w * a.n, j, a);
    }
  }
}

// Input-gradient rows r = c·H + yy in [begin, end): dXT[c, yy] = Σ over kept (o, c, i, j) with
// yy = y·s + i − p of w·dOT[o, y] scattered back along the columns.
template <class T>
PAI_INLINE void conv_input_grad(const ConvArgs<T>& a, int64_t begin, int64_t end) {
  const int64_t row_len = a.w * a.n, kk = a.kh * a.kw, n = a.n;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t c = r / a.h, yy = r % a.h;
    T* in_row = a.out + r * row_len;
    zero(in_row, row_len);
    for (int64_t col = c * kk; col < (c + 1) * kk; ++col) {
      const int64_t i = (col % kk) / a.kw, j = col % a.kw;
      const int64_t t = yy + a.pad_h - i;  // = y·s
      if (t < 0 || t % a.stride != 0 || t / a.stride >= a.ho) continue;
      const int64_t y = t / a.stride;
      int64_t lo, hi;
      valid_range(j, a.stride, a.pad_w, a.w, a.wo, lo, hi);
      if (lo > hi) continue;
      T* dst = in_row + (lo * a.stride + j - a.pad_w) * n;
      for (int64_t e = a.col_ptr[col]; e < a.col_ptr[col + 1]; ++e) {
        const T wgt = a.values[a.col_perm[e]];
        const T* src = a.got + ((a.col_rows[e] * a.ho + y) * a.wo + lo) * n;
        axpy_runs(dst, a.stride * n, wgt, src, n, hi - lo + 1, n, a.stride);
      }
    }
  }
}

// The weight gradient of both layouts, kept weights k in [begin, end): dvalues[k] = Σ_n Σ_y Σ_x
// dO[n, o, y, x]·X[n, c, y·s + i − p, x·s + j − p]. Batch-innermost (Rows false): dOT [O, Ho, Wo, N]
// and XT [C, H, W, N], a whole batch per column; rows (Rows true): dO [N, O, Ho, Wo] and X
// [N, C, H, W], image by image, a row per dot.
template <bool Rows, class T>
PAI_INLINE void conv_weight_grad_of(const ConvArgs<T>& a, int64_t begin, int64_t end) {
  const int64_t kk = a.kh * a.kw, n = a.n, images = Rows ? a.n : 1;
  for_kept(a.row_ptr, a.o, begin, end, [&](int64_t k, int64_t o) PAI_LAMBDA_INLINE {
    const int64_t col = a.cols[k], c = col / kk, i = (col % kk) / a.kw, j = col % a.kw;
    int64_t lo, hi;
    valid_range(j, a.stride, a.pad_w, a.w, a.wo, lo, hi);
    T s = 0;
    if (lo <= hi) {
      for (int64_t b = 0; b < images; ++b) {
        for (int64_t y = 0; y < a.ho; ++y) {
          const int64_t yy = y * a.stride + i - a.pad_h;
          if (yy < 0 || yy >= a.h) continue;
          if constexpr (Rows) {
            const T* g = a.got + ((b * a.o + o) * a.ho + y) * a.wo + lo;
            const T* x = a.xt + ((b * a.c + c) * a.h + yy) * a.w + lo * a.stride + j - a.pad_w;
            s += a.stride == 1 ? dot(g, x, hi - lo + 1) : dot_strided(g, x, a.stride, hi - lo + 1);
          } else {
            const T* g = a.got + ((o * a.ho + y) * a.wo + lo) * n;
            const T* x = a.xt + ((c * a.h + yy) * a.w + lo * a.stride + j - a.pad_w) * n;
            dot_runs(s, g, n, x, a.stride * n, hi - lo + 1, n, a.stride);
          }
        }
      }
    }
    a.out[k] = s;
  });
}

// ---- conv2d in the input's own layout [N, C, H, W], vectorized over the output width -----------
// No transposes: each kept weight multiplies a stretch of an input row (contiguous at stride 1).
// Suits large images, where a row is long and the transposes of the batch-innermost layout cost
// as much as the products.

// One kept weight at kernel offset (i, j) between an output plane [Ho, Wo] (small) and an input
// plane [H, W] (big), over the output columns [lo, hi] whose input column is inside the image:
// forward adds w·(every s-th input column) into the output, the input gradient scatters w·output
// back into every s-th input column.
template <bool ToInput, class T, class Small, class Big>
PAI_INLINE void nchw_tap(const ConvArgs<T>& a, T wgt, int64_t i, int64_t j, int64_t lo, int64_t hi, Small small, Big big) {
  const int64_t len = hi - lo + 1;
  for (int64_t y = 0; y < a.ho; ++y) {
    const int64_t yy = y * a.stride + i - a.pad_h;
    if (yy < 0 || yy >= a.h) continue;
    const auto out = small + y * a.wo + lo;
    const auto in = big + yy * a.w + lo * a.stride + j - a.pad_w;
    if constexpr (ToInput) {
      if (a.stride == 1)
        axpy(in, wgt, out, len);
      else
        axpy_scatter(in, wgt, out, a.stride, len);
    } else {
      if (a.stride == 1)
        axpy(out, wgt, in, len);
      else
        axpy_strided(out, wgt, in, a.stride, len);
    }
  }
}

// The forward and the input gradient, planes r in [begin, end) of a.out: each plane is zeroed, then
// every kept weight that touches it adds its tap. Forward: r = n·O + o, from the input a.xt
// [N, C, H, W] into the output [N, O, Ho, Wo], over row o of the weight (kept weights in row order).
// Input gradient: r = n·C + c, from a.got = dO [N, O, Ho, Wo] into dX, over the transposed layout's
// columns of input channel c (kernel offset, then output channel): the order of the sums is fixed.
template <bool ToInput, class T>
PAI_INLINE void conv_nchw_planes(const ConvArgs<T>& a, int64_t begin, int64_t end) {
  const int64_t kk = a.kh * a.kw, channels = ToInput ? a.c : a.o;
  const int64_t plane = ToInput ? a.h * a.w : a.ho * a.wo;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / channels, p = r % channels;
    T* dst = a.out + r * plane;
    zero(dst, plane);
    const int64_t first = ToInput ? a.col_ptr[p * kk] : a.row_ptr[p];
    const int64_t last = ToInput ? a.col_ptr[(p + 1) * kk] : a.row_ptr[p + 1];
    for (int64_t e = first; e < last; ++e) {
      const int64_t k = ToInput ? a.col_perm[e] : e;
      const int64_t col = a.cols[k], c = col / kk, i = (col % kk) / a.kw, j = col % a.kw;
      const int64_t o = ToInput ? a.col_rows[e] : p;
      int64_t lo, hi;
      valid_range(j, a.stride, a.pad_w, a.w, a.wo, lo, hi);
      if (lo > hi) continue;
      if constexpr (ToInput)
        nchw_tap<true>(a, a.values[k], i, j, lo, hi, a.got + (n * a.o + o) * a.ho * a.wo, dst);
      else
        nchw_tap<false>(a, a.values[k], i, j, lo, hi, dst, a.xt + (n * a.c + c) * a.h * a.w);
    }
  }
}

// ---- dispatch: an AVX2/FMA build of each kernel when the CPU has it, the portable one otherwise ---

bool cpu_has_avx2_fma() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
}

// Set to run the portable build on a CPU that has AVX2/FMA (so that tests cover it).
std::atomic<bool> portable_forced{false};

bool use_avx2_fma() { return cpu_has_avx2_fma() && !portable_forced.load(); }

// kernel##_run runs body (a kernel above, or one instance of a shared template) over [0, total).
#define PAI_DISPATCH(kernel, Args, body)                                                               \
  template <class T>                                                                                   \
  __attribute__((target("avx2,fma"))) void kernel##_avx2(const Args<T>& a, int64_t b, int64_t e) {     \
    body(a, b, e);                                                                                     \
  }                                                                                                    \
  template <class T>                                                                                   \
  void kernel##_portable(const Args<T>& a, int64_t b, int64_t e) {                                     \
    body(a, b, e);                                                                                     \
  }                                                                                                    \
  template <class T>                                                                                   \
  void kernel##_run(const Args<T>& a, int64_t total, int64_t grain) {                                  \
    const bool avx2 = use_avx2_fma();                                                                  \
    at::parallel_for(0, total, grain, [&](int64_t b, int64_t e) {                                      \
      if (avx2)                                                                                        \
        kernel##_avx2(a, b, e);                                                                        \
      else                                                                                             \
        kernel##_portable(a, b, e);                                                                    \
    });                                                                                                \
  }

PAI_DISPATCH(linear_forward, LinearArgs, linear_gather<false>)
PAI_DISPATCH(linear_input_grad, LinearArgs, linear_gather<true>)
PAI_DISPATCH(linear_weight_grad, LinearArgs, linear_weight_grad)
PAI_DISPATCH(conv_forward, ConvArgs, conv_forward)
PAI_DISPATCH(conv_input_grad, ConvArgs, conv_input_grad)
PAI_DISPATCH(conv_weight_grad, ConvArgs, conv_weight_grad_of<false>)
PAI_DISPATCH(conv_nchw_forward, ConvArgs, conv_nchw_planes<false>)
PAI_DISPATCH(conv_nchw_input_grad, ConvArgs, conv_nchw_planes<true>)
PAI_DISPATCH(conv_nchw_weight_grad, ConvArgs, conv_weight_grad_of<true>)

// Enough work per task that a thread's start costs little: about 32k multiply-adds.
int64_t grain_for(int64_t work_per_item) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, work_per_item)); }

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

// What a backward pass needs from its forward: the input as the forward kept it (undefined when
// the values need no gradient), the values and the pattern.
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

// The transposed input is saved for the weight gradient instead of the input itself: a copy of
// the input kept until the backward pass, in exchange for one transpose less per step.
struct SparseLinearFunction : public torch::autograd::Function<SparseLinearFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& values,
                            const at::Tensor& row_ptr, const at::Tensor& cols, const at::Tensor& col_ptr,
                            const at::Tensor& col_rows, const at::Tensor& col_perm) {
    const Pattern p = pattern_of(row_ptr, cols, col_ptr, col_rows, col_perm);
    check_operands(x, values, p, "sparse linear");
    TORCH_CHECK(x.dim() == 2 && x.size(1) == p.width(), "sparse linear: expected an input [batch, ", p.width(),
                "], got ", x.sizes());
    const int64_t batch = x.size(0), rows = p.rows();
    const at::Tensor xt = x.t().contiguous();
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
    save_operands(ctx, xt, values, p);
    ctx->saved_data["batch"] = batch;
    return ot.t().contiguous();
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const Saved s = restore_operands(ctx, "sparse linear");
    const at::Tensor &xt = s.input, &values = s.values;
    const Pattern& p = s.p;
    const int64_t batch = ctx->saved_data["batch"].toInt(), rows = p.rows(), width = p.width();
    const at::Tensor got = grads[0].t().contiguous();
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
        dx = dxt.t().contiguous();
      }
      if (ctx->needs_input_grad(1)) {
        dvalues = at::empty({p.nnz()}, values.options());
        a.xt = xt.data_ptr<scalar_t>();
        a.out = dvalues.data_ptr<scalar_t>();
        linear_weight_grad_run(a, p.nnz(), grain_for(batch));
      }
    });
    return {dx, dvalues, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
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

// Two layouts, chosen by the caller (by measurement: neither wins everywhere):
//   0 (batch-innermost): input and gradients transposed to [C, H, W, N], one kept weight times a
//     batch vector (times the output row at stride 1); best for small images and large batches.
//   1 (rows): the tensors as they are, [N, C, H, W], one kept weight times an image row; no
//     transposes, best for large images.
// Layout 0 saves the transposed input (a copy of the input until backward), layout 1 the input.
struct SparseConv2dFunction : public torch::autograd::Function<SparseConv2dFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& values,
                            const at::Tensor& row_ptr, const at::Tensor& cols, const at::Tensor& col_ptr,
                            const at::Tensor& col_rows, const at::Tensor& col_perm, int64_t kh, int64_t kw,
                            int64_t stride, int64_t pad_h, int64_t pad_w, int64_t layout) {
    const Pattern p = pattern_of(row_ptr, cols, col_ptr, col_rows, col_perm);
    check_operands(x, values, p, "sparse conv2d");
    TORCH_CHECK(layout == 0 || layout == 1, "sparse conv2d: layout is 0 (batch-innermost) or 1 (rows), got ", layout);
    TORCH_CHECK(kh >= 1 && kw >= 1 && stride >= 1 && pad_h >= 0 && pad_w >= 0,
                "sparse conv2d: kernel and stride must be positive and padding non-negative");
    TORCH_CHECK(x.dim() == 4 && x.size(1) * kh * kw == p.width(), "sparse conv2d: expected an input [N, ",
                p.width() / (kh * kw), ", H, W] for a ", kh, "x", kw, " kernel, got ", x.sizes());
    TORCH_CHECK(x.size(2) + 2 * pad_h >= kh && x.size(3) + 2 * pad_w >= kw, "sparse conv2d: the padded input ",
                x.sizes(), " is smaller than the ", kh, "x", kw, " kernel");
    const std::vector<int64_t> kernel{kh, kw};
    const at::Tensor xin = layout == 0 ? x.permute({1, 2, 3, 0}).contiguous() : x.contiguous();
    at::Tensor out;
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparse_conv2d_forward", [&] {
      auto a = conv_args<scalar_t>(p, values, x.sizes(), kernel, stride, pad_h, pad_w);
      a.xt = xin.data_ptr<scalar_t>();
      const int64_t per_row = std::max<int64_t>(1, p.nnz() / std::max<int64_t>(1, a.o));
      if (layout == 0) {
        at::Tensor ot = at::empty({a.o, a.ho, a.wo, a.n}, x.options());
        a.out = ot.data_ptr<scalar_t>();
        conv_forward_run(a, a.o * a.ho, grain_for(per_row * a.wo * a.n));
        out = ot.permute({3, 0, 1, 2}).contiguous();
      } else {
        out = at::empty({a.n, a.o, a.ho, a.wo}, x.options());
        a.out = out.data_ptr<scalar_t>();
        conv_nchw_forward_run(a, a.n * a.o, grain_for(per_row * a.ho * a.wo));
      }
    });
    save_operands(ctx, xin, values, p);
    ctx->saved_data["shape"] = x.sizes().vec();
    ctx->saved_data["kernel"] = kernel;
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = std::vector<int64_t>{pad_h, pad_w};
    ctx->saved_data["layout"] = layout;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const Saved s = restore_operands(ctx, "sparse conv2d");
    const at::Tensor &xin = s.input, &values = s.values;
    const Pattern& p = s.p;
    const auto shape = ctx->saved_data["shape"].toIntVector();
    const auto kernel = ctx->saved_data["kernel"].toIntVector();
    const auto padding = ctx->saved_data["padding"].toIntVector();
    const int64_t stride = ctx->saved_data["stride"].toInt(), layout = ctx->saved_data["layout"].toInt();
    const at::Tensor got = layout == 0 ? grads[0].permute({1, 2, 3, 0}).contiguous() : grads[0].contiguous();
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
          dx = dxt.permute({3, 0, 1, 2}).contiguous();
        } else {
          dx = at::empty({a.n, a.c, a.h, a.w}, values.options());
          a.out = dx.data_ptr<scalar_t>();
          conv_nchw_input_grad_run(a, a.n * a.c, grain_for(per_plane));
        }
      }
      if (ctx->needs_input_grad(1)) {
        dvalues = at::empty({p.nnz()}, values.options());
        a.xt = xin.data_ptr<scalar_t>();
        a.out = dvalues.data_ptr<scalar_t>();
        if (layout == 0)
          conv_weight_grad_run(a, p.nnz(), grain_for(a.ho * a.wo * a.n));
        else
          conv_nchw_weight_grad_run(a, p.nnz(), grain_for(a.ho * a.wo * a.n));
      }
    });
    std::vector<at::Tensor> result(14);
    result[0] = dx;
    result[1] = dvalues;
    return result;
  }
};

}  // namespace

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
PAI_API Tensor pai_sparse_linear(Tensor x, Tensor values, Tensor row_ptr, Tensor cols, Tensor col_ptr, Tensor col_rows,
                                 Tensor col_perm, Tensor bias) {
  return tensor_result([&] {
    TORCH_CHECK(x->dim() >= 1, "sparse linear: the input needs at least one dimension");
    std::vector<int64_t> shape(x->sizes().begin(), x->sizes().end());
    const at::Tensor flat = x->reshape({-1, shape.back()});
    at::Tensor y = SparseLinearFunction::apply(flat, *values, *row_ptr, *cols, *col_ptr, *col_rows, *col_perm);
    shape.back() = y.size(1);
    if (x->dim() != 2) y = y.reshape(shape);
    return bias ? y + *bias : y;
  });
}

// 2-d convolution of x [N, C, H, W] with the sparse weight [out, C, kh, kw] (dilation 1, one group);
// layout 0: batch-innermost, 1: rows (see SparseConv2dFunction).
PAI_API Tensor pai_sparse_conv2d(Tensor x, Tensor values, Tensor row_ptr, Tensor cols, Tensor col_ptr, Tensor col_rows,
                                 Tensor col_perm, const int64_t* kernel, const int64_t* stride, const int64_t* padding,
                                 int32_t layout, Tensor bias) {
  return tensor_result([&] {
    TORCH_CHECK(stride[0] == stride[1], "sparse conv2d: only equal strides along height and width are supported, got ",
                stride[0], " and ", stride[1]);
    at::Tensor y = SparseConv2dFunction::apply(*x, *values, *row_ptr, *cols, *col_ptr, *col_rows, *col_perm, kernel[0],
                                               kernel[1], stride[0], padding[0], padding[1], layout);
    return bias ? y + bias->view({1, -1, 1, 1}) : y;
  });
}

// 1 when the kernels run their AVX2/FMA build (the CPU has both), 0 for the portable build.
PAI_API uint8_t pai_sparse_vectorized() { return pai::guarded([] { return (uint8_t)use_avx2_fma(); }, (uint8_t)0); }

// Chooses the AVX2/FMA build (1, refused on a CPU without them) or the portable one (0), process-wide.
PAI_API int32_t pai_sparse_set_vectorized(uint8_t on) {
  return status_result([&] {
    TORCH_CHECK(on == 0 || cpu_has_avx2_fma(), "this CPU lacks AVX2/FMA: the sparse kernels can only run their portable build");
    portable_forced.store(on == 0);
  });
}
