// The Python module r1core._C. Importing it runs the static TORCH_LIBRARY registrations of
// every translation unit linked into it (the ops appear under torch.ops.r1core); the
// module itself only reports how it was built, so that r1core/ops/_cpp.py can tell a
// current build from a stale one.
#include <pybind11/pybind11.h>

#include "logprobs_backward_plan.h"

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

// setup.py passes the build's identity as bare tokens (-DR1CORE_TORCH_VERSION=2.13.0+cpu);
// they are turned into strings here.
#define R1CORE_STRINGIFY_(...) #__VA_ARGS__
#define R1CORE_STRINGIFY(...) R1CORE_STRINGIFY_(__VA_ARGS__)
#ifndef R1CORE_SOURCE_HASH
#define R1CORE_SOURCE_HASH unknown
#endif
#ifndef R1CORE_SOURCE_DIR
#define R1CORE_SOURCE_DIR
#endif
#ifndef R1CORE_TORCH_VERSION
#define R1CORE_TORCH_VERSION unknown
#endif
#ifndef R1CORE_CUDA_ARCHS
#define R1CORE_CUDA_ARCHS
#endif
#ifndef R1CORE_CUDA_VERSION
#define R1CORE_CUDA_VERSION
#endif

namespace py = pybind11;

namespace {

// The vector ISA the CPU kernels were compiled for (Vectorized<float> lanes tell it).
const char* cpu_capability() {
#if defined(CPU_CAPABILITY_AVX512)
  return "avx512";
#elif defined(CPU_CAPABILITY_AVX2)
  return "avx2";
#else
  return "default";
#endif
}

py::dict build_info() {
  py::dict info;
  info["source_hash"] = R1CORE_STRINGIFY(R1CORE_SOURCE_HASH);
  info["torch_version"] = R1CORE_STRINGIFY(R1CORE_TORCH_VERSION);
  info["source_dir"] = R1CORE_STRINGIFY(R1CORE_SOURCE_DIR);
#ifdef R1CORE_WITH_CUDA
  info["has_cuda"] = true;
#else
  info["has_cuda"] = false;
#endif
  std::string archs = R1CORE_STRINGIFY(R1CORE_CUDA_ARCHS);  // "9.0a_8.0"
  py::list arch_list;
  size_t start = 0;
  while (start < archs.size()) {
    size_t end = archs.find('_', start);
    if (end == std::string::npos) end = archs.size();
    if (end > start) arch_list.append(archs.substr(start, end - start));
    start = end + 1;
  }
  info["cuda_archs"] = arch_list;
  info["cuda_version"] = R1CORE_STRINGIFY(R1CORE_CUDA_VERSION);
  info["cpu_capability"] = cpu_capability();
  info["float_lanes"] = static_cast<int>(at::vec::Vectorized<float>::size());
  info["openmp"] = AT_PARALLEL_OPENMP ? true : false;
  return info;
}

py::dict logprobs_backward_plan(int64_t num_tokens, int64_t vocab, int64_t hidden_size, int64_t element_size,
                                int64_t budget_bytes) {
  // 16-bit inputs accumulate grad_hidden in a separate fp32 buffer; fp32/fp64 in the output.
  const r1core::LogprobsBackwardPlan plan = r1core::plan_logprobs_backward(
      num_tokens, vocab, hidden_size, element_size, r1core::tile_columns_for(element_size), element_size >= 4,
      budget_bytes);
  py::dict out;
  out["chunk_columns"] = plan.chunk_columns;
  out["num_chunks"] = plan.num_chunks;
  out["grad_logits_bytes"] = plan.grad_logits_bytes;
  out["accumulator_bytes"] = plan.accumulator_bytes;
  out["temporary_rows"] = plan.temporary_rows;
  out["temporary_bytes"] = plan.temporary_bytes;
  out["peak_extra_bytes_in_place"] = plan.peak_extra_bytes(true);
  out["peak_extra_bytes_with_temporary"] = plan.peak_extra_bytes(false);
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "r1core's compiled operators (registered under torch.ops.r1core) and their build information.";
  m.def("build_info", &build_info,
        "dict: source_hash, source_dir, torch_version, has_cuda, cuda_archs, cuda_version, cpu_capability, float_lanes, openmp");
  m.def("logprobs_backward_plan", &logprobs_backward_plan,
        "The allocations of the CUDA log-prob backward (csrc/logprobs_backward_plan.h) at a shape, as a dict of bytes",
        py::arg("num_tokens"), py::arg("vocab"), py::arg("hidden_size"), py::arg("element_size"),
        py::arg("budget_bytes") = r1core::kBackwardChunkBudgetBytes);
}
