// Autograd: requires_grad, .grad, backward, grad(...) with create_graph for double backward,
// detach, and the thread-local grad mode behind the no-grad guard.
#include "pai.h"

#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/grad_mode.h>

using pai::status_result;
using pai::tensor_result;

PAI_API int32_t pai_set_requires_grad(Tensor t, uint8_t value) {
  return status_result([&] { t->set_requires_grad(value != 0); });
}
PAI_API uint8_t pai_requires_grad(Tensor t) { return pai::guarded([&] { return (uint8_t)t->requires_grad(); }, (uint8_t)0); }
// The accumulated .grad, or null when there is none.
PAI_API Tensor pai_grad_of(Tensor t) { return tensor_result([&] { return t->grad(); }); }
// Drops the accumulated .grad (as optimizer.zero_grad(set_to_none=True)).
PAI_API int32_t pai_clear_grad(Tensor t) { return status_result([&] { t->mutable_grad().reset(); }); }
PAI_API Tensor pai_detach(Tensor t) { return tensor_result([&] { return t->detach(); }); }

// Accumulates into .grad of the leaves. grad_output may be null for a scalar output.
PAI_API int32_t pai_backward(Tensor output, Tensor grad_output, uint8_t retain_graph, uint8_t create_graph) {
  return status_result([&] {
    output->backward(pai::opt(grad_output), c10::optional<bool>(retain_graph != 0), create_graph != 0);
  });
}

// torch.autograd.grad. grad_outputs may be null (all outputs scalar) or hold null entries.
// results receives n_inputs handles; an unused input gives null when allow_unused.
// retain_graph: 0 no, 1 yes, 2 default (= create_graph).
PAI_API int32_t pai_autograd_grad(const Tensor* outputs, int32_t n_outputs, const Tensor* inputs, int32_t n_inputs,
                                  const Tensor* grad_outputs, int32_t retain_graph, uint8_t create_graph,
                                  uint8_t allow_unused, Tensor* results) {
  return status_result([&] {
    auto outs = pai::tensor_list(outputs, n_outputs);
    auto ins = pai::tensor_list(inputs, n_inputs);
    std::vector<at::Tensor> gouts;
    if (grad_outputs) gouts = pai::tensor_list(grad_outputs, n_outputs);
    c10::optional<bool> retain = retain_graph == 2 ? c10::nullopt : c10::optional<bool>(retain_graph != 0);
    auto grads = torch::autograd::grad(outs, ins, gouts, retain, create_graph != 0, allow_unused != 0);
    for (int32_t i = 0; i < n_inputs; ++i) {
      results[i] = grads[(size_t)i].defined() ? new at::Tensor(grads[(size_t)i]) : nullptr;
    }
  });
}

PAI_API uint8_t pai_grad_enabled() { return (uint8_t)c10::GradMode::is_enabled(); }
PAI_API void pai_set_grad_enabled(uint8_t enabled) { c10::GradMode::set_enabled(enabled != 0); }
