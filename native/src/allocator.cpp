// How CPU tensors get their memory: glibc's thresholds, and an allocator in front of libtorch's that
// keeps a training step's freed blocks for the next step (benchmarks/README.md, "allocator").
//
// A step allocates and frees the same large tensors in the same order every time (a batch's
// activations and their gradients, megabytes each). With glibc's defaults that memory goes back to
// the kernel when freed (mmap'd above the mmap threshold, the heap trimmed above the trim threshold),
// so every step pays a page fault per page on first touch; hence the thresholds below, which keep
// step-sized blocks in the heap. The heap alone still serves each request best-fit from whatever is
// free, so where blocks land drifts from step to step, and it grows over the first steps by freed
// blocks that the next requests do not fit, by an amount that depends on the order of the step's
// sizes. So a freed block of a step's size is kept, by its size, and handed out again for the next
// request of that size: after the first step every request is served from memory already resident,
// and the process holds, for each size, the most blocks of it that the step had alive at once.
// Blocks are kept only while a training loop runs (pai_cpu_keep_begin/end, counted): work whose
// sizes change as it goes (per-sample statistics in chunks, calibration) is better served by the
// heap, which reuses a freed block for a request of another size.
//
// PAI_CPU_CACHE_MB (default 1024) bounds the bytes kept; beyond it the oldest kept block goes back
// to the heap. pai_release_free_memory empties it and trims the heap. PAI_CPU_CACHE_MB=0 leaves
// libtorch's allocator in place; PAI_MALLOC_DEFAULTS=1 keeps glibc's defaults too.
#include "pai.h"

#include <c10/core/CPUAllocator.h>
#include <malloc.h>

#include <cstdio>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <unordered_map>

namespace {
constexpr size_t kMmapThreshold = 64 << 20;
// Each block starts with a header holding its size; the data after it keeps c10's 64-byte alignment.
constexpr size_t kHeader = 64;
// Smaller blocks (weights, statistics, scalars) come from and go back to the heap directly; larger
// ones too, as glibc maps and unmaps them (a block that size is not a step's to keep for the next).
constexpr size_t kKeptFrom = 256 << 10, kKeptBelow = kMmapThreshold;
constexpr size_t kPage = 4096;

struct Block {
  void* base;
  uint64_t freed;  // the order in which blocks were freed: the oldest is evicted first
};

struct Cache {
  std::mutex mutex;
  std::unordered_map<size_t, std::deque<Block>> free;  // by block size, the most recently freed last
  size_t free_bytes = 0;
  uint64_t frees = 0;
  size_t limit = 0;
  int keeping = 0;  // open pai_cpu_keep_begin calls

  // Frees the oldest kept blocks until at most `bytes` are kept; with the mutex held.
  void evict_to(size_t bytes) {
    while (free_bytes > bytes) {
      auto oldest = free.begin();
      for (auto it = free.begin(); it != free.end(); ++it)
        if (it->second.front().freed < oldest->second.front().freed) oldest = it;
      std::free(oldest->second.front().base);
      oldest->second.pop_front();
      free_bytes -= oldest->first;
      if (oldest->second.empty()) free.erase(oldest);
    }
  }
};

// Never destroyed: tensors may be freed by other libraries' static destructors after this one's.
Cache* const cache = new Cache();

bool kept_size(size_t size) { return size >= kKeptFrom && size < kKeptBelow; }

void give_back(void* data) {
  if (!data) return;
  void* base = static_cast<char*>(data) - kHeader;
  const size_t size = *static_cast<size_t*>(base);
  if (!kept_size(size)) {
    std::free(base);
    return;
  }
  std::unique_lock<std::mutex> lock(cache->mutex);
  if (cache->keeping == 0) {
    lock.unlock();
    std::free(base);
    return;
  }
  cache->free[size].push_back({base, cache->frees++});
  cache->free_bytes += size;
  cache->evict_to(cache->limit);
}

void* take(size_t size) {
  std::lock_guard<std::mutex> lock(cache->mutex);
  auto it = cache->free.find(size);
  if (it == cache->free.end()) return nullptr;
  void* base = it->second.back().base;
  it->second.pop_back();
  cache->free_bytes -= size;
  if (it->second.empty()) cache->free.erase(it);
  return base;
}

class KeepingCpuAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) const override {
    const c10::Device cpu(c10::DeviceType::CPU);
    if (n == 0) return {nullptr, nullptr, &give_back, cpu};
    TORCH_CHECK(n < SIZE_MAX - kHeader - kPage, "not enough memory: tried to allocate ", n, " bytes on the CPU");
    // Whole pages for a size that may be kept, so that requests a few bytes apart share blocks.
    size_t size = n + kHeader;
    if (kept_size(size)) size = (size + kPage - 1) / kPage * kPage;
    void* base = kept_size(size) ? take(size) : nullptr;
    if (!base && posix_memalign(&base, kHeader, size) != 0) base = nullptr;
    TORCH_CHECK(base, "not enough memory: tried to allocate ", n, " bytes on the CPU");
    *static_cast<size_t*>(base) = size;
    void* data = static_cast<char*>(base) + kHeader;
    return {data, data, &give_back, cpu};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &give_back; }
};

bool env_is(const char* name, const char* value) {
  const char* v = std::getenv(name);
  return v && std::string(v) == value;
}

const bool installed = [] {
  if (env_is("PAI_MALLOC_DEFAULTS", "1")) return false;
  mallopt(M_MMAP_THRESHOLD, kMmapThreshold);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  long limit = 1024;
  if (const char* mb = std::getenv("PAI_CPU_CACHE_MB"); mb && *mb) {
    char* end = nullptr;
    const long value = std::strtol(mb, &end, 10);
    if (*end == '\0' && value >= 0)
      limit = value;
    else
      std::fprintf(stderr, "pai: PAI_CPU_CACHE_MB=%s is not a whole number of megabytes; using %ld (0 turns it off)\n",
                   mb, limit);
  }
  if (limit == 0) return false;
  cache->limit = static_cast<size_t>(limit) << 20;
  c10::SetCPUAllocator(new KeepingCpuAllocator(), /*priority=*/1);
  return true;
}();
}  // namespace

// Gives the kept blocks and the heap's free pages back to the kernel: after a one-off phase (the
// sparse kernels' calibration) whose temporaries would otherwise stay resident under what follows.
PAI_API void pai_release_free_memory() {
  {
    std::lock_guard<std::mutex> lock(cache->mutex);
    cache->evict_to(0);
  }
  malloc_trim(0);
}

// Freed blocks are kept from the first begin to the matching last end, which gives them back.
PAI_API void pai_cpu_keep_begin() {
  std::lock_guard<std::mutex> lock(cache->mutex);
  ++cache->keeping;
}
PAI_API void pai_cpu_keep_end() {
  std::lock_guard<std::mutex> lock(cache->mutex);
  if (cache->keeping > 0 && --cache->keeping == 0) cache->evict_to(0);
}

// Bytes of freed blocks kept for reuse.
PAI_API int64_t pai_cpu_cache_bytes() {
  std::lock_guard<std::mutex> lock(cache->mutex);
  return static_cast<int64_t>(cache->free_bytes);
}
