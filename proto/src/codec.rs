//! The codec of the generated *servers*: prost encoding, but a request whose bytes are
//! not a valid protobuf message is the caller's fault, so it is refused with
//! INVALID_ARGUMENT (naming the message and field prost could not read) instead of the
//! INTERNAL that `tonic_prost::ProstCodec` answers. Clients keep `ProstCodec`: a
//! response they cannot decode is not their caller's fault.

use prost::Message;
use std::marker::PhantomData;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::ProstCodec;

/// `ProstCodec` with decode errors answered as INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct RequestCodec<T, U> {
    inner: ProstCodec<T, U>,
}

impl<T, U> Default for RequestCodec<T, U> {
    fn default() -> Self {
        Self {
            inner: ProstCodec::new(),
        }
    }
}

impl<T, U> Codec for RequestCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.inner.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder {
            buffer_settings: BufferSettings::default(),
            _pd: PhantomData,
        }
    }
}

/// Decodes one request message; see the module comment.
#[derive(Debug)]
pub struct RequestDecoder<U> {
    buffer_settings: BufferSettings,
    _pd: PhantomData<U>,
}

impl<U: Message + Default> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|e| {
            Status::invalid_argument(format!("request body is not a valid message: {e}"))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.buffer_settings
    }
}
