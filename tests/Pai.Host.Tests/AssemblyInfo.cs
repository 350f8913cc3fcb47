// libtorch's thread count, the global seed and process memory are process-wide: tests that
// touch or measure them must not run beside others. Two cores gain little from parallel tests.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
