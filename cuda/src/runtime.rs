//! Loading the driver and NVRTC, compiling kernels, and a per-device module cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};
use ferrolm_core::{Error, Result};

use crate::kernels::{kernel_sources, KernelSource};

/// Whether the NVRTC shared library can be loaded.
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen candidate library names; no symbol is called.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Whether the CUDA driver library (`libcuda`) can be loaded.
pub fn driver_available() -> bool {
    // SAFETY: only tries to dlopen candidate library names; no symbol is called.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

fn require_nvrtc() -> Result<()> {
    if nvrtc_available() {
        Ok(())
    } else {
        Err(Error::Device(
            "NVRTC (libnvrtc) was not found: install the `nvidia-cuda-nvrtc` wheel that comes with \
             CUDA builds of torch, or put libnvrtc on LD_LIBRARY_PATH"
                .into(),
        ))
    }
}

fn require_driver() -> Result<()> {
    if !driver_available() {
        return Err(Error::Device(
            "the CUDA driver (libcuda.so) was not found: this machine has no NVIDIA driver".into(),
        ));
    }
    cudarc::driver::result::init()
        .map_err(|e| Error::Device(format!("the CUDA driver failed to initialise: {e:?}")))
}

/// NVRTC's version as (major, minor).
pub fn nvrtc_version() -> Result<(i32, i32)> {
    require_nvrtc()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present; the out-pointers are valid for the call.
    let status = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    if status != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(Error::Device(format!("nvrtcVersion failed: {status:?}")));
    }
    Ok((major, minor))
}

/// The CUDA version the driver supports, as (major, minor).
pub fn driver_version() -> Result<(i32, i32)> {
    require_driver()?;
    let mut v = 0;
    // SAFETY: the driver is loaded and initialised; the out-pointer is valid.
    let status = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) };
    if status != cudarc::driver::sys::CUresult::CUDA_SUCCESS {
        return Err(Error::Device(format!(
            "cuDriverGetVersion failed: {status:?}"
        )));
    }
    Ok((v / 1000, (v % 1000) / 10))
}

/// Number of CUDA devices the driver sees (an error when there is no driver).
pub fn device_count() -> Result<usize> {
    require_driver()?;
    let n = cudarc::driver::result::device::get_count()
        .map_err(|e| Error::Device(format!("cuDeviceGetCount failed: {e:?}")))?;
    Ok(n.max(0) as usize)
}

/// The result of compiling one kernel family.
#[derive(Debug, Clone)]
pub struct CompiledKernel {
    /// Family name.
    pub name: &'static str,
    /// Size of the generated PTX in bytes.
    pub ptx_bytes: usize,
}

fn options(name: &str, arch: Option<&str>) -> CompileOptions {
    let mut options = vec!["--std=c++17".to_owned()];
    if let Some(arch) = arch {
        options.push(format!("--gpu-architecture={arch}"));
    }
    CompileOptions {
        // Exact IEEE arithmetic so GPU results match the CPU path bit for bit.
        fmad: Some(false),
        ftz: Some(false),
        prec_div: Some(true),
        prec_sqrt: Some(true),
        options,
        name: Some(format!("{name}.cu")),
        ..Default::default()
    }
}

/// Compiles one kernel family to PTX. `arch` is e.g. `"compute_90"`; `None` uses NVRTC's default.
pub fn compile(kernel: &KernelSource, arch: Option<&str>) -> Result<Ptx> {
    require_nvrtc()?;
    compile_ptx_with_opts(kernel.source, options(kernel.name, arch)).map_err(|e| {
        let detail = match &e {
            cudarc::nvrtc::CompileError::CompileError { log, .. } => {
                log.to_string_lossy().into_owned()
            }
            other => format!("{other:?}"),
        };
        Error::Device(format!(
            "NVRTC failed to compile {}.cu: {detail}",
            kernel.name
        ))
    })
}

/// Compiles every kernel family; no GPU is needed.
pub fn compile_all(arch: Option<&str>) -> Result<Vec<CompiledKernel>> {
    kernel_sources()
        .iter()
        .map(|k| {
            let ptx = compile(k, arch)?;
            Ok(CompiledKernel {
                name: k.name,
                ptx_bytes: ptx.to_src().len(),
            })
        })
        .collect()
}

