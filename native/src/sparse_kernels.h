// The sparse kernels, written over vec_t<T>: a vector of PAI_VECTOR_BYTES bytes (see sparse.cpp,
// which includes this file once per vector width, each time in its own namespace, after the
// standard headers, the argument structs and the PAI_INLINE macros it uses). No include guard, on
// purpose; include nothing here.

// ---- vector primitives (inlined into the AVX-512, AVX2/FMA and portable kernels) ----------------

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

// A vector of T: 32 bytes (8 floats, 4 doubles: one AVX2 register, two SSE ones in the portable
// build) or 64 (one AVX-512 register).
template <class T>
struct Lanes {
  typedef T vec __attribute__((vector_size(PAI_VECTOR_BYTES), aligned(sizeof(T)), may_alias));
  static constexpr int64_t count = PAI_VECTOR_BYTES / sizeof(T);
};
template <class T>
using vec_t = typename Lanes<T>::vec;
template <class T>
PAI_INLINE vec_t<T> load(const T* p) {
  return *reinterpret_cast<const vec_t<T>*>(p);
}
template <class T>
PAI_INLINE void store(T* p, vec_t<T> v) {
  *reinterpret_cast<vec_t<T>*>(p) = v;
}

// Four independent vector sums: one sum would wait on each fused multiply-add's latency.
template <class T>
PAI_INLINE T dot(const T* __restrict a, const T* __restrict b, int64_t n) {
  constexpr int64_t L = Lanes<T>::count;
  vec_t<T> s0{}, s1{}, s2{}, s3{};
  int64_t i = 0;
  for (; i + 4 * L <= n; i += 4 * L) {
    s0 += load(a + i) * load(b + i);
    s1 += load(a + i + L) * load(b + i + L);
    s2 += load(a + i + 2 * L) * load(b + i + 2 * L);
    s3 += load(a + i + 3 * L) * load(b + i + 3 * L);
  }
  // At most three vectors left: one to each of three chains.
  if (i + L <= n) s0 += load(a + i) * load(b + i), i += L;
  if (i + L <= n) s1 += load(a + i) * load(b + i), i += L;
  if (i + L <= n) s2 += load(a + i) * load(b + i), i += L;
  const vec_t<T> v = (s0 + s1) + (s2 + s3);
  T s = 0;
  for (int64_t l = 0; l < L; ++l) s += v[l];
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

template <class T>
PAI_INLINE void zero(T* y, int64_t n) {
  std::fill(y, y + n, T(0));
}

// ---- linear: X [B, in] held as XT [in, B] (LinearArgs) -----------------------------------------

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

// Calls f(o, k0, k1) for each run [k0, k1) of the kept weights in [begin, end) that pattern row o
// holds, rows ascending: the weight gradients' walk (one output element per kept weight).
template <class F>
PAI_INLINE void for_row_runs(const int64_t* row_ptr, int64_t rows, int64_t begin, int64_t end, F f) {
  int64_t o = std::upper_bound(row_ptr, row_ptr + rows + 1, begin) - row_ptr - 1;
  for (int64_t k = begin; k < end; ++o) {
    const int64_t stop = std::min(end, row_ptr[o + 1]);
    if (stop > k) f(o, k, stop);
    k = std::max(k, stop);
  }
}

// Calls f(k, o) for kept weights k in [begin, end), o the pattern row holding k.
template <class F>
PAI_INLINE void for_kept(const int64_t* row_ptr, int64_t rows, int64_t begin, int64_t end, F f) {
  for_row_runs(row_ptr, rows, begin, end, [&](int64_t o, int64_t k0, int64_t k1) PAI_LAMBDA_INLINE {
    for (int64_t k = k0; k < k1; ++k) f(k, o);
  });
}

// dvalues[k] = dOT[row(k)]·XT[cols[k]] for kept weights k in [begin, end).
template <class T>
PAI_INLINE void linear_weight_grad(const LinearArgs<T>& a, int64_t begin, int64_t end) {
  const int64_t n = a.batch;
  for_kept(a.row_ptr, a.rows, begin, end,
           [&](int64_t k, int64_t o) PAI_LAMBDA_INLINE { a.out[k] = dot(a.got + o * n, a.xt + a.cols[k] * n, n); });
}

// ---- conv2d: X [N, C, H, W] held as XT [C, H, W, N], O as OT [O, Ho, Wo, N] (ConvArgs) ----------

// The output columns x whose input column x·s + j − p lies inside [0, w): [lo, hi] (empty: lo > hi).
PAI_INLINE void valid_range(int64_t j, int64_t stride, int64_t pad, int64_t w, int64_t wo, int64_t& lo, int64_t& hi) {
  const int64_t first = pad - j;  // x·s ≥ pad − j
  lo = first <= 0 ? 0 : (first + stride - 1) / stride;
  const int64_t last = w - 1 + pad - j;  // x·s ≤ w − 1 + pad − j
  hi = last < 0 ? -1 : std::min(wo - 1, last / stride);
}

// The V vectors at x, lanes `inner` apart (1: contiguous).
template <bool Contiguous, class T>
PAI_INLINE vec_t<T> load_lanes(const T* x, int64_t inner) {
  if constexpr (Contiguous) {
    return load(x);
  } else {
    vec_t<T> v;
    for (int64_t l = 0; l < Lanes<T>::count; ++l) v[l] = x[l * inner];
    return v;
  }
}

// One block of V vectors (or one value, V = 0) of destination column m: the taps valid at m summed
// in list order in registers, then stored once (a store per tap would bound the loop instead).
// Source values of a column are `inner` apart.
template <bool Check, bool Contiguous, int V, class T>
PAI_INLINE void tap_block(T* __restrict d, const T* __restrict src, const Tap<T>* taps, int64_t count, int64_t m,
                          int64_t step, int64_t inner, const T* bias) {
  constexpr int64_t L = Lanes<T>::count;
  if constexpr (V == 0) {
    T acc = 0;
    for (int64_t t = 0; t < count; ++t) {
      const Tap<T>& p = taps[t];
      if (Check && (m < p.lo || m > p.hi)) continue;
      acc += p.w * src[p.off + m * step];
    }
    *d = bias ? acc + *bias : acc;
  } else {
    vec_t<T> acc[V] = {};
    for (int64_t t = 0; t < count; ++t) {
      const Tap<T>& p = taps[t];
      if (Check && (m < p.lo || m > p.hi)) continue;
      const T* x = src + p.off + m * step;
      for (int v = 0; v < V; ++v) acc[v] += p.w * load_lanes<Contiguous>(x + v * L * inner, inner);
    }
    if (bias)
      for (int v = 0; v < V; ++v) acc[v] += *bias;
    for (int v = 0; v < V; ++v) store(d + v * L, acc[v]);
  }
}

// Blocks of eight vectors first: eight independent sums cover a fused multiply-add's latency times
// its throughput, where four left half of the multiply-add units idle.
template <bool Check, bool Contiguous, class T>
PAI_INLINE void tap_column(T* __restrict d, const T* __restrict src, const Tap<T>* taps, int64_t count, int64_t m,
                           int64_t step, int64_t n, int64_t inner, const T* bias) {
  constexpr int64_t L = Lanes<T>::count;
  int64_t b = 0;
  for (; b + 8 * L <= n; b += 8 * L)
    tap_block<Check, Contiguous, 8>(d + b, src + b * inner, taps, count, m, step, inner, bias);
  for (; b + 4 * L <= n; b += 4 * L)
    tap_block<Check, Contiguous, 4>(d + b, src + b * inner, taps, count, m, step, inner, bias);
  for (; b + L <= n; b += L)
    tap_block<Check, Contiguous, 1>(d + b, src + b * inner, taps, count, m, step, inner, bias);
  for (; b < n; ++b) tap_block<Check, Contiguous, 0>(d + b, src + b * inner, taps, count, m, step, inner, bias);
}

// Destination columns m in [0, columns), each n values at dst + m·dst_step, set to the sum of the
// taps valid at m (source values `inner` apart), plus *bias when not null (added to the finished
// sum, as a separate bias addition would: one pass over the output fewer); columns where every tap
// is valid skip the checks.
template <class T>
PAI_INLINE void gather_taps(T* dst, int64_t dst_step, const T* src, int64_t step, const std::vector<Tap<T>>& taps,
                            int64_t columns, int64_t n, int64_t inner = 1, const T* bias = nullptr) {
  int64_t all_lo = 0, all_hi = columns - 1;
  for (const Tap<T>& t : taps) {
    all_lo = std::max(all_lo, t.lo);
    all_hi = std::min(all_hi, t.hi);
  }
  const auto count = (int64_t)taps.size();
  for (int64_t m = 0; m < columns; ++m) {
    T* d = dst + m * dst_step;
    const bool all = m >= all_lo && m <= all_hi;
    if (inner == 1) {
      if (all)
        tap_column<false, true>(d, src, taps.data(), count, m, step, n, 1, bias);
      else
        tap_column<true, true>(d, src, taps.data(), count, m, step, n, 1, bias);
    } else {
      if (all)
        tap_column<false, false>(d, src, taps.data(), count, m, step, n, inner, bias);
      else
        tap_column<true, false>(d, src, taps.data(), count, m, step, n, inner, bias);
    }
  }
}

// Output row (o, y) into dst [Wo, N]: OT[o, y] = Σ over kept (c, i, j) of w·XT[c, y·s + i − p],
// column x reading input column x·s + j − p (taps: the caller's scratch).
template <class T>
PAI_INLINE void conv_forward_row(const ConvArgs<T>& a, int64_t o, int64_t y, std::vector<Tap<T>>& taps, T* dst) {
  const int64_t kk = a.kh * a.kw, n = a.n;
  taps.clear();
  for (int64_t k = a.row_ptr[o]; k < a.row_ptr[o + 1]; ++k) {
    const int64_t col = a.cols[k], c = col / kk, i = (col % kk) / a.kw, j = col % a.kw;
    const int64_t yy = y * a.stride + i - a.pad_h;
    if (yy < 0 || yy >= a.h) continue;
    int64_t lo, hi;
    valid_range(j, a.stride, a.pad_w, a.w, a.wo, lo, hi);
    if (lo > hi) continue;
    taps.push_back({a.values[k], ((c * a.h + yy) * a.w + j - a.pad_w) * n, lo, hi});
  }
  gather_taps(dst, n, a.xt, a.stride * n, taps, a.wo, n, 1, a.bias ? a.bias + o : nullptr);
}

// Output rows r = o·Ho + y in [begin, end).
template <class T>
PAI_INLINE void conv_forward(const ConvArgs<T>& a, int64_t begin, int64_t end) {
  std::vector<Tap<T>> taps;
  for (int64_t r = begin; r < end; ++r) conv_forward_row(a, r / a.ho, r % a.ho, taps, a.out + r * a.wo * a.n);
}

// Rows r = o·Hp + yp in [begin, end) of the output max-pooled by a.pool × a.pool windows, stride
// a.pool (a.out: [O, Ho / pool, Wo / pool, N]): the output rows one row of windows covers are
// computed into scratch and pooled there, so the unpooled output is never written out. Output rows
// no window covers are not computed.
template <class T>
PAI_INLINE void conv_forward_pooled(const ConvArgs<T>& a, int64_t begin, int64_t end) {
  const int64_t k = a.pool, hp = a.ho / k, row = a.wo * a.n;
  std::vector<Tap<T>> taps;
  std::vector<T> rows((size_t)(k * row));
  for (int64_t r = begin; r < end; ++r) {
    const int64_t o = r / hp, yp = r % hp;
    for (int64_t dy = 0; dy < k; ++dy) conv_forward_row(a, o, yp * k + dy, taps, rows.data() + dy * row);
    pai::max_pool_row(rows.data(), a.out + r * (a.wo / k) * a.n, a.wo, a.n, k);
  }
}

// Input-gradient rows r = c·H + yy in [begin, end): dXT[c, yy] = Σ over kept (o, c, i, j) with
// yy = y·s + i − p of w·dOT[o, y], input column x·s + j − p taking output column x. The columns are
// walked by residue modulo the stride: those with residue ρ take whole output columns from the
// kernel columns j with ρ + p − j ≡ 0 (mod s), output column q + m for input column ρ + s·m.
template <class T>
PAI_INLINE void conv_input_grad(const ConvArgs<T>& a, int64_t begin, int64_t end) {
  const int64_t kk = a.kh * a.kw, n = a.n, s = a.stride;
  std::vector<Tap<T>> taps;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t c = r / a.h, yy = r % a.h;
    T* in_row = a.out + r * a.w * n;
    for (int64_t rho = 0; rho < s && rho < a.w; ++rho) {
      const int64_t columns = (a.w - rho + s - 1) / s;
      taps.clear();
      for (int64_t col = c * kk; col < (c + 1) * kk; ++col) {
        const int64_t i = (col % kk) / a.kw, j = col % a.kw;
        const int64_t t = yy + a.pad_h - i;  // = y·s
        if (t < 0 || t % s != 0 || t / s >= a.ho) continue;
        const int64_t y = t / s, shift = rho + a.pad_w - j;
        if (((shift % s) + s) % s != 0) continue;
        const int64_t q = shift / s;  // exact
        const int64_t lo = std::max<int64_t>(0, -q), hi = std::min(columns - 1, a.wo - 1 - q);
        if (lo > hi) continue;
        for (int64_t e = a.col_ptr[col]; e < a.col_ptr[col + 1]; ++e)
          taps.push_back({a.values[a.col_perm[e]], ((a.col_rows[e] * a.ho + y) * a.wo + q) * n, lo, hi});
      }
      gather_taps(in_row + rho * n, s * n, a.got, n, taps, columns, n);
    }
  }
}

