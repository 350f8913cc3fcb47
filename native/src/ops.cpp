// Elementwise arithmetic and math, comparisons, reductions, sorting, matmul, in-place updates.
#include "pai.h"

using pai::status_result;
using pai::tensor_result;

#define PAI_UNARY(name, expr) \
  PAI_API Tensor pai_##name(Tensor a) { return tensor_result([&] { return expr; }); }
#define PAI_BINARY(name, expr) \
  PAI_API Tensor pai_##name(Tensor a, Tensor b) { return tensor_result([&] { return expr; }); }
#define PAI_SCALAR(name, expr) \
  PAI_API Tensor pai_##name(Tensor a, double s) { return tensor_result([&] { return expr; }); }

// ---- arithmetic (broadcasting) -------------------------------------------------------
PAI_BINARY(add, *a + *b)
PAI_BINARY(sub, *a - *b)
PAI_BINARY(mul, *a * *b)
PAI_BINARY(div, *a / *b)
PAI_BINARY(pow, a->pow(*b))
PAI_BINARY(maximum, at::maximum(*a, *b))
PAI_BINARY(minimum, at::minimum(*a, *b))
PAI_BINARY(matmul, at::matmul(*a, *b))
PAI_SCALAR(add_scalar, *a + s)
PAI_SCALAR(sub_scalar, *a - s)
PAI_SCALAR(rsub_scalar, s - *a)
PAI_SCALAR(mul_scalar, *a * s)
PAI_SCALAR(div_scalar, *a / s)
PAI_SCALAR(rdiv_scalar, at::reciprocal(*a) * s)
PAI_SCALAR(pow_scalar, a->pow(s))

// ---- elementwise math ----------------------------------------------------------------
PAI_UNARY(neg, a->neg())
PAI_UNARY(abs, a->abs())
PAI_UNARY(sign, a->sign())
PAI_UNARY(sqrt, a->sqrt())
PAI_UNARY(exp, a->exp())
PAI_UNARY(log, a->log())
PAI_UNARY(square, a->square())
PAI_UNARY(isfinite, a->isfinite())
PAI_UNARY(logical_not, a->logical_not())
PAI_BINARY(logical_and, a->logical_and(*b))
PAI_BINARY(logical_or, a->logical_or(*b))

// Clamp to [lo, hi]; a NaN bound means "no bound on that side".
PAI_API Tensor pai_clamp(Tensor a, double lo, double hi) {
  return tensor_result([&] {
    c10::optional<at::Scalar> l = std::isnan(lo) ? c10::nullopt : c10::optional<at::Scalar>(lo);
    c10::optional<at::Scalar> h = std::isnan(hi) ? c10::nullopt : c10::optional<at::Scalar>(hi);
    return a->clamp(l, h);
  });
}
PAI_API Tensor pai_where(Tensor cond, Tensor a, Tensor b) { return tensor_result([&] { return at::where(*cond, *a, *b); }); }

// ---- comparisons (bool results) ------------------------------------------------------
PAI_BINARY(eq, a->eq(*b))
PAI_BINARY(ne, a->ne(*b))
PAI_BINARY(lt, a->lt(*b))
PAI_BINARY(le, a->le(*b))
PAI_BINARY(gt, a->gt(*b))
PAI_BINARY(ge, a->ge(*b))
PAI_SCALAR(eq_scalar, a->eq(s))
PAI_SCALAR(ne_scalar, a->ne(s))
PAI_SCALAR(lt_scalar, a->lt(s))
PAI_SCALAR(le_scalar, a->le(s))
PAI_SCALAR(gt_scalar, a->gt(s))
PAI_SCALAR(ge_scalar, a->ge(s))
PAI_API uint8_t pai_equal(Tensor a, Tensor b) { return pai::guarded([&] { return (uint8_t)at::equal(*a, *b); }, (uint8_t)0); }
PAI_API uint8_t pai_allclose(Tensor a, Tensor b, double rtol, double atol) {
  return pai::guarded([&] { return (uint8_t)at::allclose(*a, *b, rtol, atol); }, (uint8_t)0);
}

// ---- reductions ----------------------------------------------------------------------
// dims == null (n == 0) reduces over all elements.
PAI_API Tensor pai_sum(Tensor a, const int64_t* dims, int32_t n, uint8_t keepdim) {
  return tensor_result([&] { return n == 0 ? a->sum() : a->sum(pai::ints(dims, n), keepdim != 0); });
}
PAI_API Tensor pai_mean(Tensor a, const int64_t* dims, int32_t n, uint8_t keepdim) {
  return tensor_result([&] { return n == 0 ? a->mean() : a->mean(pai::ints(dims, n), keepdim != 0); });
}
PAI_API Tensor pai_var(Tensor a, const int64_t* dims, int32_t n, uint8_t unbiased, uint8_t keepdim) {
  return tensor_result([&] {
    return n == 0 ? a->var(unbiased != 0) : a->var(pai::ints(dims, n), unbiased != 0, keepdim != 0);
  });
}
PAI_API Tensor pai_norm(Tensor a, double p, const int64_t* dims, int32_t n, uint8_t keepdim) {
  return tensor_result([&] { return n == 0 ? a->norm(p) : a->norm(p, pai::ints(dims, n), keepdim != 0); });
}
PAI_API Tensor pai_max_all(Tensor a) { return tensor_result([&] { return a->max(); }); }
PAI_API Tensor pai_min_all(Tensor a) { return tensor_result([&] { return a->min(); }); }
// Values and indices along dim; indices go to *indices.
PAI_API Tensor pai_max_dim(Tensor a, int64_t dim, uint8_t keepdim, Tensor* indices) {
  return tensor_result([&] {
    auto r = a->max(dim, keepdim != 0);
    *indices = new at::Tensor(std::get<1>(r));
    return std::get<0>(r);
  });
}
PAI_API Tensor pai_min_dim(Tensor a, int64_t dim, uint8_t keepdim, Tensor* indices) {
  return tensor_result([&] {
    auto r = a->min(dim, keepdim != 0);
    *indices = new at::Tensor(std::get<1>(r));
    return std::get<0>(r);
  });
}
PAI_API Tensor pai_argmax(Tensor a, int64_t dim, uint8_t keepdim) { return tensor_result([&] { return a->argmax(dim, keepdim != 0); }); }
PAI_API Tensor pai_argmax_all(Tensor a) { return tensor_result([&] { return a->argmax(); }); }
PAI_API Tensor pai_count_nonzero(Tensor a) { return tensor_result([&] { return a->count_nonzero(); }); }

