//! Backend choice. The CPU default is burn-flex (measured with `cargo bench --bench backbone`:
//! after the GELU and 2D-block changes it is level with or ahead of ndarray and candle), and the
//! one dispatch from `--device`/`backbone.dtype` to a backend type.

pub use crate::config::{Device, Dtype};

/// The CPU backend used by default and in every test.
pub type Cpu = burn::backend::Flex;

/// Whether `B` is burn-flex, whose tensors live in host memory: there
/// a hot elementwise op is cheaper mapped over the host values than run as backend ops.
pub fn is_host_cpu<B: burn::tensor::backend::Backend>() -> bool {
    use std::any::TypeId;
    // ndarray is left out: measured, its host round trip made GELU slower, not faster.
    TypeId::of::<B>() == TypeId::of::<burn::backend::Flex>()
}

/// Work generic over the backend, so one code path serves every `--device` and dtype.
pub trait OnBackend {
    type Out;
    /// Runs on backend `B`; `device_name` is for reports (e.g. `cuda-f16`).
    fn run<B: burn::tensor::backend::Backend>(
        self,
        device: &B::Device,
        device_name: &str,
    ) -> anyhow::Result<Self::Out>;
}

/// Runs `job` on the CPU backend or on CUDA at `dtype` (the one device dispatch of the crate).
pub fn on_device<J: OnBackend>(device: Device, dtype: Dtype, job: J) -> anyhow::Result<J::Out> {
    match device {
        Device::Cpu => job.run::<Cpu>(&Default::default(), "cpu"),
        Device::Cuda => run_cuda(dtype, job),
    }
}

#[cfg(feature = "cuda")]
fn run_cuda<J: OnBackend>(dtype: Dtype, job: J) -> anyhow::Result<J::Out> {
    use burn::backend::Cuda;
    let dev = Default::default();
    match dtype {
        Dtype::F16 => job.run::<Cuda<half::f16>>(&dev, "cuda-f16"),
        Dtype::Bf16 => job.run::<Cuda<half::bf16>>(&dev, "cuda-bf16"),
        Dtype::F32 => job.run::<Cuda<f32>>(&dev, "cuda-f32"),
    }
}

#[cfg(not(feature = "cuda"))]
fn run_cuda<J: OnBackend>(_dtype: Dtype, _job: J) -> anyhow::Result<J::Out> {
    anyhow::bail!(
        "--device cuda needs a CUDA build: rebuild with `cargo build --release --features cuda`, \
         or use --device cpu"
    )
}

#[cfg(test)]
mod tests {
    use super::Cpu;
    use burn::tensor::{Distribution, Tensor};

    /// CPU ticks (utime + stime) of each thread of this process whose name starts with `prefix`.
    #[cfg(target_os = "linux")]
    fn thread_ticks(prefix: &str) -> Vec<u64> {
        let mut out = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
            let dir = task.expect("task entry").path();
            let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            if !name.trim_end().starts_with(prefix) {
                continue;
            }
            let stat = std::fs::read_to_string(dir.join("stat")).expect("task stat");
            // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
            let rest = &stat[stat.rfind(')').expect("comm close") + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
            out.push(ticks);
        }
        out
    }

    /// burn-flex must be built with its `rayon` feature (issue #11): a large matmul run inside a
    /// two-thread pool has to put CPU time on both of its threads. Without the feature gemm runs
    /// on the calling thread alone and the second thread stays at zero.
    #[cfg(target_os = "linux")]
    #[test]
    fn cpu_backend_matmul_uses_more_than_one_thread() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .thread_name(|i| format!("sv72mm{i}"))
            .build()
            .unwrap();
        let device = Default::default();
        let a = Tensor::<Cpu, 2>::random([768, 768], Distribution::Default, &device);
        let b = Tensor::<Cpu, 2>::random([768, 768], Distribution::Default, &device);
        pool.install(|| {
            // ~0.9 GFLOP each; enough for several scheduler ticks on every busy thread.
            for _ in 0..40 {
                let c = a.clone().matmul(b.clone());
                std::hint::black_box(c.into_data());
            }
        });
        let ticks = thread_ticks("sv72mm");
        assert_eq!(ticks.len(), 2, "pool threads not found: {ticks:?}");
        // An idle rayon worker spins briefly before it sleeps, so "more than zero" is too weak:
        // each thread must carry a real share of the work.
        let total: u64 = ticks.iter().sum();
        assert!(
            total > 0 && ticks.iter().all(|&t| t * 5 >= total),
            "a pool thread did (almost) no matmul work (CPU ticks per thread {ticks:?}): is \
             burn-flex built with its `rayon` feature?"
        );
    }
}