// Kept weights of one pattern row summed together, a few at a time, so that each output-gradient
// vector is loaded once for all of them (one load per multiply-add otherwise, and the row's
// output-gradient plane read again for every kept weight). Registers: two sums per kept weight.
constexpr int kWeightBlock = PAI_VECTOR_BYTES >= 64 ? 8 : 4;

// dvalues of the B kept weights k0 … k0 + B − 1 (all of pattern row o): Σ_y Σ_x dOT[o, y, x, :]·XT[c, y·s + i − p,
// x·s + j − p, :]. Each weight's sum runs in the same order whatever the block (vectors of a column
// alternately into its two sums, the lanes past the last vector into a scalar, columns and rows
// ascending), so the result does not depend on which weights share a block or a thread.
template <int B, class T>
PAI_INLINE void conv_weight_grad_block(const ConvArgs<T>& a, int64_t o, int64_t k0) {
  constexpr int64_t L = Lanes<T>::count;
  const int64_t kk = a.kh * a.kw, n = a.n, vectors = n / L, step = a.stride * n;
  // per weight: its kernel row, its output columns [lo, hi], and where its input row 0 starts
  // (column m reads input column m·s + j − p, only ever at a valid m)
  int64_t i[B], lo[B], hi[B], row0[B];
  int64_t lo_all = 0, hi_all = a.wo - 1, first = a.wo, last = -1;
  for (int b = 0; b < B; ++b) {
    const int64_t col = a.cols[k0 + b], j = col % a.kw;
    i[b] = (col % kk) / a.kw;
    row0[b] = ((col / kk) * a.h * a.w + j - a.pad_w) * n;
    valid_range(j, a.stride, a.pad_w, a.w, a.wo, lo[b], hi[b]);
    lo_all = std::max(lo_all, lo[b]);
    hi_all = std::min(hi_all, hi[b]);
    first = std::min(first, lo[b]);
    last = std::max(last, hi[b]);
  }
  vec_t<T> s0[B] = {}, s1[B] = {};
  T tail[B] = {};
  const T* x[B];
  bool valid[B];
  // One column m of every weight b with take(b) true, in the order each weight's sum requires.
  const auto column = [&](const T* g, int64_t m, auto take) PAI_LAMBDA_INLINE {
    const T* gm = g + m * n;
    int64_t v = 0;
    for (; v + 2 <= vectors; v += 2) {
      const vec_t<T> g0 = load(gm + v * L), g1 = load(gm + (v + 1) * L);
      for (int b = 0; b < B; ++b)
        if (take(b)) {
          const T* xm = x[b] + m * step + v * L;
          s0[b] += g0 * load(xm);
          s1[b] += g1 * load(xm + L);
        }
    }
    if (v < vectors) {
      const vec_t<T> g0 = load(gm + v * L);
      for (int b = 0; b < B; ++b)
        if (take(b)) s0[b] += g0 * load(x[b] + m * step + v * L);
    }
    // An explicit fused multiply-add: left to the compiler, whether the scalar sum was contracted
    // depended on how many weights shared the block, so the thread count changed the last bit.
    for (int64_t l = vectors * L; l < n; ++l)
      for (int b = 0; b < B; ++b)
        if (take(b)) tail[b] = std::fma(gm[l], x[b][m * step + l], tail[b]);
  };
  for (int64_t y = 0; y < a.ho; ++y) {
    const T* g = a.got + (o * a.ho + y) * a.wo * n;
    bool all = true;
    for (int b = 0; b < B; ++b) {
      const int64_t yy = y * a.stride + i[b] - a.pad_h;
      valid[b] = yy >= 0 && yy < a.h && lo[b] <= hi[b];
      all = all && valid[b];
      x[b] = a.xt + row0[b] + yy * a.w * n;
    }
    for (int64_t m = first; m <= last; ++m) {
      if (all && m >= lo_all && m <= hi_all)
        column(g, m, [](int) PAI_LAMBDA_INLINE { return true; });
      else
        column(g, m, [&](int b) PAI_LAMBDA_INLINE { return valid[b] && m >= lo[b] && m <= hi[b]; });
    }
  }
  for (int b = 0; b < B; ++b) {
    const vec_t<T> v = s0[b] + s1[b];
    T sum = 0;
    for (int64_t l = 0; l < L; ++l) sum += v[l];
    a.out[k0 + b] = sum + tail[b];
  }
}