type ModuleKey = (usize, &'static str);

fn context(device: usize) -> Result<Arc<CudaContext>> {
    static CONTEXTS: OnceLock<Mutex<HashMap<usize, Arc<CudaContext>>>> = OnceLock::new();
    require_driver()?;
    let mut map = CONTEXTS
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| Error::Internal("CUDA context cache poisoned".into()))?;
    if let Some(ctx) = map.get(&device) {
        ctx.bind_to_thread()
            .map_err(|e| Error::Device(format!("cannot bind CUDA device {device}: {e:?}")))?;
        return Ok(ctx.clone());
    }
    let count = device_count()?;
    if device >= count {
        return Err(Error::value(
            "device",
            format!("a CUDA device index below {count}"),
            device,
        ));
    }
    // The primary context: the one torch uses, so pointers from torch tensors are valid in it.
    let ctx = CudaContext::new(device)
        .map_err(|e| Error::Device(format!("cannot open CUDA device {device}: {e:?}")))?;
    map.insert(device, ctx.clone());
    Ok(ctx)
}

fn module(
    device: usize,
    kernel: &'static KernelSource,
) -> Result<(Arc<CudaContext>, Arc<CudaModule>)> {
    static MODULES: OnceLock<Mutex<HashMap<ModuleKey, Arc<CudaModule>>>> = OnceLock::new();
    let ctx = context(device)?;
    let mut map = MODULES
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| Error::Internal("CUDA module cache poisoned".into()))?;
    if let Some(m) = map.get(&(device, kernel.name)) {
        return Ok((ctx, m.clone()));
    }
    let (major, minor) = ctx
        .compute_capability()
        .map_err(|e| Error::Device(format!("cannot query device {device}: {e:?}")))?;
    let arch = format!("compute_{major}{minor}");
    let ptx = compile(kernel, Some(&arch))?;
    let m = ctx.load_module(ptx).map_err(|e| {
        Error::Device(format!(
            "cannot load {}.cu on device {device}: {e:?}",
            kernel.name
        ))
    })?;
    map.insert((device, kernel.name), m.clone());
    Ok((ctx, m))
}

/// Threads per block of the one-dimensional grid-stride kernels (`FERROLM_BLOCK` in the sources).
pub const BLOCK: u32 = 256;

/// A one-dimensional launch of `blocks` blocks of [`BLOCK`] threads, no dynamic shared memory.
pub(crate) fn grid(blocks: u32) -> cudarc::driver::LaunchConfig {
    cudarc::driver::LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Maps a failed launch of kernel `name` to [`Error::Device`].
pub(crate) fn launch_failed(name: &str) -> impl Fn(cudarc::driver::DriverError) -> Error + '_ {
    move |e| Error::Device(format!("launching {name} failed: {e:?}"))
}

/// Where to launch: a device ordinal and a raw `CUstream` owned by the caller (0 = legacy default).
#[derive(Debug, Clone, Copy)]
pub struct Launch {
    /// CUDA device ordinal.
    pub device: usize,
    /// The caller's stream handle, e.g. `torch.cuda.current_stream().cuda_stream`.
    pub stream: usize,
}

impl Launch {
    /// Resolves a kernel of `family` and borrows the caller's stream.
    pub(crate) fn function(
        &self,
        family: &'static KernelSource,
        name: &str,
    ) -> Result<(Arc<CudaStream>, CudaFunction)> {
        let (ctx, m) = module(self.device, family)?;
        let f = m
            .load_function(name)
            .map_err(|e| Error::Device(format!("kernel {name} not found: {e:?}")))?;
        // SAFETY: the caller (torch) owns the stream and keeps it alive for the launch; it
        // belongs to the primary context of `self.device`, which `ctx` retains.
        let stream =
            unsafe { ctx.wrap_borrowed_stream(self.stream as cudarc::driver::sys::CUstream) };
        Ok((stream, f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_libraries_are_errors_not_panics() {
        if !nvrtc_available() {
            let e = compile_all(None).unwrap_err();
            assert!(e.to_string().contains("NVRTC"));
        }
        if !driver_available() {
            assert!(device_count().is_err());
            assert!(matches!(context(0), Err(Error::Device(_))));
        }
    }

    #[test]
    fn every_kernel_compiles_when_nvrtc_is_present() {
        if !nvrtc_available() {
            eprintln!("skipped: libnvrtc not found on the library path");
            return;
        }
        let compiled = compile_all(None).unwrap();
        assert_eq!(compiled.len(), kernel_sources().len());
        assert!(compiled.iter().all(|k| k.ptx_bytes > 0));
    }
}
