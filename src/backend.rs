//! Backend choice. The CPU default is burn-flex (see `sv72 bench` for the measurement).

/// The CPU backend used by default and in every test.
pub type Cpu = burn::backend::Flex;

/// Whether `B` keeps its tensors in host memory and runs on the CPU (burn-flex, ndarray): there
/// a hot elementwise op is cheaper mapped over the host values than run as backend ops.
pub fn is_host_cpu<B: burn::tensor::backend::Backend>() -> bool {
    use std::any::TypeId;
    let id = TypeId::of::<B>();
    if id == TypeId::of::<burn::backend::Flex>() {
        return true;
    }
    #[cfg(feature = "ndarray")]
    if id == TypeId::of::<burn::backend::NdArray>() {
        return true;
    }
    false
}