// Kept weights k in [begin, end): dvalues[k] = Σ_n Σ_y Σ_x dO[n, o, y, x]·X[n, c, y·s + i − p, x·s + j − p],
// from dOT [O, Ho, Wo, N] and XT [C, H, W, N], a whole batch per column; consecutive kept weights of
// one row in blocks of kWeightBlock.
template <class T>
PAI_INLINE void conv_weight_grad(const ConvArgs<T>& a, int64_t begin, int64_t end) {
  for_row_runs(a.row_ptr, a.o, begin, end, [&](int64_t o, int64_t k, int64_t stop) PAI_LAMBDA_INLINE {
    while (k < stop) {
      const int64_t left = stop - k;
      if (left >= kWeightBlock) {
        conv_weight_grad_block<kWeightBlock>(a, o, k);
        k += kWeightBlock;
      } else if (kWeightBlock > 4 && left >= 4) {
        conv_weight_grad_block<4>(a, o, k);
        k += 4;
      } else if (left >= 2) {
        conv_weight_grad_block<2>(a, o, k);
        k += 2;
      } else {
        conv_weight_grad_block<1>(a, o, k);
        k += 1;
      }
    }
  });
}

// ---- conv2d in the input's own layout [N, C, H, W], vectorized along image rows -----------------
// No transposes: the input is zero-padded once (kept for the weight gradient) so that every kept
// weight reads whole rows, and the input gradient is the forward's sum over a zero-padded (and, at
// stride 2, zero-dilated) output gradient with the kernel flipped. Suits large images, where a row
// is long and the transposes of the batch-innermost layout cost as much as the products.
// Scratch: the padded input [N, C, H + 2p, W + 2p] until the backward pass, and the dilated
// gradient [N, O, H + kh - 1, W + kw - 1] during it.

