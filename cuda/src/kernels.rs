//! The kernel sources shipped with ferrolm, one `.cu` file per kernel family.

/// One kernel family: a `.cu` file and the `extern "C"` entry points it defines.
#[derive(Debug, Clone, Copy)]
pub struct KernelSource {
    /// Family name, the file name without `.cu`.
    pub name: &'static str,
    /// CUDA C++ source text.
    pub source: &'static str,
    /// The `extern "C"` kernels the family exports.
    pub functions: &'static [&'static str],
}

/// Affine int8 quantization (the GPU twin of `ferrolm_core::comm::minmax`).
pub const QUANTIZE_MINMAX: KernelSource = KernelSource {
    name: "quantize_minmax",
    source: include_str!("../kernels/quantize_minmax.cu"),
    functions: &[
        "minmax_partial_f32",
        "minmax_finalize_f32",
        "quantize_minmax_f32",
        "dequantize_minmax_f32",
        "dequantize_accumulate_minmax_f32",
    ],
};

/// DivPrune's first pick and greedy max-min loop on precomputed distance matrices (the GPU
/// twin of `ferrolm_core::prune`).
pub const DIVPRUNE: KernelSource = KernelSource {
    name: "divprune",
    source: include_str!("../kernels/divprune.cu"),
    functions: &["divprune_nearest_f32", "divprune_greedy_f32"],
};

/// Block-wise affine int8 quantization (twin of `ferrolm_core::comm::blockwise`).
pub const QUANTIZE_BLOCKWISE: KernelSource = KernelSource {
    name: "quantize_blockwise",
    source: include_str!("../kernels/quantize_blockwise.cu"),
    functions: &["quantize_blockwise_f32", "dequantize_blockwise_f32"],
};

/// INTELLECT-1's int8 code (twin of `ferrolm_core::comm::intellect`).
pub const QUANTIZE_INTELLECT: KernelSource = KernelSource {
    name: "quantize_intellect",
    source: include_str!("../kernels/quantize_intellect.cu"),
    functions: &[
        "sumsq_partial_f64",
        "intellect_scale_f32",
        "quantize_intellect_f32",
        "intellect_codebook_f32",
        "dequantize_intellect_f32",
    ],
};

/// Every kernel family in `cuda/kernels/`.
pub fn kernel_sources() -> &'static [KernelSource] {
    &[
        QUANTIZE_MINMAX,
        QUANTIZE_BLOCKWISE,
        QUANTIZE_INTELLECT,
        DIVPRUNE,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_declared_function_is_defined_as_extern_c_in_its_source() {
        for k in kernel_sources() {
            for f in k.functions {
                let needle = format!("__global__ void {f}(");
                assert!(k.source.contains(&needle), "{} lacks {f}", k.name);
            }
        }
    }

    #[test]
    fn every_cu_file_on_disk_is_registered() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/kernels");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".cu").map(str::to_owned)
            })
            .collect();
        on_disk.sort();
        let mut registered: Vec<String> =
            kernel_sources().iter().map(|k| k.name.to_owned()).collect();
        registered.sort();
        assert_eq!(on_disk, registered);
    }
}
