//! The codec of the daemon⇄shim API: prost's, starting its buffers at 1 KiB instead of
//! tonic's 8 KiB. The daemon keeps one stream open to every running pod's shim (its exit
//! events), and that stream's decode buffer stays at its starting size for the pod's whole
//! life: 7 KiB per pod for nothing, since shim messages are small. A larger one (ExecSync
//! output) grows the buffer as it needs.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Starting buffer size and tonic's yield threshold (its default).
const SETTINGS: (usize, usize) = (1024, 32 * 1024);

#[derive(Debug, Clone, Copy)]
pub struct ShimCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ShimCodec<T, U> {
    fn default() -> Self {
        ShimCodec(PhantomData)
    }
}

impl<T, U> Codec for ShimCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(SETTINGS.0, SETTINGS.1))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::new(SETTINGS.0, SETTINGS.1))
    }
}
