//! Compiles the CUDA C sources for the host (the grid emulator, always) and, with the
//! `cuda` feature, to PTX for sm_80 and sm_90 with nvcc (from `CUDA_HOME`, `CUDA_PATH`
//! or `PATH`; `scripts/cuda-toolchain.sh` installs one from PyPI).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The kernel sources, each compiled to its own PTX module.
const MODULES: [&str; 3] = ["gemv", "attention", "norm_rope"];
/// The GPU architectures PTX is made for.
const ARCHES: [&str; 2] = ["sm_80", "sm_90"];

fn main() {
    println!("cargo:rerun-if-changed=cuda");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    println!("cargo:rerun-if-env-changed=CUDA_PATH");
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .opt_level(2)
        .warnings(true)
        // `#pragma unroll` is for nvcc.
        .flag_if_supported("-Wno-unknown-pragmas")
        .file("cuda/host.cpp")
        .file("cuda/emulator.cpp")
        .compile("sf_emulated");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
        let nvcc = nvcc();
        for module in MODULES {
            for arch in ARCHES {
                compile_ptx(&nvcc, module, arch, &out);
            }
        }
    }
}

/// The nvcc to use.
fn nvcc() -> PathBuf {
    for var in ["CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"] {
        if let Some(home) = std::env::var_os(var) {
            let candidate = Path::new(&home).join("bin").join("nvcc");
            if candidate.exists() {
                return candidate;
            }
        }
    }
    PathBuf::from("nvcc")
}

fn compile_ptx(nvcc: &Path, module: &str, arch: &str, out: &Path) {
    let target = out.join(format!("{module}.{arch}.ptx"));
    let status = Command::new(nvcc)
        .args(["--ptx", "-O3", "-std=c++17", "-lineinfo"])
        .arg(format!("-arch={arch}"))
        .arg(format!("cuda/{module}.cu"))
        .arg("-o")
        .arg(&target)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "kernels: cannot run {} ({e}); run scripts/cuda-toolchain.sh",
                nvcc.display()
            )
        });
    assert!(
        status.success(),
        "kernels: nvcc failed on cuda/{module}.cu for {arch}"
    );
}
