fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/shim.proto");
    println!("cargo:rerun-if-changed=proto/cri.proto");
    // A non-PIE executable needs no load-time relocation of its pointer tables: without it,
    // every shim and pause process would carry ~0.5 MiB of private relocated pages.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    // Stream data as `Bytes`: the daemon relays it without copying. Small starting buffers:
    // see src/shim/codec.rs.
    tonic_prost_build::configure()
        .codec_path("crate::shim::codec::ShimCodec")
        .bytes(".berth.shim.v1.ProcessInput")
        .bytes(".berth.shim.v1.ProcessOutput")
        .compile_protos(&["proto/shim.proto"], &["proto"])?;
    tonic_prost_build::configure().compile_protos(&["proto/cri.proto"], &["proto"])?;
    Ok(())
}