// Output planes r = n·O + o in [begin, end): O[n, o, y, x] = Σ over kept (c, i, j) of
// w·Xp[n, c, y·s + i, x·s + j], Xp (a.xt) the padded input [N, C, Hp, Wp].
template <class T>
PAI_INLINE void rows_forward(const ConvArgs<T>& a, int64_t begin, int64_t end) {
  const int64_t kk = a.kh * a.kw, hp = a.h + 2 * a.pad_h, wp = a.w + 2 * a.pad_w;
  std::vector<Tap<T>> taps;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / a.o, o = r % a.o;
    taps.clear();
    for (int64_t k = a.row_ptr[o]; k < a.row_ptr[o + 1]; ++k) {
      const int64_t col = a.cols[k], c = col / kk, i = (col % kk) / a.kw, j = col % a.kw;
      taps.push_back({a.values[k], ((n * a.c + c) * hp + i) * wp + j, 0, a.ho - 1});
    }
    gather_taps(a.out + r * a.ho * a.wo, a.wo, a.xt, a.stride * wp, taps, a.ho, a.wo, a.stride,
                a.bias ? a.bias + o : nullptr);
  }
}

// Input-gradient planes r = n·C + c in [begin, end): dX[n, c, yy, xx] = Σ over kept (o, c, i, j) of
// w·G[n, o, yy + kh - 1 - i, xx + kw - 1 - j], G (a.got) the dilated gradient [N, O, H + kh - 1,
// W + kw - 1]; summed over the transposed pattern's columns (kernel offset, then output channel).
template <class T>
PAI_INLINE void rows_input_grad(const ConvArgs<T>& a, int64_t begin, int64_t end) {
  const int64_t kk = a.kh * a.kw, gh = a.h + a.kh - 1, gw = a.w + a.kw - 1;
  std::vector<Tap<T>> taps;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / a.c, c = r % a.c;
    taps.clear();
    for (int64_t col = c * kk; col < (c + 1) * kk; ++col) {
      const int64_t i = (col % kk) / a.kw, j = col % a.kw;
      for (int64_t e = a.col_ptr[col]; e < a.col_ptr[col + 1]; ++e)
        taps.push_back({a.values[a.col_perm[e]], ((n * a.o + a.col_rows[e]) * gh + a.kh - 1 - i) * gw + a.kw - 1 - j,
                        0, a.h - 1});
    }
    gather_taps(a.out + r * a.h * a.w, a.w, a.got, gw, taps, a.h, a.w);
  }
}