// ---- sorting -------------------------------------------------------------------------
// stable=1 keeps the order of equal elements (deterministic tie-breaking by position).
PAI_API Tensor pai_sort(Tensor a, int64_t dim, uint8_t descending, uint8_t stable, Tensor* indices) {
  return tensor_result([&] {
    auto r = a->sort(c10::optional<bool>(stable != 0), dim, descending != 0);
    *indices = new at::Tensor(std::get<1>(r));
    return std::get<0>(r);
  });
}
PAI_API Tensor pai_argsort(Tensor a, int64_t dim, uint8_t descending, uint8_t stable) {
  return tensor_result([&] { return std::get<1>(a->sort(c10::optional<bool>(stable != 0), dim, descending != 0)); });
}
PAI_API Tensor pai_topk(Tensor a, int64_t k, int64_t dim, uint8_t largest, uint8_t sorted, Tensor* indices) {
  return tensor_result([&] {
    auto r = a->topk(k, dim, largest != 0, sorted != 0);
    *indices = new at::Tensor(std::get<1>(r));
    return std::get<0>(r);
  });
}
PAI_API Tensor pai_kthvalue(Tensor a, int64_t k, int64_t dim, uint8_t keepdim, Tensor* indices) {
  return tensor_result([&] {
    auto r = a->kthvalue(k, dim, keepdim != 0);
    *indices = new at::Tensor(std::get<1>(r));
    return std::get<0>(r);
  });
}

// ---- in-place updates (return 0 / -1) --------------------------------------------------
PAI_API int32_t pai_add_(Tensor a, Tensor b, double alpha) { return status_result([&] { a->add_(*b, alpha); }); }
PAI_API int32_t pai_add_scalar_(Tensor a, double s) { return status_result([&] { a->add_(s); }); }
PAI_API int32_t pai_mul_(Tensor a, Tensor b) { return status_result([&] { a->mul_(*b); }); }
PAI_API int32_t pai_mul_scalar_(Tensor a, double s) { return status_result([&] { a->mul_(s); }); }
PAI_API int32_t pai_div_(Tensor a, Tensor b) { return status_result([&] { a->div_(*b); }); }
PAI_API int32_t pai_addcmul_(Tensor a, Tensor t1, Tensor t2, double value) {
  return status_result([&] { a->addcmul_(*t1, *t2, value); });
}
PAI_API int32_t pai_addcdiv_(Tensor a, Tensor t1, Tensor t2, double value) {
  return status_result([&] { a->addcdiv_(*t1, *t2, value); });
}
PAI_API int32_t pai_zero_(Tensor a) { return status_result([&] { a->zero_(); }); }
PAI_API int32_t pai_fill_(Tensor a, double s) { return status_result([&] { a->fill_(s); }); }
PAI_API int32_t pai_copy_(Tensor a, Tensor src) { return status_result([&] { a->copy_(*src); }); }
PAI_API int32_t pai_masked_fill_(Tensor a, Tensor mask, double value) {
  return status_result([&] { a->masked_fill_(*mask, value); });
}
PAI_API int32_t pai_sqrt_(Tensor a) { return status_result([&] { a->sqrt_(); }); }
PAI_API int32_t pai_abs_(Tensor a) { return status_result([&] { a->abs_(); }); }
PAI_API int32_t pai_clamp_min_(Tensor a, double lo) { return status_result([&] { a->clamp_min_(lo); }); }
// Fills a in place with draw, run on the CPU with the generator so the values do not depend on the device.
template <class Draw>
static void draw_on_cpu(at::Tensor& a, Draw draw) {
  if (a.device().is_cpu()) {
    draw(a);
  } else {
    auto cpu = at::empty(a.sizes(), a.options().device(at::kCPU));
    draw(cpu);
    a.copy_(cpu);
  }
}
PAI_API int32_t pai_normal_(Tensor a, double mean, double std, Generator g) {
  return status_result([&] { draw_on_cpu(*a, [&](at::Tensor& t) { t.normal_(mean, std, pai::gen(g)); }); });
}
PAI_API int32_t pai_uniform_(Tensor a, double from, double to, Generator g) {
  return status_result([&] { draw_on_cpu(*a, [&](at::Tensor& t) { t.uniform_(from, to, pai::gen(g)); }); });
}
