//! Compiles the steering program (src/bpf/steer.bpf.c) and the load generator's request injector
//! (src/bpf/inject.bpf.c) to BPF objects in OUT_DIR, which src/program/load.rs and src/inject.rs embed
//! with `include_bytes!`. Needs clang and the Linux uAPI headers
//! (Debian: clang, linux-libc-dev); libbpf's own headers (bpf_helpers.h, bpf_endian.h) come from
//! libbpf-cargo.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SOURCES: [(&str, &str); 2] = [("src/bpf/steer.bpf.c", "steer.bpf.o"), ("src/bpf/inject.bpf.c", "inject.bpf.o")];
/// Headers the sources include from src/bpf.
const HEADERS: [&str; 2] = ["src/bpf/meta.h", "src/bpf/parse.h"];

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let mut args = vec!["-Wall".to_string(), "-Werror".to_string(), "-Isrc/bpf".to_string()];
    // Debian keeps asm/types.h (included by linux/types.h) under the multiarch directory, which
    // clang does not search for the bpf target.
    if let Ok(arch) = env::var("CARGO_CFG_TARGET_ARCH") {
        let multiarch = format!("/usr/include/{arch}-linux-gnu");
        if std::path::Path::new(&multiarch).is_dir() {
            args.push(format!("-I{multiarch}"));
        }
    }
    for (source, object) in SOURCES {
        let out = out_dir.join(object);
        if let Err(e) = SkeletonBuilder::new().source(source).obj(&out).clang_args(&args).build() {
            panic!(
                "building {source} failed (needs clang, libelf-dev, zlib1g-dev, linux-libc-dev; \
                 scripts/test installs them): {e:#}"
            );
        }
        println!("cargo:rerun-if-changed={source}");
    }
    for header in HEADERS {
        println!("cargo:rerun-if-changed={header}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