// Kept weights k in [begin, end): dvalues[k] = Σ_n Σ_y Σ_x dO[n, o, y, x]·Xp[n, c, y·s + i, x·s + j],
// four rows at a time, each row in its own vector chain (a single chain would wait on each fused
// multiply-add's latency), then across chains and lanes.
template <class T>
PAI_INLINE void rows_weight_grad(const ConvArgs<T>& a, int64_t begin, int64_t end) {
  constexpr int64_t L = Lanes<T>::count;
  const int64_t kk = a.kh * a.kw, hp = a.h + 2 * a.pad_h, wp = a.w + 2 * a.pad_w, s = a.stride;
  for_kept(a.row_ptr, a.o, begin, end, [&](int64_t k, int64_t o) PAI_LAMBDA_INLINE {
    const int64_t col = a.cols[k], c = col / kk, i = (col % kk) / a.kw, j = col % a.kw;
    vec_t<T> s0{}, s1{}, s2{}, s3{};
    T tail = 0;
    const auto row = [&](vec_t<T>& acc, int64_t n, int64_t y) PAI_LAMBDA_INLINE {
      const T* g = a.got + ((n * a.o + o) * a.ho + y) * a.wo;
      const T* x = a.xt + ((n * a.c + c) * hp + y * s + i) * wp + j;
      int64_t q = 0;
      if (s == 1)
        for (; q + L <= a.wo; q += L) acc += load(g + q) * load(x + q);
      else
        for (; q + L <= a.wo; q += L) acc += load(g + q) * load_lanes<false>(x + q * s, s);
      for (; q < a.wo; ++q) tail += g[q] * x[q * s];
    };
    for (int64_t n = 0; n < a.n; ++n) {
      int64_t y = 0;
      for (; y + 4 <= a.ho; y += 4) {
        row(s0, n, y);
        row(s1, n, y + 1);
        row(s2, n, y + 2);
        row(s3, n, y + 3);
      }
      for (; y < a.ho; ++y) row(s0, n, y);
    }
    const vec_t<T> v = (s0 + s1) + (s2 + s3);
    T sum = 0;
    for (int64_t l = 0; l < L; ++l) sum += v[l];
    a.out[k] = sum + tail;
  });
}
