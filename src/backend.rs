//! Backend choice. The CPU default is burn-flex (see `sv72 bench` for the measurement).

/// The CPU backend used by default and in every test.
pub type Cpu = burn::backend::Flex;
