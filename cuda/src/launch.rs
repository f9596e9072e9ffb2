//! Launching a kernel on the caller's stream: where ([`Launch`]), how many threads
//! ([`grid`], [`config`]) and one call that pushes the arguments and queues the kernel
//! ([`Kernel::launch`]), so each launcher is a few lines.

use std::sync::Arc;

use cudarc::driver::{
    CudaFunction, CudaStream, DeviceRepr, LaunchArgs, LaunchConfig, PushKernelArg,
};
use ferrolm_core::{Error, Result};

use crate::kernels::KernelSource;
use crate::runtime::module;

/// Threads per block of the one-dimensional grid-stride kernels (`FERROLM_BLOCK` in
/// `kernels/common.cuh`).
pub(crate) const BLOCK: u32 = 256;

/// A launch of a `(x, y)` grid of blocks of `threads` threads, no dynamic shared memory.
pub(crate) fn config(grid: (u32, u32), threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (grid.0, grid.1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A one-dimensional launch of `blocks` blocks of [`BLOCK`] threads.
pub(crate) fn grid(blocks: u32) -> LaunchConfig {
    config((blocks, 1), BLOCK)
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
    /// Resolves kernel `name` of `family` (compiling the family on first use) on the caller's
    /// stream.
    pub(crate) fn kernel(
        &self,
        family: &'static KernelSource,
        name: &'static str,
    ) -> Result<Kernel> {
        let (ctx, m) = module(self.device, family)?;
        let function = m
            .load_function(name)
            .map_err(|e| Error::Device(format!("kernel {name} not found: {e:?}")))?;
        // SAFETY: the caller (torch) owns the stream and keeps it alive for the launch; it
        // belongs to the primary context of `self.device`, which `ctx` retains.
        let stream =
            unsafe { ctx.wrap_borrowed_stream(self.stream as cudarc::driver::sys::CUstream) };
        Ok(Kernel {
            name,
            stream,
            function,
        })
    }
}

/// One scalar kernel argument: a device address or a count, passed by value.
pub(crate) trait KernelArg {
    /// Appends `self` to the launch's argument list.
    fn push<'a>(&'a self, args: &mut LaunchArgs<'a>);
}

impl<T: DeviceRepr> KernelArg for T {
    fn push<'a>(&'a self, args: &mut LaunchArgs<'a>) {
        args.arg(self);
    }
}

/// A resolved kernel, ready to queue on the caller's stream.
pub(crate) struct Kernel {
    name: &'static str,
    stream: Arc<CudaStream>,
    function: CudaFunction,
}

impl Kernel {
    /// Queues the kernel with `args`, in the order of its parameters.
    ///
    /// # Safety
    ///
    /// Each argument must have the size and meaning of the kernel parameter at its position
    /// (`u64` for pointers and `unsigned long long`, `u32` for `unsigned int`, `i32` for
    /// `int`), and every pointer must address a buffer on this device, of the size the
    /// kernel reads or writes, that stays alive until the kernel has run.
    pub(crate) unsafe fn launch(
        &self,
        config: LaunchConfig,
        args: &[&dyn KernelArg],
    ) -> Result<()> {
        let mut builder = self.stream.launch_builder(&self.function);
        for arg in args {
            arg.push(&mut builder);
        }
        // SAFETY: the caller guarantees the argument list and the buffers (see above).
        unsafe { builder.launch(config) }
            .map(|_| ())
            .map_err(|e| Error::Device(format!("launching {} failed: {e:?}", self.name)))
    }
}
