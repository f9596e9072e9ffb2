//! ferrolm-cuda: GPU kernels for ferrolm.
//!
//! Kernels are `.cu` sources embedded in the binary and compiled at run time by NVRTC; the
//! CUDA driver and NVRTC are loaded dynamically through cudarc, so this crate builds on a
//! machine with no CUDA at all. Every entry point checks that the libraries it needs are
//! present before touching them and returns [`ferrolm_core::Error::Device`] otherwise.
//! Kernels run on a stream the caller owns (torch's current stream), given as a raw handle.
#![deny(missing_docs)]

pub mod comm;
pub mod divprune;
pub mod kernels;
pub mod quantize;
pub mod runtime;

pub use kernels::{kernel_sources, KernelSource};
pub use runtime::{
    compile, compile_all, device_count, driver_available, driver_version, nvrtc_available,
    nvrtc_version, CompiledKernel, Launch,
};
