//! Errors of the Task service as ttrpc statuses: the shim's own mapping to gRPC codes
//! (`ApiError::code`), whose numbers ttrpc shares.

use containerd_shim_protos::ttrpc;

use crate::shim::error::ApiError;

pub type TtrpcResult<T> = ttrpc::Result<T>;

pub fn status(err: ApiError) -> ttrpc::Error {
    let code = <ttrpc::Code as containerd_shim_protos::protobuf::Enum>::from_i32(err.code() as i32)
        .unwrap_or(ttrpc::Code::INTERNAL);
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, err.chain()))
}

pub fn invalid(message: impl Into<String>) -> ttrpc::Error {
    status(ApiError::InvalidArgument(message.into()))
}

pub fn not_found(what: &str) -> ttrpc::Error {
    status(ApiError::NotFound(what.to_string()))
}

pub fn unimplemented(what: &str) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(
        ttrpc::Code::UNIMPLEMENTED,
        format!("{what} is not implemented by berth's shim"),
    ))
}
