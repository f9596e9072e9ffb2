//! The kernel sources shipped with ferrolm: one `.cu` file per kernel family, and the `.cuh`
//! headers they include.

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

/// A header the kernels `#include`; NVRTC receives every header with every program, under its
/// file name, since a run-time compile has no include path into the source tree.
#[derive(Debug, Clone, Copy)]
pub struct KernelHeader {
    /// File name, as written in `#include "..."`.
    pub name: &'static str,
    /// CUDA C++ source text.
    pub source: &'static str,
}

/// `cuda/kernels/<file>`, embedded as a header.
macro_rules! header {
    ($file:literal) => {
        KernelHeader {
            name: $file,
            source: include_str!(concat!("../kernels/", $file)),
        }
    };
}

/// `cuda/kernels/<name>.cu`, embedded with the kernels it exports.
macro_rules! family {
    ($name:literal, [$($function:literal),+ $(,)?]) => {
        KernelSource {
            name: $name,
            source: include_str!(concat!("../kernels/", $name, ".cu")),
            functions: &[$($function),+],
        }
    };
}

/// Every header in `cuda/kernels/`.
pub const HEADERS: &[KernelHeader] = &[header!("common.cuh"), header!("reduce.cuh")];

/// Affine int8 quantization (the GPU twin of `ferrolm_core::comm::minmax`).
pub const QUANTIZE_MINMAX: KernelSource = family!(
    "quantize_minmax",
    [
        "minmax_partial_f32",
        "minmax_finalize_f32",
        "quantize_minmax_f32",
        "dequantize_minmax_f32",
        "dequantize_accumulate_minmax_f32",
    ]
);

/// DivPrune's first pick and greedy max-min loop on precomputed distance matrices (the GPU
/// twin of `ferrolm_core::prune`).
pub const DIVPRUNE: KernelSource =
    family!("divprune", ["divprune_nearest_f32", "divprune_greedy_f32"]);

/// Block-wise affine int8 quantization (twin of `ferrolm_core::comm::blockwise`).
pub const QUANTIZE_BLOCKWISE: KernelSource = family!(
    "quantize_blockwise",
    ["quantize_blockwise_f32", "dequantize_blockwise_f32"]
);

/// INTELLECT-1's int8 code (twin of `ferrolm_core::comm::intellect`).
pub const QUANTIZE_INTELLECT: KernelSource = family!(
    "quantize_intellect",
    [
        "sumsq_partial_f64",
        "intellect_scale_f32",
        "quantize_intellect_f32",
        "intellect_codebook_f32",
        "dequantize_intellect_f32",
    ]
);

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

    /// File names in `cuda/kernels/` ending in `suffix`, with the suffix removed, sorted.
    fn on_disk(suffix: &str) -> Vec<String> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/kernels");
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(suffix).map(str::to_owned)
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn every_cu_file_on_disk_is_registered() {
        let mut registered: Vec<String> =
            kernel_sources().iter().map(|k| k.name.to_owned()).collect();
        registered.sort();
        assert_eq!(on_disk(".cu"), registered);
    }

    #[test]
    fn every_cuh_file_on_disk_is_registered_under_its_file_name() {
        let mut registered: Vec<String> = HEADERS.iter().map(|h| h.name.to_owned()).collect();
        registered.sort();
        let expected: Vec<String> = on_disk(".cuh").iter().map(|n| format!("{n}.cuh")).collect();
        assert_eq!(expected, registered);
    }

    #[test]
    fn every_include_names_a_registered_header() {
        let texts = kernel_sources()
            .iter()
            .map(|k| k.source)
            .chain(HEADERS.iter().map(|h| h.source));
        for text in texts {
            for line in text.lines() {
                if let Some(rest) = line.trim_start().strip_prefix("#include") {
                    let name = rest.trim().trim_matches('"');
                    assert!(
                        HEADERS.iter().any(|h| h.name == name),
                        "#include of unregistered {name}"
                    );
                }
            }
        }
    }
}
