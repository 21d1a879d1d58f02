//! Images: references, registry pulls, content store, layer unpack (being built).
pub mod unpack;
