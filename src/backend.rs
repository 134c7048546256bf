//! Backend choice. The CPU default is burn-flex (measured with `cargo bench --bench backbone`:
//! after the GELU and 2D-block changes it is level with or ahead of ndarray and candle).

/// The CPU backend used by default and in every test.
pub type Cpu = burn::backend::Flex;

/// Whether `B` is burn-flex, whose tensors live in host memory: there
/// a hot elementwise op is cheaper mapped over the host values than run as backend ops.
pub fn is_host_cpu<B: burn::tensor::backend::Backend>() -> bool {
    use std::any::TypeId;
    // ndarray is left out: measured, its host round trip made GELU slower, not faster.
    TypeId::of::<B>() == TypeId::of::<burn::backend::Flex>()
}
