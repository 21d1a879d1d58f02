//! The generated CRI `runtime.v1` types, clients and servers (proto/cri.proto, Kubernetes 1.36).
//! Used by the adapters of `cri/` only; the domain keeps its own types.

tonic::include_proto!("runtime.v1");
